//! `leadsync demo`: the HubSpot simulator, the ingester and a worker in one
//! process, against the local Redis and a throw-away Postgres database.

use std::net::TcpListener;
use std::time::Duration;

use std::time::Instant;

use anyhow::Context as _;
use leadsync_domain::{ContactId, PortalId};
use leadsync_hubspot_sim::{
    FaultConfig, ImportRequest, PortalConfig, SimConfig, SubscriptionSpec, UserEdit,
};
use leadsync_ingester::Application;
use leadsync_queue::QueueInspector;
use leadsync_runtime::Settings;
use leadsync_store::integrations::{self, AuthMode, NewIntegration, Tokens};
use leadsync_store::testing::TestDb;
use leadsync_store::{IntegrationSettings, LeadColumn, TokenCipher, leads};
use secrecy::{ExposeSecret as _, SecretString};

/// The client secret shared by the simulated HubSpot app and the ingester.
const DEMO_SECRET: &str = "leadsync-demo-client-secret";
/// The private-app token the demo's HubSpot account accepts.
const DEMO_TOKEN: &str = "pat-demo-leadsync";
/// How long the demo waits for the worker to catch up.
const SYNC_DEADLINE: Duration = Duration::from_secs(60);

/// What the demo observed.
#[derive(Debug, Clone, Copy)]
pub struct DemoReport {
    /// Events HubSpot delivered (answered 2xx), counting redeliveries.
    pub events_delivered: u64,
    /// Redeliveries HubSpot made (injected, as HubSpot warns it may).
    pub events_duplicated: u64,
    /// Jobs in the queue: one per distinct event.
    pub jobs_queued: u64,
    /// Contacts in HubSpot at the end.
    pub contacts: u64,
    /// Of which have a lead in Postgres.
    pub leads: u64,
    /// Calls leadsync made to the HubSpot API for the inbound half.
    pub api_calls: u64,
    /// What the platform → HubSpot half did.
    pub outbound: OutboundReport,
}

/// The platform → HubSpot half of the demo.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutboundReport {
    /// Platform leads that became contacts carrying `lead_source_system`.
    pub contacts_created: u64,
    /// Platform edits made after the leads were linked.
    pub platform_edits: u64,
    /// Contact writes leadsync made for those edits (batch updates).
    pub edit_writes: u64,
    /// Contact writes leadsync made after a CRM user's edit came back as a
    /// lead change: an echo loop would make this non-zero.
    pub echo_writes: u64,
    /// Whether the CRM user's edit reached the lead.
    pub hubspot_edit_synced: bool,
}

/// HubSpot's batch endpoints that write contacts.
const WRITES: [&str; 2] = [
    "POST /crm/v3/objects/contacts/batch/upsert",
    "POST /crm/v3/objects/contacts/batch/update",
];

