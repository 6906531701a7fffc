//! `leadsync demo`: the HubSpot simulator and leadsync in one process, against
//! the local Redis (and, as the worker lands, Postgres).

use std::net::TcpListener;
use std::time::Duration;

use anyhow::Context as _;
use leadsync_hubspot_sim::{FaultConfig, ImportRequest, SimConfig, SubscriptionSpec, UserEdit};
use leadsync_ingester::Application;
use leadsync_queue::QueueInspector;
use leadsync_runtime::Settings;
use secrecy::SecretString;

/// The client secret shared by the simulated HubSpot app and the ingester.
const DEMO_SECRET: &str = "leadsync-demo-client-secret";

/// What the demo observed.
#[derive(Debug, Clone, Copy)]
pub struct DemoReport {
    /// Events HubSpot delivered (answered 2xx), counting redeliveries.
    pub events_delivered: u64,
    /// Redeliveries HubSpot made (injected, as HubSpot warns it may).
    pub events_duplicated: u64,
    /// Jobs in the queue: one per distinct event.
    pub jobs_queued: u64,
    /// Calls leadsync made to the HubSpot API.
    pub api_calls: u64,
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

    let mut sim_config = SimConfig::default();
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
    let stats = control.stats();
    let delivery = &stats.delivery;
    let queued = queue.stored().await?;
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
    println!(
        "  the ingester verified every signature and queued {queued} jobs, one per distinct event; {} redelivered events were dropped",
        delivery.events_delivered.saturating_sub(queued),
    );
    println!("  HubSpot API calls made by leadsync: {}", stats.api_calls);

    println!("\nNot built yet: the worker fleet that turns queued events into leads in Postgres,");
    println!("and the platform -> HubSpot push. Both directions will appear here as they land.");

    let report = DemoReport {
        events_delivered: delivery.events_delivered,
        events_duplicated: delivery.events_duplicated,
        jobs_queued: queued,
        api_calls: stats.api_calls,
    };
    stop.stop(true).await;
    sim.stop().await;
    queue.purge().await?;
    Ok(report)
}

fn queue_label(settings: &Settings) -> String {
    format!(
        "queue {}",
        leadsync_queue::queue_name(&settings.redis, leadsync_queue::INBOUND_QUEUE)
    )
}
