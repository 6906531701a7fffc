//! Prometheus instruments of the HubSpot client and the rate limiter.
//!
//! No portal label: an installation can serve thousands of portals, and a label
//! per portal would make every series that many times larger.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The client's and limiter's counters and histograms. Cloning shares them.
#[derive(Debug, Clone)]
pub struct HubSpotMetrics {
    /// `leadsync_hubspot_limiter_wait_seconds{kind,priority}`: time from asking
    /// for a permit to getting it.
    pub limiter_wait: HistogramVec,
    /// `leadsync_hubspot_limiter_permits_total{kind,priority}`: permits granted,
    /// one per HTTP call.
    pub permits: IntCounterVec,
    /// `leadsync_hubspot_calls_total{operation,outcome}`: HTTP calls by result
    /// (`ok` or a [`crate::HubSpotError::code`]).
    pub calls: IntCounterVec,
    /// `leadsync_hubspot_rate_limited_total{policy}`: 429s received.
    pub rate_limited: IntCounterVec,
    /// `leadsync_hubspot_token_refreshes_total{outcome}`: OAuth refresh calls made
    /// by this process.
    pub token_refreshes: IntCounterVec,
}

impl HubSpotMetrics {
    /// Creates the instruments and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::unregistered()?;
        registry.register(Box::new(metrics.limiter_wait.clone()))?;
        registry.register(Box::new(metrics.permits.clone()))?;
        registry.register(Box::new(metrics.calls.clone()))?;
        registry.register(Box::new(metrics.rate_limited.clone()))?;
        registry.register(Box::new(metrics.token_refreshes.clone()))?;
        Ok(metrics)
    }

    /// Creates the instruments without registering them (tests, tools).
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Ok(Self {
            limiter_wait: HistogramVec::new(
                HistogramOpts::new(
                    "leadsync_hubspot_limiter_wait_seconds",
                    "Time spent waiting for a HubSpot rate-limit permit.",
                )
                .buckets(vec![
                    0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
                &["kind", "priority"],
            )?,
            permits: IntCounterVec::new(
                Opts::new(
                    "leadsync_hubspot_limiter_permits_total",
                    "HubSpot rate-limit permits granted (one per HTTP call).",
                ),
                &["kind", "priority"],
            )?,
            calls: IntCounterVec::new(
                Opts::new(
                    "leadsync_hubspot_calls_total",
                    "HTTP calls to HubSpot by operation and outcome.",
                ),
                &["operation", "outcome"],
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "leadsync_hubspot_rate_limited_total",
                    "429 responses received from HubSpot, by policy.",
                ),
                &["policy"],
            )?,
            token_refreshes: IntCounterVec::new(
                Opts::new(
                    "leadsync_hubspot_token_refreshes_total",
                    "OAuth access-token refresh calls made by this process.",
                ),
                &["outcome"],
            )?,
        })
    }
}
