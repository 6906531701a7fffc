//! Test fixtures: an ingester on port 0 with its own Redis key prefix, a
//! HubSpot-like signer, and queue inspection.

use std::time::{SystemTime, UNIX_EPOCH};

use leadsync_hubspot::signature::{
    self, HEADER_REQUEST_TIMESTAMP, HEADER_SIGNATURE, HEADER_SIGNATURE_V3, HEADER_SIGNATURE_VERSION,
};
use leadsync_ingester::Application;
use leadsync_queue::QueueInspector;
use leadsync_runtime::Settings;

/// The client secret every test ingester trusts.
pub const SECRET: &str = "test-client-secret";
/// The public URL prefix the test ingester believes HubSpot calls.
pub const PUBLIC_BASE: &str = "https://hooks.leadsync.test";

/// A running ingester and a view of its queue.
pub struct TestIngester {
    pub address: String,
    pub http: reqwest::Client,
    pub queue: QueueInspector,
    handle: leadsync_ingester::startup::StopHandle,
}

pub fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Settings for one test: port 0, a unique Redis key prefix, `extra` TOML on top.
pub fn test_settings(extra: &str) -> Settings {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let base = format!(
        r#"
        [application]
        host = "127.0.0.1"
        port = 0
        public_base_url = "{PUBLIC_BASE}"
        enqueue_deadline_ms = 1000
        http_workers = 1
        shutdown_timeout_secs = 1
        [hubspot]
        client_secrets = ["{SECRET}"]
        [redis]
        key_prefix = "{prefix}"
        "#
    );
    Settings::from_toml_layers(&[&base, extra]).expect("test settings are valid")
}

impl TestIngester {
    /// Starts an ingester with `extra` TOML settings merged over the test defaults.
    pub async fn spawn(extra: &str) -> Self {
        Self::spawn_with(test_settings(extra)).await
    }

    pub async fn spawn_with(settings: Settings) -> Self {
        leadsync_runtime::telemetry::init_for_tests();
        let app = Application::build(&settings).expect("ingester builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        let queue = QueueInspector::connect(&settings.redis)
            .await
            .expect("redis is running on 127.0.0.1:6379");
        Self {
            address,
            http: reqwest::Client::new(),
            queue,
            handle,
        }
    }

    /// Posts `body` to `path`, signed as HubSpot signs deliveries (v1 + v3).
    pub async fn post_signed(&self, path: &str, body: &str) -> reqwest::Response {
        self.post_signed_at(path, body, now_ms(), SECRET).await
    }

    pub async fn post_signed_at(
        &self,
        path: &str,
        body: &str,
        ts: i64,
        secret: &str,
    ) -> reqwest::Response {
        let ts = ts.to_string();
        let uri = format!("{PUBLIC_BASE}{path}");
        self.http
            .post(format!("{}{path}", self.address))
            .header("Content-Type", "application/json")
            .header(
                HEADER_SIGNATURE,
                signature::sign_v1(secret, body.as_bytes()),
            )
            .header(HEADER_SIGNATURE_VERSION, "v1")
            .header(
                HEADER_SIGNATURE_V3,
                signature::sign_v3(secret, "POST", &uri, body.as_bytes(), &ts),
            )
            .header(HEADER_REQUEST_TIMESTAMP, ts)
            .body(body.to_owned())
            .send()
            .await
            .expect("request reaches the ingester")
    }

    /// Jobs stored in the inbound queue.
    pub async fn jobs(&mut self) -> u64 {
        self.queue.stored().await.expect("redis answers")
    }

    /// A handle that stops the server.
    pub fn stop_handle(&self) -> leadsync_ingester::startup::StopHandle {
        self.handle.clone()
    }

    /// Stops the server and deletes the test's Redis keys.
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        self.queue.purge().await.expect("purge test keys");
    }
}

/// A POST of `body` to `address` + `sent_path` carrying only a v3 signature,
/// computed for the URL `PUBLIC_BASE` + `signed_path` (normally the same path).
pub fn v3_post(
    http: &reqwest::Client,
    address: &str,
    sent_path: &str,
    signed_path: &str,
    body: &str,
) -> reqwest::RequestBuilder {
    let ts = now_ms().to_string();
    let uri = format!("{PUBLIC_BASE}{signed_path}");
    http.post(format!("{address}{sent_path}"))
        .header(
            HEADER_SIGNATURE_V3,
            signature::sign_v3(SECRET, "POST", &uri, body.as_bytes(), &ts),
        )
        .header(HEADER_REQUEST_TIMESTAMP, ts)
        .body(body.to_owned())
}

/// `n` distinct HubSpot-shaped events for `portal`, as a JSON array.
pub fn batch(portal: u64, first_event_id: u64, n: u64) -> String {
    let events: Vec<String> = (0..n)
        .map(|i| {
            let id = first_event_id + i;
            if i.is_multiple_of(2) {
                format!(
                    r#"{{"eventId":{id},"subscriptionId":11,"portalId":{portal},"appId":777,"occurredAt":{},"subscriptionType":"contact.creation","attemptNumber":0,"objectId":{},"changeFlag":"CREATED","changeSource":"CRM_UI","sourceId":"userId:5"}}"#,
                    1_700_000_000_000u64 + id,
                    900_000 + id
                )
            } else {
                format!(
                    r#"{{"eventId":{id},"subscriptionId":12,"portalId":{portal},"appId":777,"occurredAt":{},"subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":{},"propertyName":"firstname","propertyValue":"Ada {id}","changeSource":"CRM_UI","sourceId":"userId:5"}}"#,
                    1_700_000_000_000u64 + id,
                    900_000 + id
                )
            }
        })
        .collect();
    format!("[{}]", events.join(","))
}
