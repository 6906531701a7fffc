//! Logs and traces, built in exactly one place.
//!
//! Logs are JSON (or pretty) lines filtered by `telemetry.log_filter`. When
//! `telemetry.otlp_endpoint` is set, spans are also exported over OTLP/HTTP,
//! and the W3C trace-context propagator is installed so that a job can carry
//! the trace of the request that enqueued it.

use std::collections::HashMap;
use std::sync::Once;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

use crate::config::{LogFormat, TelemetrySettings};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `telemetry.log_filter` is not a valid filter.
    #[error("configuration key `telemetry.log_filter`: {0}")]
    Filter(String),
    /// The OTLP exporter could not be built.
    #[error("configuration key `telemetry.otlp_endpoint`: {0}")]
    Exporter(String),
    /// A global subscriber was already installed.
    #[error("telemetry was already initialised: {0}")]
    AlreadyInitialised(String),
}

/// Flushes and stops trace export when dropped.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Nothing useful can be done with a flush error while exiting.
            let _ = provider.shutdown();
        }
    }
}

/// Where log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogOutput {
    /// Standard output: a service's output is its logs.
    #[default]
    Stdout,
    /// Standard error: for a command whose standard output carries its
    /// results (`leadsync api-token create` prints a token there).
    Stderr,
}

/// Installs the global subscriber (and the OTLP pipeline when configured),
/// logging to standard output.
pub fn init(settings: &TelemetrySettings) -> Result<TelemetryGuard, TelemetryError> {
    init_with_output(settings, LogOutput::Stdout)
}

/// [`init`], logging to `output`.
pub fn init_with_output(
    settings: &TelemetrySettings,
    output: LogOutput,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_new(&settings.log_filter)
        .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let provider = if settings.otlp_endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(&settings.otlp_endpoint)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    settings.sample_ratio,
                ))))
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(settings.service_name.clone())
                        .build(),
                )
                .build(),
        )
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Each layer carries its own filter, and there is no layer without one:
    // a span nobody records is then never built. (An absent `Option` layer
    // would declare interest in everything and make every span cost.)
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    // The log layers see events only. Formatting every span's fields as it
    // opens (what the fmt layer does for spans it sees) cost more than the
    // rest of a webhook request; spans go to the trace exporter, and log lines
    // carry the ids they need as their own fields.
    let logs = filter.clone().and(filter_fn(|meta| meta.is_event()));
    let writer = match output {
        LogOutput::Stdout => BoxMakeWriter::new(std::io::stdout),
        LogOutput::Stderr => BoxMakeWriter::new(std::io::stderr),
    };
    layers.push(match settings.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(logs)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_filter(logs)
            .boxed(),
    });
    if let Some(p) = &provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer(settings.service_name.clone()))
                .with_filter(filter)
                .boxed(),
        );
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}

/// For tests: logs go to the test writer, and only when `TEST_LOG` is set.
pub fn init_for_tests() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        // Test-only switch, not a setting of the service.
        #[allow(clippy::disallowed_methods)]
        let verbose = std::env::var_os("TEST_LOG").is_some();
        if verbose {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new("info"))
                .with_test_writer()
                .try_init();
        }
    });
}

/// A request id for an HTTP server's root span: a prefix drawn once per
/// process and a counter, unique across replicas without a syscall per
/// request.
pub fn next_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id().rotate_left(16)
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:08x}-{:x}",
        *PREFIX,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The W3C trace context of `span` (`traceparent`, and `tracestate` when set),
/// ready to travel inside a job. Empty when no trace is being recorded.
pub fn trace_context_of(span: &tracing::Span) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier
}

/// Makes `span` a child of the trace carried in `carrier` (see [`trace_context_of`]).
pub fn continue_trace(span: &tracing::Span, carrier: &HashMap<String, String>) {
    if carrier.is_empty() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(carrier);
    // Fails only when the span is disabled; then there is nothing to link.
    let _ = span.set_parent(parent);
}

/// Links `span` to the trace carried in `carrier` without making it a child:
/// a batch serves many events, each with its own trace, and links it to all.
pub fn link_trace(span: &tracing::Span, carrier: &HashMap<String, String>) {
    if carrier.is_empty() {
        return;
    }
    let context = TraceContextPropagator::new().extract(carrier);
    let linked = context.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

#[cfg(test)]
mod tests {
    use super::next_request_id;

    #[test]
    fn request_ids_share_the_process_prefix_and_never_repeat() {
        let (a, b) = (next_request_id(), next_request_id());
        assert_ne!(a, b);
        assert_eq!(
            a.split_once('-').map(|p| p.0),
            b.split_once('-').map(|p| p.0)
        );
    }
}
