//! Both directions at once: the platform and a CRM user editing the same
//! records, through the whole chain (simulator → ingester → queue → worker →
//! Postgres, and Postgres → outbox → relay → queue → push worker → simulator).

use std::collections::BTreeMap;
use std::net::TcpListener;

use leadsync_domain::PortalId;
use leadsync_hubspot::{Client, ClientConfig, TokenSource};
use leadsync_store::api_tokens;
use leadsync_store::audit::{AuditAction, Direction};
use leadsync_store::leads::{self, LeadFields, NewLead};
use leadsync_store::{Lead, LeadColumn};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::chain::{PORTAL, TOKEN, World, eventually};

/// The value leadsync writes to `lead_source_system` (the default setting).
const SOURCE: &str = "jazzaam";
const BATCH_UPDATE: &str = "POST /crm/v3/objects/contacts/batch/update";
const BATCH_UPSERT: &str = "POST /crm/v3/objects/contacts/batch/upsert";

/// Creates `lead_source_system` in the simulated account, as `leadsync
/// setup` does before any lead is pushed.
async fn set_up_hubspot(world: &World) {
    let client = Client::builder(ClientConfig::new(
        world.sim.base_url().parse().expect("valid URL"),
    ))
    .build()
    .expect("client builds");
    client.set_token_source(PortalId::new(PORTAL), TokenSource::PrivateApp(TOKEN.into()));
    client
        .ensure_source_property(PortalId::new(PORTAL), SOURCE)
        .await
        .expect("the property exists");
}

/// A lead written by the platform with plain SQL through the store (the
/// outbox trigger sees it like any platform write).
async fn platform_creates(world: &World, values: &[(LeadColumn, &str)]) -> Lead {
    let mut fields = LeadFields::default();
    for (column, value) in values {
        fields.set(*column, Some((*value).to_owned()));
    }
    leads::create(
        world.db.store.pool(),
        world.integration.id,
        &NewLead {
            fields,
            source_system: None,
        },
    )
    .await
    .expect("lead created")
}

async fn platform_edits(world: &World, lead: Uuid, column: LeadColumn, value: &str) {
    leads::update(
        world.db.store.pool(),
        world.integration.id,
        lead,
        &BTreeMap::from([(column, Some(value.to_owned()))]),
    )
    .await
    .expect("lead query")
    .expect("the lead exists");
}

/// Waits until the contact's `property` is `value` in HubSpot.
async fn contact_has(world: &World, contact: u64, property: &str, value: &str) {
    eventually(
        &format!("contact {contact} {property} = {value}"),
        async || {
            let record = world
                .sim
                .control()
                .contact(PORTAL, contact)
                .map_err(|e| e.to_string())?;
            match record.properties.get(property) {
                Some(v) if v == value => Ok(()),
                other => Err(format!("{property} = {other:?}")),
            }
        },
    )
    .await;
}

/// Waits until the relay has moved every lead change and the push worker
/// has nothing left, then until HubSpot has delivered every webhook.
async fn settle_both_ways(world: &World) {
    eventually("the outbox to drain", async || {
        match world.outbox_backlog().await {
            0 => Ok(()),
            n => Err(format!("{n} lead changes waiting")),
        }
    })
    .await;
    world.settle().await;
}

