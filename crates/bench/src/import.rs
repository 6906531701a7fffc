//! `leadsync-bench import`: the bulk-import scenario of design.md §5.
//!
//! A user imports N contacts in HubSpot (the simulator); with subscriptions
//! to `contact.creation` and five properties each contact fires one creation
//! and five `propertyChange` events. The simulator delivers them, signed, in
//! batches of up to 100 to the real ingester; worker replicas drain the queue
//! under the portal's quota (100 calls per 10 s, enforced by the simulator
//! and respected by the workers' fleet-wide limiter). Measured per replica
//! count, each on a fresh database, simulator and Redis prefix:
//!
//! - seconds from the last accepted event (the ingester answered 200 to the
//!   last delivery) to the last lead committed: every contact has a lead
//!   holding its current HubSpot values;
//! - HubSpot calls, the most in any rolling 10 s, and 429s, all counted by
//!   the simulator;
//! - calls ÷ ⌈contacts / 100⌉ (100 ids per batch read is the floor).
//!
//! Nothing here asserts a time; the run fails if a lead is missing or wrong,
//! or an event is lost or dead-lettered.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use leadsync_hubspot_sim::{Control, ImportRequest, SubscriptionSpec};
use leadsync_queue::QueueInspector;

use crate::fleet::{
    self, ExpectedLeads, Fleet, FleetConfig, PORTAL, Replica, Sampler, fleet_metric, metric_where,
};

/// Properties subscribed to: with the creation, six events per contact.
const PROPERTIES: [&str; 5] = ["firstname", "lastname", "phone", "company", "jobtitle"];
const EVENTS_PER_CONTACT: u64 = 1 + PROPERTIES.len() as u64;
const BATCH_READ: &str = "POST /crm/v3/objects/contacts/batch/read";

/// Flags of `leadsync-bench import`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Contacts imported in HubSpot; each fires 1 creation + 5 propertyChange events.
    #[arg(long, default_value_t = 10_000)]
    pub contacts: u32,
    /// Worker replica counts, comma-separated; one fresh run each.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub replicas: Vec<usize>,
    /// The portal's quota in calls per 10 s, in the simulator and in the
    /// workers' settings (HubSpot free/starter: 100).
    #[arg(long, default_value_t = 100)]
    pub quota: u32,
    /// Give up (and fail) after this many seconds per phase.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Also print, every 500 ms, HubSpot calls, leads and processed events.
    #[arg(long)]
    pub timeline: bool,
    /// Logs, extra settings and Redis of the fleet.
    #[command(flatten)]
    pub fleet: fleet::FleetArgs,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct ImportFigures {
    /// Worker replicas.
    pub replicas: usize,
    /// Contacts imported.
    pub contacts: u64,
    /// Events delivered and accepted.
    pub events: u64,
    /// From the import to the last event accepted by the ingester.
    pub delivery_secs: f64,
    /// From the last event accepted to the last lead committed with its final values.
    pub leads_secs: f64,
    /// From the import to the last lead committed with its final values.
    pub total_secs: f64,
    /// From the last event accepted to every event recorded as processed.
    pub drain_secs: f64,
    /// HubSpot API calls (simulator).
    pub calls: u64,
    /// Of which batch reads.
    pub batch_reads: u64,
    /// Most calls in any rolling 10 s (simulator).
    pub max_in_10s: u64,
    /// 429s served (simulator).
    pub rate_limited: u64,
    /// Webhook POSTs, and those that failed.
    pub deliveries: (u64, u64),
    /// Batches the workers committed and failed.
    pub batches: (f64, f64),
    /// Contacts read, summed over batches (a contact read twice counts twice).
    pub contact_reads: f64,
    /// Time callers spent waiting for rate-limit permits, summed.
    pub limiter_wait_secs: f64,
    /// CPU seconds Redis used from the import to the last event processed.
    pub redis_cpu_secs: f64,
    /// CPU seconds this process (simulator, ingester, workers) used meanwhile.
    pub process_cpu_secs: f64,
}

impl ImportFigures {
    /// The floor: one batch read per 100 contacts.
    pub fn minimum_calls(&self) -> u64 {
        self.contacts.div_ceil(100).max(1)
    }
}

/// Runs the scenario once per replica count and prints the figures.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(options.contacts > 0, "--contacts must be at least 1");
    anyhow::ensure!(
        options.replicas.iter().all(|n| *n > 0),
        "--replicas must be at least 1"
    );
    let (_telemetry, rt, cores) = fleet::bench_runtime(&options.fleet.log_filter)?;
    println!(
        "leadsync import benchmark: {cores} cores; {} contacts x (1 creation + {} propertyChange) = {} events; quota {} calls per 10 s (simulator and workers)",
        options.contacts,
        PROPERTIES.len(),
        u64::from(options.contacts) * EVENTS_PER_CONTACT,
        options.quota
    );
    let mut all = Vec::with_capacity(options.replicas.len());
    for &replicas in &options.replicas {
        let figures = rt.block_on(run_once(options, replicas))?;
        print_figures(&figures);
        all.push(figures);
    }
    print_summary(&all);
    Ok(())
}

