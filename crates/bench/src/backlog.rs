//! `leadsync-bench backlog`: 100,000 events accepted by the ingester while
//! no worker runs all drain once the workers start, none lost (design.md §5;
//! apalis-redis 1.0.0 alone stalls past ~8,000 due tasks).
//!
//! The contacts exist in the simulator first (a HubSpot import, with no
//! webhook target, so the simulator queues no events of its own). Signed
//! batches of 100 events about them are posted to the real ingester with no
//! worker running; the queue must then hold every one. Worker replicas start
//! and the clock runs until Postgres has recorded every event as processed.
//! The run fails (non-zero exit) if an event is refused, missing from the
//! queue, dead-lettered or unprocessed after the timeout, or a lead is
//! missing or wrong.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use leadsync_hubspot_sim::{ContactRecord, ImportRequest, RateLimitConfig};
use leadsync_queue::QueueInspector;
use serde_json::json;

use crate::fleet::{self, ExpectedLeads, Fleet, FleetConfig, PORTAL, fleet_metric, metric_where};
use crate::ingest::{now_ms, signed_post};
use crate::loadgen;

/// Properties the `propertyChange` events name, in turn.
const PROPERTIES: [&str; 5] = ["firstname", "lastname", "phone", "company", "jobtitle"];
const EVENTS_PER_REQUEST: usize = 100;
/// Requests signed at once.
const SIGNED_AHEAD: usize = 50;

/// Flags of `leadsync-bench backlog`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Contacts in HubSpot the events are about.
    #[arg(long, default_value_t = 20_000)]
    pub contacts: u32,
    /// Events per contact: one creation, then property changes.
    #[arg(long, default_value_t = 5)]
    pub events_per_contact: usize,
    /// Worker replicas started once the backlog is queued.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// The workers' HubSpot budget in calls per 10 s. The simulator's own
    /// limit is off in this scenario; the workers still respect this one.
    #[arg(long, default_value_t = 100)]
    pub quota: u32,
    /// Connections posting the batches to the ingester.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Fail if the backlog has not drained after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
    /// Logs, extra settings and Redis of the fleet.
    #[command(flatten)]
    pub fleet: fleet::FleetArgs,
}

/// Runs the scenario and prints the figures.
pub fn run(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(options.contacts > 0, "--contacts must be at least 1");
    anyhow::ensure!(options.replicas > 0, "--replicas must be at least 1");
    anyhow::ensure!(
        options.events_per_contact > 0,
        "--events-per-contact must be at least 1"
    );
    let (_telemetry, rt, cores) = fleet::bench_runtime(&options.fleet.log_filter)?;
    println!(
        "leadsync backlog benchmark: {cores} cores; {} contacts x {} events = {} events; {} worker replica(s) with a quota of {} calls per 10 s; simulator rate limit OFF",
        options.contacts,
        options.events_per_contact,
        options.contacts as usize * options.events_per_contact,
        options.replicas,
        options.quota
    );
    rt.block_on(run_once(options))
}

async fn run_once(options: &Options) -> anyhow::Result<()> {
    let config = FleetConfig {
        sim_rate_limit: RateLimitConfig::disabled(),
        deliver_webhooks: false,
        subscriptions: Vec::new(),
        quota: options.quota,
        redis_url: options.fleet.redis_url.clone(),
        extra_settings: options.fleet.settings.clone(),
        seed: 11,
    };
    Fleet::run(&config, async |fleet| measure(fleet, options).await).await
}