#[tokio::test]
async fn fifty_rounds_of_alternating_edits_end_equal_without_echo_writes() {
    let world = World::start().await;
    set_up_hubspot(&world).await;
    let contact = world.create_contact(&[
        ("email", "ada@example.com"),
        ("firstname", "Ada"),
        ("jobtitle", "crm-0"),
    ]);
    let lead = world
        .lead_when(contact, "the contact's lead", |l| {
            l.fields.get(LeadColumn::JobTitle) == Some("crm-0")
        })
        .await;
    world.settle().await;
    let updates_before = world.stats().calls(BATCH_UPDATE);

    let rounds = 50;
    let mut platform_rounds = 0;
    for round in 1..=rounds {
        let value = if round % 2 == 1 {
            let value = format!("crm-{round}");
            world.edit_contact(contact, &[("jobtitle", &value)]);
            world
                .lead_when(contact, &format!("round {round}: the CRM edit"), |l| {
                    l.fields.get(LeadColumn::JobTitle) == Some(value.as_str())
                })
                .await;
            value
        } else {
            let value = format!("platform-{round}");
            platform_edits(&world, lead.id, LeadColumn::JobTitle, &value).await;
            platform_rounds += 1;
            contact_has(&world, contact, "jobtitle", &value).await;
            value
        };
        // The next edit starts only once this one has been seen on both
        // sides, echo included, so that each round is a fresh change.
        settle_both_ways(&world).await;
        let now = world.lead(contact).await.expect("still linked");
        assert_eq!(
            now.fields.get(LeadColumn::JobTitle),
            Some(value.as_str()),
            "round {round}: an echo or a stale write changed the lead back"
        );
    }

    let contact_now = world
        .sim
        .control()
        .contact(PORTAL, contact)
        .expect("contact");
    let lead_now = world.lead(contact).await.expect("lead");
    let last = format!("platform-{rounds}");
    assert_eq!(contact_now.properties.get("jobtitle"), Some(&last));
    assert_eq!(
        lead_now.fields.get(LeadColumn::JobTitle),
        Some(last.as_str())
    );
    let writes = world.stats().calls(BATCH_UPDATE) - updates_before;
    assert_eq!(
        writes, platform_rounds,
        "one HubSpot write per platform edit: CRM edits must not be written back"
    );
    assert_eq!(world.stats().calls(BATCH_UPSERT), 0, "the contact existed");
    world.finish().await;
}

#[tokio::test]
async fn the_same_email_created_on_both_sides_at_once_is_one_lead_and_one_contact() {
    let world = World::start().await;
    set_up_hubspot(&world).await;
    // The CRM user's contact and the platform's lead, with no wait between.
    let (contact, _lead) = tokio::join!(
        async {
            world.create_contact(&[
                ("email", "grace@example.com"),
                ("firstname", "Grace"),
                ("jobtitle", "Admiral"),
            ])
        },
        platform_creates(
            &world,
            &[
                (LeadColumn::Email, "Grace@Example.com"),
                (LeadColumn::FirstName, "Grace"),
                (LeadColumn::Phone, "+1 555 0100"),
            ],
        ),
    );
    world
        .lead_when(contact, "the lead linked to the contact", |_| true)
        .await;
    settle_both_ways(&world).await;

    let contacts: Vec<_> = world
        .sim
        .control()
        .contacts(PORTAL)
        .expect("contacts")
        .into_iter()
        .filter(|c| {
            c.properties
                .get("email")
                .is_some_and(|e| e.eq_ignore_ascii_case("grace@example.com"))
        })
        .collect();
    assert_eq!(contacts.len(), 1, "one contact: {contacts:#?}");
    assert_eq!(contacts[0].id, contact);
    let leads: Vec<Lead> = world
        .leads()
        .await
        .into_iter()
        .filter(|l| {
            l.fields
                .get(LeadColumn::Email)
                .is_some_and(|e| e.eq_ignore_ascii_case("grace@example.com"))
        })
        .collect();
    assert_eq!(leads.len(), 1, "one lead: {leads:#?}");
    assert_eq!(
        leads[0].crm_id.map(|c| c.get()),
        Some(contact),
        "the lead is linked to the CRM user's contact"
    );
    // Each side's own value survived: the platform's phone reached the
    // contact and the CRM user's job title reached the lead.
    contact_has(&world, contact, "phone", "+1 555 0100").await;
    world
        .lead_when(contact, "the CRM user's job title on the lead", |l| {
            l.fields.get(LeadColumn::JobTitle) == Some("Admiral")
        })
        .await;
    world.finish().await;
}

