//! Building and running the worker.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use leadsync_hubspot::{
    Client, ClientConfig, LimiterConfig, OAuthApp, OAuthTokens, OAuthTokensConfig, PortalQuota,
    RateLimiter,
};
use leadsync_queue::{Janitor, OUTBOUND_QUEUE, Promoter, QueueInspector};
use leadsync_runtime::{ConfigError, Settings};
use leadsync_store::{Store, TokenCipher};
use tokio_util::sync::CancellationToken;

use crate::batcher::{Batcher, BatcherConfig};
use crate::error::StartupError;
use crate::http::{self, HttpState};
use crate::inbound::InboundDeps;
use crate::metrics::WorkerMetrics;
use crate::outbound::OutboundDeps;
use crate::push_batcher::{PushBatcher, PushBatcherConfig};
use crate::reconcile::{self, ReconcileConfig, ReconcileDeps};
use crate::relay::{self, Relay, RelayConfig};
use crate::runner::{self, Consumer, ConsumerJobs, ConsumerStatus, QueueGauges};
use crate::tokens::{Credentials, PgTokenStore};

/// Extra time, beyond `worker.shutdown_timeout_secs`, for the batcher and the
/// HTTP server to wind down.
const WIND_DOWN: Duration = Duration::from_secs(5);

/// A worker ready to run: connected to Postgres and Redis, credentials
/// loaded, metrics server bound.
pub struct Application {
    metrics_port: u16,
    server: Server,
    consumer: Consumer,
    batcher: Batcher,
    batcher_task: tokio::task::JoinHandle<()>,
    credentials: Arc<Credentials>,
    promoter: Promoter,
    janitor: Janitor,
    gauges: QueueGauges,
    metrics: WorkerMetrics,
    store: Store,
    settings: Settings,
    shutdown: CancellationToken,
    outbound: Outbound,
    reconcile: ReconcileDeps,
}

/// The platform → HubSpot half: the outbox relay, the consumer of the
/// outbound queue and its batcher, and that queue's upkeep.
struct Outbound {
    relay: Relay,
    consumer: Consumer,
    batcher: PushBatcher,
    batcher_task: tokio::task::JoinHandle<()>,
    promoter: Promoter,
    janitor: Janitor,
}

