//! Shared test fixtures: a simulator on port 0 with a private-app token, and
//! small HTTP helpers that return (status, headers, JSON body).

use leadsync_hubspot_sim::{
    AuthorizeRequest, PortalConfig, RateLimitConfig, Receiver, SimConfig, SimHandle,
    SubscriptionSpec, spawn,
};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use secrecy::ExposeSecret;
use serde_json::Value;

pub const PORTAL: u64 = 62515;
pub const TOKEN: &str = "pat-na1-test-token";

/// A running simulator and a client for it.
pub struct TestSim {
    pub sim: SimHandle,
    pub http: reqwest::Client,
    pub token: String,
}

/// The default test configuration: one portal with a private-app token, rate
/// limits off (tests that exercise limits turn them on).
pub fn config() -> SimConfig {
    SimConfig {
        seed: 7,
        workers: 1,
        portals: vec![PortalConfig::new(PORTAL).with_private_app_token(TOKEN)],
        rate_limit: RateLimitConfig::disabled(),
        ..SimConfig::default()
    }
}

pub async fn start() -> TestSim {
    start_with(config()).await
}

pub async fn start_with(config: SimConfig) -> TestSim {
    let sim = spawn(config).await.expect("simulator starts");
    TestSim {
        sim,
        http: reqwest::Client::new(),
        token: TOKEN.to_owned(),
    }
}

/// A simulator delivering to a fresh recording receiver, with these subscriptions.
pub async fn start_delivering(
    mut config: SimConfig,
    subscriptions: Vec<SubscriptionSpec>,
) -> (TestSim, Receiver) {
    let receiver = Receiver::spawn_with(true, 1)
        .await
        .expect("receiver starts");
    config.app.target_url = Some(receiver.url());
    config.subscriptions = subscriptions;
    (start_with(config).await, receiver)
}

pub type Reply = (StatusCode, HeaderMap, Value);

impl TestSim {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, headers, body)
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path)).bearer_auth(&self.token))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(&self.token)
                .json(&body),
        )
        .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(
            self.http
                .patch(self.url(path))
                .bearer_auth(&self.token)
                .json(&body),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.http.delete(self.url(path)).bearer_auth(&self.token))
            .await
    }

    /// Creates a contact through the API and returns its id.
    pub async fn create_contact(&self, properties: Value) -> u64 {
        let (status, _, body) = self
            .post(
                "/crm/v3/objects/contacts",
                serde_json::json!({ "properties": properties }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("numeric id")
    }

    /// Installs the public app in `portal` through OAuth and returns the access token.
    pub async fn oauth_token(&self, portal: u64) -> Value {
        let code = self.sim.control().authorize(AuthorizeRequest {
            portal_id: portal,
            user_id: None,
            redirect_uri: None,
        });
        let app = &self.sim.config().app;
        let form = format!(
            "grant_type=authorization_code&code={}&client_id={}&client_secret={}",
            code.code,
            app.client_id,
            app.client_secret.expose_secret()
        );
        let (status, _, body) = self
            .send(
                self.http
                    .post(self.url("/oauth/v1/token"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// A copy of this fixture that calls with another token.
    pub fn with_token(&self, token: &str) -> Caller<'_> {
        Caller {
            sim: self,
            token: token.to_owned(),
        }
    }
}

/// Calls with a different bearer token.
pub struct Caller<'a> {
    sim: &'a TestSim,
    token: String,
}

impl Caller<'_> {
    pub async fn get(&self, path: &str) -> Reply {
        self.sim
            .send(
                self.sim
                    .http
                    .get(self.sim.url(path))
                    .bearer_auth(&self.token),
            )
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.sim
            .send(
                self.sim
                    .http
                    .post(self.sim.url(path))
                    .bearer_auth(&self.token)
                    .json(&body),
            )
            .await
    }
}

/// The numeric `id` of a contact JSON object.
pub fn id_of(contact: &Value) -> u64 {
    contact["id"]
        .as_str()
        .expect("string id")
        .parse()
        .expect("numeric id")
}
