//! Fixtures: a test database, the API bound on port 0 with a Redis key
//! prefix of its own, integrations with tokens, and an HTTP client.

use std::net::TcpListener;

use leadsync_api::{Application, StopHandle};
use leadsync_domain::PortalId;
use leadsync_queue::QueueInspector;
use leadsync_runtime::Settings;
use leadsync_store::api_tokens::Scope;
use leadsync_store::integrations::{self, AuthMode, NewIntegration};
use leadsync_store::testing::TestDb;
use leadsync_store::{Integration, IntegrationSettings, api_tokens};
use reqwest::{Method, RequestBuilder, Response};
use secrecy::ExposeSecret as _;
use serde_json::Value;

/// One test's world: its own database, Redis key prefix and API server.
pub struct TestApi {
    pub db: TestDb,
    pub settings: Settings,
    pub base_url: String,
    pub http: reqwest::Client,
    handle: StopHandle,
}

/// An integration and an `admin` token scoped to it.
pub struct Tenant {
    pub integration: Integration,
    pub token: String,
}

impl TestApi {
    pub async fn spawn() -> Self {
        Self::spawn_with("").await
    }

    /// The API with the TOML `extra` on top of this world's settings.
    pub async fn spawn_with(extra: &str) -> Self {
        leadsync_runtime::telemetry::init_for_tests();
        let db = TestDb::create().await.expect("test database");
        let prefix = format!("test-api-{}", uuid::Uuid::now_v7().simple());
        let base = format!(
            r#"
            [database]
            url = "postgres://postgres@127.0.0.1:5432/{db}"
            max_connections = 4
            [redis]
            key_prefix = "{prefix}"
            [api]
            host = "127.0.0.1"
            port = 0
            http_workers = 1
            body_limit_bytes = 4096
            "#,
            db = db.name,
        );
        let settings =
            Settings::from_toml_layers(&[&base, extra]).expect("test settings are valid");
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let app =
            Application::build_with(&settings, db.store.clone(), listener).expect("the API builds");
        let base_url = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        Self {
            db,
            settings,
            base_url,
            http: reqwest::Client::new(),
            handle,
        }
    }

    /// An integration for `portal` named `name`, with a fresh `admin` token.
    pub async fn tenant(&self, name: &str, portal: u64) -> Tenant {
        let integration = integrations::create(
            self.db.store.pool(),
            &NewIntegration {
                name: name.to_owned(),
                portal_id: PortalId::new(portal),
                app_id: None,
                auth_mode: AuthMode::PrivateApp,
                settings: IntegrationSettings::default(),
            },
        )
        .await
        .expect("integration created");
        let token = self.token(&integration, Scope::Admin).await;
        Tenant { integration, token }
    }

    /// A fresh token of `scope` for the integration.
    pub async fn token(&self, integration: &Integration, scope: Scope) -> String {
        let issued = api_tokens::issue_scoped(self.db.store.pool(), integration.id, "tests", scope)
            .await
            .expect("token issued");
        issued.token.expose_secret().to_owned()
    }

    /// The same integration behind a fresh token of `scope`.
    pub async fn with_scope(&self, tenant: &Tenant, scope: Scope) -> Tenant {
        Tenant {
            integration: tenant.integration.clone(),
            token: self.token(&tenant.integration, scope).await,
        }
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn get(&self, path: &str, tenant: &Tenant) -> Response {
        self.request(Method::GET, path, Some(&tenant.token))
            .send()
            .await
            .expect("the API answers")
    }

    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        tenant: &Tenant,
        body: &Value,
    ) -> Response {
        self.request(method, path, Some(&tenant.token))
            .json(body)
            .send()
            .await
            .expect("the API answers")
    }

    /// Creates a lead through the API; returns its JSON.
    pub async fn create_lead(&self, tenant: &Tenant, body: &Value) -> Value {
        let response = self
            .send_json(Method::POST, "/v1/leads", tenant, body)
            .await;
        assert_eq!(response.status(), 201, "lead created");
        response.json().await.expect("JSON body")
    }

    pub async fn inspector(&self) -> QueueInspector {
        QueueInspector::connect(&self.settings.redis)
            .await
            .expect("Redis runs at 127.0.0.1:6379")
    }

    /// Stops the server (for a world whose Redis is unreachable, where
    /// [`TestApi::finish`] cannot purge).
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }

    pub async fn finish(self) {
        self.handle.stop(true).await;
        self.inspector().await.purge().await.expect("purge");
        self.db.cleanup().await.expect("cleanup");
    }
}

/// The API with one tenant, `acme` (portal 1001), holding one lead created
/// through the API (`ada@acme.io`), and that lead's id.
pub async fn acme_with_a_lead() -> (TestApi, Tenant, uuid::Uuid) {
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let lead = api
        .create_lead(&acme, &serde_json::json!({"email": "ada@acme.io"}))
        .await;
    let id = lead["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("the lead's id is a UUID");
    (api, acme, id)
}

/// The body of a response that must have `status`.
pub async fn json_of(response: Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let text = response.text().await.expect("a body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).expect("a JSON body")
}