impl Application {
    /// Validates the worker's settings, connects to Postgres and Redis,
    /// registers every integration's credentials on the HubSpot client and
    /// binds `worker.metrics_host:metrics_port` (port 0 picks a free one).
    /// Nothing is consumed before [`Application::run_until_stopped`].
    ///
    /// # Errors
    /// [`StartupError`], naming the setting to look at.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        let Connected {
            store,
            hubspot: client,
            credentials,
            metrics,
            redis: conn,
        } = connect(settings).await?;
        let hubspot = &settings.hubspot;

        let shutdown = CancellationToken::new();
        let outbound_deps = OutboundDeps {
            store: store.clone(),
            hubspot: client.clone(),
            source_system: hubspot.source_system_value.clone(),
            credentials: Some(Arc::clone(&credentials)),
        };
        let reconcile = ReconcileDeps {
            store: store.clone(),
            hubspot: client.clone(),
            config: ReconcileConfig::from_settings(&settings.reconcile),
            metrics: Some(metrics.clone()),
        };
        let deps = InboundDeps {
            store: store.clone(),
            hubspot: client,
        };
        let (batcher, batcher_task) = Batcher::start(
            deps,
            Some(Arc::clone(&credentials)),
            metrics.clone(),
            BatcherConfig::from_settings(&settings.worker),
            shutdown.child_token(),
        );
        let promoter = Promoter::connect(&settings.redis)
            .await
            .map_err(StartupError::Redis)?;
        let janitor = Janitor::connect(&settings.redis)
            .await
            .map_err(StartupError::Redis)?;
        let inspector = QueueInspector::connect(&settings.redis)
            .await
            .map_err(StartupError::Redis)?;
        let config = runner::queue_config(settings);
        let gauges = QueueGauges::new(inspector, conn.clone(), config.clone());
        let status = ConsumerStatus::default();
        let consumer = Consumer {
            conn: conn.clone(),
            config,
            poll_interval: settings.worker.poll_interval(),
            concurrency: settings.worker.concurrency,
            jobs: ConsumerJobs::Inbound(batcher.clone()),
            promoter: promoter.clone(),
            metrics: metrics.clone(),
            status: status.clone(),
        };
        let outbound =
            Outbound::build(settings, &store, conn, outbound_deps, &metrics, &shutdown).await?;

        let worker = &settings.worker;
        let address = format!("{}:{}", worker.metrics_host, worker.metrics_port);
        let listener = TcpListener::bind((worker.metrics_host.as_str(), worker.metrics_port))
            .map_err(|source| StartupError::Bind {
                address: address.clone(),
                source,
            })?;
        let metrics_port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                address: address.clone(),
                source,
            })?
            .port();
        let server = http::serve(
            listener,
            HttpState {
                registry: metrics.registry.clone(),
                consumer: status,
                store: store.clone(),
            },
        )
        .map_err(|source| StartupError::Bind { address, source })?;
        tracing::info!(
            port = metrics_port,
            "Worker metrics listening on port {metrics_port}"
        );

        Ok(Self {
            metrics_port,
            server,
            consumer,
            batcher,
            batcher_task,
            credentials,
            promoter,
            janitor,
            gauges,
            metrics,
            store,
            settings: settings.clone(),
            shutdown,
            outbound,
            reconcile,
        })
    }

    /// The port of `/metrics`, `/healthz` and `/readyz`.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.metrics
    }

    /// Whether a queue consumer is running, and under which name.
    pub fn consumer_status(&self) -> ConsumerStatus {
        self.consumer.status.clone()
    }

    /// Whether the consumer of the outbound queue (platform lead changes)
    /// is running, and under which name.
    pub fn push_consumer_status(&self) -> ConsumerStatus {
        self.outbound.consumer.status.clone()
    }

    /// A handle to stop the worker from elsewhere (tests, embedding).
    pub fn handle(&self) -> StopHandle {
        StopHandle(self.shutdown.clone())
    }

    /// Consumes until SIGTERM/SIGINT (or [`StopHandle::stop`]), then stops
    /// fetching, lets in-flight batches commit and their jobs be
    /// acknowledged (for up to `worker.shutdown_timeout_secs`), and returns.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(leadsync_runtime::shutdown::signal()).await
    }

    /// Like [`Application::run_until_stopped`], stopping when `stop` resolves.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> std::io::Result<()> {
        let Self {
            server,
            consumer,
            batcher,
            batcher_task,
            credentials,
            promoter,
            janitor,
            gauges,
            metrics,
            store,
            settings,
            shutdown,
            outbound,
            reconcile,
            ..
        } = self;
        let server_handle: ServerHandle = server.handle();
        let server_task = tokio::spawn(server);
        // One replica at a time reconciles an account (an advisory lock).
        let reconciling = settings.reconcile.enabled.then(|| {
            tokio::spawn(reconcile::run_periodically(
                reconcile,
                Some(Arc::clone(&credentials)),
                shutdown.child_token(),
            ))
        });
        let refresher = tokio::spawn(credentials.refresh_periodically(
            settings.worker.credentials_refresh(),
            shutdown.child_token(),
        ));
        let maintaining = tokio::spawn(runner::maintain_periodically(
            promoter,
            janitor,
            gauges,
            metrics.clone(),
            settings.worker.promote_interval(),
            shutdown.child_token(),
        ));
        let grace = settings.worker.shutdown_timeout();
        let supervisor = tokio::spawn(consumer.supervise(shutdown.clone(), grace));
        let Outbound {
            relay,
            consumer: push_consumer,
            batcher: push_batcher,
            batcher_task: push_batcher_task,
            promoter: push_promoter,
            janitor: push_janitor,
        } = outbound;
        let relaying = tokio::spawn(relay.run(shutdown.child_token()));
        let push_maintaining = tokio::spawn(relay::maintain_outbound_queue(
            push_promoter,
            push_janitor,
            metrics.clone(),
            settings.worker.promote_interval(),
            shutdown.child_token(),
        ));
        let push_supervisor = tokio::spawn(push_consumer.supervise(shutdown.clone(), grace));
        tokio::select! {
            () = stop => {}
            () = shutdown.cancelled() => {}
        }
        tracing::info!("Worker stopping: no new jobs; waiting for in-flight batches");
        shutdown.cancel();
        let (inbound_stopped, outbound_stopped) = tokio::join!(
            tokio::time::timeout(grace + WIND_DOWN, supervisor),
            tokio::time::timeout(grace + WIND_DOWN, push_supervisor),
        );
        if inbound_stopped.is_err() {
            tracing::warn!("The queue consumer did not stop in time");
        }
        if outbound_stopped.is_err() {
            tracing::warn!("The outbound queue consumer did not stop in time");
        }
        // The consumers are gone; with the last handles dropped the batchers
        // answer what they hold and end.
        drop(batcher);
        drop(push_batcher);
        let (inbound_done, outbound_done) = tokio::join!(
            tokio::time::timeout(WIND_DOWN, batcher_task),
            tokio::time::timeout(WIND_DOWN, push_batcher_task),
        );
        if inbound_done.is_err() || outbound_done.is_err() {
            tracing::warn!("A batcher did not finish in time");
        }
        if let Some(reconciling) = reconciling {
            let _ = reconciling.await;
        }
        let _ = relaying.await;
        let _ = push_maintaining.await;
        let _ = maintaining.await;
        let _ = refresher.await;
        server_handle.stop(true).await;
        let served = server_task.await.unwrap_or(Ok(()));
        store.close().await;
        tracing::info!("Worker stopped");
        served
    }
}

