//! Injected API errors: the simulated HubSpot API answers a chosen error
//! instead of serving matching calls, so a client's retry (5xx) and
//! dead-letter (400) paths can be exercised. HubSpot never fails on its own
//! here (docs/hubspot-sim.md, "Injected API errors").

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use actix_web::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::auth::lock;
use crate::error::ApiError;
use crate::stats::Endpoint;

/// An error the API answers instead of serving matching calls. Calls that
/// fail authentication (401) or a rate limit (429) get those answers first;
/// an injected error is served to a call that was otherwise admitted, and is
/// counted like any other call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiFault {
    /// The HTTP status: 400–599, except 429 (the rate limits serve those).
    pub status: u16,
    /// Only calls of this endpoint, keyed as in `SimStats::calls_by_endpoint`
    /// (e.g. `"POST /crm/v3/objects/contacts/batch/read"`, or
    /// `"GET /account-info/v3/details"`); `None`: every CRM endpoint
    /// (contacts and properties).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Only calls authenticated for this portal; `None`: any portal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_id: Option<u64>,
    /// How many calls fail (the count left, when listed); `None`: every
    /// matching call until the faults are cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// The body's `category`; by default HubSpot's for the status
    /// (`VALIDATION_ERROR` for 400, `SERVICE_UNAVAILABLE` for 503, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The body's `message`; by default the status's reason phrase, marked
    /// as injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ApiFault {
    /// Every CRM call of every portal fails with `status` until cleared.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            endpoint: None,
            portal_id: None,
            times: None,
            category: None,
            message: None,
        }
    }

    /// Only calls of `endpoint` (e.g. `"POST /crm/v3/objects/contacts/batch/read"`).
    #[must_use]
    pub fn on(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Only calls for `portal_id`.
    #[must_use]
    pub fn for_portal(mut self, portal_id: u64) -> Self {
        self.portal_id = Some(portal_id);
        self
    }

    /// Only the next `n` matching calls.
    #[must_use]
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    /// The body's `category`.
    #[must_use]
    pub fn with_category(mut self, category: impl Into<String>) -> Self {
        self.category = Some(category.into());
        self
    }

    /// The body's `message`.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    fn validate(&self) -> Result<(), String> {
        if !(400..=599).contains(&self.status) || self.status == 429 {
            return Err(format!(
                "status must be 400-599 and not 429 (the rate limits serve 429s), got {}",
                self.status
            ));
        }
        if let Some(endpoint) = &self.endpoint
            && Endpoint::gated(endpoint).is_none()
        {
            return Err(format!(
                "endpoint must be a CRM or account endpoint key such as \"POST /crm/v3/objects/contacts/batch/read\", got {endpoint:?}"
            ));
        }
        if self.times == Some(0) {
            return Err("times must be at least 1 (omit it for every call)".to_owned());
        }
        Ok(())
    }

    fn matches(&self, endpoint: Endpoint, portal_id: u64) -> bool {
        self.endpoint
            .as_deref()
            .map_or(endpoint.is_crm(), |e| e == endpoint.as_str())
            && self.portal_id.is_none_or(|p| p == portal_id)
    }

    fn error(&self) -> ApiError {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let category = self
            .category
            .clone()
            .unwrap_or_else(|| default_category(status).to_owned());
        let message = self.message.clone().unwrap_or_else(|| {
            format!(
                "{} (injected by hubspot-sim)",
                status.canonical_reason().unwrap_or("Error")
            )
        });
        ApiError::new(status, &category, message)
    }
}

/// HubSpot's usual `category` for a status.
fn default_category(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "VALIDATION_ERROR",
        401 => "INVALID_AUTHENTICATION",
        403 => "MISSING_SCOPES",
        404 => "OBJECT_NOT_FOUND",
        409 => "CONFLICT",
        423 => "LOCKED",
        500 => "INTERNAL_ERROR",
        502 => "BAD_GATEWAY",
        503 => "SERVICE_UNAVAILABLE",
        504 => "GATEWAY_TIMEOUT",
        _ => "ERROR",
    }
}

/// The active faults, in the order they were injected.
#[derive(Debug, Default)]
pub(crate) struct ApiFaults {
    rules: Mutex<Vec<ApiFault>>,
    /// Rules held: lets every call skip the lock while none is.
    active: AtomicUsize,
    served: AtomicU64,
}

