//! Integration tests of the HubSpot client and the fleet-wide limiter, against
//! the simulator over HTTP and a real Redis at 127.0.0.1:6379 (unique key
//! prefix per test).

mod contacts;
mod helpers;
mod limiter;
mod oauth;
mod properties;
mod retries;
mod source_property;
mod token_info;
mod webhooks;
