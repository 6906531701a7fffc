//! A whole leadsync deployment in one process, for the end-to-end
//! benchmarks: the HubSpot simulator, a fresh Postgres database with one
//! integration (a private-app token, stored encrypted), the ingester, and any
//! number of worker replicas. Each replica is its own
//! [`leadsync_worker::Application`] on its own runtime thread, with its own
//! apalis worker name, HubSpot client and rate limiter; they share only
//! Redis and Postgres, as separate processes would. Everything lives under
//! one fresh Redis key prefix, purged by [`Fleet::finish`].

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use leadsync_domain::PortalId;
use leadsync_hubspot_sim::{
    AppConfig, ContactRecord, PortalConfig, RateLimitConfig, SimConfig, SimHandle, SubscriptionSpec,
};
use leadsync_queue::QueueInspector;
use leadsync_runtime::Settings;
use leadsync_runtime::telemetry::TelemetryGuard;
use leadsync_store::integrations::{self, AuthMode, NewIntegration, Tokens};
use leadsync_store::testing::TestDb;
use leadsync_store::{IntegrationSettings, TokenCipher};
use leadsync_worker::runner::ConsumerStatus;
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use crate::ingest::PATH;

/// The HubSpot account the benchmarks sync.
pub const PORTAL: u64 = 62_515;
const TOKEN: &str = "pat-na1-leadsync-bench";
/// apalis-redis lists every queue a worker registered on here, outside any prefix.
const APALIS_QUEUES: &str = "core:apalis:queues:list";

/// The flags of every benchmark that runs a [`Fleet`].
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Log filter of the in-process components.
    #[arg(long, default_value = "warn")]
    pub log_filter: String,
    /// Extra settings (TOML) for the ingester and workers, e.g. "[worker]\nbatch_window_ms = 500".
    #[arg(long, default_value = "")]
    pub settings: String,
    /// Redis of the queues and the rate limiter (the run's keys are deleted afterwards).
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    pub redis_url: String,
}

/// What a [`Fleet`] is built with.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The simulator's limits for the portal.
    pub sim_rate_limit: RateLimitConfig,
    /// Whether the simulator delivers webhooks to the ingester.
    pub deliver_webhooks: bool,
    /// The simulator's webhook subscriptions.
    pub subscriptions: Vec<SubscriptionSpec>,
    /// The workers' HubSpot budget: calls per 10 s for the portal.
    pub quota: u32,
    /// Redis of the queue and of the fleet-wide rate limit.
    pub redis_url: String,
    /// Extra settings (TOML) on top of the fleet's own.
    pub extra_settings: String,
    /// The simulator's seed.
    pub seed: u64,
}

impl FleetConfig {
    /// A fleet whose simulator sends no webhooks (the load comes from
    /// elsewhere), under a quota of `quota` calls per 10 s on both sides.
    pub fn without_webhooks(quota: u32, args: &FleetArgs, seed: u64) -> Self {
        Self {
            sim_rate_limit: quota_limit(quota),
            deliver_webhooks: false,
            subscriptions: Vec::new(),
            quota,
            redis_url: args.redis_url.clone(),
            extra_settings: args.settings.clone(),
            seed,
        }
    }
}

/// A running deployment; see the module documentation.
pub struct Fleet {
    /// The simulator (HubSpot).
    pub sim: SimHandle,
    /// The platform's database.
    pub db: TestDb,
    /// The settings every component runs with.
    pub settings: Settings,
    /// The integration of [`PORTAL`].
    pub integration: Uuid,
    /// The ingester's address.
    pub ingester: SocketAddr,
    /// The ingester's `public_base_url` (what v3 signatures cover).
    pub public_base_url: String,
    /// The key of webhook signatures (the simulator app's client secret).
    pub client_secret: String,
    ingester_stop: leadsync_ingester::startup::StopHandle,
    ingester_thread: std::thread::JoinHandle<()>,
}