async fn run_once(options: &Options, replicas: usize) -> anyhow::Result<ImportFigures> {
    let config = FleetConfig {
        sim_rate_limit: fleet::quota_limit(options.quota),
        deliver_webhooks: true,
        subscriptions: std::iter::once(SubscriptionSpec::new("contact.creation"))
            .chain(
                PROPERTIES
                    .iter()
                    .map(|p| SubscriptionSpec::property_change(*p)),
            )
            .collect(),
        quota: options.quota,
        redis_url: options.fleet.redis_url.clone(),
        extra_settings: options.fleet.settings.clone(),
        seed: 7,
    };
    let mut figures = Fleet::run(&config, async |fleet| {
        fleet
            .with_replicas(replicas, async |workers| {
                measure(fleet, workers, options).await
            })
            .await
    })
    .await?;
    figures.replicas = replicas;
    Ok(figures)
}

async fn measure(
    fleet: &Fleet,
    workers: &[Replica],
    options: &Options,
) -> anyhow::Result<ImportFigures> {
    let timeout = Duration::from_secs(options.timeout_secs);
    let control = fleet.sim.control().clone();
    let contacts = u64::from(options.contacts);
    let events = contacts * EVENTS_PER_CONTACT;
    control.reset_stats();
    let timeline = options
        .timeline
        .then(|| Timeline::start(control.clone(), fleet));

    let mut redis = QueueInspector::connect(&fleet.settings.redis).await?;
    let redis_cpu = redis.server_cpu_seconds().await?;
    let process_cpu = crate::stats::process_cpu_seconds();
    let started = Instant::now();
    let importer = control.clone();
    let count = options.contacts;
    let imported = tokio::task::spawn_blocking(move || {
        importer.import_contacts(
            PORTAL,
            &ImportRequest {
                count,
                ..ImportRequest::default()
            },
        )
    })
    .await??;
    anyhow::ensure!(
        imported.created == options.contacts,
        "the simulator created {} contacts, not {}",
        imported.created,
        options.contacts
    );
    let reader = control.clone();
    let expected =
        ExpectedLeads::of(&tokio::task::spawn_blocking(move || reader.contacts(PORTAL)).await??);

    // Both watched from the import on: when deliveries fail and HubSpot
    // retries them, the leads may be complete before the last acceptance.
    let (accepted, leads_done) = tokio::join!(
        // The ingester answered 200 to the last delivery once nothing is
        // queued, scheduled or in flight any more.
        fleet::poll(Duration::from_millis(2), timeout, async || {
            Ok(control.delivery_idle().then(Instant::now))
        }),
        fleet::poll(Duration::from_millis(50), timeout, async || {
            if fleet.linked_leads().await? < i64::try_from(expected.len())? {
                return Ok(None);
            }
            let seen = Instant::now();
            Ok((fleet.lead_mismatches(&expected).await? == 0).then_some(seen))
        }),
    );
    let accepted =
        accepted?.context("FAIL: the simulator did not finish delivering the webhooks")?;
    let delivery = control.stats().delivery;
    anyhow::ensure!(
        delivery.events_enqueued == events && delivery.events_delivered == events,
        "FAIL: {} events queued by the simulator, {} accepted by the ingester; expected {events}",
        delivery.events_enqueued,
        delivery.events_delivered
    );
    let Some(leads_done) = leads_done? else {
        anyhow::bail!(
            "FAIL: {} s after the import, {} of {} leads are missing or hold other values than HubSpot",
            options.timeout_secs,
            fleet.lead_mismatches(&expected).await?,
            expected.len()
        );
    };
    let target = i64::try_from(events)?;
    let drained = fleet::poll(Duration::from_millis(50), timeout, async || {
        Ok((fleet.processed_events().await? >= target).then(Instant::now))
    })
    .await?;
    let processed = fleet.processed_events().await?;
    let dead = fleet.dead_letters().await?;
    anyhow::ensure!(
        dead == 0,
        "FAIL: {dead} events were dead-lettered ({processed} of {events} processed)"
    );
    let Some(drained) = drained else {
        anyhow::bail!("FAIL: only {processed} of {events} events were processed");
    };

    let redis_cpu = redis.server_cpu_seconds().await? - redis_cpu;
    let process_cpu = crate::stats::process_cpu_seconds() - process_cpu;
    let stats = control.stats();
    let portal = stats.portals.get(&PORTAL).cloned().unwrap_or_default();
    let texts = fleet::metrics_of(workers).await?;
    if let Some(timeline) = timeline {
        timeline.stop_and_print(started).await;
    }
    let secs = |later: Instant, earlier: Instant| {
        later.saturating_duration_since(earlier).as_secs_f64()
            - earlier.saturating_duration_since(later).as_secs_f64()
    };
    Ok(ImportFigures {
        replicas: workers.len(),
        contacts,
        events,
        delivery_secs: accepted.duration_since(started).as_secs_f64(),
        leads_secs: secs(leads_done, accepted),
        total_secs: leads_done.duration_since(started).as_secs_f64(),
        drain_secs: secs(drained, accepted),
        calls: portal.api_calls,
        batch_reads: stats.calls(BATCH_READ),
        max_in_10s: portal.max_calls_in_10s,
        rate_limited: portal.rate_limited,
        deliveries: (stats.delivery.requests, stats.delivery.failed_requests),
        batches: (
            metric_where(&texts, "leadsync_worker_batches_total", "committed"),
            metric_where(&texts, "leadsync_worker_batches_total", "failed"),
        ),
        contact_reads: fleet_metric(&texts, "leadsync_worker_batch_contacts_sum"),
        limiter_wait_secs: fleet_metric(&texts, "leadsync_hubspot_limiter_wait_seconds_sum"),
        redis_cpu_secs: redis_cpu,
        process_cpu_secs: process_cpu,
    })
}

