//! Prometheus metrics: each binary registers its own collectors in a
//! [`prometheus::Registry`] and serves [`encode`] at `GET /metrics`.

pub use prometheus;

/// Renders every metric of `registry` in the Prometheus text format.
pub fn encode(registry: &prometheus::Registry) -> String {
    let mut out = String::new();
    // Encoding into a String only fails on metrics with invalid names,
    // which registration already refuses.
    let _ = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut out);
    out
}

/// Latency buckets in seconds, from 100 µs to 5 s (HubSpot's delivery timeout).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
