//! `leadsync-bench ingest`: the webhook ingester under load, next to the two
//! ceilings it is judged against, all measured in the same run:
//!
//! 1. the queue's own bulk-push rate (same payloads, 100 events per Lua call,
//!    several callers, no HTTP);
//! 2. the ingester with HubSpot-style signed batches of 100 events;
//! 3. a bare actix-web endpoint that reads the body and answers 200;
//! 4. the ingester with single-event requests.
//!
//! 3 and 4 alternate for several rounds; the median round's ratio is the
//! single-event result.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use leadsync_domain::WebhookBatch;
use leadsync_hubspot::signature::{
    self, HEADER_REQUEST_TIMESTAMP, HEADER_SIGNATURE, HEADER_SIGNATURE_V3, HEADER_SIGNATURE_VERSION,
};
use leadsync_ingester::Application;
use leadsync_queue::{BulkPusher, InboundEvent, QueueInspector};
use leadsync_runtime::Settings;

use crate::loadgen::{self, LoadReport};
use crate::stats::{Percentiles, ms, rate};

const SECRET: &str = "bench-client-secret";
const PUBLIC_BASE: &str = "https://hooks.leadsync.bench";
/// The ingester's webhook path.
pub const PATH: &str = "/webhooks/hubspot";

/// Flags of `leadsync-bench ingest`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Requests of 100 events each.
    #[arg(long, default_value_t = 3_000)]
    pub batch_requests: usize,
    /// Concurrent connections sending batches (HubSpot opens at most 10 per
    /// account). Two already saturate Redis here; more only queue (Little's law).
    #[arg(long, default_value_t = 2)]
    pub batch_connections: usize,
    /// Single-event requests.
    #[arg(long, default_value_t = 200_000)]
    pub single_requests: usize,
    /// Concurrent connections sending single events.
    #[arg(long, default_value_t = 64)]
    pub single_connections: usize,
    /// Rounds of single-event measurements, each the bare endpoint then the
    /// ingester; the median round's ratio is the result.
    #[arg(long, default_value_t = 3)]
    pub single_rounds: usize,
    /// Concurrent callers of the bulk push when measuring the queue's ceiling.
    #[arg(long, default_value_t = 8)]
    pub push_callers: usize,
    /// Events per bulk push when measuring the queue's ceilings.
    #[arg(long, default_value_t = 100)]
    pub push_size: usize,
    /// HTTP worker threads of the servers (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub http_workers: usize,
    /// Log filter of the ingester under test (production runs "info").
    #[arg(long, default_value = "info")]
    pub log_filter: String,
    /// Extra settings (TOML) for the ingester under test, e.g. "[redis]\npush_concurrency = 2".
    #[arg(long, default_value = "")]
    pub settings: String,
    /// Redis holding the benchmark's queue (its keys are deleted afterwards).
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    pub redis_url: String,
}

/// Runs the four measurements and prints them.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let base = format!(
        r#"
        [application]
        host = "127.0.0.1"
        port = 0
        public_base_url = "{PUBLIC_BASE}"
        http_workers = {workers}
        [hubspot]
        client_secrets = ["{SECRET}"]
        [redis]
        url = "{url}"
        key_prefix = "{prefix}"
        [telemetry]
        log_filter = "{filter}"
        "#,
        filter = options.log_filter,
        workers = options.http_workers,
        url = options.redis_url,
    );
    let settings = Settings::from_toml_layers(&[&base, &options.settings])?;
    let _telemetry = leadsync_runtime::telemetry::init(&settings.telemetry)?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("loadgen")
        .enable_all()
        .build()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "leadsync ingest benchmark: {cores} cores, Redis {}",
        options.redis_url
    );
    let result = client.block_on(measure(options, &settings));
    client.block_on(async {
        let purged = match QueueInspector::connect(&settings.redis).await {
            Ok(mut q) => q.purge().await,
            Err(e) => Err(e),
        };
        // Left behind, the run's keys slow every later SCAN of this Redis.
        if let Err(e) = purged {
            eprintln!(
                "warning: the run's Redis keys (prefix {}) were not deleted: {e}",
                settings.redis.key_prefix
            );
        }
    });
    result
}

