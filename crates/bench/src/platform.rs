//! `leadsync-bench platform`: the platform-bulk scenario of design.md §5.
//!
//! The platform inserts N new leads in one statement (one multi-row
//! `INSERT … SELECT`, as a bulk import on the platform would); the outbox
//! trigger records N lead changes in the same transaction. With worker
//! replicas running — relay, outbound queue, push batcher, batch upserts
//! by email under the portal's quota (100 calls per 10 s, enforced by the
//! simulator and respected by the workers' fleet-wide limiter) — it waits
//! until every lead has its contact in the simulator and prints:
//!
//! - leads inserted, and contacts in the simulator with
//!   `lead_source_system` set;
//! - HubSpot calls against ⌈N / 100⌉ (one batch upsert per 100 leads is the
//!   floor), the most in any rolling 10 s, and 429s, all counted by the
//!   simulator;
//! - seconds from the insert's commit to the last contact in the simulator
//!   (and to the last lead linked in Postgres);
//! - PASS/FAIL against the targets (≤ 1.1 × the floor in calls, ≤ 15 s).
//!
//! Nothing here asserts a time; the run fails if a lead never gets its
//! contact.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::fleet::{
    self, Fleet, FleetConfig, PORTAL, Replica, Sampler, fleet_metric, metric_where,
};

const UPSERT: &str = "POST /crm/v3/objects/contacts/batch/upsert";
/// Seconds from the insert's commit to the last contact (design.md §5).
const TARGET_SECS: f64 = 15.0;
/// Calls allowed over the floor of one batch upsert per 100 leads.
const TARGET_CALLS_RATIO: f64 = 1.1;

/// Flags of `leadsync-bench platform`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// New leads inserted on the platform in one statement.
    #[arg(long, default_value_t = 10_000)]
    pub leads: u32,
    /// Worker replicas.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// The portal's quota in calls per 10 s, in the simulator and in the
    /// workers' settings (HubSpot free/starter: 100).
    #[arg(long, default_value_t = 100)]
    pub quota: u32,
    /// Give up (and fail) after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Also print, every 500 ms, contacts in the simulator and HubSpot calls.
    #[arg(long)]
    pub timeline: bool,
    /// Logs, extra settings and Redis of the fleet.
    #[command(flatten)]
    pub fleet: fleet::FleetArgs,
}

/// What the run measured.
#[derive(Debug, Clone, Default)]
pub struct PlatformFigures {
    /// Worker replicas.
    pub replicas: usize,
    /// Leads inserted.
    pub leads: u64,
    /// Contacts in the simulator carrying `lead_source_system`.
    pub tagged_contacts: u64,
    /// Leads linked to a contact in Postgres at the end.
    pub linked_leads: i64,
    /// The insert statement's own time (it commits on return).
    pub insert_secs: f64,
    /// From the insert's commit to the last contact in the simulator.
    pub contacts_secs: f64,
    /// From the insert's commit to the last lead linked in Postgres.
    pub linked_secs: f64,
    /// HubSpot API calls (simulator).
    pub calls: u64,
    /// Of which batch upserts.
    pub upserts: u64,
    /// Most calls in any rolling 10 s (simulator).
    pub max_in_10s: u64,
    /// 429s served (simulator).
    pub rate_limited: u64,
    /// Push batches the workers committed and failed.
    pub batches: (f64, f64),
    /// Time callers spent waiting for rate-limit permits, summed.
    pub limiter_wait_secs: f64,
}

impl PlatformFigures {
    /// The floor: one batch upsert per 100 leads.
    pub fn minimum_calls(&self) -> u64 {
        self.leads.div_ceil(100).max(1)
    }

    /// The calls target: 10 % over the floor.
    pub fn target_calls(&self) -> u64 {
        (self.minimum_calls() as f64 * TARGET_CALLS_RATIO).floor() as u64
    }
}

