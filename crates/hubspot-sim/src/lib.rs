//! A faithful, in-memory, deterministic fake of the HubSpot APIs leadsync uses:
//! CRM v3 contacts (with property history and search), the properties API,
//! OAuth v1 and private-app tokens, webhook subscription management, per-portal
//! rate limits with HubSpot's headers and 429 bodies, and webhook delivery with
//! HubSpot's batching, signatures, retries and failure modes.
//!
//! Start it in-process on a free port:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use leadsync_hubspot_sim::{SimConfig, UserEdit, spawn};
//!
//! let sim = spawn(SimConfig::default()).await?;
//! let portal = sim.config().first_portal().unwrap_or_default();
//! // Act as a HubSpot user: the change is delivered to the app's targetUrl.
//! sim.control().create_contact(portal, &UserEdit::new([("email", "ann@example.com")]))?;
//! println!("HubSpot API at {}", sim.base_url());
//! sim.stop().await;
//! # Ok(()) }
//! ```
//!
//! or as a process: `hubspot-sim --port 8090 --seed 7` (see `docs/hubspot-sim.md`).

mod api_faults;
pub mod bench;
pub mod cli;
pub mod config;
mod control;
mod error;
mod model;
pub mod receiver;
mod server;
mod stats;

mod auth;
mod crm;
mod ids;
mod limiter;
mod query;
mod routes;
mod state;
mod webhooks;

pub use api_faults::ApiFault;
pub use config::{
    AppConfig, DEFAULT_PORTAL_ID, DEFAULT_USER_ID, DeliveryConfig, FaultConfig, PortalConfig,
    PrivateAppConfig, RateLimitConfig, SimConfig, SubscriptionSpec, Tier,
};
pub use control::{Control, ControlClient};
pub use error::{ControlError, SimError};
pub use model::{
    AuthorizationCode, AuthorizeRequest, ContactRecord, CreatePortal, ImportRequest, ImportResult,
    MergeRequest, PrivateAppToken, PropertyVersion, SimInfo, UserEdit,
};
pub use receiver::{ReceivedRequest, Receiver};
pub use routes::control::PREFIX as CONTROL_PREFIX;
pub use server::{SimHandle, spawn};
pub use stats::{PortalStats, SimStats};
pub use webhooks::delivery::{DeliveryStats, USER_AGENT};