impl Fleet {
    /// Starts the simulator, creates the database and the integration, and
    /// starts the ingester. No worker runs yet ([`Fleet::start_replicas`]).
    pub async fn start(config: &FleetConfig) -> anyhow::Result<Self> {
        // The ingester's port goes into the simulator's target URL and the
        // ingester's public URL, so it is bound first.
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the ingester")?;
        let ingester = listener.local_addr()?;
        let public_base_url = format!("http://{ingester}");
        let app = AppConfig {
            target_url: config
                .deliver_webhooks
                .then(|| format!("{public_base_url}{PATH}")),
            ..AppConfig::default()
        };
        let client_secret = app.client_secret.expose_secret().to_owned();
        let sim = leadsync_hubspot_sim::spawn(SimConfig {
            seed: config.seed,
            app,
            portals: vec![PortalConfig::new(PORTAL).with_private_app_token(TOKEN)],
            rate_limit: config.sim_rate_limit,
            subscriptions: config.subscriptions.clone(),
            ..SimConfig::default()
        })
        .await
        .context("starting the HubSpot simulator")?;
        let db = TestDb::create()
            .await
            .context("creating a database on postgres://postgres@127.0.0.1:5432")?;
        let built = async {
            let (settings, integration) =
                Self::prepare(config, &db, &sim, ingester, &client_secret).await?;
            let (stop, thread) = start_ingester(settings.clone(), listener)
                .await
                .context("starting the ingester")?;
            Ok::<_, anyhow::Error>((settings, integration, stop, thread))
        }
        .await;
        match built {
            Ok((settings, integration, ingester_stop, ingester_thread)) => Ok(Self {
                sim,
                db,
                settings,
                integration,
                ingester,
                public_base_url,
                client_secret,
                ingester_stop,
                ingester_thread,
            }),
            Err(e) => {
                let _ = db.cleanup().await;
                sim.stop().await;
                Err(e)
            }
        }
    }

    /// Starts a fleet with `config`, runs `scenario` on it and finishes the
    /// fleet whatever the scenario's outcome; the scenario's error comes
    /// first.
    pub async fn run<T>(
        config: &FleetConfig,
        scenario: impl AsyncFnOnce(&Fleet) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let fleet = Self::start(config).await?;
        let result = scenario(&fleet).await;
        let finished = fleet.finish().await;
        let value = result?;
        finished?;
        Ok(value)
    }

    /// Starts `n` worker replicas ([`Fleet::start_replicas`]), runs
    /// `measure` with them and stops them all, whatever its outcome.
    pub async fn with_replicas<T>(
        &self,
        n: usize,
        measure: impl AsyncFnOnce(&[Replica]) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let workers = self.start_replicas(n).await?;
        let result = measure(&workers).await;
        stop_all(workers).await;
        result
    }

    /// The settings, and the integration connected with a private-app token
    /// as the CLI would (token encrypted with the settings' key).
    async fn prepare(
        config: &FleetConfig,
        db: &TestDb,
        sim: &SimHandle,
        ingester: SocketAddr,
        client_secret: &str,
    ) -> anyhow::Result<(Settings, Uuid)> {
        let key = TokenCipher::generate_key();
        let cipher = TokenCipher::from_base64_key(&key)?;
        let prefix = format!("bench-{}", Uuid::now_v7().simple());
        let base = format!(
            r#"
            [application]
            host = "127.0.0.1"
            port = {port}
            public_base_url = "http://{ingester}"
            [hubspot]
            client_secrets = ["{client_secret}"]
            api_base_url = "{api}"
            token_encryption_key = "{key}"
            rate_limit_max = {quota}
            rate_limit_window_ms = 10000
            [redis]
            url = "{redis}"
            key_prefix = "{prefix}"
            [database]
            url = "postgres://postgres@127.0.0.1:5432/{db}"
            [worker]
            metrics_host = "127.0.0.1"
            metrics_port = 0
            "#,
            port = ingester.port(),
            api = sim.base_url(),
            key = key.expose_secret(),
            quota = config.quota,
            redis = config.redis_url,
            db = db.name,
        );
        let settings = Settings::from_toml_layers(&[&base, &config.extra_settings])?;
        let integration = integrations::create(
            db.store.pool(),
            &NewIntegration {
                name: format!("bench-{PORTAL}"),
                portal_id: PortalId::new(PORTAL),
                app_id: None,
                auth_mode: AuthMode::PrivateApp,
                settings: IntegrationSettings::default(),
            },
        )
        .await?;
        integrations::store_tokens(
            db.store.pool(),
            integration.id,
            &cipher,
            &Tokens {
                access: SecretString::from(TOKEN.to_owned()),
                refresh: None,
                expires_at: None,
            },
        )
        .await?;
        Ok((settings, integration.id))
    }

