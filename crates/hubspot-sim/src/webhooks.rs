//! Webhooks: the app's settings and subscriptions (Webhooks API v3), the events
//! a change produces, and their delivery.

pub(crate) mod delivery;
pub(crate) mod events;
pub(crate) mod management;

pub(crate) use delivery::Delivery;
pub(crate) use events::WebhookEvent;
pub(crate) use management::WebhookApp;