async fn measure(options: &Options, settings: &Settings) -> anyhow::Result<()> {
    let mut queue = QueueInspector::connect(&settings.redis)
        .await
        .context("connecting to Redis")?;
    let batch_events = options.batch_requests * 100;

    // 0. For reference: apalis-redis's own bulk push of the same payloads.
    let events = inbound_events(1, batch_events);
    let cpu = Cpu::start(&mut queue).await?;
    let apalis = push_ceiling(
        settings,
        events,
        options.push_callers,
        options.push_size,
        Script::ApalisRedis,
    )
    .await?;
    let apalis_cpu = cpu.stop(&mut queue, batch_events as u64).await?;
    println!(
        "apalis push     apalis-redis push_tasks, {} per call, {} callers  {batch_events} events in {:.2} s = {:.0} events/s; {apalis_cpu}",
        options.push_size,
        options.push_callers,
        apalis.as_secs_f64(),
        rate(batch_events as u64, apalis)
    );
    check_stored(&mut queue, batch_events).await?;
    queue.purge().await?;

    // 1. Queue ceiling: the same payloads through the queue's push, no HTTP.
    let events = inbound_events(1, batch_events);
    let cpu = Cpu::start(&mut queue).await?;
    let ceiling = push_ceiling(
        settings,
        events,
        options.push_callers,
        options.push_size,
        Script::Leadsync,
    )
    .await?;
    let ceiling_cpu = cpu.stop(&mut queue, batch_events as u64).await?;
    let ceiling_rate = rate(batch_events as u64, ceiling);
    println!(
        "queue ceiling   leadsync bulk push, {} per call, {} callers  {batch_events} events in {:.2} s = {:.0} events/s; {ceiling_cpu}",
        options.push_size,
        options.push_callers,
        ceiling.as_secs_f64(),
        ceiling_rate
    );
    check_stored(&mut queue, batch_events).await?;
    queue.purge().await?;

    // 2. The ingester, batches of 100.
    let ingester = start_ingester(settings.clone())?;
    let requests = signed_requests(ingester, 10_000_000, options.batch_requests, 100);
    warm_up(ingester, 20_000_000, 100).await?;
    let cpu = Cpu::start(&mut queue).await?;
    let mut report = loadgen::run(ingester, requests, options.batch_connections).await?;
    let batch_cpu = cpu.stop(&mut queue, report.requests * 100).await?;
    let batch_rate = rate(report.requests * 100, report.elapsed);
    print_http(
        &format!(
            "ingester        batches of 100, {} connections   ",
            options.batch_connections
        ),
        &mut report,
        100,
    );
    println!(
        "                ratio to the queue ceiling: {:.2} (target >= 0.70); {batch_cpu}",
        batch_rate / ceiling_rate
    );
    check_stored(&mut queue, batch_events + 100 * WARM_UP).await?;
    queue.purge().await?;

    // 3 and 4, alternating: the bare endpoint's rate swings with the machine
    // (other tenants, clock speed) within seconds, so each round compares
    // the two back to back and the median round is the result.
    anyhow::ensure!(
        options.single_rounds > 0,
        "--single-rounds must be at least 1"
    );
    let bare = start_bare_endpoint(options.http_workers)?;
    let mut ratios = Vec::with_capacity(options.single_rounds);
    for round in 0..options.single_rounds {
        let first_id = 40_000_000 + (round * options.single_requests) as u64;
        let bare_rate =
            single_events(&mut queue, bare, "bare actix 200 ", first_id, options).await?;
        let pushes_before = push_stats(ingester).await?;
        let single_rate =
            single_events(&mut queue, ingester, "ingester       ", first_id, options).await?;
        let pushes_after = push_stats(ingester).await?;
        let (pushes, pushed) = (
            pushes_after.0 - pushes_before.0,
            pushes_after.1 - pushes_before.1,
        );
        let ratio = single_rate / bare_rate;
        println!(
            "                round {}: ratio to the bare endpoint {ratio:.2}; {pushes:.0} Redis pushes, {:.1} events per push",
            round + 1,
            pushed / pushes.max(1.0)
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    if let Some(median) = ratios.get(ratios.len() / 2) {
        println!(
            "single events   ratio to the bare endpoint, median of {} alternating rounds: {median:.2} (target >= 0.50)",
            ratios.len()
        );
    }
    check_stored(&mut queue, options.single_requests * options.single_rounds).await?;
    Ok(())
}

/// One single-event measurement of the server at `addr`; prints it and
/// returns its rate.
async fn single_events(
    queue: &mut QueueInspector,
    addr: SocketAddr,
    label: &str,
    first_id: u64,
    options: &Options,
) -> anyhow::Result<f64> {
    let requests = signed_requests(addr, first_id, options.single_requests, 1);
    let cpu = Cpu::start(queue).await?;
    let mut report = loadgen::run(addr, requests, options.single_connections).await?;
    let cpu = cpu.stop(queue, report.requests).await?;
    let rate = rate(report.requests, report.elapsed);
    print_http(
        &format!(
            "{label} single events, {} connections  ",
            options.single_connections
        ),
        &mut report,
        1,
    );
    println!("                {cpu}");
    Ok(rate)
}

const WARM_UP: usize = 200;

/// CPU spent by this process (server, load generator) and by Redis during a run.
struct Cpu {
    process: f64,
    redis: f64,
}

impl Cpu {
    async fn start(queue: &mut QueueInspector) -> anyhow::Result<Self> {
        Ok(Self {
            process: crate::stats::process_cpu_seconds(),
            redis: queue.server_cpu_seconds().await?,
        })
    }

    async fn stop(self, queue: &mut QueueInspector, items: u64) -> anyhow::Result<String> {
        let process = crate::stats::process_cpu_seconds() - self.process;
        let redis = queue.server_cpu_seconds().await? - self.redis;
        let per = |s: f64| s * 1e6 / items.max(1) as f64;
        Ok(format!(
            "CPU per event: {:.1} us here (server + load generator), {:.1} us in Redis",
            per(process),
            per(redis)
        ))
    }
}

/// (pushes, events pushed) so far, from the ingester's own metrics.
async fn push_stats(ingester: SocketAddr) -> anyhow::Result<(f64, f64)> {
    let metrics = loadgen::get(ingester, "/metrics").await?;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((
        value("leadsync_queue_push_events_count"),
        value("leadsync_queue_push_events_sum"),
    ))
}

/// Opens connections and fills caches before the clock starts.
async fn warm_up(addr: SocketAddr, first_id: u64, per_request: usize) -> anyhow::Result<()> {
    let requests = signed_requests(addr, first_id, WARM_UP, per_request);
    loadgen::run(addr, requests, 4).await?;
    Ok(())
}

fn print_http(label: &str, report: &mut LoadReport, events_per_request: u64) {
    let p = Percentiles::of(&mut report.latencies_us);
    let events = report.requests * events_per_request;
    println!(
        "{label}{} requests ({events} events) in {:.2} s = {:.0} req/s, {:.0} events/s; p50 {} p99 {} max {}; non-200: {}",
        report.requests,
        report.elapsed.as_secs_f64(),
        rate(report.requests, report.elapsed),
        rate(events, report.elapsed),
        ms(p.p50),
        ms(p.p99),
        ms(p.max),
        report.non_200,
    );
}

/// Every event must be in Redis: a fast run that lost events is no result.
async fn check_stored(queue: &mut QueueInspector, expected: usize) -> anyhow::Result<()> {
    let stored = queue.stored().await?;
    anyhow::ensure!(
        stored == expected as u64,
        "expected {expected} events in the queue, found {stored}"
    );
    Ok(())
}

/// A HubSpot-shaped event (creation or property change) of about 300 bytes.
fn event_json(id: u64) -> String {
    let portal = 62_515 + id % 4;
    let occurred = 1_764_000_000_000u64 + id;
    if id.is_multiple_of(6) {
        format!(
            r#"{{"eventId":{id},"subscriptionId":3327050,"portalId":{portal},"appId":9318066,"occurredAt":{occurred},"subscriptionType":"contact.creation","attemptNumber":0,"objectId":{},"changeFlag":"CREATED","changeSource":"IMPORT","sourceId":"userId:74322246"}}"#,
            100_000_000_000 + id / 6
        )
    } else {
        format!(
            r#"{{"eventId":{id},"subscriptionId":3327051,"portalId":{portal},"appId":9318066,"occurredAt":{occurred},"subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":{},"propertyName":"firstname","propertyValue":"Maria {id}","changeSource":"CRM_UI","sourceId":"userId:74322246"}}"#,
            100_000_000_000 + id / 6
        )
    }
}

fn batch_json(first_id: u64, n: usize) -> String {
    let events: Vec<String> = (0..n as u64).map(|i| event_json(first_id + i)).collect();
    format!("[{}]", events.join(","))
}

fn inbound_events(first_id: u64, n: usize) -> Vec<InboundEvent> {
    let now = now_ms();
    WebhookBatch::parse(batch_json(first_id, n).as_bytes())
        .expect("generated events parse")
        .into_events()
        .into_iter()
        .map(|e| InboundEvent::new(e, now, Default::default(), None))
        .collect()
}

/// Wall-clock time in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `count` requests of `per_request` distinct events, signed as HubSpot signs.
fn signed_requests(
    addr: SocketAddr,
    first_id: u64,
    count: usize,
    per_request: usize,
) -> Arc<Vec<Bytes>> {
    let ts = now_ms().to_string();
    let requests = (0..count)
        .map(|i| {
            let body = batch_json(first_id + (i * per_request) as u64, per_request);
            signed_post(addr, PUBLIC_BASE, SECRET, body.as_bytes(), &ts)
        })
        .collect();
    Arc::new(requests)
}

/// A webhook POST of `body` to the ingester at `addr`, signed as HubSpot
/// signs it (v1 and v3) with `secret`, for an ingester whose
/// `public_base_url` is `public_base`; `timestamp` in epoch milliseconds.
pub fn signed_post(
    addr: SocketAddr,
    public_base: &str,
    secret: &str,
    body: &[u8],
    timestamp: &str,
) -> Bytes {
    let uri = format!("{public_base}{PATH}");
    let headers = [
        (HEADER_SIGNATURE, signature::sign_v1(secret, body)),
        (HEADER_SIGNATURE_VERSION, "v1".to_owned()),
        (
            HEADER_SIGNATURE_V3,
            signature::sign_v3(secret, "POST", &uri, body, timestamp),
        ),
        (HEADER_REQUEST_TIMESTAMP, timestamp.to_owned()),
    ];
    loadgen::build_request(&addr.to_string(), PATH, &headers, body)
}

/// Which push script a ceiling measures.
#[derive(Debug, Clone, Copy)]
enum Script {
    Leadsync,
    ApalisRedis,
}

async fn push_ceiling(
    settings: &Settings,
    events: Vec<InboundEvent>,
    callers: usize,
    per_push: usize,
    script: Script,
) -> anyhow::Result<Duration> {
    // One connection per caller, opened before the clock starts: the ceiling
    // is what Redis takes, not what one connection carries.
    let mut pushers = Vec::with_capacity(callers);
    for _ in 0..callers {
        let pusher = BulkPusher::new(&settings.redis)?;
        pusher.connect().await?;
        pushers.push(pusher);
    }
    let chunks: Vec<Vec<InboundEvent>> =
        events.chunks(per_push.max(1)).map(<[_]>::to_vec).collect();
    let chunks = Arc::new(chunks);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = pushers
        .into_iter()
        .map(|pusher| {
            let (chunks, next) = (Arc::clone(&chunks), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(chunk) = chunks.get(i) else { break };
                    match script {
                        Script::Leadsync => pusher.push(chunk).await?,
                        Script::ApalisRedis => pusher.push_with_apalis_script(chunk).await?,
                    };
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

/// Runs the ingester on its own runtime thread, as its binary would.
fn start_ingester(settings: Settings) -> anyhow::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ingester-main")
            .enable_all()
            .build()
            .expect("ingester runtime");
        rt.block_on(async move {
            match Application::build(&settings) {
                Ok(app) => {
                    let _ = tx.send(Ok(app.port()));
                    let _ = app.run_until_stopped().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    });
    let port = rx.recv().context("ingester thread died")??;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The reference: actix-web reading the body and answering 200, nothing else.
fn start_bare_endpoint(workers: usize) -> anyhow::Result<SocketAddr> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bare-main")
            .enable_all()
            .build()
            .expect("bare runtime");
        rt.block_on(async move {
            let mut server = HttpServer::new(|| {
                App::new().route(
                    PATH,
                    web::post().to(|_body: web::Bytes| async { HttpResponse::Ok().finish() }),
                )
            });
            if workers > 0 {
                server = server.workers(workers);
            }
            if let Ok(server) = server.listen(listener) {
                let _ = server.run().await;
            }
        });
    });
    Ok(addr)
}