    /// Starts `n` worker replicas and waits until each consumes the queue.
    /// All are built (connected, credentials loaded) before any consumes:
    /// one replica's first fetches from a deep queue must not starve the
    /// others' start-up.
    pub async fn start_replicas(&self, n: usize) -> anyhow::Result<Vec<Replica>> {
        let mut replicas = Vec::with_capacity(n);
        for i in 0..n {
            match Replica::build(self.settings.clone(), i).await {
                Ok(r) => replicas.push(r),
                Err(e) => {
                    stop_all(replicas).await;
                    return Err(e.context(format!("starting worker replica {i}")));
                }
            }
        }
        for r in &mut replicas {
            r.go();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !replicas.iter().all(Replica::is_ready) {
            if Instant::now() > deadline {
                stop_all(replicas).await;
                anyhow::bail!("the worker replicas did not start consuming within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(replicas)
    }

    /// Creates the contact property `lead_source_system` with the workers'
    /// value as an option, as `leadsync setup` does, with a token of its own
    /// (as an operator running setup would have).
    pub async fn ensure_source_property(&self) -> anyhow::Result<()> {
        let client = leadsync_hubspot::Client::builder(leadsync_hubspot::ClientConfig::new(
            self.sim.base_url().parse().context("simulator URL")?,
        ))
        .build()?;
        let token = self
            .sim
            .control()
            .add_private_app_token(PORTAL, None)
            .context("a setup token")?
            .token;
        client.set_token_source(
            PortalId::new(PORTAL),
            leadsync_hubspot::TokenSource::PrivateApp(SecretString::from(token)),
        );
        client
            .ensure_source_property(
                PortalId::new(PORTAL),
                &self.settings.hubspot.source_system_value,
            )
            .await
            .context("creating the property lead_source_system in the simulator")?;
        Ok(())
    }

    /// Leads of the integration linked to a contact (not deleted).
    pub async fn linked_leads(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM leads \
             WHERE integration_id = $1 AND crm_id IS NOT NULL AND deleted_at IS NULL",
        )
        .bind(self.integration)
        .fetch_one(self.db.store.pool())
        .await?)
    }

    /// Events recorded as processed in Postgres.
    pub async fn processed_events(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM processed_events")
            .fetch_one(self.db.store.pool())
            .await?)
    }

    /// Dead letters recorded.
    pub async fn dead_letters(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(self.db.store.pool())
            .await?)
    }

    /// Contacts of `expected` whose lead is missing or holds other values.
    pub async fn lead_mismatches(&self, expected: &ExpectedLeads) -> anyhow::Result<usize> {
        let rows: Vec<(i64, LeadValues)> = sqlx::query_as::<
            _,
            (
                i64,
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
            ),
        >(
            "SELECT crm_id, first_name, last_name, email, phone, company, job_title FROM leads \
             WHERE integration_id = $1 AND crm_id IS NOT NULL AND deleted_at IS NULL",
        )
        .bind(self.integration)
        .fetch_all(self.db.store.pool())
        .await?
        .into_iter()
        .map(|(id, a, b, c, d, e, f)| (id, [a, b, c, d, e, f]))
        .collect();
        let actual: HashMap<i64, LeadValues> = rows.into_iter().collect();
        Ok(expected
            .0
            .iter()
            .filter(|(id, values)| actual.get(id) != Some(values))
            .count())
    }

    /// Stops the ingester and the simulator, purges the Redis prefix and
    /// drops the database. Stop the replicas first.
    pub async fn finish(self) -> anyhow::Result<()> {
        self.ingester_stop.stop(true).await;
        let thread = self.ingester_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        let purged = purge_redis(&self.settings).await;
        self.sim.stop().await;
        let dropped = self.db.cleanup().await;
        purged.context("purging the benchmark's Redis keys")?;
        dropped.context("dropping the benchmark database")?;
        Ok(())
    }
}