/// Runs the scenario once and prints the figures.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(options.leads > 0, "--leads must be at least 1");
    anyhow::ensure!(options.replicas > 0, "--replicas must be at least 1");
    let (_telemetry, rt, cores) = fleet::bench_runtime(&options.fleet.log_filter)?;
    println!(
        "leadsync platform benchmark: {cores} cores; {} new leads in one INSERT; {} worker replica(s); quota {} calls per 10 s (simulator and workers)",
        options.leads, options.replicas, options.quota
    );
    let figures = rt.block_on(run_once(options))?;
    print_figures(&figures);
    Ok(())
}

async fn run_once(options: &Options) -> anyhow::Result<PlatformFigures> {
    // Only the platform → HubSpot half is measured.
    let config = FleetConfig::without_webhooks(options.quota, &options.fleet, 11);
    Fleet::run(&config, async |fleet| {
        fleet.ensure_source_property().await?;
        fleet
            .with_replicas(options.replicas, async |workers| {
                measure(fleet, workers, options).await
            })
            .await
    })
    .await
}

/// The platform's bulk insert: one statement, one transaction.
async fn insert_leads(fleet: &Fleet, n: u32) -> anyhow::Result<u64> {
    let done = sqlx::query(
        "INSERT INTO leads (integration_id, email, first_name, last_name, company, job_title, phone) \
         SELECT $1, 'lead' || g || '@platform.example.com', 'First' || g, 'Last' || g, \
                'Company ' || (g % 500), 'Engineer', '+1555' || lpad(g::text, 7, '0') \
         FROM generate_series(1, $2) AS g",
    )
    .bind(fleet.integration)
    .bind(i32::try_from(n)?)
    .execute(fleet.db.store.pool())
    .await
    .context("inserting the leads")?;
    Ok(done.rows_affected())
}