fn print_figures(f: &ImportFigures) {
    println!(
        "replicas {}: {} events accepted {:.2} s after the import began ({} webhook POSTs, {} failed{})",
        f.replicas,
        f.events,
        f.delivery_secs,
        f.deliveries.0,
        f.deliveries.1,
        if f.deliveries.1 > 0 {
            " and were retried by the simulator: the last acceptance is a retry"
        } else {
            ""
        }
    );
    println!(
        "            last event accepted -> all {} leads committed with HubSpot's values: {:.2} s (target <= 20 s){}; every event processed: {:.2} s; import -> last lead: {:.2} s",
        f.contacts,
        f.leads_secs,
        if f.leads_secs < 0.0 {
            " (the leads were complete before the last, retried, delivery)"
        } else {
            ""
        },
        f.drain_secs,
        f.total_secs
    );
    println!(
        "            HubSpot calls {} ({} batch reads; target <= 120); max in any 10 s {} (target <= 100); 429s {} (target 0); calls / ceil(contacts/100) = {:.2}",
        f.calls,
        f.batch_reads,
        f.max_in_10s,
        f.rate_limited,
        f.calls as f64 / f.minimum_calls() as f64
    );
    println!(
        "            workers: {:.0} batches committed, {:.0} failed; {:.1} contacts per batch; {:.0} contact reads for {} contacts; {:.1} s waited for rate-limit permits in all",
        f.batches.0,
        f.batches.1,
        f.contact_reads / f.batches.0.max(1.0),
        f.contact_reads,
        f.contacts,
        f.limiter_wait_secs
    );
    println!(
        "            CPU from the import to the last event processed: Redis {:.1} s, this process (simulator, ingester, workers) {:.1} s",
        f.redis_cpu_secs, f.process_cpu_secs
    );
}

fn print_summary(all: &[ImportFigures]) {
    println!();
    println!(
        "| replicas | last accepted -> last lead (<= 20 s) | import -> last lead | failed deliveries | HubSpot calls (<= 120) | max in 10 s (<= 100) | 429s (0) | calls / ceil(contacts/100) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for f in all {
        println!(
            "| {} | {:.2} s | {:.2} s | {} | {} | {} | {} | {:.2} |",
            f.replicas,
            f.leads_secs,
            f.total_secs,
            f.deliveries.1,
            f.calls,
            f.max_in_10s,
            f.rate_limited,
            f.calls as f64 / f.minimum_calls() as f64
        );
    }
}

/// Samples taken every 500 ms while a run goes on, for diagnosis.
struct Timeline(Sampler<Sample>);

struct Sample {
    at: Instant,
    calls: u64,
    rate_limited: u64,
    leads: i64,
    processed: i64,
    delivered: u64,
}

impl Timeline {
    fn start(control: Control, fleet: &Fleet) -> Self {
        let pool = fleet.db.store.pool().clone();
        let integration = fleet.integration;
        Self(Sampler::start(move || {
            let stats = control.stats();
            let pool = pool.clone();
            async move {
                let portal = stats.portals.get(&PORTAL).cloned().unwrap_or_default();
                let leads: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM leads WHERE integration_id = $1 AND crm_id IS NOT NULL",
                )
                .bind(integration)
                .fetch_one(&pool)
                .await
                .unwrap_or(-1);
                let processed: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(-1);
                Sample {
                    at: Instant::now(),
                    calls: portal.api_calls,
                    rate_limited: portal.rate_limited,
                    leads,
                    processed,
                    delivered: stats.delivery.events_delivered,
                }
            }
        }))
    }

    async fn stop_and_print(self, started: Instant) {
        let Some(samples) = self.0.stop().await else {
            return;
        };
        println!(
            "            timeline (s since the import began: events accepted, HubSpot calls, 429s, leads, events processed):"
        );
        for s in samples {
            println!(
                "            {:6.1}  {:6}  {:4}  {:3}  {:6}  {:6}",
                s.at.saturating_duration_since(started).as_secs_f64(),
                s.delivered,
                s.calls,
                s.rate_limited,
                s.leads,
                s.processed
            );
        }
    }
}