impl ApiFaults {
    /// Adds a rule behind the existing ones.
    pub(crate) fn add(&self, fault: ApiFault) -> Result<(), String> {
        fault.validate()?;
        let mut rules = lock(&self.rules);
        rules.push(fault);
        self.active.store(rules.len(), Ordering::Release);
        Ok(())
    }

    /// The rules left, `times` counting the calls each still fails.
    pub(crate) fn list(&self) -> Vec<ApiFault> {
        lock(&self.rules).clone()
    }

    /// Removes every rule.
    pub(crate) fn clear(&self) {
        let mut rules = lock(&self.rules);
        rules.clear();
        self.active.store(0, Ordering::Release);
    }

    /// The error for a call of `endpoint` for `portal_id`, using up one call
    /// of the first matching rule; `None` when no rule matches.
    pub(crate) fn take(&self, endpoint: Endpoint, portal_id: u64) -> Option<ApiError> {
        if self.active.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut rules = lock(&self.rules);
        let i = rules.iter().position(|r| r.matches(endpoint, portal_id))?;
        let error = rules[i].error();
        match &mut rules[i].times {
            Some(1) => {
                rules.remove(i);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        self.active.store(rules.len(), Ordering::Release);
        self.served.fetch_add(1, Ordering::Relaxed);
        Some(error)
    }

    /// Injected errors served since start (or the last counter reset).
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub(crate) fn reset_counter(&self) {
        self.served.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH_READ: &str = "POST /crm/v3/objects/contacts/batch/read";

    #[test]
    fn a_counted_fault_fails_that_many_matching_calls_then_is_gone() {
        // Arrange
        let faults = ApiFaults::default();
        faults
            .add(ApiFault::new(503).on(BATCH_READ).times(2))
            .expect("valid");

        // Act
        let other_endpoint = faults.take(Endpoint::ContactsGet, 1);
        let first = faults.take(Endpoint::ContactsBatchRead, 1);
        let listed = faults.list();
        let second = faults.take(Endpoint::ContactsBatchRead, 2);
        let third = faults.take(Endpoint::ContactsBatchRead, 1);

        // Assert
        assert!(other_endpoint.is_none(), "another endpoint is served");
        let first = first.expect("the first call fails");
        assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(first.body["category"], "SERVICE_UNAVAILABLE");
        assert_eq!(first.body["status"], "error");
        assert_eq!(listed[0].times, Some(1), "one call left");
        assert!(second.is_some(), "the second call fails too");
        assert!(third.is_none(), "the third is served");
        assert!(faults.list().is_empty());
        assert_eq!(faults.served(), 2);
    }

    #[test]
    fn a_portal_fault_spares_other_portals_and_an_unbounded_one_lasts_until_cleared() {
        // Arrange
        let faults = ApiFaults::default();
        faults
            .add(
                ApiFault::new(400)
                    .for_portal(7)
                    .with_message("Property values were not valid"),
            )
            .expect("valid");

        // Act
        let other_portal = faults.take(Endpoint::ContactsBatchRead, 8);
        let hits: Vec<ApiError> = (0..5)
            .filter_map(|_| faults.take(Endpoint::PropertiesGet, 7))
            .collect();
        faults.clear();
        let after_clear = faults.take(Endpoint::ContactsBatchRead, 7);

        // Assert
        assert!(other_portal.is_none());
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0].status, StatusCode::BAD_REQUEST);
        assert_eq!(hits[0].body["category"], "VALIDATION_ERROR");
        assert_eq!(hits[0].body["message"], "Property values were not valid");
        assert!(after_clear.is_none());
    }

    #[test]
    fn faults_that_cannot_be_served_are_refused() {
        let faults = ApiFaults::default();
        for bad in [
            ApiFault::new(200),
            ApiFault::new(429),
            ApiFault::new(600),
            ApiFault::new(503).on("POST /oauth/v1/token"),
            ApiFault::new(503).on("POST /crm/v3/objects/deals"),
            ApiFault::new(503).times(0),
        ] {
            assert!(faults.add(bad.clone()).is_err(), "{bad:?} was accepted");
        }
        assert!(faults.list().is_empty());
    }
}
