//! Backfill against the simulator and Postgres: every contact listed page by
//! page and applied through the inbound decision path, every unsynced lead
//! pushed through the outbound one, resumable after an interruption, a no-op
//! once complete, one run per portal at a time, at background priority.

use std::sync::Mutex;

use leadsync_domain::PortalId;
use leadsync_hubspot::{
    Client, ClientConfig, HubSpotMetrics, LimiterConfig, RateLimiter, TokenSource,
};
use leadsync_hubspot_sim::{ImportRequest, UserEdit};
use leadsync_store::cursors::{self, CursorKind, RunLock};
use leadsync_store::leads::{self, CrmSyncStatus};
use leadsync_store::{Lead, LeadColumn};
use leadsync_worker::backfill::{self, BackfillConfig, BackfillDeps, BackfillPhase};
use leadsync_worker::{
    BackfillError, BackfillOptions, BackfillOutcome, BackfillProgress, BackfillReport,
};

use crate::helpers::{
    BATCH_READ, PORTAL, SOURCE, TOKEN, TestEnv, create_lead, create_source_property, sim_client,
};

const LIST: &str = "GET /crm/v3/objects/contacts";
const UPSERT: &str = "POST /crm/v3/objects/contacts/batch/upsert";

fn deps(env: &TestEnv, hubspot: Client) -> BackfillDeps {
    BackfillDeps {
        store: env.db.store.clone(),
        hubspot,
        source_system: SOURCE.to_owned(),
        config: BackfillConfig::default(),
        metrics: None,
    }
}

/// `n` contacts imported in HubSpot in one go (the simulator's bulk import).
fn import(env: &TestEnv, n: u32) {
    let result = env
        .sim
        .control()
        .import_contacts(
            PORTAL,
            &ImportRequest {
                count: n,
                ..ImportRequest::default()
            },
        )
        .expect("import");
    assert_eq!(result.created, n);
}

/// A lead created on the platform, with no contact yet.
async fn platform_lead(env: &TestEnv, email: &str) -> Lead {
    create_lead(
        env,
        &[
            (LeadColumn::Email, email),
            (LeadColumn::FirstName, "Platform"),
        ],
    )
    .await
}

/// Runs a backfill, collecting what the progress callback saw.
async fn run(
    env: &TestEnv,
    deps: &BackfillDeps,
    options: &BackfillOptions,
) -> (BackfillReport, Vec<BackfillProgress>) {
    let seen = Mutex::new(Vec::new());
    let report = backfill::run_once(deps, &env.integration, options, &|p| {
        seen.lock().expect("lock").push(p.clone());
    })
    .await
    .expect("the backfill runs");
    (report, seen.into_inner().expect("lock"))
}

async fn lead_by_id(env: &TestEnv, id: uuid::Uuid) -> Lead {
    leads::by_id(env.db.store.pool(), env.integration.id, id)
        .await
        .expect("lead query")
        .expect("lead exists")
}

fn calls(env: &TestEnv, endpoint: &str) -> u64 {
    env.sim.control().stats().calls(endpoint)
}

/// Contacts in the simulator without a lead linked to them.
async fn contacts_without_lead(env: &TestEnv) -> usize {
    let mut missing = 0;
    for contact in env.sim.control().contacts(PORTAL).expect("contacts") {
        if env.lead(contact.id).await.is_none() {
            missing += 1;
        }
    }
    missing
}

