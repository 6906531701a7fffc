//! Fixtures: a test database, the simulator, the worker's settings with a
//! Redis key prefix of their own, a queue to push to and to look into.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use leadsync_domain::{ContactId, PortalId, WebhookEvent};
use leadsync_hubspot::{Client, ClientConfig, PropertyEnsured, TokenSource};
use leadsync_hubspot_sim::{PortalConfig, RateLimitConfig, SimConfig, SimHandle, UserEdit, spawn};
use leadsync_queue::{BulkPusher, InboundEvent, PushLeadChange, QueueInspector};
use leadsync_runtime::Settings;
use leadsync_store::integrations::{self, AuthMode, NewIntegration, Tokens};
use leadsync_store::leads::{self, LeadFields, ListLeads, NewLead};
use leadsync_store::testing::TestDb;
use leadsync_store::{Integration, IntegrationSettings, Lead, LeadColumn, TokenCipher, outbox};
use leadsync_worker::{Application, OutboundDeps, StopHandle, relay};
use redis::AsyncCommands as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::value::RawValue;
use serde_json::{Value, json};

pub const PORTAL: u64 = 62515;
pub const TOKEN: &str = "pat-na1-worker-it";
pub const BATCH_READ: &str = "POST /crm/v3/objects/contacts/batch/read";
/// The option of `lead_source_system` the workers write.
pub const SOURCE: &str = "jazzaam";