impl Outbound {
    async fn build(
        settings: &Settings,
        store: &Store,
        conn: redis::aio::ConnectionManager,
        deps: OutboundDeps,
        metrics: &WorkerMetrics,
        shutdown: &CancellationToken,
    ) -> Result<Self, StartupError> {
        let worker = &settings.worker;
        let (batcher, batcher_task) = PushBatcher::start(
            deps,
            metrics.clone(),
            PushBatcherConfig::from_settings(worker),
            shutdown.child_token(),
        );
        let relay = Relay::new(
            store.clone(),
            &settings.redis,
            RelayConfig::from_settings(worker),
            metrics.clone(),
        )
        .map_err(StartupError::Redis)?;
        let promoter = Promoter::for_queue(&settings.redis, OUTBOUND_QUEUE)
            .await
            .map_err(StartupError::Redis)?;
        let janitor = Janitor::for_queue(&settings.redis, OUTBOUND_QUEUE)
            .await
            .map_err(StartupError::Redis)?;
        let consumer = Consumer {
            conn,
            config: runner::push_queue_config(settings),
            poll_interval: worker.poll_interval(),
            concurrency: worker.concurrency,
            jobs: ConsumerJobs::Outbound(batcher.clone()),
            promoter: promoter.clone(),
            metrics: metrics.clone(),
            status: ConsumerStatus::default(),
        };
        Ok(Self {
            relay,
            consumer,
            batcher,
            batcher_task,
            promoter,
            janitor,
        })
    }
}

/// What every process that syncs needs, connected: the worker and the
/// operator commands (`leadsync backfill`, `reconcile`, `setup`) alike.
pub struct Connected {
    /// The platform's database.
    pub store: Store,
    /// The HubSpot client, behind the fleet-wide rate limiter and the OAuth
    /// token cache in Redis, with every integration's credentials on it.
    pub hubspot: Client,
    /// The credentials registered on [`hubspot`](Self::hubspot).
    pub credentials: Arc<Credentials>,
    /// The worker's metrics (the HubSpot client reports into them).
    pub metrics: WorkerMetrics,
    /// The Redis connection the limiter and the token cache use.
    pub(crate) redis: redis::aio::ConnectionManager,
}

