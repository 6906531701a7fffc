//! Building and running the ingester.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use leadsync_hubspot::{SignaturePolicy, WebhookSecrets};
use leadsync_queue::Enqueuer;
use leadsync_runtime::Settings;

use crate::metrics::IngestMetrics;
use crate::{root_span, routes};

/// What request handlers use. Each HTTP worker thread has its own copy with
/// its own [`Enqueuer`], so a request never waits on another thread.
#[derive(Clone)]
pub struct AppState {
    /// Keys of webhook signatures.
    pub secrets: WebhookSecrets,
    /// Signature strictness.
    pub policy: SignaturePolicy,
    /// Public URL prefix HubSpot calls.
    pub public_base_url: String,
    /// Largest accepted body.
    pub body_limit: usize,
    /// How long to wait for Redis.
    pub enqueue_deadline: Duration,
    /// The queue.
    pub enqueuer: Enqueuer,
    /// Metrics.
    pub metrics: IngestMetrics,
}

/// A bound, not yet running ingester.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Validates the ingester's settings, binds `application.host:port`
    /// (port 0 picks a free one) and prepares the server.
    pub fn build(settings: &Settings) -> anyhow::Result<Self> {
        let app = &settings.application;
        let listener = TcpListener::bind((app.host.as_str(), app.port))
            .with_context(|| format!("binding {}:{}", app.host, app.port))?;
        Self::build_with_listener(settings, listener)
    }

    /// Like [`Application::build`] on a listener bound beforehand (when the
    /// caller must know the port to configure `public_base_url`).
    pub fn build_with_listener(settings: &Settings, listener: TcpListener) -> anyhow::Result<Self> {
        let app = &settings.application;
        let secrets = WebhookSecrets::new(settings.hubspot.client_secrets.clone()).context(
            "configuration key `hubspot.client_secrets`: the ingester needs at least one client secret",
        )?;
        let metrics = IngestMetrics::new().context("registering metrics")?;
        let redis = leadsync_queue::redis_client(&settings.redis)
            .context("configuration key `redis.url`")?;
        let redis_settings = settings.redis.clone();
        let policy = SignaturePolicy {
            require_v3: settings.hubspot.require_signature_v3,
            max_age: Duration::from_secs(settings.hubspot.signature_max_age_secs),
        };
        let public_base_url = app.public_base_url.clone();
        let (body_limit, enqueue_deadline) = (app.body_limit_bytes, app.enqueue_deadline());
        let port = listener.local_addr()?.port();
        let mut server = HttpServer::new(move || {
            // Runs once on each worker thread, inside its runtime.
            let state = AppState {
                secrets: secrets.clone(),
                policy,
                public_base_url: public_base_url.clone(),
                body_limit,
                enqueue_deadline,
                enqueuer: Enqueuer::start_with_client(
                    redis.clone(),
                    &redis_settings,
                    metrics.queue.clone(),
                ),
                metrics: metrics.clone(),
            };
            App::new()
                .wrap(from_fn(root_span::observe))
                .app_data(web::Data::new(state))
                .configure(routes::configure)
        })
        .shutdown_timeout(app.shutdown_timeout_secs)
        // HubSpot keeps up to 10 connections per account open; keep-alive
        // spares a TLS/TCP handshake per delivery.
        .keep_alive(Duration::from_secs(75));
        if app.http_workers > 0 {
            server = server.workers(app.http_workers);
        }
        let server = server.listen(listener)?.run();
        tracing::info!(port, "Ingester listening");
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
