//! Fixtures: a simulator on port 0, a throw-away database, settings pointing
//! at both, and a client that reads the app's webhook state the way HubSpot
//! exposes it.

use std::sync::atomic::{AtomicU64, Ordering};

use leadsync_domain::AppId;
use leadsync_hubspot::{Client, ClientConfig, DeveloperApp};
use leadsync_hubspot_sim::{
    AuthorizeRequest, PortalConfig, RateLimitConfig, SimConfig, SimHandle, spawn,
};
use leadsync_runtime::Settings;
use leadsync_store::TokenCipher;
use leadsync_store::testing::TestDb;
use secrecy::{ExposeSecret as _, SecretString};

pub const PORTAL: u64 = 62515;
pub const APP_ID: u64 = 1_160_452;
pub const PRIVATE_TOKEN: &str = "pat-na1-onboarding-tests";
/// Another HubSpot account of the simulator, with its own private-app token.
pub const OTHER_PORTAL: u64 = 77_001;
pub const OTHER_PRIVATE_TOKEN: &str = "pat-na1-onboarding-other-account";
pub const PUBLIC_BASE_URL: &str = "https://leadsync.example.com";
pub const REDIRECT_URI: &str = "https://leadsync.example.com/oauth/callback";

/// A Redis key prefix no other test (or run) shares.
fn prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "leadsync-test:{}:{nanos}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One test's world.
pub struct Env {
    pub sim: SimHandle,
    pub db: TestDb,
    pub settings: Settings,
    pub cipher: TokenCipher,
}

impl Env {
    pub async fn new() -> Self {
        let sim = spawn(SimConfig {
            portals: vec![
                PortalConfig::new(PORTAL).with_private_app_token(PRIVATE_TOKEN),
                PortalConfig::new(OTHER_PORTAL).with_private_app_token(OTHER_PRIVATE_TOKEN),
            ],
            rate_limit: RateLimitConfig::disabled(),
            ..SimConfig::default()
        })
        .await
        .expect("simulator starts");
        let db = TestDb::create().await.expect("test database");
        let key = TokenCipher::generate_key();
        let settings = Settings::from_toml(&format!(
            r#"
            [application]
            public_base_url = "{PUBLIC_BASE_URL}"
            [database]
            url = "postgres://postgres@127.0.0.1:5432/{db}"
            max_connections = 2
            [redis]
            key_prefix = "{prefix}"
            [hubspot]
            api_base_url = "{api}"
            app_id = {APP_ID}
            client_id = "sim-client-id"
            client_secrets = ["sim-client-secret"]
            developer_api_key = "sim-developer-key"
            redirect_uri = "{REDIRECT_URI}"
            token_encryption_key = "{key}"
            "#,
            db = db.name,
            prefix = prefix(),
            api = sim.base_url(),
            key = key.expose_secret(),
        ))
        .expect("valid settings");
        let cipher = TokenCipher::from_base64_key(&key).expect("valid key");
        Self {
            sim,
            db,
            settings,
            cipher,
        }
    }

    /// A HubSpot user approves the install: the code the redirect carries.
    pub fn authorize(&self) -> SecretString {
        self.sim
            .control()
            .authorize(AuthorizeRequest {
                portal_id: PORTAL,
                user_id: None,
                redirect_uri: Some(REDIRECT_URI.to_owned()),
            })
            .code
            .into()
    }

    /// A plain client of the simulator (no credentials).
    pub fn client(&self) -> Client {
        Client::builder(ClientConfig::new(
            self.sim.base_url().parse().expect("valid URL"),
        ))
        .build()
        .expect("client builds")
    }

    /// The developer app of the simulator's public app.
    pub fn developer(&self) -> DeveloperApp {
        DeveloperApp {
            app_id: AppId::new(APP_ID),
            api_key: "sim-developer-key".into(),
        }
    }

    /// The calls the simulator answered on `endpoint`.
    pub fn calls(&self, endpoint: &str) -> u64 {
        self.sim.control().stats().calls(endpoint)
    }

    /// The whole `integrations` row as Postgres prints it (bytea in hex).
    pub async fn raw_row(&self, id: uuid::Uuid) -> String {
        sqlx::query_scalar("SELECT i::text FROM integrations i WHERE id = $1")
            .bind(id)
            .fetch_one(self.db.store.pool())
            .await
            .expect("row")
    }

    pub async fn finish(self) {
        self.sim.stop().await;
        self.db.cleanup().await.expect("database dropped");
    }
}

/// `text` and its bytes in hex: neither may appear in a row that holds it
/// encrypted.
pub fn plain_forms(text: &str) -> [String; 2] {
    let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
    [text.to_owned(), hex]
}