/// Reads the token cipher from `hubspot.token_encryption_key`, connects to
/// Postgres and Redis and builds the HubSpot client with every integration's
/// credentials registered. The database is closed again when a later step
/// fails.
///
/// # Errors
/// [`StartupError`], naming the setting to look at.
pub async fn connect(settings: &Settings) -> Result<Connected, StartupError> {
    let key = settings.hubspot.require_token_encryption_key()?;
    let cipher = TokenCipher::from_base64_key(key).map_err(StartupError::Cipher)?;
    let metrics = WorkerMetrics::new()?;
    let store = Store::connect(&settings.database)
        .await
        .map_err(StartupError::Database)?;
    let connected = async {
        let redis = leadsync_queue::redis_client(&settings.redis).map_err(StartupError::Redis)?;
        let conn = redis
            .get_connection_manager_with_config(runner::connection_config(&settings.redis))
            .await
            .map_err(|e| StartupError::Redis(e.into()))?;
        let (hubspot, credentials) =
            hubspot_client(settings, &store, conn.clone(), cipher, &metrics).await?;
        Ok((hubspot, credentials, conn))
    }
    .await;
    match connected {
        Ok((hubspot, credentials, redis)) => Ok(Connected {
            store,
            hubspot,
            credentials,
            metrics,
            redis,
        }),
        Err(e) => {
            store.close().await;
            Err(e)
        }
    }
}

/// The HubSpot side of a worker process: the client, behind the fleet-wide
/// rate limiter and the OAuth token cache in Redis, with every integration's
/// credentials registered on it (and kept by the returned [`Credentials`]).
async fn hubspot_client(
    settings: &Settings,
    store: &Store,
    conn: redis::aio::ConnectionManager,
    cipher: TokenCipher,
    metrics: &WorkerMetrics,
) -> Result<(Client, Arc<Credentials>), StartupError> {
    let hubspot = &settings.hubspot;
    let limiter = RateLimiter::new(
        conn.clone(),
        LimiterConfig {
            key_prefix: settings.redis.key_prefix.clone(),
            default_quota: PortalQuota::new(hubspot.rate_limit_max, hubspot.rate_limit_window()),
            ..LimiterConfig::default()
        },
    )
    .with_metrics(metrics.hubspot.clone());
    let oauth = OAuthTokens::new(
        conn.clone(),
        Arc::new(PgTokenStore::new(store.clone(), cipher.clone())),
        OAuthTokensConfig {
            key_prefix: settings.redis.key_prefix.clone(),
            ..OAuthTokensConfig::default()
        },
    )
    .with_metrics(metrics.hubspot.clone());
    let base_url = hubspot
        .api_base_url
        .parse()
        .map_err(|e| ConfigError::invalid("hubspot.api_base_url", format!("not a URL: {e}")))?;
    let mut client_config = ClientConfig::new(base_url);
    client_config.oauth_app = match (hubspot.client_id.as_str(), hubspot.oauth_client_secret()) {
        ("", _) | (_, None) => None,
        (client_id, Some(secret)) => Some(OAuthApp {
            client_id: client_id.to_owned(),
            client_secret: secret.clone(),
        }),
    };
    let oauth_configured = client_config.oauth_app.is_some();
    let client = Client::builder(client_config)
        .limiter(limiter)
        .oauth_tokens(oauth.clone())
        .metrics(metrics.hubspot.clone())
        .build()
        .map_err(StartupError::HubSpot)?;

    let credentials = Arc::new(Credentials::new(
        store.clone(),
        cipher,
        client.clone(),
        Some(oauth),
    ));
    let report = credentials.reload().await?;
    if report.oauth > 0 && !oauth_configured {
        tracing::error!(
            "configuration keys `hubspot.client_id` and `hubspot.client_secrets` are needed: {} integration(s) use OAuth, and their tokens cannot be refreshed",
            report.oauth
        );
    }
    tracing::info!(
        credentials.private_app = report.private_app,
        credentials.oauth = report.oauth,
        credentials.unusable = report.unusable,
        "Registered HubSpot credentials of {} integration(s)",
        report.private_app + report.oauth
    );
    Ok((client, credentials))
}

/// Stops a running [`Application`].
#[derive(Clone, Debug)]
pub struct StopHandle(CancellationToken);

impl StopHandle {
    /// Asks the worker to stop gracefully (like SIGTERM).
    pub fn stop(&self) {
        self.0.cancel();
    }
}