#[tokio::test]
async fn a_backfill_imports_every_contact_page_by_page_and_pushes_unsynced_leads() {
    // Arrange: 250 contacts in HubSpot; on the platform two new leads and
    // one whose address HubSpot already has.
    let env = TestEnv::new().await;
    let client = sim_client(&env.sim);
    create_source_property(&client).await;
    import(&env, 250);
    let known = env
        .sim
        .control()
        .contacts(PORTAL)
        .expect("contacts")
        .into_iter()
        .find_map(|c| c.properties.get("email").cloned())
        .expect("an imported address");
    let ada = platform_lead(&env, "ada@example.com").await;
    let bob = platform_lead(&env, "bob@example.com").await;
    let twin = platform_lead(&env, &known).await;
    env.sim.control().reset_stats();

    // Act
    let (report, progress) = run(&env, &deps(&env, client), &BackfillOptions::default()).await;

    // Assert: three list pages (100 + 100 + 50), one batch upsert.
    assert_eq!(report.outcome, BackfillOutcome::Completed, "{report}");
    assert!(!report.resumed);
    assert_eq!(calls(&env, LIST), 3);
    assert_eq!(calls(&env, UPSERT), 1);
    assert_eq!(calls(&env, BATCH_READ), 0, "the list carries the values");
    assert_eq!(report.calls, 4);
    let t = &report.totals;
    assert_eq!((t.pages, t.contacts), (3, 250), "{report}");
    assert_eq!((t.created, t.linked), (249, 1), "{report}");
    assert_eq!(
        (t.leads, t.pushed, t.contacts_created),
        (2, 2, 2),
        "{report}"
    );
    assert_eq!(contacts_without_lead(&env).await, 0);
    assert_eq!(env.leads().await.len(), 252);
    let twin = lead_by_id(&env, twin.id).await;
    assert!(twin.crm_id.is_some(), "linked by address, not pushed");
    for lead in [ada, bob] {
        let lead = lead_by_id(&env, lead.id).await;
        assert_eq!(lead.crm_sync_status, CrmSyncStatus::Synced);
        let contact = env
            .sim
            .control()
            .contact(PORTAL, lead.crm_id.expect("linked").get())
            .expect("contact");
        assert_eq!(
            contact
                .properties
                .get("lead_source_system")
                .map(String::as_str),
            Some(SOURCE)
        );
    }
    let phases: Vec<BackfillPhase> = progress.iter().map(|p| p.phase).collect();
    assert_eq!(
        phases,
        [
            BackfillPhase::Contacts,
            BackfillPhase::Contacts,
            BackfillPhase::Contacts,
            BackfillPhase::Leads,
            BackfillPhase::Done
        ]
    );
    let pages: Vec<u64> = progress.iter().map(|p| p.totals.pages).collect();
    assert_eq!(pages, [1, 2, 3, 3, 3]);
    let cursor = cursors::get(
        env.db.store.pool(),
        env.integration.id,
        CursorKind::Backfill,
    )
    .await
    .expect("cursor")
    .expect("saved");
    assert!(cursor.completed_at.is_some(), "completion recorded");
    env.finish().await;
}

#[tokio::test]
async fn an_interrupted_backfill_resumes_where_it_stopped() {
    // Arrange: 350 contacts (four pages) and 150 platform leads (two
    // push batches).
    let env = TestEnv::new().await;
    let client = sim_client(&env.sim);
    create_source_property(&client).await;
    import(&env, 350);
    for i in 0..150 {
        platform_lead(&env, &format!("platform{i}@example.com")).await;
    }
    let deps = deps(&env, client);
    let stop_after = |n| BackfillOptions {
        max_pages: Some(n),
        ..BackfillOptions::default()
    };

    // Act: two pages, then two more pages and one push batch, then the rest.
    env.sim.control().reset_stats();
    let (first, _) = run(&env, &deps, &stop_after(2)).await;
    let first_lists = calls(&env, LIST);
    let leads_after_first = env.leads().await.len();
    env.sim.control().reset_stats();
    let (second, _) = run(&env, &deps, &stop_after(3)).await;
    let second_calls = (calls(&env, LIST), calls(&env, UPSERT));
    env.sim.control().reset_stats();
    let (third, progress) = run(&env, &deps, &BackfillOptions::default()).await;
    let third_calls = (calls(&env, LIST), calls(&env, UPSERT));

    // Assert: no page is listed twice and no lead pushed twice.
    assert_eq!(first.outcome, BackfillOutcome::Interrupted, "{first}");
    assert_eq!(first.phase, BackfillPhase::Contacts);
    assert_eq!(first_lists, 2);
    assert_eq!(leads_after_first, 150 + 200);
    assert_eq!(second.outcome, BackfillOutcome::Interrupted, "{second}");
    assert!(second.resumed);
    assert_eq!(second.phase, BackfillPhase::Leads);
    assert_eq!(second_calls, (2, 1), "pages 3 and 4, then one push batch");
    assert_eq!(third.outcome, BackfillOutcome::Completed, "{third}");
    assert!(third.resumed);
    assert_eq!(third_calls, (0, 1), "only the last 50 leads");
    let t = &third.totals;
    assert_eq!((t.pages, t.contacts, t.created), (4, 350, 350), "{third}");
    assert_eq!(
        (t.leads, t.pushed, t.push_batches),
        (150, 150, 2),
        "{third}"
    );
    assert_eq!(t.calls, 4 + 2, "totals span the three runs");
    assert_eq!(progress.first().map(|p| p.totals.pages), Some(4));
    assert_eq!(contacts_without_lead(&env).await, 0);
    let unsynced = env
        .leads()
        .await
        .into_iter()
        .filter(|l| l.crm_id.is_none())
        .count();
    assert_eq!(unsynced, 0);
    assert_eq!(env.sim.control().contacts(PORTAL).expect("all").len(), 500);
    env.finish().await;
}

