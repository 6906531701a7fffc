//! The whole inbound chain in one process: the HubSpot simulator acting as a
//! CRM user and delivering signed webhook batches to the real ingester, its
//! Redis queue (a key prefix of its own), a real worker, and a fresh Postgres
//! database per test.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use leadsync_domain::{ContactId, PortalId};
use leadsync_hubspot::{Client, ClientConfig, OAuthApp};
use leadsync_hubspot_sim::{
    AppConfig, AuthorizeRequest, DeliveryConfig, FaultConfig, PortalConfig, SimConfig, SimHandle,
    SimStats, SubscriptionSpec, UserEdit, spawn,
};
use leadsync_runtime::Settings;
use leadsync_store::audit::{self, AuditAction, AuditRecord};
use leadsync_store::dead_letters::{self, DeadLetter, DeadLetterFilter};
use leadsync_store::integrations::{self, AuthMode, NewIntegration, Tokens};
use leadsync_store::leads::{self, ListLeads};
use leadsync_store::testing::TestDb;
use leadsync_store::{Integration, IntegrationSettings, Lead, TokenCipher};
use leadsync_worker::{StopHandle, WorkerMetrics};
use redis::AsyncCommands as _;
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

/// The HubSpot account connected to leadsync.
pub const PORTAL: u64 = 62515;
/// Its private-app token.
pub const TOKEN: &str = "pat-na1-e2e";
/// The simulated public app's OAuth client id ([`AppConfig::default`]).
pub const CLIENT_ID: &str = "sim-client-id";
/// Its client secret: signs the webhooks and authenticates OAuth calls.
pub const CLIENT_SECRET: &str = "sim-client-secret";
/// The webhook path HubSpot is configured to call.
pub const WEBHOOK_PATH: &str = "/webhooks/hubspot";
/// The simulator's key of the batch read endpoint.
pub const BATCH_READ: &str = "POST /crm/v3/objects/contacts/batch/read";
/// The simulator's key of the OAuth token endpoint.
pub const TOKEN_ENDPOINT: &str = "POST /oauth/v1/token";
/// How long any awaited outcome may take before the test fails.
/// Generous: this Redis and these two cores are shared with other tests and
/// benchmarks; a healthy run takes a few seconds.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Where apalis-redis lists every queue a worker registered on.
const APALIS_QUEUES: &str = "core:apalis:queues:list";

/// Contact properties the app subscribes to (besides the contact events).
const SUBSCRIBED: &[&str] = &[
    "email",
    "firstname",
    "lastname",
    "phone",
    "company",
    "jobtitle",
    "city",
    "country",
];

/// HubSpot endpoints that change CRM data. The inbound flow only reads.
const WRITE_ENDPOINTS: &[&str] = &[
    "POST /crm/v3/objects/contacts",
    "PATCH /crm/v3/objects/contacts/{contactId}",
    "DELETE /crm/v3/objects/contacts/{contactId}",
    "POST /crm/v3/objects/contacts/batch/create",
    "POST /crm/v3/objects/contacts/batch/update",
    "POST /crm/v3/objects/contacts/batch/upsert",
    "POST /crm/v3/objects/contacts/batch/archive",
    "POST /crm/v3/objects/contacts/merge",
    "POST /crm/v3/objects/contacts/gdpr-delete",
    "POST /crm/v3/properties/contacts",
    "PATCH /crm/v3/properties/contacts/{propertyName}",
    "DELETE /crm/v3/properties/contacts/{propertyName}",
];

/// How the account is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auth {
    /// A private-app token (never expires).
    #[default]
    PrivateApp,
    /// An OAuth install: access token (expires) plus refresh token.
    OAuth,
}

/// What a test changes in the default world.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The integration's settings.
    pub settings: IntegrationSettings,
    /// How the account is connected.
    pub auth: Auth,
    /// Webhook delivery faults (duplicates, reordering, ...).
    pub faults: FaultConfig,
    /// The first `n` webhook POSTs reach the ingester, but HubSpot sees a
    /// 500 instead of its answer and retries them (a lost response).
    pub lost_answers: usize,
    /// Further HubSpot accounts that have the app installed (so the
    /// simulator delivers their events too) but are not connected to leadsync.
    pub unconnected_portals: Vec<u64>,
}