async fn purge_redis(settings: &Settings) -> anyhow::Result<()> {
    QueueInspector::connect(&settings.redis)
        .await?
        .purge()
        .await?;
    // The registry of apalis queues is outside the prefix; drop this run's
    // entries (inbound and any other queue the workers consumed).
    let mut conn = leadsync_queue::redis_client(&settings.redis)?
        .get_multiplexed_async_connection()
        .await?;
    let queues: Vec<String> = redis::cmd("ZRANGE")
        .arg(APALIS_QUEUES)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await?;
    let ours: Vec<&String> = queues
        .iter()
        .filter(|q| q.starts_with(&format!("{}:", settings.redis.key_prefix)))
        .collect();
    if !ours.is_empty() {
        let _: i64 = redis::cmd("ZREM")
            .arg(APALIS_QUEUES)
            .arg(ours)
            .query_async(&mut conn)
            .await?;
    }
    Ok(())
}

/// A lead's first name, last name, email, phone, company and job title.
type LeadValues = [Option<String>; 6];

/// What every lead must hold: the contacts' current values in HubSpot.
#[derive(Debug, Default)]
pub struct ExpectedLeads(HashMap<i64, LeadValues>);

impl ExpectedLeads {
    /// The mapped properties of `contacts` (firstname, lastname, email,
    /// phone, company, jobtitle; the default field mapping).
    pub fn of(contacts: &[ContactRecord]) -> Self {
        let value = |c: &ContactRecord, p: &str| c.properties.get(p).cloned();
        Self(
            contacts
                .iter()
                .filter(|c| !c.archived)
                .map(|c| {
                    let id = i64::try_from(c.id).unwrap_or(i64::MAX);
                    let values = [
                        value(c, "firstname"),
                        value(c, "lastname"),
                        value(c, "email"),
                        value(c, "phone"),
                        value(c, "company"),
                        value(c, "jobtitle"),
                    ];
                    (id, values)
                })
                .collect(),
        )
    }

    /// How many leads are expected.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no lead is expected.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Starts the ingester on its own runtime thread, as its binary would run.
async fn start_ingester(
    settings: Settings,
    listener: TcpListener,
) -> anyhow::Result<(
    leadsync_ingester::startup::StopHandle,
    std::thread::JoinHandle<()>,
)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("ingester".to_owned())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("ingester-main")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            rt.block_on(async move {
                match leadsync_ingester::Application::build_with_listener(&settings, listener) {
                    Ok(app) => {
                        let _ = tx.send(Ok(app.handle()));
                        if let Err(e) = app.run_until_stopped().await {
                            eprintln!("the benchmark's ingester failed: {e}");
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })?;
    let handle = rx.await.context("the ingester thread died")??;
    Ok((handle, thread))
}

/// One worker replica: a [`leadsync_worker::Application`] on its own
/// runtime thread, like a process of its own.
pub struct Replica {
    go: Option<tokio::sync::oneshot::Sender<()>>,
    stop: leadsync_worker::StopHandle,
    status: ConsumerStatus,
    metrics: SocketAddr,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    /// Builds replica `index`; it consumes once [`Replica::go`] is called.
    pub async fn build(settings: Settings, index: usize) -> anyhow::Result<Self> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (go, gone) = tokio::sync::oneshot::channel::<()>();
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let thread = std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || -> anyhow::Result<()> {
                // What #[tokio::main] gives the worker binary: one thread per core.
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name(format!("worker-{index}-rt"))
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let app = match leadsync_worker::Application::build(&settings).await {
                        Ok(app) => app,
                        Err(e) => {
                            let _ = tx.send(Err(anyhow::Error::from(e)));
                            return Ok(());
                        }
                    };
                    let stop = app.handle();
                    let _ = tx.send(Ok((
                        stop.clone(),
                        app.consumer_status(),
                        app.metrics_port(),
                    )));
                    // Dropped without a go: stopped before it started.
                    if gone.await.is_err() {
                        stop.stop();
                    }
                    app.run_until(std::future::pending()).await?;
                    Ok(())
                })
            })?;
        let (stop, status, port) = rx.await.context("the worker thread died")??;
        Ok(Self {
            go: Some(go),
            stop,
            status,
            metrics: SocketAddr::from(([127, 0, 0, 1], port)),
            thread,
        })
    }

    /// Starts consuming.
    pub fn go(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
    }

    /// Whether its queue consumer is registered and taking jobs.
    pub fn is_ready(&self) -> bool {
        self.status.is_ready()
    }

    /// Its Prometheus metrics, as `/metrics` serves them.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        crate::loadgen::get(self.metrics, "/metrics").await
    }

    /// Stops it gracefully (as SIGTERM would) and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        let Self {
            go, stop, thread, ..
        } = self;
        drop(go);
        stop.stop();
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("a worker replica panicked"))?
    }
}

