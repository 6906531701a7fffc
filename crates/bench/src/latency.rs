//! `leadsync-bench latency`: the last two rows of design.md §5.
//!
//! **One edit, idle system.** The simulator, the ingester and one worker
//! replica (inbound webhooks and the outbox push both) run as a [`Fleet`].
//! A CRM user creates a few contacts in the simulator; once each has its
//! lead, the command makes single edits one at a time, alternating:
//!
//! - a CRM user edits a contact's `jobtitle` in the simulator (its control
//!   API, so that it queues and delivers the webhook as HubSpot would); the
//!   clock runs from the edit until the lead row in Postgres holds the value;
//! - the platform changes a lead's `company` with a plain SQL `UPDATE` (the
//!   outbox trigger records it); the clock runs from the commit until the
//!   contact in the simulator holds the value.
//!
//! Both sides are polled every `--poll-ms` (5 ms). After each edit the
//! command waits `--pause-ms`, then until the simulator has nothing left to
//! deliver, every delivered event is processed and the outbox is relayed:
//! each edit meets an idle system (the webhook HubSpot sends back for the
//! worker's own write is processed between edits, not during the next one).
//! The first edit each way is a warm-up, printed but not counted.
//!
//! **Memory.** Everything above shares one process, so the second part runs
//! the real release binaries `leadsync-ingester` and `leadsync-worker`
//! (next to this one) as child processes, configured through
//! `LEADSYNC__SECTION__KEY` variables with the fleet's throw-away database,
//! Redis prefix and simulator, and drives the loads of the other benchmarks
//! through them: signed batches of 100 events over 2 connections (a bulk
//! import's 6 events per contact, which the worker drains at the quota),
//! single-event requests over 64 connections, and a bulk insert of new
//! leads that the worker pushes. `/proc/PID/status` of each child is sampled
//! every 500 ms (`VmRSS`) and read after each phase (`VmHWM`, the kernel's
//! peak); the peaks are compared with the targets. The children are killed
//! at the end, also on error.
//!
//! Nothing here asserts a time or a size; the run fails if an edit never
//! arrives, an event is refused or lost, or a child dies.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use leadsync_hubspot_sim::{AppConfig, Control, ImportRequest, SubscriptionSpec, UserEdit};
use secrecy::ExposeSecret as _;
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;
use uuid::Uuid;

use crate::fleet::{self, ExpectedLeads, Fleet, FleetConfig, PORTAL, Replica, Sampler, metric_sum};
use crate::ingest::{now_ms, signed_post};
use crate::loadgen;
use crate::stats::{Percentiles, ms};

/// Seconds from an edit to the other side (design.md §5), both ways.
const TARGET_SECS: f64 = 1.5;
/// Peak resident set sizes (design.md §5), in MiB.
const TARGET_INGESTER_MIB: f64 = 30.0;
const TARGET_WORKER_MIB: f64 = 60.0;
/// Events per contact of the memory part's webhook load: a creation and
/// five property changes, as in the import scenario.
const CHANGED: [&str; 5] = ["firstname", "lastname", "phone", "company", "jobtitle"];
const EVENTS_PER_REQUEST: usize = 100;
/// Batch requests signed at once, so that no v3 signature grows stale.
const SIGNED_AHEAD: usize = 50;
/// Contacts the single-event requests name, in turn.
const SINGLE_EVENT_CONTACTS: usize = 100;
/// The URL the children's ingester believes HubSpot calls (what v3 covers).
const CHILD_PUBLIC_BASE: &str = "https://hooks.leadsync.bench";
const INGESTER_BIN: &str = "leadsync-ingester";
const WORKER_BIN: &str = "leadsync-worker";
const BATCH_READ: &str = "POST /crm/v3/objects/contacts/batch/read";
const BATCH_UPDATE: &str = "POST /crm/v3/objects/contacts/batch/update";

/// Which parts run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Single edits, then memory.
    All,
    /// Single edits only.
    Edits,
    /// Memory of the ingester and worker binaries only.
    Memory,
}

/// Flags of `leadsync-bench latency`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Which parts to run.
    #[arg(long, value_enum, default_value = "all")]
    pub part: Part,
    /// Measured single edits, alternating HubSpot → lead and lead → HubSpot.
    #[arg(long, default_value_t = 100)]
    pub edits: u32,
    /// Contacts created in HubSpot (and linked) that the edits go to in turn.
    #[arg(long, default_value_t = 10)]
    pub contacts: u32,
    /// How often each side is polled for the edited value, in ms.
    #[arg(long, default_value_t = 5)]
    pub poll_ms: u64,
    /// Pause after each edit before the system is checked for idleness, in ms.
    #[arg(long, default_value_t = 300)]
    pub pause_ms: u64,
    /// The portal's quota in calls per 10 s, in the simulator and in the
    /// workers' settings (HubSpot free/starter: 100).
    #[arg(long, default_value_t = 100)]
    pub quota: u32,
    /// Memory part: contacts imported in HubSpot; 6 events each are posted.
    #[arg(long, default_value_t = 10_000)]
    pub memory_contacts: u32,
    /// Memory part: connections posting the batches of 100 events.
    #[arg(long, default_value_t = 2)]
    pub batch_connections: usize,
    /// Memory part: single-event requests.
    #[arg(long, default_value_t = 50_000)]
    pub single_requests: usize,
    /// Memory part: connections posting single events.
    #[arg(long, default_value_t = 64)]
    pub single_connections: usize,
    /// Memory part: new leads inserted on the platform in one statement.
    #[arg(long, default_value_t = 10_000)]
    pub memory_leads: u32,
    /// Memory part: log filter of the child processes (production: info).
    #[arg(long, default_value = "info")]
    pub child_log_filter: String,
    /// Give up (and fail) when an edit or a phase takes longer, in seconds
    /// (a child process gets 30 s to start).
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Logs, extra settings (in-process components only) and Redis of the fleet.
    #[command(flatten)]
    pub fleet: fleet::FleetArgs,
}