/// Creates leads on the platform, edits them, edits one of their contacts in
/// HubSpot, and prints what reached the other side.
async fn push_and_report(
    db: &TestDb,
    sim: &leadsync_hubspot_sim::SimHandle,
    portal: u64,
    integration: uuid::Uuid,
) -> anyhow::Result<OutboundReport> {
    println!("\nleadsync -> HubSpot");
    let pool = db.store.pool();
    let control = sim.control();
    let client = leadsync_hubspot::Client::builder(leadsync_hubspot::ClientConfig::new(
        sim.base_url().parse()?,
    ))
    .build()?;
    client.set_token_source(
        PortalId::new(portal),
        leadsync_hubspot::TokenSource::PrivateApp(SecretString::from(DEMO_TOKEN)),
    );
    create_source_property(&client, portal).await?;
    println!("  setup: the contact property `lead_source_system` exists in HubSpot");

    let writes = || WRITES.iter().map(|e| control.stats().calls(e)).sum::<u64>();
    let before = writes();
    let people = [
        ("alan@example.com", "Alan", "Turing", "Bletchley Park"),
        ("katherine@example.com", "Katherine", "Johnson", "NASA"),
        ("hedy@example.com", "Hedy", "Lamarr", "MGM"),
    ];
    let mut ids = Vec::new();
    for (email, first, last, company) in people {
        let mut fields = leads::LeadFields::default();
        fields.set(LeadColumn::Email, Some(email.to_owned()));
        fields.set(LeadColumn::FirstName, Some(first.to_owned()));
        fields.set(LeadColumn::LastName, Some(last.to_owned()));
        fields.set(LeadColumn::Company, Some(company.to_owned()));
        let lead = leads::create(
            pool,
            integration,
            &leads::NewLead {
                fields,
                source_system: None,
            },
        )
        .await?;
        ids.push(lead.id);
    }
    let started = Instant::now();
    let linked = wait_for(|| async {
        let mut crm = Vec::new();
        for id in &ids {
            match leads::by_id(pool, integration, *id)
                .await?
                .and_then(|l| l.crm_id)
            {
                Some(c) => crm.push(c),
                None => return Ok(None),
            }
        }
        Ok(Some(crm))
    })
    .await?
    .context("the platform's leads did not become contacts in time")?;
    let created_writes = writes() - before;
    let tagged = linked
        .iter()
        .filter(|c| {
            control.contact(portal, c.get()).is_ok_and(|r| {
                r.properties.get("lead_source_system").map(String::as_str) == Some("jazzaam")
            })
        })
        .count() as u64;
    println!(
        "  the platform created {} leads: {tagged} contacts with lead_source_system set, in {:.1} s and {created_writes} batch upsert call(s)",
        ids.len(),
        started.elapsed().as_secs_f64(),
    );

    // Each side edits once; each edit must arrive once and never come back.
    let before = writes();
    leads::update(
        pool,
        integration,
        ids[0],
        &std::collections::BTreeMap::from([(
            LeadColumn::JobTitle,
            Some("Cryptanalyst".to_owned()),
        )]),
    )
    .await?;
    let alan = linked[0].get();
    let pushed = wait_for(|| async {
        Ok(control
            .contact(portal, alan)?
            .properties
            .get("jobtitle")
            .is_some_and(|t| t == "Cryptanalyst")
            .then_some(()))
    })
    .await?
    .is_some();
    // The simulator counts a call once it has answered it: let the count settle.
    wait_for(|| async { Ok((writes() > before).then_some(())) }).await?;
    let edit_writes = writes() - before;
    println!(
        "  a platform edit (Alan's job title) reached his contact: {pushed}, with {edit_writes} batch update call(s)"
    );

    let katherine = linked[1].get();
    control.update_contact(
        portal,
        katherine,
        &UserEdit::new([("jobtitle", "Mathematician")]),
    )?;
    let before = writes();
    let pulled = wait_for(|| async {
        Ok(leads::by_id(pool, integration, ids[1])
            .await?
            .and_then(|l| l.fields.get(LeadColumn::JobTitle).map(str::to_owned))
            .filter(|t| t == "Mathematician")
            .map(drop))
    })
    .await?
    .is_some();
    // Give an echo the time it would need to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let echo_writes = writes() - before;
    println!(
        "  a CRM user's edit (Katherine's job title) reached her lead: {pulled}; writes back to HubSpot: {echo_writes}"
    );
    Ok(OutboundReport {
        contacts_created: tagged,
        platform_edits: 1,
        edit_writes,
        echo_writes,
        hubspot_edit_synced: pulled,
    })
}

/// Creates the `lead_source_system` contact property, as `leadsync setup`
/// does for a newly connected account.
async fn create_source_property(
    client: &leadsync_hubspot::Client,
    portal: u64,
) -> anyhow::Result<()> {
    client
        .ensure_source_property(PortalId::new(portal), "jazzaam")
        .await?;
    Ok(())
}