/// Every replica's `/metrics` text.
pub async fn metrics_of(replicas: &[Replica]) -> anyhow::Result<Vec<String>> {
    let mut texts = Vec::with_capacity(replicas.len());
    for r in replicas {
        texts.push(r.metrics().await?);
    }
    Ok(texts)
}

/// Stops every replica, logging failures.
pub async fn stop_all(replicas: Vec<Replica>) {
    for r in replicas {
        if let Err(e) = r.stop().await {
            eprintln!("a worker replica failed: {e:#}");
        }
    }
}

/// The sum of every sample of metric `name` (all label sets) in Prometheus
/// text; 0 when absent.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse::<f64>().ok()
        })
        // An empty f64 sum is -0.0.
        .sum::<f64>()
        + 0.0
}

/// Metric `name` summed over every replica's `/metrics`.
pub fn fleet_metric(texts: &[String], name: &str) -> f64 {
    texts.iter().map(|t| metric_sum(t, name)).sum::<f64>() + 0.0
}

/// The simulator's limit of `quota` calls per 10 s for the portal, as
/// HubSpot's own.
pub fn quota_limit(quota: u32) -> RateLimitConfig {
    RateLimitConfig {
        window_max: quota,
        window_ms: 10_000,
        ..RateLimitConfig::default()
    }
}

/// What an end-to-end benchmark runs on: logs at `log_filter` (until the
/// guard is dropped), a runtime of two threads for the simulator, the
/// ingester and the measuring (each worker replica has its own), and the
/// machine's core count for the header line.
pub fn bench_runtime(
    log_filter: &str,
) -> anyhow::Result<(TelemetryGuard, tokio::runtime::Runtime, usize)> {
    let settings = Settings::from_toml(&format!("[telemetry]\nlog_filter = \"{log_filter}\""))?;
    let telemetry = leadsync_runtime::telemetry::init(&settings.telemetry)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench")
        .enable_all()
        .build()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Ok((telemetry, rt, cores))
}

/// A labelled metric's value for one label value (e.g. `outcome="committed"`),
/// summed over every replica's `/metrics`.
pub fn metric_where(texts: &[String], name: &str, label_value: &str) -> f64 {
    let needle = format!("\"{label_value}\"}} ");
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| l.starts_with(name) && l.contains(&needle))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum::<f64>()
        + 0.0
}

/// Samples taken every 500 ms while a run goes on, for diagnosis.
pub struct Sampler<T> {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<T>>,
}

impl<T: Send + 'static> Sampler<T> {
    /// Takes a sample with `sample` now and every 500 ms until
    /// [`Sampler::stop`].
    pub fn start<F>(mut sample: impl FnMut() -> F + Send + 'static) -> Self
    where
        F: Future<Output = T> + Send,
    {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                samples.push(sample().await);
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            samples
        });
        Self { stop, task }
    }

    /// Stops sampling; the samples, or `None` if sampling failed.
    pub async fn stop(self) -> Option<Vec<T>> {
        let _ = self.stop.send(());
        self.task.await.ok()
    }
}

/// Waits until `check` returns `Some`, polling every `every`; `None` after `timeout`.
pub async fn poll<T>(
    every: Duration,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<Option<T>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(Some(v));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(every).await;
    }
}