async fn measure(
    fleet: &Fleet,
    workers: &[Replica],
    options: &Options,
) -> anyhow::Result<PlatformFigures> {
    let timeout = Duration::from_secs(options.timeout_secs);
    let control = fleet.sim.control().clone();
    let n = u64::from(options.leads);
    control.reset_stats();
    let contacts_now = |c: &leadsync_hubspot_sim::Control| {
        c.stats().portals.get(&PORTAL).map_or(0, |p| p.contacts)
    };
    let timeline = options.timeline.then(|| Timeline::start(control.clone()));

    let started = Instant::now();
    let inserted = insert_leads(fleet, options.leads).await?;
    // The statement ran in its own transaction: it has committed now.
    let committed = Instant::now();
    anyhow::ensure!(inserted == n, "inserted {inserted} leads, not {n}");

    let (contacts_done, linked_done) = tokio::join!(
        fleet::poll(Duration::from_millis(10), timeout, async || {
            Ok((contacts_now(&control) >= n).then(Instant::now))
        }),
        fleet::poll(Duration::from_millis(50), timeout, async || {
            Ok((fleet.linked_leads().await? >= i64::try_from(n)?).then(Instant::now))
        }),
    );
    if let Some(timeline) = timeline {
        timeline.stop_and_print(committed).await;
    }
    let Some(contacts_done) = contacts_done? else {
        anyhow::bail!(
            "FAIL: {} s after the insert, {} of {n} contacts are in the simulator",
            options.timeout_secs,
            contacts_now(&control)
        );
    };
    let Some(linked_done) = linked_done? else {
        anyhow::bail!(
            "FAIL: {} s after the insert, {} of {n} leads are linked to a contact",
            options.timeout_secs,
            fleet.linked_leads().await?
        );
    };

    let source = fleet.settings.hubspot.source_system_value.clone();
    let reader = control.clone();
    let records = tokio::task::spawn_blocking(move || reader.contacts(PORTAL)).await??;
    let tagged = records
        .iter()
        .filter(|c| c.properties.get("lead_source_system") == Some(&source))
        .count() as u64;
    let stats = control.stats();
    let portal = stats.portals.get(&PORTAL).cloned().unwrap_or_default();
    let texts = fleet::metrics_of(workers).await?;
    Ok(PlatformFigures {
        replicas: workers.len(),
        leads: n,
        tagged_contacts: tagged,
        linked_leads: fleet.linked_leads().await?,
        insert_secs: committed.duration_since(started).as_secs_f64(),
        contacts_secs: contacts_done.duration_since(committed).as_secs_f64(),
        linked_secs: linked_done.duration_since(committed).as_secs_f64(),
        calls: portal.api_calls,
        upserts: stats.calls(UPSERT),
        max_in_10s: portal.max_calls_in_10s,
        rate_limited: portal.rate_limited,
        batches: (
            metric_where(&texts, "leadsync_worker_push_batches_total", "committed"),
            metric_where(&texts, "leadsync_worker_push_batches_total", "failed"),
        ),
        limiter_wait_secs: fleet_metric(&texts, "leadsync_hubspot_limiter_wait_seconds_sum"),
    })
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

fn print_figures(f: &PlatformFigures) {
    println!(
        "leads inserted: {} (one INSERT, {:.2} s); contacts in the simulator with lead_source_system set: {}; leads linked in Postgres: {}",
        f.leads, f.insert_secs, f.tagged_contacts, f.linked_leads
    );
    println!(
        "HubSpot calls: {} ({} batch upserts) vs ceil({}/100) = {}: {:.2}x; max in any 10 s: {}; 429s: {}",
        f.calls,
        f.upserts,
        f.leads,
        f.minimum_calls(),
        f.calls as f64 / f.minimum_calls() as f64,
        f.max_in_10s,
        f.rate_limited
    );
    println!(
        "insert commit -> last contact in the simulator: {:.2} s; -> last lead linked in Postgres: {:.2} s",
        f.contacts_secs, f.linked_secs
    );
    println!(
        "workers: {:.0} push batches committed, {:.0} failed; {:.1} s waited for rate-limit permits in all",
        f.batches.0, f.batches.1, f.limiter_wait_secs
    );
    let all_there = f.tagged_contacts == f.leads;
    println!(
        "{}: every lead is a contact with lead_source_system set ({} of {})",
        verdict(all_there),
        f.tagged_contacts,
        f.leads
    );
    println!(
        "{}: HubSpot calls {} <= {}",
        verdict(f.calls <= f.target_calls()),
        f.calls,
        f.target_calls()
    );
    println!(
        "{}: insert commit -> last contact {:.2} s <= {TARGET_SECS:.0} s",
        verdict(f.contacts_secs <= TARGET_SECS),
        f.contacts_secs
    );
    println!(
        "{}: 429s {} = 0",
        verdict(f.rate_limited == 0),
        f.rate_limited
    );
}

/// Samples taken every 500 ms while a run goes on, for diagnosis:
/// contacts in the simulator, HubSpot calls and 429s.
struct Timeline(Sampler<(Instant, u64, u64, u64)>);

impl Timeline {
    fn start(control: leadsync_hubspot_sim::Control) -> Self {
        Self(Sampler::start(move || {
            let stats = control.stats();
            let portal = stats.portals.get(&PORTAL).cloned().unwrap_or_default();
            std::future::ready((
                Instant::now(),
                portal.contacts,
                portal.api_calls,
                portal.rate_limited,
            ))
        }))
    }

    async fn stop_and_print(self, committed: Instant) {
        let Some(samples) = self.0.stop().await else {
            return;
        };
        println!("timeline (s since the insert committed: contacts, HubSpot calls, 429s):");
        for (at, contacts, calls, limited) in samples {
            let secs = at.saturating_duration_since(committed).as_secs_f64()
                - committed.saturating_duration_since(at).as_secs_f64();
            println!("  {secs:6.1}  {contacts:6}  {calls:4}  {limited:3}");
        }
    }
}