/// Polls `check` until it yields a value or [`SYNC_DEADLINE`] passes.
async fn wait_for<T, F, Fut>(check: F) -> anyhow::Result<Option<T>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await? {
            return Ok(Some(value));
        }
        if started.elapsed() > SYNC_DEADLINE {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the demo and prints what synced where.
pub async fn run(mut settings: Settings) -> anyhow::Result<DemoReport> {
    // The demo's queue keys live under their own prefix and are removed at the end.
    settings.redis.key_prefix =
        format!("{}-demo-{}", settings.redis.key_prefix, std::process::id());
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the ingester")?;
    let ingester_url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    settings
        .application
        .public_base_url
        .clone_from(&ingester_url);
    settings.hubspot.client_secrets = vec![SecretString::from(DEMO_SECRET)];

    let mut queue = QueueInspector::connect(&settings.redis)
        .await
        .context("connecting to Redis (is it running on the configured redis.url?)")?;
    let ingester = Application::build_with_listener(&settings, listener)?;
    let stop = ingester.handle();
    tokio::spawn(ingester.run_until_stopped());

    let mut sim_config = SimConfig {
        portals: vec![
            PortalConfig::new(leadsync_hubspot_sim::DEFAULT_PORTAL_ID)
                .with_private_app_token(DEMO_TOKEN),
        ],
        ..SimConfig::default()
    };
    sim_config.app.client_secret = SecretString::from(DEMO_SECRET);
    sim_config.app.target_url = Some(format!("{ingester_url}/webhooks/hubspot"));
    sim_config.subscriptions = SubscriptionSpec::all_contact_events(&[
        "email",
        "firstname",
        "lastname",
        "phone",
        "company",
        "jobtitle",
        "city",
        "country",
    ]);
    let sim = leadsync_hubspot_sim::spawn(sim_config).await?;
    let portal = sim
        .config()
        .first_portal()
        .context("the simulator has a portal")?;
    let control = sim.control();
    println!("leadsync demo");
    println!("  HubSpot simulator  {}", sim.base_url());
    println!(
        "  ingester           {ingester_url}/webhooks/hubspot  (Redis {})",
        queue_label(&settings)
    );

    println!("\nHubSpot -> leadsync");
    let ada = control.create_contact(
        portal,
        &UserEdit::new([
            ("email", "ada@example.com"),
            ("firstname", "Ada"),
            ("lastname", "Lovelace"),
            ("company", "Analytical Engines"),
        ]),
    )?;
    control.create_contact(
        portal,
        &UserEdit::new([
            ("email", "grace@example.com"),
            ("firstname", "Grace"),
            ("lastname", "Hopper"),
        ]),
    )?;
    control.update_contact(
        portal,
        ada.id,
        &UserEdit::new([("jobtitle", "Mathematician")]),
    )?;
    // Some of HubSpot's deliveries arrive twice, as HubSpot warns they may.
    control.set_faults(FaultConfig {
        duplicate_rate: 0.2,
        ..FaultConfig::default()
    });
    let import = control.import_contacts(
        portal,
        &ImportRequest {
            count: 200,
            extra_edits: 2,
            ..ImportRequest::default()
        },
    )?;
    println!(
        "  a sales rep created 2 contacts and edited one; an import added {} contacts, each edited twice",
        import.created
    );
    let idle = control
        .wait_for_delivery_idle(Duration::from_secs(30))
        .await;
    let delivery = control.stats().delivery;
    println!(
        "  HubSpot delivered {} events in {} signed POSTs ({} duplicated on purpose, {} failed){}",
        delivery.events_delivered,
        delivery.requests,
        delivery.events_duplicated,
        delivery.failed_requests,
        if idle {
            ""
        } else {
            " — still delivering after 30 s"
        },
    );
    let db = TestDb::create()
        .await
        .context("creating a throw-away database (is Postgres running at 127.0.0.1:5432?)")?;
    let result = sync_and_report(&settings, &db, &sim, portal, &mut queue, ada.id).await;
    stop.stop(true).await;
    sim.stop().await;
    queue.purge().await?;
    db.cleanup().await?;
    result
}

/// Runs a worker against the demo's database and simulator until every
/// contact is a lead, prints what happened and returns the figures.
async fn sync_and_report(
    settings: &Settings,
    db: &TestDb,
    sim: &leadsync_hubspot_sim::SimHandle,
    portal: u64,
    queue: &mut QueueInspector,
    ada: u64,
) -> anyhow::Result<DemoReport> {
    let key = TokenCipher::generate_key();
    let integration = integrations::create(
        db.store.pool(),
        &NewIntegration {
            name: "demo".to_owned(),
            portal_id: PortalId::new(portal),
            app_id: None,
            auth_mode: AuthMode::PrivateApp,
            settings: IntegrationSettings::default(),
        },
    )
    .await?;
    integrations::store_tokens(
        db.store.pool(),
        integration.id,
        &TokenCipher::from_base64_key(&key)?,
        &Tokens {
            access: SecretString::from(DEMO_TOKEN),
            refresh: None,
            expires_at: None,
        },
    )
    .await?;
    let worker_settings = Settings::from_toml_layers(&[&format!(
        r#"
        [database]
        url = "postgres://postgres@127.0.0.1:5432/{db}"
        [redis]
        key_prefix = "{prefix}"
        [hubspot]
        api_base_url = "{api}"
        token_encryption_key = "{key}"
        [worker]
        metrics_host = "127.0.0.1"
        metrics_port = 0
        "#,
        db = db.name,
        prefix = settings.redis.key_prefix,
        api = sim.base_url(),
        key = key.expose_secret(),
    )])?;
    let started = Instant::now();
    let worker = leadsync_worker::Application::build(&worker_settings).await?;
    let worker_stop = worker.handle();
    let running = tokio::spawn(worker.run_until(std::future::pending()));

    let control = sim.control();
    let contacts: Vec<ContactId> = control
        .contacts(portal)?
        .iter()
        .map(|c| ContactId::new(c.id))
        .collect();
    let mut synced = 0;
    while started.elapsed() < SYNC_DEADLINE {
        synced = leads::by_crm_ids(db.store.pool(), integration.id, &contacts)
            .await?
            .len();
        if synced == contacts.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let stats = control.stats();
    let delivery = &stats.delivery;
    let queued = queue.stored().await?;
    println!(
        "  the ingester verified every signature and queued {queued} jobs, one per distinct event; {} redelivered events were dropped",
        delivery.events_delivered.saturating_sub(queued),
    );
    println!(
        "  a worker turned them into {synced} leads of {} contacts in {:.1} s, with {} HubSpot API calls (batch reads of up to 100 contacts); fetching each event's contact would take {queued}",
        contacts.len(),
        elapsed.as_secs_f64(),
        stats.api_calls,
    );
    if let Some(lead) =
        leads::by_crm_id(db.store.pool(), integration.id, ContactId::new(ada)).await?
    {
        println!(
            "  Ada's lead in Postgres: {} {}, {} at {}",
            lead.fields.get(LeadColumn::FirstName).unwrap_or("?"),
            lead.fields.get(LeadColumn::LastName).unwrap_or("?"),
            lead.fields.get(LeadColumn::JobTitle).unwrap_or("?"),
            lead.fields.get(LeadColumn::Company).unwrap_or("?"),
        );
    }

    let outbound = push_and_report(db, sim, portal, integration.id).await;

    worker_stop.stop();
    running.await??;
    let outbound = outbound?;
    anyhow::ensure!(
        synced == contacts.len(),
        "only {synced} of {} contacts became leads within {SYNC_DEADLINE:?}",
        contacts.len()
    );
    Ok(DemoReport {
        events_delivered: delivery.events_delivered,
        events_duplicated: delivery.events_duplicated,
        jobs_queued: queued,
        contacts: contacts.len() as u64,
        leads: synced as u64,
        api_calls: stats.api_calls,
        outbound,
    })
}

fn queue_label(settings: &Settings) -> String {
    format!(
        "queue {}",
        leadsync_queue::queue_name(&settings.redis, leadsync_queue::INBOUND_QUEUE)
    )
}