/// One test's world. Call [`World::finish`] at the end.
pub struct World {
    pub sim: SimHandle,
    pub db: TestDb,
    pub integration: Integration,
    pub settings: Settings,
    /// The worker's metrics (the same instruments its `/metrics` serves).
    pub worker: WorkerMetrics,
    /// The ingester's base URL (its `/metrics` lives there).
    pub ingester_url: String,
    /// The lossy front, when [`Options::lost_answers`] asked for one.
    pub front: Option<LossyFront>,
    key: SecretString,
    worker_stop: StopHandle,
    worker_task: tokio::task::JoinHandle<std::io::Result<()>>,
    ingester_stop: leadsync_ingester::startup::StopHandle,
    redis: redis::aio::MultiplexedConnection,
    keys: RedisKeys,
}

/// The queue's state: every stored task is finished once nothing waits and
/// `finished == stored`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    /// Task ids stored (one per distinct event ever queued).
    pub stored: u64,
    /// Tasks ready for a worker.
    pub ready: u64,
    /// Tasks scheduled for a retry.
    pub scheduled: u64,
    /// Tasks held by a worker.
    pub in_flight: u64,
    /// Tasks acknowledged as done (done set plus retired by the janitor).
    pub finished: u64,
}

impl World {
    /// Starts everything with the defaults: a private-app integration for
    /// [`PORTAL`], no delivery faults.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        leadsync_runtime::telemetry::init_for_tests();
        let db = TestDb::create()
            .await
            .expect("Postgres runs at 127.0.0.1:5432");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the ingester");
        let ingester_url = format!(
            "http://{}",
            listener.local_addr().expect("ingester address")
        );
        let front = if options.lost_answers > 0 {
            Some(LossyFront::start(&ingester_url, options.lost_answers).await)
        } else {
            None
        };
        // The URL HubSpot calls (and signs): the front when there is one.
        let public_url = front
            .as_ref()
            .map_or_else(|| ingester_url.clone(), |f| f.url.clone());
        let mut portals = vec![PortalConfig::new(PORTAL).with_private_app_token(TOKEN)];
        portals.extend(options.unconnected_portals.iter().map(|p| {
            PortalConfig::new(*p).with_private_app_token(format!("pat-na1-unconnected-{p}"))
        }));
        let sim = spawn(SimConfig {
            seed: 11,
            workers: 1,
            app: AppConfig {
                target_url: Some(format!("{public_url}{WEBHOOK_PATH}")),
                ..AppConfig::default()
            },
            portals,
            subscriptions: SubscriptionSpec::all_contact_events(SUBSCRIBED),
            // HubSpot's day of retries in about a second.
            delivery: DeliveryConfig {
                time_scale: 86_400.0,
                ..DeliveryConfig::default()
            },
            faults: options.faults,
            ..SimConfig::default()
        })
        .await
        .expect("simulator starts");

        let key = TokenCipher::generate_key();
        let prefix = format!("e2e-{}", Uuid::now_v7().simple());
        let settings = Settings::from_toml_layers(&[&format!(
            r#"
            [application]
            host = "127.0.0.1"
            port = 0
            public_base_url = "{public_url}"
            http_workers = 1
            enqueue_deadline_ms = 4000
            shutdown_timeout_secs = 1
            [hubspot]
            client_id = "{CLIENT_ID}"
            client_secrets = ["{CLIENT_SECRET}"]
            api_base_url = "{api}"
            token_encryption_key = "{key}"
            [redis]
            key_prefix = "{prefix}"
            [database]
            url = "postgres://postgres@127.0.0.1:5432/{db}"
            max_connections = 8
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
            api = sim.base_url(),
            key = key.expose_secret(),
            db = db.name,
        )])
        .expect("test settings are valid");

        let integration = connect(&db, &sim, &key, options.auth, &options.settings).await;

        let ingester = leadsync_ingester::Application::build_with_listener(&settings, listener)
            .expect("ingester builds");
        let ingester_stop = ingester.handle();
        tokio::spawn(ingester.run_until_stopped());

        let app = leadsync_worker::Application::build(&settings)
            .await
            .expect("worker builds");
        let worker = app.metrics().clone();
        let worker_stop = app.handle();
        let worker_task = tokio::spawn(app.run_until(std::future::pending()));