/// One test's world: its own database, simulator, Redis key prefix and
/// encryption key, and an integration for [`PORTAL`] with a private-app
/// token stored encrypted.
pub struct TestEnv {
    pub db: TestDb,
    pub sim: SimHandle,
    pub prefix: String,
    pub key: SecretString,
    pub integration: Integration,
    next_event: AtomicU64,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl TestEnv {
    pub async fn new() -> Self {
        let env = Self::without_integration().await;
        let integration = env.connect_private_app(PORTAL, TOKEN).await;
        Self { integration, ..env }
    }

    /// The world before any account is connected.
    pub async fn without_integration() -> Self {
        Self::with_sim_config(sim_config()).await
    }

    /// A world with an integration for [`PORTAL`] whose simulator runs with
    /// `config` (e.g. [`sim_config`] with a webhook target).
    pub async fn connected_with(config: SimConfig) -> Self {
        let env = Self::with_sim_config(config).await;
        let integration = env.connect_private_app(PORTAL, TOKEN).await;
        Self { integration, ..env }
    }

    /// The world before any account is connected, its simulator running
    /// with `config`.
    pub async fn with_sim_config(config: SimConfig) -> Self {
        leadsync_runtime::telemetry::init_for_tests();
        let db = TestDb::create().await.expect("test database");
        let sim = spawn(config).await.expect("simulator starts");
        Self {
            db,
            sim,
            prefix: format!("test-worker-{}", uuid::Uuid::now_v7().simple()),
            key: TokenCipher::generate_key(),
            // Replaced by the constructors that connect one.
            integration: placeholder_integration(),
            next_event: AtomicU64::new(1),
        }
    }

    pub fn cipher(&self) -> TokenCipher {
        TokenCipher::from_base64_key(&self.key).expect("generated key")
    }

    /// Connects `portal` with a private-app token, as the CLI would.
    pub async fn connect_private_app(&self, portal: u64, token: &str) -> Integration {
        let integration = integrations::create(
            self.db.store.pool(),
            &NewIntegration {
                name: format!("acme-{portal}"),
                portal_id: PortalId::new(portal),
                app_id: None,
                auth_mode: AuthMode::PrivateApp,
                settings: IntegrationSettings::default(),
            },
        )
        .await
        .expect("integration created");
        integrations::store_tokens(
            self.db.store.pool(),
            integration.id,
            &self.cipher(),
            &Tokens {
                access: SecretString::from(token.to_owned()),
                refresh: None,
                expires_at: None,
            },
        )
        .await
        .expect("token stored");
        integration
    }

    /// The worker's settings as TOML: this world's database, prefix,
    /// simulator and key, short heartbeats and windows, `extra` on top.
    pub fn settings_with_api(&self, api_base_url: &str, extra: &str) -> Settings {
        let base = format!(
            r#"
            [database]
            url = "postgres://postgres@127.0.0.1:5432/{db}"
            max_connections = 8
            [redis]
            key_prefix = "{prefix}"
            [hubspot]
            api_base_url = "{api_base_url}"
            token_encryption_key = "{key}"
            [worker]
            batch_window_ms = 50
            concurrency = 200
            fetch_batch_size = 100
            poll_interval_ms = 50
            promote_interval_ms = 200
            heartbeat_interval_secs = 1
            missed_heartbeats = 2
            metrics_host = "127.0.0.1"
            metrics_port = 0
            shutdown_timeout_secs = 10
            "#,
            db = self.db.name,
            prefix = self.prefix,
            key = self.key.expose_secret(),
        );
        Settings::from_toml_layers(&[&base, extra]).expect("test settings are valid")
    }

    pub fn settings(&self, extra: &str) -> Settings {
        self.settings_with_api(&self.sim.base_url(), extra)
    }

    /// The same settings as `LEADSYNC__…` variables, for the binary.
    pub fn env_vars(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = [
            (
                "DATABASE__URL",
                format!("postgres://postgres@127.0.0.1:5432/{}", self.db.name),
            ),
            ("DATABASE__MAX_CONNECTIONS", "4".to_owned()),
            ("REDIS__KEY_PREFIX", self.prefix.clone()),
            ("HUBSPOT__API_BASE_URL", self.sim.base_url()),
            (
                "HUBSPOT__TOKEN_ENCRYPTION_KEY",
                self.key.expose_secret().to_owned(),
            ),
            ("WORKER__CONCURRENCY", "200".to_owned()),
            ("WORKER__FETCH_BATCH_SIZE", "100".to_owned()),
            ("WORKER__POLL_INTERVAL_MS", "50".to_owned()),
            ("WORKER__HEARTBEAT_INTERVAL_SECS", "1".to_owned()),
            ("WORKER__MISSED_HEARTBEATS", "2".to_owned()),
            ("WORKER__METRICS_HOST", "127.0.0.1".to_owned()),
            ("WORKER__METRICS_PORT", "0".to_owned()),
            ("TELEMETRY__LOG_FILTER", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("LEADSYNC__{k}"), v))
        .collect();
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| (format!("LEADSYNC__{k}"), (*v).to_owned())),
        );
        vars
    }

    /// A contact created by a user in HubSpot; returns its id.
    pub fn create_contact(&self, email: &str) -> u64 {
        self.create_contact_with(&[("email", email), ("firstname", "Test")])
    }

    /// A contact a HubSpot user creates with `properties`.
    pub fn create_contact_with(&self, properties: &[(&str, &str)]) -> u64 {
        self.sim
            .control()
            .create_contact(PORTAL, &UserEdit::new(properties.iter().copied()))
            .expect("contact created")
            .id
    }

    /// `n` contacts created in HubSpot.
    pub fn create_contacts(&self, n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| self.create_contact(&format!("person{i}@example.com")))
            .collect()
    }

    /// The webhook event HubSpot would send, as the ingester queues it.
    pub fn event(&self, ty: &str, contact: u64, extra: Value) -> InboundEvent {
        let n = self.next_event.fetch_add(1, Ordering::Relaxed);
        let mut body = json!({
            "eventId": n,
            "subscriptionId": 1,
            "portalId": PORTAL,
            "appId": 1_160_452,
            "occurredAt": 1_700_000_000_000_i64 + i64::try_from(n).expect("small"),
            "subscriptionType": ty,
            "attemptNumber": 0,
            "objectId": contact,
            "changeSource": "CRM_UI",
        });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        let raw = RawValue::from_string(body.to_string()).expect("JSON");
        InboundEvent::new(WebhookEvent::from_raw(&raw), now_ms(), HashMap::new(), None)
    }

    pub fn creation(&self, contact: u64) -> InboundEvent {
        self.event("contact.creation", contact, json!({}))
    }

    pub fn change(&self, contact: u64, property: &str, value: &str) -> InboundEvent {
        self.event(
            "contact.propertyChange",
            contact,
            json!({ "propertyName": property, "propertyValue": value }),
        )
    }

    /// Queues `events` as the ingester does.
    pub async fn push(&self, events: &[InboundEvent]) {
        let settings = self.settings("");
        let pusher = BulkPusher::new(&settings.redis).expect("pusher");
        let outcome = pusher.push(events).await.expect("Redis accepts the push");
        assert_eq!(outcome.new, events.len() as u64, "every event is new");
    }

    pub async fn leads(&self) -> Vec<Lead> {
        leads::list(
            self.db.store.pool(),
            self.integration.id,
            &ListLeads {
                after: None,
                limit: 1000,
                include_deleted: true,
            },
        )
        .await
        .expect("list leads")
    }

    pub async fn lead(&self, contact: u64) -> Option<Lead> {
        leads::by_crm_id(
            self.db.store.pool(),
            self.integration.id,
            ContactId::new(contact),
        )
        .await
        .expect("lead query")
    }

    /// Waits until `n` leads exist (or `timeout` passes); returns them.
    pub async fn wait_for_leads(&self, n: usize, timeout: Duration) -> Vec<Lead> {
        let started = Instant::now();
        loop {
            let leads = self.leads().await;
            if leads.len() >= n || started.elapsed() > timeout {
                return leads;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn queue(&self) -> Queue {
        Queue::connect(&self.settings("")).await
    }

    pub async fn finish(self) {
        let mut queue = self.queue().await;
        queue.inspector.purge().await.expect("purge");
        // apalis-redis lists every queue a worker registered on.
        let outbound = leadsync_queue::outbound_config(&self.settings("").redis);
        let _: () = queue
            .conn
            .zrem(
                "core:apalis:queues:list",
                &[queue.config.workers_set(), outbound.workers_set()],
            )
            .await
            .expect("Redis");
        self.sim.stop().await;
        self.db.cleanup().await.expect("cleanup");
    }
}

/// The simulator of [`TestEnv`]: [`PORTAL`] with [`TOKEN`], no rate limits,
/// no webhook target.
pub fn sim_config() -> SimConfig {
    SimConfig {
        seed: 5,
        workers: 1,
        portals: vec![PortalConfig::new(PORTAL).with_private_app_token(TOKEN)],
        rate_limit: RateLimitConfig::disabled(),
        ..SimConfig::default()
    }
}

fn placeholder_integration() -> Integration {
    Integration {
        id: uuid::Uuid::nil(),
        name: String::new(),
        portal_id: PortalId::new(PORTAL),
        app_id: None,
        auth_mode: AuthMode::PrivateApp,
        token_expires_at: None,
        settings: IntegrationSettings::default(),
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    }
}

/// A HubSpot client for [`PORTAL`] against the simulator.
pub fn sim_client(sim: &SimHandle) -> Client {
    sim_client_at(&sim.base_url())
}

/// A HubSpot client for [`PORTAL`] against `base_url` (the simulator, or a
/// proxy in front of it).
pub fn sim_client_at(base_url: &str) -> Client {
    let client = Client::builder(ClientConfig::new(base_url.parse().expect("valid URL")))
        .build()
        .expect("client builds");
    client.set_token_source(PortalId::new(PORTAL), TokenSource::PrivateApp(TOKEN.into()));
    client
}

/// The inbound queue in apalis-redis's layout, read directly.
pub struct Queue {
    conn: redis::aio::MultiplexedConnection,
    config: apalis_redis::Config,
    remembered: String,
    pub inspector: QueueInspector,
}

impl Queue {
    pub async fn connect(settings: &Settings) -> Self {
        Self {
            conn: leadsync_queue::redis_client(&settings.redis)
                .expect("client")
                .get_multiplexed_async_connection()
                .await
                .expect("Redis runs at 127.0.0.1:6379"),
            config: leadsync_queue::inbound_config(&settings.redis),
            remembered: leadsync_queue::remembered_set(&settings.redis),
            inspector: QueueInspector::connect(&settings.redis)
                .await
                .expect("Redis"),
        }
    }

    pub async fn waiting(&mut self) -> u64 {
        self.inspector.waiting().await.expect("Redis")
    }

    /// Jobs acknowledged as done: still in apalis's done set, or already
    /// retired by the worker's janitor (payload and metadata dropped).
    pub async fn done(&mut self) -> u64 {
        let done: u64 = self
            .conn
            .scard(self.config.done_jobs_set())
            .await
            .expect("Redis");
        let retired: u64 = self.conn.zcard(&self.remembered).await.expect("Redis");
        done + retired
    }

    /// Whether `event`'s job was acknowledged as done.
    pub async fn is_done(&mut self, event: &InboundEvent) -> bool {
        let key = event.key.as_str();
        let done: bool = self
            .conn
            .sismember(self.config.done_jobs_set(), key)
            .await
            .expect("Redis");
        let retired: Option<f64> = self
            .conn
            .zscore(&self.remembered, key)
            .await
            .expect("Redis");
        done || retired.is_some()
    }

    pub async fn dead(&mut self) -> u64 {
        self.conn
            .scard(self.config.dead_jobs_set())
            .await
            .expect("Redis")
    }

    /// Jobs held by workers (every worker's in-flight set).
    pub async fn held(&mut self) -> u64 {
        let pattern = format!("{}:*", self.config.inflight_jobs_set());
        let keys: Vec<String> = {
            let mut iter = self
                .conn
                .scan_match::<_, String>(&pattern)
                .await
                .expect("Redis");
            let mut keys = Vec::new();
            while let Some(k) = futures::StreamExt::next(&mut iter).await {
                keys.push(k.expect("key"));
            }
            keys
        };
        let mut held = 0;
        for key in keys {
            held += self.conn.scard::<_, u64>(&key).await.expect("Redis");
        }
        held
    }

    /// Forgets a worker's registration, as a flushed or restarted Redis would.
    pub async fn unregister(&mut self, worker: &str) {
        let _: () = self
            .conn
            .zrem(self.config.workers_set(), worker)
            .await
            .expect("Redis");
    }

    pub async fn set_meta(&mut self, event: &InboundEvent, field: &str, value: &str) {
        let _: () = self
            .conn
            .hset(
                format!("{}:{}", self.config.job_meta_hash(), event.key),
                field,
                value,
            )
            .await
            .expect("Redis");
    }

    /// Waits until `check` holds for the queue, or `timeout` passes.
    pub async fn wait_until(
        &mut self,
        timeout: Duration,
        mut check: impl AsyncFnMut(&mut Self) -> bool,
    ) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if check(self).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        check(self).await
    }
}

/// A worker running in this process.
pub struct RunningWorker {
    pub handle: StopHandle,
    pub status: leadsync_worker::runner::ConsumerStatus,
    pub metrics_port: u16,
    pub metrics: leadsync_worker::WorkerMetrics,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningWorker {
    pub async fn start(settings: &Settings) -> Self {
        let app = Application::build(settings).await.expect("worker builds");
        let handle = app.handle();
        let metrics_port = app.metrics_port();
        let metrics = app.metrics().clone();
        let status = app.consumer_status();
        let task = tokio::spawn(app.run_until(std::future::pending()));
        Self {
            handle,
            status,
            metrics_port,
            metrics,
            task,
        }
    }

    /// Stops it gracefully and waits (at most `timeout`).
    pub async fn stop(self, timeout: Duration) {
        self.handle.stop();
        tokio::time::timeout(timeout, self.task)
            .await
            .expect("the worker stops in time")
            .expect("the worker task ran")
            .expect("the metrics server ran");
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.metrics_port))
            .await
            .expect("metrics server answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }
}

/// A value of a metric in Prometheus text, e.g. `metric(&text, "x_total")`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// An HTTP proxy in front of the simulator that answers the first
/// `failures` batch reads with 503 (the simulator serves no 5xx).
pub struct FailingProxy {
    pub url: String,
    pub batch_reads: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    failures_left: AtomicUsize,
    batch_reads: Arc<AtomicUsize>,
}

async fn forward(req: HttpRequest, body: web::Bytes, state: web::Data<ProxyState>) -> HttpResponse {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if req.method() == actix_web::http::Method::POST
        && req.uri().path() == "/crm/v3/objects/contacts/batch/read"
    {
        state.batch_reads.fetch_add(1, Ordering::SeqCst);
        let failing = state
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return HttpResponse::ServiceUnavailable()
                .content_type("application/json;charset=utf-8")
                .body(r#"{"status":"error","message":"Service unavailable","category":"SERVICE_UNAVAILABLE"}"#);
        }
    }
    relay_to(&state.http, &state.upstream, path, &req, &body).await
}

impl FailingProxy {
    pub async fn start(upstream: &str, failures: usize) -> Self {
        let batch_reads = Arc::new(AtomicUsize::new(0));
        let state = web::Data::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            failures_left: AtomicUsize::new(failures),
            batch_reads: Arc::clone(&batch_reads),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(forward))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url,
            batch_reads,
            handle,
        }
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// An HTTP proxy in front of the simulator that answers the first `times`
/// requests to `method path` with `status` and `body` (a canned HubSpot
/// error the simulator does not produce there), forwarding everything else.
pub struct StubProxy {
    pub url: String,
    /// Requests answered with the stub.
    pub stubbed: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

struct StubState {
    upstream: String,
    http: reqwest::Client,
    method: String,
    path: String,
    status: u16,
    body: String,
    left: AtomicUsize,
    stubbed: Arc<AtomicUsize>,
}

async fn stub_or_forward(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<StubState>,
) -> HttpResponse {
    if req.method().as_str() == state.method
        && req.uri().path() == state.path
        && state
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        state.stubbed.fetch_add(1, Ordering::SeqCst);
        return HttpResponse::build(
            actix_web::http::StatusCode::from_u16(state.status).expect("status"),
        )
        .content_type("application/json;charset=utf-8")
        .body(state.body.clone());
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    relay_to(&state.http, &state.upstream, path, &req, &body).await
}

impl StubProxy {
    pub async fn start(
        upstream: &str,
        method: &str,
        path: &str,
        (status, body): (u16, &str),
        times: usize,
    ) -> Self {
        let stubbed = Arc::new(AtomicUsize::new(0));
        let state = web::Data::new(StubState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            body: body.to_owned(),
            left: AtomicUsize::new(times),
            stubbed: Arc::clone(&stubbed),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(stub_or_forward))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url,
            stubbed,
            handle,
        }
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// Creates the custom property `lead_source_system`, as `leadsync setup` does.
pub async fn create_source_property(client: &Client) {
    let ensured = client
        .ensure_source_property(PortalId::new(PORTAL), SOURCE)
        .await
        .expect("property created");
    assert_eq!(ensured, PropertyEnsured::Created);
}

/// The simulator's client with `lead_source_system` set up, and the push
/// processor's dependencies on it.
pub async fn outbound(env: &TestEnv) -> (Client, OutboundDeps) {
    let client = sim_client(&env.sim);
    create_source_property(&client).await;
    let deps = OutboundDeps {
        store: env.db.store.clone(),
        hubspot: client.clone(),
        source_system: SOURCE.to_owned(),
        credentials: None,
    };
    (client, deps)
}

/// Claims every pending outbox row and turns it into its job, as the relay
/// does (without the queue in between).
pub async fn pending_jobs(env: &TestEnv) -> Vec<PushLeadChange> {
    let mut tx = env.db.store.begin().await.expect("transaction");
    let changes = outbox::claim_batch(&mut tx, 10_000).await.expect("claim");
    let ids: Vec<i64> = changes.iter().map(|c| c.id).collect();
    outbox::mark_relayed(&mut *tx, &ids).await.expect("mark");
    tx.commit().await.expect("commit");
    changes
        .iter()
        .map(|c| relay::push_job(c, HashMap::new()))
        .collect()
}

/// A lead created through the store, as the platform's REST API does.
pub async fn create_lead(env: &TestEnv, values: &[(LeadColumn, &str)]) -> Lead {
    let mut fields = LeadFields::default();
    for (column, value) in values {
        fields.set(*column, Some((*value).to_owned()));
    }
    leads::create(
        env.db.store.pool(),
        env.integration.id,
        &NewLead {
            fields,
            source_system: None,
        },
    )
    .await
    .expect("lead created")
}

/// Sends the request on to `upstream` (the simulator) and hands its answer
/// back, with the headers HubSpot's clients read.
async fn relay_to(
    http: &reqwest::Client,
    upstream: &str,
    path: &str,
    req: &HttpRequest,
    body: &[u8],
) -> HttpResponse {
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).expect("method");
    let mut forwarded = http
        .request(method, format!("{upstream}{path}"))
        .body(body.to_vec());
    for name in ["authorization", "content-type"] {
        if let Some(v) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
            forwarded = forwarded.header(name, v);
        }
    }
    let answer = forwarded.send().await.expect("the simulator answers");
    let mut response = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(answer.status().as_u16()).expect("status"),
    );
    for (name, value) in answer.headers() {
        let lower = name.as_str();
        if (lower == "content-type" || lower.starts_with("x-hubspot-"))
            && let Ok(v) = value.to_str()
        {
            response.insert_header((lower.to_owned(), v.to_owned()));
        }
    }
    response.body(answer.bytes().await.expect("body").to_vec())
}
