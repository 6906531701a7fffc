//! The ingester's Prometheus metrics.

use leadsync_queue::QueueMetrics;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

/// Every collector the ingester updates.
#[derive(Clone)]
pub struct IngestMetrics {
    /// The registry served at `/metrics`.
    pub registry: Registry,
    /// Requests by route and status.
    pub requests: IntCounterVec,
    /// Events received in verified, well-formed batches.
    pub events_received: IntCounter,
    /// Signature failures by reason.
    pub signature_failures: IntCounterVec,
    /// Time from a verified batch to Redis acknowledging its events.
    pub enqueue_seconds: Histogram,
    /// The queue's own counters (enqueued, duplicates, pushes).
    pub queue: QueueMetrics,
}

impl IngestMetrics {
    /// Creates the collectors in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "leadsync_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )?;
        let events_received = IntCounter::with_opts(Opts::new(
            "leadsync_webhook_events_received_total",
            "Events in verified, well-formed webhook batches",
        ))?;
        let signature_failures = IntCounterVec::new(
            Opts::new(
                "leadsync_webhook_signature_failures_total",
                "Rejected signatures by reason",
            ),
            &["reason"],
        )?;
        let enqueue_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "leadsync_webhook_enqueue_seconds",
                "From a verified batch to Redis acknowledging all its events",
            )
            .buckets(leadsync_runtime::metrics::LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(events_received.clone()))?;
        registry.register(Box::new(signature_failures.clone()))?;
        registry.register(Box::new(enqueue_seconds.clone()))?;
        let queue = QueueMetrics::register(&registry)?;
        Ok(Self {
            registry,
            requests,
            events_received,
            signature_failures,
            enqueue_seconds,
            queue,
        })
    }
}