/// The platform's REST API on port 0 over this world's database, and a
/// bearer token of the world's integration.
async fn start_api(world: &World) -> (String, String, leadsync_api::StopHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the API");
    let app =
        leadsync_api::Application::build_with(&world.settings, world.db.store.clone(), listener)
            .expect("the API builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    let stop = app.handle();
    tokio::spawn(app.run_until_stopped());
    let issued = api_tokens::issue(world.db.store.pool(), world.integration.id, "e2e")
        .await
        .expect("token issued");
    (url, issued.token.expose_secret().to_owned(), stop)
}

/// Inbound entries of the lead's audit that wrote to it.
async fn inbound_writes(world: &World, lead: Uuid) -> usize {
    world
        .audit(lead)
        .await
        .iter()
        .filter(|r| {
            r.entry.direction == Direction::Inbound
                && matches!(
                    r.entry.action,
                    AuditAction::Updated | AuditAction::Conflict | AuditAction::Created
                )
        })
        .count()
}

/// HubSpot writes leadsync made to contacts.
fn contact_writes(world: &World) -> u64 {
    let stats = world.stats();
    stats.calls(BATCH_UPSERT) + stats.calls(BATCH_UPDATE)
}

#[tokio::test]
async fn a_lead_created_through_the_api_becomes_a_contact_and_edits_flow_back_without_echo() {
    let world = World::start().await;
    set_up_hubspot(&world).await;
    let (api, token, api_stop) = start_api(&world).await;
    let http = reqwest::Client::new();

    // The platform creates a lead through its API.
    let created = http
        .post(format!("{api}/v1/leads"))
        .bearer_auth(&token)
        .json(&json!({
            "email": "lin@example.com",
            "first_name": "Lin",
            "job_title": "Engineer",
        }))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let created: Value = created.json().await.expect("a lead");
    let lead_id: Uuid = created["id"].as_str().expect("id").parse().expect("uuid");
    let lead = world
        .lead_by_id_when(lead_id, "the lead linked to its new contact", |l| {
            l.crm_id.is_some()
        })
        .await;
    let contact = lead.crm_id.expect("linked").get();
    let record = world
        .sim
        .control()
        .contact(PORTAL, contact)
        .expect("contact");
    assert_eq!(
        record
            .properties
            .get("lead_source_system")
            .map(String::as_str),
        Some(SOURCE)
    );
    assert_eq!(
        record.properties.get("jobtitle").map(String::as_str),
        Some("Engineer")
    );
    settle_both_ways(&world).await;
    assert_eq!(contact_writes(&world), 1, "one batch upsert created it");
    assert_eq!(
        inbound_writes(&world, lead_id).await,
        0,
        "the contact's creation webhooks are our echo"
    );

    // A CRM user edits the contact: the lead follows, nothing is written back.
    world.edit_contact(contact, &[("jobtitle", "Staff Engineer")]);
    world
        .lead_by_id_when(lead_id, "the CRM user's edit on the lead", |l| {
            l.fields.get(LeadColumn::JobTitle) == Some("Staff Engineer")
        })
        .await;
    settle_both_ways(&world).await;
    assert_eq!(contact_writes(&world), 1, "no write back to HubSpot");

    // The platform edits the lead: the contact follows, nothing comes back.
    let inbound_before = inbound_writes(&world, lead_id).await;
    let patched = http
        .patch(format!("{api}/v1/leads/{lead_id}"))
        .bearer_auth(&token)
        .json(&json!({ "job_title": "Principal Engineer" }))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(patched.status(), reqwest::StatusCode::OK);
    contact_has(&world, contact, "jobtitle", "Principal Engineer").await;
    settle_both_ways(&world).await;
    assert_eq!(contact_writes(&world), 2, "one batch update for the edit");
    assert_eq!(
        inbound_writes(&world, lead_id).await,
        inbound_before,
        "HubSpot's webhook about our own write changed the lead"
    );
    let lead = world.lead_by_id(lead_id).await.expect("lead");
    assert_eq!(
        lead.fields.get(LeadColumn::JobTitle),
        Some("Principal Engineer")
    );

    api_stop.stop(true).await;
    world.finish().await;
}

#[tokio::test]
async fn a_lead_whose_push_found_no_contact_reaches_hubspot_once_linked_by_address() {
    // Outbound is off while the platform creates its lead: its change is
    // relayed and skipped, so no push of it is pending any more.
    let mut settings = leadsync_store::IntegrationSettings::default();
    settings.directions.outbound = false;
    let world = World::start_with(crate::chain::Options {
        settings: settings.clone(),
        ..crate::chain::Options::default()
    })
    .await;
    set_up_hubspot(&world).await;
    let lead = platform_creates(
        &world,
        &[
            (LeadColumn::Email, "hopper@example.com"),
            (LeadColumn::Phone, "+1 555 0199"),
        ],
    )
    .await;
    eventually("the lead's push skipped (outbound off)", async || {
        let audit = world.audit(lead.id).await;
        if audit
            .iter()
            .any(|r| r.entry.reason.as_deref() == Some("outbound_disabled"))
        {
            Ok(())
        } else {
            Err(format!("{audit:#?}"))
        }
    })
    .await;
    settings.directions.outbound = true;
    leadsync_store::integrations::update_settings(
        world.db.store.pool(),
        world.integration.id,
        &settings,
    )
    .await
    .expect("settings updated");

    // A CRM user creates a contact with the address, without the phone.
    let contact = world.create_contact(&[("email", "hopper@example.com"), ("firstname", "Grace")]);
    world
        .lead_by_id_when(lead.id, "the lead linked to the contact", |l| {
            l.crm_id.map(|c| c.get()) == Some(contact)
        })
        .await;

    // The link found the phone newer on the platform and asked for a push.
    contact_has(&world, contact, "phone", "+1 555 0199").await;
    settle_both_ways(&world).await;
    let lead = world.lead_by_id(lead.id).await.expect("lead");
    assert_eq!(lead.fields.get(LeadColumn::Phone), Some("+1 555 0199"));
    assert_eq!(lead.fields.get(LeadColumn::FirstName), Some("Grace"));
    world.finish().await;
}

#[tokio::test]
async fn a_lead_deleted_through_the_api_archives_its_contact_and_nothing_comes_back() {
    let settings = leadsync_store::IntegrationSettings {
        platform_deletion: leadsync_store::integrations::PlatformDeletion::Archive,
        ..leadsync_store::IntegrationSettings::default()
    };
    let world = World::start_with(crate::chain::Options {
        settings,
        ..crate::chain::Options::default()
    })
    .await;
    set_up_hubspot(&world).await;
    let (api, token, api_stop) = start_api(&world).await;
    let http = reqwest::Client::new();
    let lead = platform_creates(&world, &[(LeadColumn::Email, "leaving@example.com")]).await;
    let contact = world
        .lead_by_id_when(lead.id, "the lead linked to its new contact", |l| {
            l.crm_id.is_some()
        })
        .await
        .crm_id
        .expect("linked")
        .get();
    settle_both_ways(&world).await;

    // The platform deletes the lead through its API.
    let deleted = http
        .delete(format!("{api}/v1/leads/{}", lead.id))
        .bearer_auth(&token)
        .send()
        .await
        .expect("the API answers");
    assert_eq!(deleted.status(), reqwest::StatusCode::NO_CONTENT);

    // The contact goes to HubSpot's recycle bin; HubSpot's `contact.deletion`
    // about it unlinks the deleted lead, and nothing is written again.
    eventually("the contact archived", async || {
        let record = world
            .sim
            .control()
            .contact(PORTAL, contact)
            .map_err(|e| e.to_string())?;
        if record.archived {
            Ok(())
        } else {
            Err("not archived".to_owned())
        }
    })
    .await;
    let unlinked = world
        .lead_by_id_when(lead.id, "the deleted lead unlinked", |l| l.crm_id.is_none())
        .await;
    settle_both_ways(&world).await;
    assert!(unlinked.deleted_at.is_some(), "the lead stays deleted");
    assert_eq!(world.audited(lead.id, AuditAction::Archived).await, 1);
    let stats = world.stats();
    assert_eq!(
        stats.calls("POST /crm/v3/objects/contacts/batch/archive"),
        1
    );
    assert_eq!(contact_writes(&world), 1, "only the creation's upsert");
    assert_eq!(world.outbox_backlog().await, 0);
    assert!(world.dead_letters().await.is_empty());

    api_stop.stop(true).await;
    world.finish().await;
}
