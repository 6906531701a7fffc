//! HubSpot protocol knowledge: how webhook deliveries are signed and verified.
//!
//! The API client and the fleet-wide rate limiter join this crate with the worker.

pub mod signature;

pub use signature::{
    SignatureError, SignatureHeaders, SignaturePolicy, SignatureVersion, UnverifiedRequest,
    VerifiedBody, WebhookSecrets,
};