#[tokio::test]
async fn a_completed_backfill_does_nothing_again_and_a_restart_changes_only_what_differs() {
    // Arrange: a completed backfill, then one contact edited and one added.
    let env = TestEnv::new().await;
    let client = sim_client(&env.sim);
    create_source_property(&client).await;
    import(&env, 120);
    let deps = deps(&env, client);
    let (done, _) = run(&env, &deps, &BackfillOptions::default()).await;
    assert_eq!(done.outcome, BackfillOutcome::Completed, "{done}");
    let edited = env.sim.control().contacts(PORTAL).expect("contacts")[0].id;
    env.sim
        .control()
        .update_contact(PORTAL, edited, &UserEdit::new([("firstname", "Grace")]))
        .expect("edited");
    let added = env.create_contact("new@example.com");
    env.sim.control().reset_stats();

    // Act
    let (again, _) = run(&env, &deps, &BackfillOptions::default()).await;
    let calls_again = env.sim.control().stats().api_calls;
    let imported_again = env.lead(added).await.is_some();
    let (restarted, _) = run(
        &env,
        &deps,
        &BackfillOptions {
            restart: true,
            ..BackfillOptions::default()
        },
    )
    .await;

    // Assert: nothing without a restart; with one, every page is listed
    // again and only the two differences are written.
    assert_eq!(again.outcome, BackfillOutcome::AlreadyComplete, "{again}");
    assert_eq!(calls_again, 0);
    assert!(!imported_again, "not imported without a restart");
    assert_eq!(restarted.outcome, BackfillOutcome::Completed, "{restarted}");
    assert!(!restarted.resumed);
    assert_eq!(calls(&env, LIST), 2);
    let t = &restarted.totals;
    assert_eq!(
        (t.contacts, t.created, t.updated),
        (121, 1, 1),
        "{restarted}"
    );
    assert_eq!(t.unchanged, 119, "{restarted}");
    assert_eq!(t.leads, 0, "no lead left to push");
    let lead = env.lead(edited).await.expect("lead");
    assert_eq!(lead.fields.get(LeadColumn::FirstName), Some("Grace"));
    assert!(env.lead(added).await.is_some());
    env.finish().await;
}

#[tokio::test]
async fn one_backfill_runs_per_portal_at_background_priority() {
    // Arrange: a client behind the fleet-wide limiter, and the backfill
    // lock held as another process would.
    let env = TestEnv::new().await;
    import(&env, 30);
    let settings = env.settings("");
    let conn = leadsync_queue::redis_client(&settings.redis)
        .expect("client")
        .get_connection_manager()
        .await
        .expect("Redis runs at 127.0.0.1:6379");
    let metrics = HubSpotMetrics::unregistered().expect("metrics");
    let limiter = RateLimiter::new(
        conn,
        LimiterConfig {
            key_prefix: env.prefix.clone(),
            ..LimiterConfig::default()
        },
    )
    .with_metrics(metrics.clone());
    let client = Client::builder(ClientConfig::new(env.sim.base_url().parse().expect("URL")))
        .limiter(limiter)
        .build()
        .expect("client");
    client.set_token_source(PortalId::new(PORTAL), TokenSource::PrivateApp(TOKEN.into()));
    let mut deps = deps(&env, client.clone());
    deps.config.max_quota_share = 0.3;
    let held = RunLock::try_acquire(
        env.db.store.pool(),
        env.integration.id,
        CursorKind::Backfill,
    )
    .await
    .expect("lock")
    .expect("free");

    // Act
    let busy = backfill::run_once(
        &deps,
        &env.integration,
        &BackfillOptions::default(),
        &|_| {},
    )
    .await;
    held.release().await.expect("released");
    let (report, _) = run(&env, &deps, &BackfillOptions::default()).await;

    // Assert
    assert!(
        matches!(busy, Err(BackfillError::AlreadyRunning(id)) if id == env.integration.id),
        "{busy:?}"
    );
    assert_eq!(report.outcome, BackfillOutcome::Completed, "{report}");
    assert_eq!(report.calls, 1);
    let permits = |priority: &str| metrics.permits.with_label_values(&["api", priority]).get();
    assert_eq!(permits("background"), 1, "the list call");
    assert_eq!(permits("live"), 0);
    let quota = client
        .limiter()
        .expect("limiter")
        .quota(PortalId::new(PORTAL));
    assert!((quota.background_share - 0.3).abs() < f64::EPSILON);
    env.finish().await;
}