        let keys = RedisKeys {
            url: settings.redis.url.expose_secret().to_owned(),
            prefix: prefix.clone(),
            armed: true,
        };
        let mut redis = leadsync_queue::redis_client(&settings.redis)
            .expect("Redis client")
            .get_multiplexed_async_connection()
            .await
            .expect("Redis runs at 127.0.0.1:6379");
        // Other tests and benchmarks share this Redis: observing must not
        // fail because it is busy for a moment.
        redis.set_response_timeout(DEADLINE);
        Self {
            sim,
            db,
            integration,
            settings,
            worker,
            ingester_url,
            front,
            key,
            worker_stop,
            worker_task,
            ingester_stop,
            redis,
            keys,
        }
    }

    pub fn cipher(&self) -> TokenCipher {
        TokenCipher::from_base64_key(&self.key).expect("generated key")
    }

    // --- acting as a HubSpot user -----------------------------------------

    /// A user creates a contact in HubSpot; returns its id.
    pub fn create_contact(&self, properties: &[(&str, &str)]) -> u64 {
        self.create_contact_in(PORTAL, properties)
    }

    pub fn create_contact_in(&self, portal: u64, properties: &[(&str, &str)]) -> u64 {
        self.sim
            .control()
            .create_contact(portal, &UserEdit::new(properties.iter().copied()))
            .expect("HubSpot creates the contact")
            .id
    }

    /// A user edits a contact in HubSpot.
    pub fn edit_contact(&self, contact: u64, properties: &[(&str, &str)]) {
        self.sim
            .control()
            .update_contact(PORTAL, contact, &UserEdit::new(properties.iter().copied()))
            .expect("HubSpot updates the contact");
    }

    // --- observing ---------------------------------------------------------

    /// The lead linked to `contact`.
    pub async fn lead(&self, contact: u64) -> Option<Lead> {
        leads::by_crm_id(
            self.db.store.pool(),
            self.integration.id,
            ContactId::new(contact),
        )
        .await
        .expect("lead query")
    }

    /// The lead with this id, linked or not, deleted or not.
    pub async fn lead_by_id(&self, id: Uuid) -> Option<Lead> {
        leads::by_id(self.db.store.pool(), self.integration.id, id)
            .await
            .expect("lead query")
    }

    /// Every lead of the integration, soft-deleted ones included.
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

    /// Waits until the lead linked to `contact` satisfies `done`.
    pub async fn lead_when(&self, contact: u64, what: &str, done: impl Fn(&Lead) -> bool) -> Lead {
        eventually(what, async || match self.lead(contact).await {
            Some(lead) if done(&lead) => Ok(lead),
            other => Err(format!(
                "lead of contact {contact}: {other:#?}; queue: {:?}",
                self.queue_state().await
            )),
        })
        .await
    }

    /// Waits until the lead `id` satisfies `done`.
    pub async fn lead_by_id_when(
        &self,
        id: Uuid,
        what: &str,
        done: impl Fn(&Lead) -> bool,
    ) -> Lead {
        eventually(what, async || match self.lead_by_id(id).await {
            Some(lead) if done(&lead) => Ok(lead),
            other => Err(format!(
                "lead {id}: {other:#?}; queue: {:?}",
                self.queue_state().await
            )),
        })
        .await
    }

    /// The lead's audit trail, oldest first.
    pub async fn audit(&self, lead: Uuid) -> Vec<AuditRecord> {
        let mut records = audit::for_lead(self.db.store.pool(), lead, 1000)
            .await
            .expect("audit query");
        records.reverse();
        records
    }

    /// How many audit entries of `action` the lead has.
    pub async fn audited(&self, lead: Uuid, action: AuditAction) -> usize {
        self.audit(lead)
            .await
            .iter()
            .filter(|r| r.entry.action == action)
            .count()
    }

    /// Inbound audit entries about `contact` (with or without a lead) as
    /// `(action, reason)`, oldest first.
    pub async fn audit_of_contact(&self, contact: u64) -> Vec<(String, Option<String>)> {
        sqlx::query_as(
            "SELECT action, reason FROM audit_log WHERE integration_id = $1 AND contact_id = $2 \
             ORDER BY id",
        )
        .bind(self.integration.id)
        .bind(i64::try_from(contact).expect("contact ids fit i64"))
        .fetch_all(self.db.store.pool())
        .await
        .expect("audit query")
    }

    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        dead_letters::list(self.db.store.pool(), &DeadLetterFilter::default())
            .await
            .expect("dead letters")
    }

    /// Lead changes waiting in the outbox for HubSpot.
    pub async fn outbox_backlog(&self) -> i64 {
        leadsync_store::outbox::backlog(self.db.store.pool())
            .await
            .expect("outbox query")
            .0
    }

    pub async fn queue_state(&self) -> QueueState {
        let config = leadsync_queue::inbound_config(&self.settings.redis);
        let mut conn = self.redis.clone();
        let (stored, ready, scheduled, done, retired): (u64, u64, u64, u64, u64) = redis::pipe()
            .hlen(config.job_data_hash())
            .llen(config.active_jobs_list())
            .zcard(config.scheduled_jobs_set())
            .scard(config.done_jobs_set())
            .zcard(leadsync_queue::remembered_set(&self.settings.redis))
            .query_async(&mut conn)
            .await
            .expect("Redis answers");
        let finished = done + retired;
        QueueState {
            stored,
            ready,
            scheduled,
            // Neither waiting nor finished: a worker holds it (or it died).
            in_flight: stored.saturating_sub(ready + scheduled + finished),
            finished,
        }
    }

    /// Waits until HubSpot delivered every webhook (retries included) and the
    /// worker acknowledged every task queued for them.
    pub async fn settle(&self) {
        let idle = self.sim.control().wait_for_delivery_idle(DEADLINE).await;
        assert!(
            idle,
            "HubSpot still had webhooks to deliver after {DEADLINE:?}: {:#?}",
            self.sim.control().stats().delivery
        );
        let started = Instant::now();
        loop {
            let state = self.queue_state().await;
            if state.finished == state.stored {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the worker did not finish every queued event within {DEADLINE:?}: {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The simulator's counters.
    pub fn stats(&self) -> SimStats {
        self.sim.control().stats()
    }

    /// Asserts leadsync wrote nothing to HubSpot and queued nothing for it.
    pub async fn assert_nothing_written_back(&self) {
        let stats = self.stats();
        let writes: Vec<(&str, u64)> = WRITE_ENDPOINTS
            .iter()
            .map(|e| (*e, stats.calls(e)))
            .filter(|(_, n)| *n > 0)
            .collect();
        assert!(
            writes.is_empty(),
            "leadsync wrote to HubSpot while syncing inbound: {writes:?}"
        );
        assert_eq!(
            self.outbox_backlog().await,
            0,
            "inbound writes to leads must not enter the outbox (they would loop back to HubSpot)"
        );
    }

    /// The ingester's `/metrics` text.
    pub async fn ingester_metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.ingester_url))
            .await
            .expect("the ingester answers")
            .text()
            .await
            .expect("metrics body")
    }

    /// A counter of the ingester's `/metrics`.
    pub async fn ingester_metric(&self, name: &str) -> f64 {
        let text = self.ingester_metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    /// Worker: HubSpot calls of `operation` that ended with `outcome`.
    pub fn hubspot_calls(&self, operation: &str, outcome: &str) -> u64 {
        self.worker
            .hubspot
            .calls
            .with_label_values(&[operation, outcome])
            .get()
    }

    /// Stops everything and deletes the test's database and Redis keys.
    pub async fn finish(self) {
        let Self {
            sim,
            db,
            settings,
            front,
            worker_stop,
            worker_task,
            ingester_stop,
            mut redis,
            mut keys,
            ..
        } = self;
        worker_stop.stop();
        tokio::time::timeout(Duration::from_secs(20), worker_task)
            .await
            .expect("the worker stops in time")
            .expect("the worker task ran")
            .expect("the worker's metrics server ran");
        ingester_stop.stop(true).await;
        if let Some(front) = front {
            front.stop().await;
        }
        sim.stop().await;
        let own = format!("{}:", settings.redis.key_prefix);
        leadsync_queue::QueueInspector::connect(&settings.redis)
            .await
            .expect("Redis answers")
            .purge()
            .await
            .expect("Redis answers");
        // apalis-redis lists every queue a worker registered on, outside
        // any prefix.
        let queues: Vec<String> = redis
            .zrange(APALIS_QUEUES, 0, -1)
            .await
            .expect("Redis answers");
        let ours: Vec<&String> = queues.iter().filter(|q| q.starts_with(&own)).collect();
        if !ours.is_empty() {
            let _: () = redis
                .zrem(APALIS_QUEUES, ours)
                .await
                .expect("Redis answers");
        }
        keys.armed = false;
        db.cleanup().await.expect("drop the test database");
    }
}

/// Deletes a test's Redis keys when the test failed before [`World::finish`]
/// (its database is dropped by a later test's sweep of stale databases).
struct RedisKeys {
    url: String,
    prefix: String,
    armed: bool,
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let url = self.url.clone();
        let own = format!("{}:", self.prefix);
        let pattern = format!("{own}*");
        // Blocking I/O on a thread of its own: the runtime may be unwinding.
        let _ = std::thread::spawn(move || {
            use redis::Commands as _;
            let Ok(mut conn) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
                return;
            };
            // Pages of 1,000: SCAN's default of 10 crawls through a large keyspace.
            let mut cursor: u64 = 0;
            loop {
                let Ok((next, keys)) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query::<(u64, Vec<String>)>(&mut conn)
                else {
                    return;
                };
                if !keys.is_empty() {
                    let _: redis::RedisResult<()> = conn.del(&keys);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            let queues: Vec<String> = conn.zrange(APALIS_QUEUES, 0, -1).unwrap_or_default();
            let ours: Vec<&String> = queues.iter().filter(|q| q.starts_with(&own)).collect();
            if !ours.is_empty() {
                let _: redis::RedisResult<()> = conn.zrem(APALIS_QUEUES, ours);
            }
        })
        .join();
    }
}

/// Connects [`PORTAL`] to leadsync as the CLI would, tokens encrypted at rest.
async fn connect(
    db: &TestDb,
    sim: &SimHandle,
    key: &SecretString,
    auth: Auth,
    settings: &IntegrationSettings,
) -> Integration {
    let cipher = TokenCipher::from_base64_key(key).expect("generated key");
    let tokens = match auth {
        Auth::PrivateApp => Tokens {
            access: SecretString::from(TOKEN),
            refresh: None,
            expires_at: None,
        },
        Auth::OAuth => {
            // A user installs the app; leadsync exchanges the code.
            let code = sim.control().authorize(AuthorizeRequest {
                portal_id: PORTAL,
                user_id: None,
                redirect_uri: None,
            });
            let mut config = ClientConfig::new(sim.base_url().parse().expect("URL"));
            config.oauth_app = Some(OAuthApp {
                client_id: CLIENT_ID.to_owned(),
                client_secret: CLIENT_SECRET.into(),
            });
            let installed = Client::builder(config)
                .build()
                .expect("client")
                .exchange_code(&code.code, "")
                .await
                .expect("code exchange");
            Tokens {
                access: installed.access_token,
                refresh: Some(installed.refresh_token),
                expires_at: Some(installed.expires_at),
            }
        }
    };
    let integration = integrations::create(
        db.store.pool(),
        &NewIntegration {
            name: format!("acme-{PORTAL}"),
            portal_id: PortalId::new(PORTAL),
            app_id: None,
            auth_mode: match auth {
                Auth::PrivateApp => AuthMode::PrivateApp,
                Auth::OAuth => AuthMode::OAuth,
            },
            settings: settings.clone(),
        },
    )
    .await
    .expect("integration created");
    integrations::store_tokens(db.store.pool(), integration.id, &cipher, &tokens)
        .await
        .expect("tokens stored");
    integration
}

/// Polls `probe` until it returns `Ok`, at most [`DEADLINE`]; fails the test
/// with `what` and the last observation otherwise.
pub async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => assert!(
                started.elapsed() < DEADLINE,
                "timed out after {DEADLINE:?} waiting for {what}; last seen: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A reverse proxy in front of the ingester whose first `n` answers are
/// lost: the request reaches the ingester, HubSpot sees a 500 and retries.
pub struct LossyFront {
    pub url: String,
    /// Answers replaced by a 500.
    pub lost: Arc<AtomicUsize>,
    /// Events in the requests whose answer was lost.
    pub lost_events: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

struct FrontState {
    upstream: String,
    http: reqwest::Client,
    to_lose: AtomicUsize,
    lost: Arc<AtomicUsize>,
    lost_events: Arc<AtomicUsize>,
}

async fn relay(req: HttpRequest, body: web::Bytes, state: web::Data<FrontState>) -> HttpResponse {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).expect("method");
    let mut upstream = state
        .http
        .request(method, format!("{}{path}", state.upstream))
        .body(body.to_vec());
    for (name, value) in req.headers() {
        let name = name.as_str();
        if (name == "content-type" || name == "user-agent" || name.starts_with("x-hubspot-"))
            && let Ok(v) = value.to_str()
        {
            upstream = upstream.header(name, v);
        }
    }
    let Ok(answer) = upstream.send().await else {
        return HttpResponse::BadGateway().finish();
    };
    let status = answer.status().as_u16();
    let bytes = answer.bytes().await.unwrap_or_default();
    let lose = state
        .to_lose
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if lose {
        state.lost.fetch_add(1, Ordering::SeqCst);
        let events = serde_json::from_slice::<Vec<serde_json::Value>>(&body).map_or(0, |e| e.len());
        state.lost_events.fetch_add(events, Ordering::SeqCst);
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
        .body(bytes.to_vec())
}

impl LossyFront {
    pub async fn start(upstream: &str, answers_to_lose: usize) -> Self {
        let lost = Arc::new(AtomicUsize::new(0));
        let lost_events = Arc::new(AtomicUsize::new(0));
        let state = web::Data::new(FrontState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            to_lose: AtomicUsize::new(answers_to_lose),
            lost: Arc::clone(&lost),
            lost_events: Arc::clone(&lost_events),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the front");
        let url = format!("http://{}", listener.local_addr().expect("front address"));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(relay))
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
            lost,
            lost_events,
            handle,
        }
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}