impl Options {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// Runs the selected parts and prints their figures.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(options.edits >= 2, "--edits must be at least 2");
    anyhow::ensure!(options.contacts > 0, "--contacts must be at least 1");
    anyhow::ensure!(options.poll_ms > 0, "--poll-ms must be at least 1");
    // Found first: a missing binary fails the run before anything is measured.
    let binaries = match options.part {
        Part::All | Part::Memory => Some(Binaries::next_to_this_one()?),
        Part::Edits => None,
    };
    let (_telemetry, rt, cores) = fleet::bench_runtime(&options.fleet.log_filter)?;
    if options.part != Part::Memory {
        println!(
            "leadsync latency benchmark: {cores} cores; {} single edits, alternating HubSpot -> lead and lead -> HubSpot, one at a time on an idle system; {} linked contacts; 1 worker replica (inbound and outbound); quota {} calls per 10 s",
            options.edits, options.contacts, options.quota
        );
        let figures = rt.block_on(edits_once(options))?;
        print_edits(&figures);
    }
    if let Some(binaries) = binaries {
        println!(
            "leadsync memory benchmark: {cores} cores; {} and {} run as child processes ({})",
            INGESTER_BIN,
            WORKER_BIN,
            binaries.dir.display()
        );
        let figures = rt.block_on(memory_once(options, &binaries))?;
        print_memory(&figures);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 1: single edits.
// ---------------------------------------------------------------------------

/// What the edits part measured.
#[derive(Debug, Clone)]
struct EditFigures {
    /// The simulator's delivery: most events per POST.
    max_batch: usize,
    /// Whether any delivery fault is configured.
    faults: bool,
    /// The worker's knobs that set an idle edit's latency, in ms.
    batch_window_ms: u64,
    push_window_ms: u64,
    poll_interval_ms: u64,
    /// The warm-up edit each way, in µs.
    warmup: (u64, u64),
    /// HubSpot edit → lead row, in µs.
    inbound_us: Vec<u64>,
    /// Lead commit → contact in the simulator, in µs.
    outbound_us: Vec<u64>,
    /// During the measured edits: HubSpot calls, batch reads, batch updates,
    /// most in any rolling 10 s, 429s.
    calls: u64,
    batch_reads: u64,
    batch_updates: u64,
    max_in_10s: u64,
    rate_limited: u64,
    /// Webhook POSTs and events delivered, and failed POSTs.
    deliveries: (u64, u64, u64),
    /// Worker means over the measured edits, in seconds: processing of an
    /// inbound batch, and of a push batch, after their windows closed.
    inbound_batch_secs: f64,
    push_batch_secs: f64,
    /// Inbound events the worker skipped as its own echo.
    echoes: f64,
    /// Seconds waited for rate-limit permits.
    limiter_wait_secs: f64,
    dead_letters: i64,
}

async fn edits_once(options: &Options) -> anyhow::Result<EditFigures> {
    let config = FleetConfig {
        sim_rate_limit: fleet::quota_limit(options.quota),
        deliver_webhooks: true,
        subscriptions: std::iter::once(SubscriptionSpec::new("contact.creation"))
            // The properties of the default field mapping.
            .chain(
                leadsync_domain::FieldMapping::default()
                    .properties()
                    .into_iter()
                    .map(SubscriptionSpec::property_change),
            )
            .collect(),
        quota: options.quota,
        redis_url: options.fleet.redis_url.clone(),
        extra_settings: options.fleet.settings.clone(),
        seed: 13,
    };
    Fleet::run(&config, async |fleet| {
        fleet
            .with_replicas(1, async |workers| {
                measure_edits(fleet, workers, options).await
            })
            .await
    })
    .await
}

/// A contact and its lead.
#[derive(Debug, Clone, Copy)]
struct Linked {
    contact: u64,
    lead: Uuid,
}

async fn measure_edits(
    fleet: &Fleet,
    workers: &[Replica],
    options: &Options,
) -> anyhow::Result<EditFigures> {
    let control = fleet.sim.control().clone();
    let pool = fleet.db.store.pool();
    let timeout = options.timeout();
    let linked = create_linked_contacts(fleet, &control, options.contacts, timeout).await?;
    let mut idle = Idle::default();
    idle.wait(fleet, &control, Duration::ZERO, timeout).await?;

    let poll = Duration::from_millis(options.poll_ms);
    let pause = Duration::from_millis(options.pause_ms);
    let edit = async |i: u32, link: Linked| -> anyhow::Result<u64> {
        let took = if i.is_multiple_of(2) {
            hubspot_edit(fleet, &control, link, i, poll, timeout).await?
        } else {
            platform_edit(pool, &control, link, i, poll, timeout).await?
        };
        Ok(u64::try_from(took.as_micros()).unwrap_or(u64::MAX))
    };
    // The first edit each way: connections, prepared statements and the
    // outbound consumer's first fetch are warm afterwards.
    let warm_in = edit(0, linked[0]).await?;
    idle.wait(fleet, &control, pause, timeout).await?;
    let warm_out = edit(1, linked[1 % linked.len()]).await?;
    idle.wait(fleet, &control, pause, timeout).await?;

    control.reset_stats();
    idle.restart(fleet).await?;
    let before = fleet::metrics_of(workers).await?;
    let mut inbound_us = Vec::new();
    let mut outbound_us = Vec::new();
    for i in 0..options.edits {
        let link = linked[i as usize % linked.len()];
        // Counted from 2 so that the values differ from the warm-up's.
        let took = edit(i + 2, link).await?;
        if i.is_multiple_of(2) {
            inbound_us.push(took);
        } else {
            outbound_us.push(took);
        }
        idle.wait(fleet, &control, pause, timeout).await?;
    }
    let after = fleet::metrics_of(workers).await?;

    let stats = control.stats();
    let portal = stats.portals.get(&PORTAL).cloned().unwrap_or_default();
    let delta = |name: &str| {
        let sum = |texts: &[String]| texts.iter().map(|t| metric_sum(t, name)).sum::<f64>();
        sum(&after) - sum(&before)
    };
    let mean =
        |name: &str| delta(&format!("{name}_sum")) / delta(&format!("{name}_count")).max(1.0);
    let echoes = after
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| l.starts_with("leadsync_worker_events_skipped_total") && l.contains("\"echo\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum::<f64>();
    let worker = &fleet.settings.worker;
    let delivery = control.delivery_config();
    Ok(EditFigures {
        max_batch: delivery.max_batch,
        faults: control.faults() != leadsync_hubspot_sim::FaultConfig::default(),
        batch_window_ms: worker.batch_window_ms,
        push_window_ms: worker.push_batch_window_ms,
        poll_interval_ms: worker.poll_interval_ms,
        warmup: (warm_in, warm_out),
        inbound_us,
        outbound_us,
        calls: portal.api_calls,
        batch_reads: stats.calls(BATCH_READ),
        batch_updates: stats.calls(BATCH_UPDATE),
        max_in_10s: portal.max_calls_in_10s,
        rate_limited: portal.rate_limited,
        deliveries: (
            stats.delivery.requests,
            stats.delivery.events_delivered,
            stats.delivery.failed_requests,
        ),
        inbound_batch_secs: mean("leadsync_worker_batch_seconds"),
        push_batch_secs: mean("leadsync_worker_push_batch_seconds"),
        echoes,
        limiter_wait_secs: delta("leadsync_hubspot_limiter_wait_seconds_sum"),
        dead_letters: fleet.dead_letters().await?,
    })
}

/// A CRM user creates `n` contacts; waits until each has its lead with
/// HubSpot's values.
async fn create_linked_contacts(
    fleet: &Fleet,
    control: &Control,
    n: u32,
    timeout: Duration,
) -> anyhow::Result<Vec<Linked>> {
    let mut records = Vec::with_capacity(n as usize);
    for i in 0..n {
        records.push(control.create_contact(
            PORTAL,
            &UserEdit::new([
                ("email", format!("edit{i}@latency.example.com")),
                ("firstname", format!("First{i}")),
                ("lastname", format!("Last{i}")),
                ("company", format!("Company {i}")),
                ("jobtitle", "Engineer".to_owned()),
            ]),
        )?);
    }
    let expected = ExpectedLeads::of(&records);
    let linked = fleet::poll(Duration::from_millis(20), timeout, async || {
        Ok((fleet.linked_leads().await? >= i64::from(n)
            && fleet.lead_mismatches(&expected).await? == 0)
            .then_some(()))
    })
    .await?;
    anyhow::ensure!(
        linked.is_some(),
        "FAIL: {} s after creating {n} contacts in HubSpot, {} leads are linked",
        timeout.as_secs(),
        fleet.linked_leads().await?
    );
    let leads: HashMap<i64, Uuid> = sqlx::query_as::<_, (i64, Uuid)>(
        "SELECT crm_id, id FROM leads WHERE integration_id = $1 AND crm_id IS NOT NULL",
    )
    .bind(fleet.integration)
    .fetch_all(fleet.db.store.pool())
    .await?
    .into_iter()
    .collect();
    records
        .iter()
        .map(|r| {
            let lead = i64::try_from(r.id)
                .ok()
                .and_then(|id| leads.get(&id).copied())
                .with_context(|| format!("no lead for contact {}", r.id))?;
            Ok(Linked {
                contact: r.id,
                lead,
            })
        })
        .collect()
}

/// A CRM user sets the contact's job title; returns the time until the lead
/// row holds it.
async fn hubspot_edit(
    fleet: &Fleet,
    control: &Control,
    link: Linked,
    i: u32,
    poll: Duration,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let value = format!("Edited title {i}");
    let edited = Instant::now();
    control.update_contact(
        PORTAL,
        link.contact,
        &UserEdit::new([("jobtitle", value.as_str())]),
    )?;
    let arrived = fleet::poll(poll, timeout, async || {
        let title: Option<String> = sqlx::query_scalar("SELECT job_title FROM leads WHERE id = $1")
            .bind(link.lead)
            .fetch_one(fleet.db.store.pool())
            .await?;
        Ok((title.as_deref() == Some(value.as_str())).then(Instant::now))
    })
    .await?
    .with_context(|| {
        format!(
            "FAIL: a HubSpot edit did not reach its lead within {} s",
            timeout.as_secs()
        )
    })?;
    Ok(arrived.duration_since(edited))
}

/// The platform sets the lead's company; returns the time from the commit
/// until the contact in the simulator holds it.
async fn platform_edit(
    pool: &sqlx::PgPool,
    control: &Control,
    link: Linked,
    i: u32,
    poll: Duration,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let value = format!("Edited company {i}");
    let updated = sqlx::query("UPDATE leads SET company = $1 WHERE id = $2")
        .bind(&value)
        .bind(link.lead)
        .execute(pool)
        .await?;
    // One statement in its own transaction: committed on return.
    let committed = Instant::now();
    anyhow::ensure!(updated.rows_affected() == 1, "the lead to edit is gone");
    let arrived = fleet::poll(poll, timeout, async || {
        let contact = control.contact(PORTAL, link.contact)?;
        Ok((contact.properties.get("company") == Some(&value)).then(Instant::now))
    })
    .await?
    .with_context(|| {
        format!(
            "FAIL: a platform edit did not reach HubSpot within {} s",
            timeout.as_secs()
        )
    })?;
    Ok(arrived.duration_since(committed))
}

/// Waits for an idle system: nothing left to deliver, every delivered event
/// processed, the outbox relayed.
#[derive(Debug, Default)]
struct Idle {
    /// Events processed when the simulator's counters were last reset.
    processed_base: i64,
}

impl Idle {
    /// After `Control::reset_stats`: delivered events count from zero again.
    async fn restart(&mut self, fleet: &Fleet) -> anyhow::Result<()> {
        self.processed_base = fleet.processed_events().await?;
        Ok(())
    }

    async fn wait(
        &self,
        fleet: &Fleet,
        control: &Control,
        pause: Duration,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        // The webhook of the worker's own write may be queued a moment after
        // the value is visible: the pause lets it in before idleness is judged.
        tokio::time::sleep(pause).await;
        let idle = fleet::poll(Duration::from_millis(5), timeout, async || {
            if !control.delivery_idle() {
                return Ok(None);
            }
            let delivered = i64::try_from(control.stats().delivery.events_delivered)?;
            let processed = fleet.processed_events().await? - self.processed_base;
            let unrelayed: i64 =
                sqlx::query_scalar("SELECT count(*) FROM lead_changes WHERE relayed_at IS NULL")
                    .fetch_one(fleet.db.store.pool())
                    .await?;
            Ok((processed >= delivered && unrelayed == 0).then_some(()))
        })
        .await?;
        idle.with_context(|| format!("the system was still busy after {} s", timeout.as_secs()))
    }
}

/// p50, p95, p99 and max of `samples` (µs); nearest rank, as [`Percentiles`].
fn summary(samples: &mut [u64]) -> (Percentiles, u64) {
    let p = Percentiles::of(samples);
    let p95 = match samples.len() {
        0 => 0,
        n => samples[((n as f64 - 1.0) * 0.95).round() as usize],
    };
    (p, p95)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

fn print_edits(f: &EditFigures) {
    println!(
        "simulator webhook delivery: each change is POSTed as soon as it is queued, with no batching window or delay (a POST carries what is pending, up to {} events; faults {}); HubSpot documents no delivery delay, so a real account's comes on top of these figures",
        f.max_batch,
        if f.faults { "ON" } else { "off" }
    );
    println!(
        "worker settings that set the pace: inbound batch window {} ms, push batch window {} ms, queue poll interval {} ms (the relay wakes on the outbox's NOTIFY)",
        f.batch_window_ms, f.push_window_ms, f.poll_interval_ms
    );
    println!(
        "warm-up (not counted): HubSpot edit -> lead row {}; lead edit -> HubSpot {}",
        ms(f.warmup.0),
        ms(f.warmup.1)
    );
    let mut inbound = f.inbound_us.clone();
    let mut outbound = f.outbound_us.clone();
    let (pin, in95) = summary(&mut inbound);
    let (pout, out95) = summary(&mut outbound);
    for (label, n, p, p95) in [
        ("HubSpot edit -> lead row  ", inbound.len(), pin, in95),
        ("lead edit -> HubSpot      ", outbound.len(), pout, out95),
    ] {
        println!(
            "{label}{n:4} edits: p50 {}, p95 {}, p99 {}, max {}",
            ms(p.p50),
            ms(p95),
            ms(p.p99),
            ms(p.max)
        );
    }
    println!(
        "worker, mean per batch after its window closed: inbound {:.1} ms (batch read + transaction), push {:.1} ms (batch read + batch update + bookkeeping); {:.0} webhooks of its own writes skipped as echo",
        f.inbound_batch_secs * 1000.0,
        f.push_batch_secs * 1000.0,
        f.echoes
    );
    println!(
        "during the measured edits: {} webhook POSTs carrying {} events ({} failed); HubSpot calls {} ({} batch reads, {} batch updates for {} lead edits); max in any 10 s {}; 429s {}; {:.2} s waited for rate-limit permits; dead letters {}",
        f.deliveries.0,
        f.deliveries.1,
        f.deliveries.2,
        f.calls,
        f.batch_reads,
        f.batch_updates,
        f.outbound_us.len(),
        f.max_in_10s,
        f.rate_limited,
        f.limiter_wait_secs,
        f.dead_letters
    );
    for (label, p) in [
        ("HubSpot edit -> lead row", pin),
        ("lead edit -> HubSpot", pout),
    ] {
        let secs = p.p99 as f64 / 1e6;
        println!(
            "{}: {label} p99 {secs:.3} s <= {TARGET_SECS} s",
            verdict(secs <= TARGET_SECS)
        );
    }
}

// ---------------------------------------------------------------------------
// Part 2: memory of the real binaries.
// ---------------------------------------------------------------------------

/// The release binaries of the ingester and the worker.
struct Binaries {
    dir: PathBuf,
    ingester: PathBuf,
    worker: PathBuf,
}

impl Binaries {
    /// Finds them in this executable's directory.
    fn next_to_this_one() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating leadsync-bench")?;
        let dir = exe
            .parent()
            .context("leadsync-bench has no directory")?
            .to_path_buf();
        let find = |name: &str| {
            let path = dir.join(name);
            anyhow::ensure!(
                path.is_file(),
                "{} is missing; the memory part runs the real binaries next to leadsync-bench: build them with `cargo build --release -p leadsync-ingester -p leadsync-worker` (or run with --part edits)",
                path.display()
            );
            Ok(path)
        };
        Ok(Self {
            ingester: find(INGESTER_BIN)?,
            worker: find(WORKER_BIN)?,
            dir,
        })
    }
}

/// Memory figures of one process, from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss: u64,
    hwm: u64,
    anon: u64,
    file: u64,
    threads: u64,
}

impl Mem {
    fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status.lines().find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
        };
        Some(Self {
            rss: field("VmRSS")?,
            hwm: field("VmHWM")?,
            anon: field("RssAnon").unwrap_or(0),
            file: field("RssFile").unwrap_or(0),
            threads: field("Threads").unwrap_or(0),
        })
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A child process whose standard output (its JSON log) is read line by
/// line: the port it reports is taken from it, the last lines are kept for
/// an error message. Killed when dropped.
struct ChildProcess {
    name: &'static str,
    child: tokio::process::Child,
    pid: u32,
    port: u16,
    tail: Arc<Mutex<VecDeque<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl ChildProcess {
    /// Starts `binary` with exactly `env`, and waits until it logs a line
    /// whose message starts with `ready_message` and that carries its port.
    async fn spawn(
        name: &'static str,
        binary: &Path,
        env: &[(&str, String)],
        ready_message: &'static str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(binary)
            // Only the run's own configuration: nothing inherited
            // (LEADSYNC_CONFIG, LEADSYNC__*) may change it.
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the child has no pid")?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn(read_log(stdout, ready_message, port_tx, Arc::clone(&tail)));
        let mut process = Self {
            name,
            child,
            pid,
            port: 0,
            tail,
            reader,
        };
        match tokio::time::timeout(timeout, port_rx).await {
            Ok(Ok(port)) => {
                process.port = port;
                Ok(process)
            }
            Ok(Err(_)) => {
                let status = process.child.wait().await?;
                Err(process.failure(&format!("exited at start-up ({status})")))
            }
            Err(_) => Err(process.failure(&format!(
                "did not report {ready_message:?} within {} s",
                timeout.as_secs()
            ))),
        }
    }

    fn address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn mem(&self) -> anyhow::Result<Mem> {
        Mem::of(self.pid).with_context(|| format!("{} (pid {}) is gone", self.name, self.pid))
    }

    /// An error naming the child, with its last log lines.
    fn failure(&self, what: &str) -> anyhow::Error {
        let tail = self
            .tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        anyhow::anyhow!("{} {what}; its last log lines:\n{tail}", self.name)
    }

    /// Fails if the child has exited.
    fn ensure_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(self.failure(&format!("died ({status})"))),
        }
    }

    /// Kills it (SIGKILL) and reaps it.
    async fn kill(mut self) {
        if let Err(e) = self.child.kill().await {
            eprintln!("killing {} (pid {}): {e}", self.name, self.pid);
        }
        self.reader.abort();
    }
}

/// Reads a child's log: sends the port of the first line whose message
/// starts with `ready_message`, keeps the last lines, discards the rest
/// (an unread pipe would block the child).
async fn read_log(
    stdout: tokio::process::ChildStdout,
    ready_message: &str,
    port: tokio::sync::oneshot::Sender<u16>,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut port = Some(port);
    while let Ok(Some(line)) = lines.next_line().await {
        if port.is_some() {
            let reported = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .filter(|v| {
                    v["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(ready_message))
                })
                .and_then(|v| u16::try_from(v["port"].as_u64()?).ok());
            if let Some(p) = reported
                && let Some(tx) = port.take()
            {
                let _ = tx.send(p);
            }
        }
        if let Ok(mut t) = tail.lock() {
            if t.len() == 20 {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

/// The environment of both children: one deployment's configuration, the
/// fleet's database, Redis prefix, simulator, token key and quota.
fn child_env(fleet: &Fleet, log_filter: &str) -> Vec<(&'static str, String)> {
    let s = &fleet.settings;
    vec![
        ("LEADSYNC__APPLICATION__HOST", "127.0.0.1".to_owned()),
        ("LEADSYNC__APPLICATION__PORT", "0".to_owned()),
        (
            "LEADSYNC__APPLICATION__PUBLIC_BASE_URL",
            CHILD_PUBLIC_BASE.to_owned(),
        ),
        (
            "LEADSYNC__HUBSPOT__CLIENT_SECRETS",
            format!("[\"{}\"]", fleet.client_secret),
        ),
        (
            "LEADSYNC__HUBSPOT__API_BASE_URL",
            s.hubspot.api_base_url.clone(),
        ),
        (
            "LEADSYNC__HUBSPOT__TOKEN_ENCRYPTION_KEY",
            s.hubspot.token_encryption_key.expose_secret().to_owned(),
        ),
        (
            "LEADSYNC__HUBSPOT__RATE_LIMIT_MAX",
            s.hubspot.rate_limit_max.to_string(),
        ),
        (
            "LEADSYNC__HUBSPOT__RATE_LIMIT_WINDOW_MS",
            s.hubspot.rate_limit_window_ms.to_string(),
        ),
        (
            "LEADSYNC__REDIS__URL",
            s.redis.url.expose_secret().to_owned(),
        ),
        ("LEADSYNC__REDIS__KEY_PREFIX", s.redis.key_prefix.clone()),
        (
            "LEADSYNC__DATABASE__URL",
            s.database.url.expose_secret().to_owned(),
        ),
        ("LEADSYNC__WORKER__METRICS_HOST", "127.0.0.1".to_owned()),
        ("LEADSYNC__WORKER__METRICS_PORT", "0".to_owned()),
        ("LEADSYNC__TELEMETRY__LOG_FORMAT", "json".to_owned()),
        ("LEADSYNC__TELEMETRY__LOG_FILTER", log_filter.to_owned()),
    ]
}

/// One phase of the memory part.
#[derive(Debug, Clone)]
struct Phase {
    what: String,
    secs: f64,
    /// Highest `VmRSS` sampled during the phase: ingester, worker.
    sampled: (u64, u64),
    /// At the phase's end.
    end: (Mem, Mem),
}

/// What the memory part measured.
#[derive(Debug, Clone)]
struct MemoryFigures {
    pids: (u32, u32),
    log_filter: String,
    idle: (Mem, Mem),
    phases: Vec<Phase>,
    /// At the end, before the kill.
    last: (Mem, Mem),
    calls: u64,
    max_in_10s: u64,
    rate_limited: u64,
    dead_letters: i64,
}

impl MemoryFigures {
    /// Peak RSS of the ingester and the worker, in KiB: the higher of the
    /// kernel's `VmHWM` and the highest `VmRSS` sampled. Both come from
    /// counters the kernel folds in lazily, so either can be the higher by a
    /// few hundred KiB.
    fn peaks(&self) -> (u64, u64) {
        self.phases.iter().fold(
            (
                self.last.0.hwm.max(self.last.0.rss),
                self.last.1.hwm.max(self.last.1.rss),
            ),
            |(i, w), p| {
                (
                    i.max(p.sampled.0).max(p.end.0.hwm),
                    w.max(p.sampled.1).max(p.end.1.hwm),
                )
            },
        )
    }
}

async fn memory_once(options: &Options, binaries: &Binaries) -> anyhow::Result<MemoryFigures> {
    // The load reaches the child ingester from the load generator; the
    // simulator's own webhooks are not wanted.
    let config = FleetConfig::without_webhooks(options.quota, &options.fleet, 17);
    Fleet::run(&config, async |fleet| {
        let env = child_env(fleet, &options.child_log_filter);
        let timeout = Duration::from_secs(30);
        let ingester = ChildProcess::spawn(
            INGESTER_BIN,
            &binaries.ingester,
            &env,
            "Ingester listening",
            timeout,
        )
        .await?;
        let worker = match ChildProcess::spawn(
            WORKER_BIN,
            &binaries.worker,
            &env,
            "Worker metrics listening",
            timeout,
        )
        .await
        {
            Ok(worker) => worker,
            Err(e) => {
                ingester.kill().await;
                return Err(e);
            }
        };
        let mut children = (ingester, worker);
        let result = memory_load(fleet, &mut children, options).await;
        let (ingester, worker) = children;
        ingester.kill().await;
        worker.kill().await;
        result
    })
    .await
}

async fn memory_load(
    fleet: &Fleet,
    children: &mut (ChildProcess, ChildProcess),
    options: &Options,
) -> anyhow::Result<MemoryFigures> {
    let timeout = options.timeout();
    let ready = fleet::poll(
        Duration::from_millis(50),
        Duration::from_secs(30),
        async || {
            let body = loadgen::get(children.1.address(), "/readyz")
                .await
                .unwrap_or_default();
            Ok(body.contains("\"status\":\"ready\"").then_some(()))
        },
    )
    .await?;
    if ready.is_none() {
        children.1.ensure_alive()?;
        return Err(children.1.failure("was not ready within 30 s"));
    }
    let control = fleet.sim.control().clone();
    let count = options.memory_contacts;
    let contacts: Vec<u64> = tokio::task::spawn_blocking(move || {
        control.import_contacts(
            PORTAL,
            &ImportRequest {
                count,
                ..ImportRequest::default()
            },
        )
    })
    .await??
    .ids;
    fleet.ensure_source_property().await?;
    fleet.sim.control().reset_stats();
    let idle = (children.0.mem()?, children.1.mem()?);
    let mut phases = Vec::new();
    let ingester_addr = children.0.address();

    // 1. A bulk import's webhooks, in signed batches of 100.
    let bodies = batch_bodies(&contacts);
    let events = contacts.len() * (1 + CHANGED.len());
    let started = Instant::now();
    let sampler = rss_sampler(children);
    let mut refused = 0;
    for slice in bodies.chunks(SIGNED_AHEAD) {
        let requests = sign(slice, ingester_addr, &fleet.client_secret);
        let report = loadgen::run(
            ingester_addr,
            Arc::new(requests),
            options.batch_connections.max(1),
        )
        .await?;
        refused += report.non_200;
    }
    let posted = started.elapsed();
    anyhow::ensure!(
        refused == 0,
        "FAIL: the ingester refused {refused} of {} batch requests",
        bodies.len()
    );
    wait_drained(
        fleet,
        children,
        Drained::Events,
        i64::try_from(events)?,
        timeout,
    )
    .await?;
    let linked = i64::try_from(contacts.len())?;
    wait_drained(fleet, children, Drained::Linked, linked, timeout).await?;
    phases.push(phase_end(
        format!(
            "webhook batches: {events} events ({} contacts x {}) in {} signed POSTs of {EVENTS_PER_REQUEST} over {} connections in {:.2} s; drained into {} leads",
            contacts.len(),
            1 + CHANGED.len(),
            bodies.len(),
            options.batch_connections.max(1),
            posted.as_secs_f64(),
            contacts.len()
        ),
        started,
        sampler,
        children,
    )
    .await?);

    // 2. Single-event requests, many connections.
    let started = Instant::now();
    let sampler = rss_sampler(children);
    let singles = single_bodies(&contacts, options.single_requests, events);
    let requests = sign(&singles, ingester_addr, &fleet.client_secret);
    let report = loadgen::run(
        ingester_addr,
        Arc::new(requests),
        options.single_connections.max(1),
    )
    .await?;
    let posted = started.elapsed();
    anyhow::ensure!(
        report.non_200 == 0,
        "FAIL: the ingester refused {} of {} single-event requests",
        report.non_200,
        report.requests
    );
    wait_drained(
        fleet,
        children,
        Drained::Events,
        i64::try_from(events + singles.len())?,
        timeout,
    )
    .await?;
    phases.push(phase_end(
        format!(
            "single events: {} signed POSTs of 1 event over {} connections in {:.2} s ({:.0} req/s); drained",
            singles.len(),
            options.single_connections.max(1),
            posted.as_secs_f64(),
            crate::stats::rate(report.requests, posted)
        ),
        started,
        sampler,
        children,
    )
    .await?);

    // 3. The platform's bulk insert, pushed by the worker.
    let started = Instant::now();
    let sampler = rss_sampler(children);
    let inserted = sqlx::query(
        "INSERT INTO leads (integration_id, email, first_name, last_name, company, job_title) \
         SELECT $1, 'memory' || g || '@platform.example.com', 'First' || g, 'Last' || g, \
                'Company ' || (g % 500), 'Engineer' \
         FROM generate_series(1, $2) AS g",
    )
    .bind(fleet.integration)
    .bind(i32::try_from(options.memory_leads)?)
    .execute(fleet.db.store.pool())
    .await
    .context("inserting the leads")?
    .rows_affected();
    wait_drained(
        fleet,
        children,
        Drained::Linked,
        linked + i64::try_from(inserted)?,
        timeout,
    )
    .await?;
    phases.push(
        phase_end(
            format!("platform bulk: {inserted} new leads in one INSERT, pushed as contacts"),
            started,
            sampler,
            children,
        )
        .await?,
    );

    let last = (children.0.mem()?, children.1.mem()?);
    let stats = fleet.sim.control().stats();
    let portal = stats.portals.get(&PORTAL).cloned().unwrap_or_default();
    Ok(MemoryFigures {
        pids: (children.0.pid, children.1.pid),
        log_filter: options.child_log_filter.clone(),
        idle,
        phases,
        last,
        calls: portal.api_calls,
        max_in_10s: portal.max_calls_in_10s,
        rate_limited: portal.rate_limited,
        dead_letters: fleet.dead_letters().await?,
    })
}

/// Samples both children's `VmRSS` every 500 ms.
fn rss_sampler(children: &(ChildProcess, ChildProcess)) -> Sampler<(u64, u64)> {
    let (i, w) = (children.0.pid, children.1.pid);
    Sampler::start(move || {
        let rss = |pid| Mem::of(pid).map_or(0, |m| m.rss);
        std::future::ready((rss(i), rss(w)))
    })
}

async fn phase_end(
    what: String,
    started: Instant,
    sampler: Sampler<(u64, u64)>,
    children: &mut (ChildProcess, ChildProcess),
) -> anyhow::Result<Phase> {
    let secs = started.elapsed().as_secs_f64();
    let samples = sampler.stop().await.unwrap_or_default();
    let end = (children.0.mem()?, children.1.mem()?);
    let sampled = samples
        .iter()
        .fold((end.0.rss, end.1.rss), |(a, b), (i, w)| {
            (a.max(*i), b.max(*w))
        });
    Ok(Phase {
        what,
        secs,
        sampled,
        end,
    })
}

/// What the children must have done before a phase ends.
#[derive(Debug, Clone, Copy)]
enum Drained {
    /// Webhook events processed.
    Events,
    /// Leads linked to a contact.
    Linked,
}

impl Drained {
    async fn count(self, fleet: &Fleet) -> anyhow::Result<i64> {
        match self {
            Self::Events => fleet.processed_events().await,
            Self::Linked => fleet.linked_leads().await,
        }
    }
}

/// Waits until `target` of `what` are done, failing when a child dies or
/// `timeout` passes.
async fn wait_drained(
    fleet: &Fleet,
    children: &mut (ChildProcess, ChildProcess),
    what: Drained,
    target: i64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let done = fleet::poll(Duration::from_millis(100), timeout, async || {
        children.0.ensure_alive()?;
        children.1.ensure_alive()?;
        Ok((what.count(fleet).await? >= target).then_some(()))
    })
    .await?;
    anyhow::ensure!(
        done.is_some(),
        "FAIL: {} of {target} ({what:?}) after {} s ({} dead-lettered)",
        what.count(fleet).await?,
        timeout.as_secs(),
        fleet.dead_letters().await?
    );
    Ok(())
}

/// Signs `bodies` now, as HubSpot signs a delivery when it sends it.
fn sign(bodies: &[String], addr: std::net::SocketAddr, secret: &str) -> Vec<Bytes> {
    let timestamp = now_ms().to_string();
    bodies
        .iter()
        .map(|body| signed_post(addr, CHILD_PUBLIC_BASE, secret, body.as_bytes(), &timestamp))
        .collect()
}

/// One webhook event of the simulator's app about `contact`: a creation
/// when `property` is `None`, otherwise a change of it.
fn event(n: u64, contact: u64, occurred_at: i64, property: Option<&str>) -> serde_json::Value {
    let mut event = json!({
        "eventId": 3_000_000 + n,
        "portalId": PORTAL,
        "appId": AppConfig::default().app_id,
        "occurredAt": occurred_at,
        "attemptNumber": 0,
        "objectId": contact,
        "changeSource": "IMPORT",
    });
    match property {
        None => {
            event["subscriptionId"] = json!(5_100);
            event["subscriptionType"] = json!("contact.creation");
            event["changeFlag"] = json!("CREATED");
        }
        Some(property) => {
            event["subscriptionId"] = json!(5_101);
            event["subscriptionType"] = json!("contact.propertyChange");
            event["propertyName"] = json!(property);
            event["propertyValue"] = json!(format!("value {n}"));
        }
    }
    event
}

/// Bodies of 100 events: per contact a creation and five property changes,
/// contact after contact (HubSpot sends a contact's changes together).
fn batch_bodies(contacts: &[u64]) -> Vec<String> {
    let now = now_ms();
    let events: Vec<String> = contacts
        .iter()
        .flat_map(|c| {
            std::iter::once(None)
                .chain(CHANGED.iter().map(|p| Some(*p)))
                .map(move |p| (*c, p))
        })
        .enumerate()
        .map(|(n, (contact, property))| {
            let n = n as u64;
            event(n, contact, now - 600_000 + n as i64, property).to_string()
        })
        .collect();
    events
        .chunks(EVENTS_PER_REQUEST)
        .map(|chunk| format!("[{}]", chunk.join(",")))
        .collect()
}

/// `n` bodies of one job-title change each, naming the first
/// [`SINGLE_EVENT_CONTACTS`] contacts in turn; event ids follow `after`.
fn single_bodies(contacts: &[u64], n: usize, after: usize) -> Vec<String> {
    let now = now_ms();
    let named = &contacts[..contacts.len().min(SINGLE_EVENT_CONTACTS)];
    (0..n)
        .map(|k| {
            let id = (after + k) as u64;
            let contact = named[k % named.len()];
            format!(
                "[{}]",
                event(id, contact, now - 300_000 + k as i64, Some("jobtitle"))
            )
        })
        .collect()
}

fn print_memory(f: &MemoryFigures) {
    println!(
        "children: {INGESTER_BIN} pid {}, {WORKER_BIN} pid {}; configured through LEADSYNC__* variables only (JSON logs at {:?}, default settings otherwise); VmRSS sampled every 500 ms, VmHWM (the kernel's peak) read after each phase",
        f.pids.0, f.pids.1, f.log_filter
    );
    println!(
        "idle after start-up:   ingester RSS {:5.1} MiB ({} threads), worker RSS {:5.1} MiB ({} threads)",
        mib(f.idle.0.rss),
        f.idle.0.threads,
        mib(f.idle.1.rss),
        f.idle.1.threads
    );
    for p in &f.phases {
        println!("{} ({:.1} s)", p.what, p.secs);
        println!(
            "    highest sampled RSS: ingester {:5.1} MiB, worker {:5.1} MiB; peak so far (VmHWM): ingester {:5.1} MiB, worker {:5.1} MiB",
            mib(p.sampled.0),
            mib(p.sampled.1),
            mib(p.end.0.hwm),
            mib(p.end.1.hwm)
        );
    }
    for (name, m) in [("ingester", f.last.0), ("worker", f.last.1)] {
        println!(
            "at the end, {name}: RSS {:.1} MiB = {:.1} MiB anonymous (heap, stacks) + {:.1} MiB file-backed (the binary's pages); {} threads",
            mib(m.rss),
            mib(m.anon),
            mib(m.file),
            m.threads
        );
    }
    println!(
        "HubSpot calls {}; max in any 10 s {}; 429s {}; dead letters {}",
        f.calls, f.max_in_10s, f.rate_limited, f.dead_letters
    );
    let (ingester, worker) = f.peaks();
    for (name, peak, target) in [
        ("ingester", ingester, TARGET_INGESTER_MIB),
        ("worker", worker, TARGET_WORKER_MIB),
    ] {
        println!(
            "{}: {name} peak RSS {:.1} MiB <= {target:.0} MiB",
            verdict(mib(peak) <= target),
            mib(peak)
        );
    }
}