async fn measure(fleet: &Fleet, options: &Options) -> anyhow::Result<()> {
    let control = fleet.sim.control().clone();
    let count = options.contacts;
    let contacts = tokio::task::spawn_blocking(move || {
        control.import_contacts(
            PORTAL,
            &ImportRequest {
                count,
                ..ImportRequest::default()
            },
        )?;
        control.contacts(PORTAL)
    })
    .await??;
    let expected = ExpectedLeads::of(&contacts);
    anyhow::ensure!(
        expected.len() == options.contacts as usize,
        "the simulator holds {} contacts, not {}",
        expected.len(),
        options.contacts
    );
    let events = contacts.len() * options.events_per_contact;

    // 1. The backlog: signed batches to the ingester, no worker running.
    let bodies = batch_bodies(&contacts, options.events_per_contact);
    let (mut posted, mut refused) = (0, 0);
    let posting = Instant::now();
    // Signed slice by slice, just before sending: on a busy machine the
    // whole backlog can take longer than a v3 signature stays valid (5 min).
    for slice in bodies.chunks(SIGNED_AHEAD) {
        let timestamp = now_ms().to_string();
        let requests: Vec<Bytes> = slice
            .iter()
            .map(|body| {
                signed_post(
                    fleet.ingester,
                    &fleet.public_base_url,
                    &fleet.client_secret,
                    body.as_bytes(),
                    &timestamp,
                )
            })
            .collect();
        let report = loadgen::run(fleet.ingester, Arc::new(requests), options.connections).await?;
        posted += report.requests;
        refused += report.non_200;
    }
    let posting = posting.elapsed();
    println!(
        "accepted  {events} events in {posted} signed POSTs of up to {EVENTS_PER_REQUEST} in {:.2} s ({:.0} events/s); non-200 answers: {refused}",
        posting.as_secs_f64(),
        crate::stats::rate(events as u64, posting),
    );
    anyhow::ensure!(
        refused == 0,
        "FAIL: the ingester refused {refused} of {posted} requests"
    );
    let mut queue = QueueInspector::connect(&fleet.settings.redis).await?;
    let (stored, waiting) = (queue.stored().await?, queue.waiting().await?);
    println!("queued    {waiting} waiting, {stored} stored (no worker running)");
    anyhow::ensure!(
        stored == events as u64 && waiting == events as u64,
        "FAIL: the queue holds {stored} events ({waiting} waiting), expected {events}"
    );

    // 2. Workers start; the clock runs until Postgres has every event.
    let started = Instant::now();
    let workers = fleet.start_replicas(options.replicas).await?;
    let ready = started.elapsed();
    let result = drain(fleet, options, events, &expected, started).await;
    let mut texts = Vec::with_capacity(workers.len());
    for w in &workers {
        texts.push(w.metrics().await.unwrap_or_default());
    }
    fleet::stop_all(workers).await;
    let drain = result?;
    let stats = fleet.sim.control().stats();
    let leads = fleet.linked_leads().await?;
    let waiting = queue.waiting().await?;
    println!(
        "drained   {events} events in {:.2} s after the workers started ({:.2} s to start {} replica(s)) = {:.0} events/s; {waiting} left waiting",
        drain.as_secs_f64(),
        ready.as_secs_f64(),
        options.replicas,
        crate::stats::rate(events as u64, drain)
    );
    println!(
        "leads     {leads} (expected {}), all with HubSpot's values; HubSpot calls {} (simulator rate limit off; workers' quota {} per 10 s, max in any 10 s {}); {:.0} batches committed, {:.0} failed, {:.1} contacts per batch; dead letters 0",
        expected.len(),
        stats.api_calls,
        options.quota,
        stats.portals.get(&PORTAL).map_or(0, |p| p.max_calls_in_10s),
        metric_where(&texts, "leadsync_worker_batches_total", "committed"),
        metric_where(&texts, "leadsync_worker_batches_total", "failed"),
        fleet_metric(&texts, "leadsync_worker_batch_contacts_sum")
            / fleet_metric(&texts, "leadsync_worker_batch_contacts_count").max(1.0),
    );
    println!("PASS: every accepted event was processed, none lost");
    Ok(())
}

/// Waits until every event is recorded as processed and every lead holds its
/// contact's values; returns the time from `started`.
async fn drain(
    fleet: &Fleet,
    options: &Options,
    events: usize,
    expected: &ExpectedLeads,
    started: Instant,
) -> anyhow::Result<Duration> {
    let target = i64::try_from(events)?;
    let mut last_report = Instant::now();
    let done = fleet::poll(
        Duration::from_millis(100),
        Duration::from_secs(options.timeout_secs),
        async || {
            let processed = fleet.processed_events().await?;
            if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = Instant::now();
                println!(
                    "          {:5.1} s: {processed} of {events} processed",
                    started.elapsed().as_secs_f64()
                );
            }
            Ok((processed >= target).then(|| started.elapsed()))
        },
    )
    .await?;
    let processed = fleet.processed_events().await?;
    let dead = fleet.dead_letters().await?;
    let Some(drain) = done else {
        anyhow::bail!(
            "FAIL: {processed} of {events} events processed {} s after the workers started ({dead} dead-lettered)",
            options.timeout_secs
        );
    };
    anyhow::ensure!(dead == 0, "FAIL: {dead} events were dead-lettered");
    let wrong = fleet.lead_mismatches(expected).await?;
    anyhow::ensure!(
        wrong == 0,
        "FAIL: {wrong} of {} leads are missing or hold other values than HubSpot",
        expected.len()
    );
    Ok(drain)
}

/// Bodies of 100 events each: per contact, a creation then property
/// changes carrying its current values, contact after contact (as HubSpot
/// sends a contact's changes together).
fn batch_bodies(contacts: &[ContactRecord], per_contact: usize) -> Vec<String> {
    let now = now_ms();
    let events: Vec<String> = contacts
        .iter()
        .flat_map(|c| (0..per_contact).map(move |k| (c, k)))
        .enumerate()
        .map(|(n, (contact, k))| {
            let n = n as u64;
            let mut event = json!({
                "eventId": 1_000_000 + n,
                "subscriptionId": 4_100 + k as u64,
                "portalId": PORTAL,
                "appId": 1_160_452,
                // Distinct and in order, within the last few minutes.
                "occurredAt": now - 300_000 + (n % 300_000) as i64,
                "attemptNumber": 0,
                "objectId": contact.id,
                "changeSource": "IMPORT",
            });
            if k == 0 {
                event["subscriptionType"] = json!("contact.creation");
                event["changeFlag"] = json!("CREATED");
            } else {
                let property = PROPERTIES[(k - 1) % PROPERTIES.len()];
                event["subscriptionType"] = json!("contact.propertyChange");
                event["propertyName"] = json!(property);
                event["propertyValue"] = json!(contact.properties.get(property));
            }
            event.to_string()
        })
        .collect();
    events
        .chunks(EVENTS_PER_REQUEST)
        .map(|chunk| format!("[{}]", chunk.join(",")))
        .collect()
}
