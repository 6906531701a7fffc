//! Building and running the API server.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use leadsync_queue::{BulkPusher, INBOUND_QUEUE, OUTBOUND_QUEUE};
use leadsync_runtime::Settings;
use leadsync_store::Store;
use prometheus::{IntCounterVec, Opts, Registry};
use utoipa_actix_web::AppExt as _;

use crate::{input, openapi, root_span, routes};

/// What request handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The platform's database.
    pub store: Store,
    /// Pushes replayed webhook events back onto the inbound queue.
    pub inbound: BulkPusher,
    /// Pushes replayed lead changes back onto the outbound queue.
    pub outbound: BulkPusher,
    /// Requests by route and status.
    pub requests: IntCounterVec,
    /// The registry `/metrics` exports.
    pub registry: Registry,
}

impl AppState {
    /// State on `store` and the queues of `settings.redis` (connected
    /// lazily: the API serves leads while Redis is down; only a replay
    /// needs it).
    pub fn new(settings: &Settings, store: Store) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "leadsync_api_requests_total",
                "REST API requests by route and status",
            ),
            &["route", "status"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        Ok(Self {
            store,
            inbound: BulkPusher::for_queue(&settings.redis, INBOUND_QUEUE)
                .context("configuration key `redis.url`")?,
            outbound: BulkPusher::for_queue(&settings.redis, OUTBOUND_QUEUE)
                .context("configuration key `redis.url`")?,
            requests,
            registry,
        })
    }
}

/// A bound, not yet running API server.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Connects to Postgres, binds `api.host:port` (port 0 picks a free one)
    /// and prepares the server.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let store = Store::connect(&settings.database)
            .await
            .context("connecting to Postgres (`database.url`)")?;
        let api = &settings.api;
        let listener = TcpListener::bind((api.host.as_str(), api.port))
            .with_context(|| format!("binding {}:{}", api.host, api.port))?;
        Self::build_with(settings, store, listener)
    }

    /// Like [`Application::build`] with a store and a listener made
    /// beforehand (tests).
    pub fn build_with(
        settings: &Settings,
        store: Store,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let api = &settings.api;
        let state = AppState::new(settings, store)?;
        let document = web::Data::new(openapi::Document::build()?);
        let body_limit = api.body_limit_bytes;
        let port = listener.local_addr()?.port();
        let mut server = HttpServer::new(move || {
            App::new()
                .into_utoipa_app()
                .configure(routes::configure)
                .into_app()
                .wrap(from_fn(root_span::observe))
                .app_data(web::Data::new(state.clone()))
                .app_data(document.clone())
                .app_data(input::json_config(body_limit))
                .app_data(input::query_config())
                .app_data(input::path_config())
                .default_service(web::to(routes::not_found))
        })
        .shutdown_timeout(api.shutdown_timeout_secs)
        .keep_alive(Duration::from_secs(75));
        if api.http_workers > 0 {
            server = server.workers(api.http_workers);
        }
        let server = server.listen(listener)?.run();
        tracing::info!(port, "API listening");
        Ok(Self { port, server })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until a signal: on SIGTERM (what Kubernetes and `docker stop`
    /// send) it stops accepting and finishes in-flight requests first; on
    /// SIGINT or SIGQUIT it stops at once.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }

    /// A handle to stop the server from elsewhere (tests, embedding).
    pub fn handle(&self) -> StopHandle {
        StopHandle(self.server.handle())
    }
}

/// Stops a running [`Application`].
#[derive(Clone)]
pub struct StopHandle(actix_web::dev::ServerHandle);

impl StopHandle {
    /// Stops accepting connections; with `graceful`, finishes in-flight requests first.
    pub async fn stop(&self, graceful: bool) {
        self.0.stop(graceful).await;
    }
}
