//! Logging with `tracing`, and OpenTelemetry traces from the same spans.
//!
//! Logs: structured journald entries under systemd, readable lines on stderr
//! everywhere else. Under journald every span and event field becomes a
//! journal field of its own (`request_id` → `REQUEST_ID`, `trace_id` →
//! `TRACE_ID`), so `journalctl -u switchboard-broker REQUEST_ID=…` finds one
//! request across its log lines, and `journalctl TRACE_ID=…` one trace across
//! every service.
//!
//! Traces: with `telemetry.otlp_endpoint` set, `tracing-opentelemetry` turns
//! the services' spans into OpenTelemetry spans exported over OTLP/gRPC, and
//! the W3C `traceparent` travels on every hop: HTTP headers and gRPC metadata
//! ([`inject_headers`], [`adopt_parent`] with [`HeaderCarrier`]), AMQP
//! message headers (the `amqp` module's carrier), and tarpc's own context,
//! which tarpc fills from the same spans. Without an endpoint none of this
//! runs: [`enabled`] is false and every helper here returns at once.

use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogTarget, RuntimeSettings, TelemetrySettings};

/// Why traces could not be set up; the service does not start (an operator
/// who asked for traces should not find out later that there are none).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid telemetry.sample_ratio {0}: must be between 0.0 and 1.0")]
    SampleRatio(f64),
    #[error("invalid telemetry.otlp_endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
}

/// The trace exporter of a running service. [`Tracing::flush`] before the
/// process exits sends the spans still queued.
#[derive(Clone, Default)]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

/// How long the exit waits for the last spans to reach the collector: a
/// collector that is gone must not hold up a `systemctl stop`.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

impl Tracing {
    /// Exports what is queued and stops the exporter, within a short bound.
    pub async fn flush(&self) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        // The batch processor's shutdown blocks on its own thread's answer.
        let stopped =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        if let Ok(Err(err)) = stopped {
            tracing::warn!(error = %err, "the last spans may not have reached the collector");
        }
    }
}

/// Whether traces are on in this process (an OTLP endpoint was configured).
pub fn enabled() -> bool {
    TRACES_ON.get().copied().unwrap_or(false)
}

static TRACES_ON: OnceLock<bool> = OnceLock::new();

/// Installs the global subscriber for `service` (e.g. `switchboard-auth`):
/// logs as `runtime` says, and traces when `telemetry` names an endpoint.
/// Must run inside the tokio runtime when traces are on (the exporter's gRPC
/// channel lives there). Later calls keep the first subscriber.
pub fn init(
    service: &str,
    runtime: &RuntimeSettings,
    telemetry: &TelemetrySettings,
) -> Result<Tracing, TelemetryError> {
    let provider = match &telemetry.otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(service, endpoint, telemetry.sample_ratio)?),
        None => None,
    };
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("switchboard"))
            .with_threads(false)
            .with_location(false)
            .with_filter(traced_spans())
    });
    let journald = match runtime.log_target {
        LogTarget::Stderr => None,
        LogTarget::Journald => journald_layer(service),
        LogTarget::Auto if stderr_is_journal() => journald_layer(service),
        LogTarget::Auto => None,
    };
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
    });
    // The log filter applies to the logs only: `log_filter = "warn"` must
    // not silence the spans a trace is made of.
    let logs = journald
        .with_filter(log_filter(runtime))
        .and_then(stderr.with_filter(log_filter(runtime)));
    let installed = tracing_subscriber::registry()
        .with(traces)
        .with(logs)
        .try_init();
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
        return Ok(Tracing::default());
    }
    let _ = TRACES_ON.set(provider.is_some());
    Ok(Tracing { provider })
}

/// [`init`] for logs alone (command-line tools, examples).
pub fn init_logs(service: &str, runtime: &RuntimeSettings) {
    // Without an endpoint there is nothing that can fail.
    let _ = init(service, runtime, &TelemetrySettings::default());
}

fn log_filter(runtime: &RuntimeSettings) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&runtime.log_filter))
        .unwrap_or_else(|err| {
            eprintln!(
                "invalid runtime.log_filter {:?}: {err}; using \"info\"",
                runtime.log_filter
            );
            EnvFilter::new("info")
        })
}

/// The spans a trace is made of: ours, and tarpc's client and server spans
/// (which carry the trace over the RPC). Libraries' internal spans would
/// only bury the hops.
fn traced_spans() -> Targets {
    Targets::new()
        .with_target("switchboard", LevelFilter::INFO)
        .with_target("tarpc", LevelFilter::INFO)
}

fn tracer_provider(
    service: &str,
    endpoint: &str,
    sample_ratio: f64,
) -> Result<SdkTracerProvider, TelemetryError> {
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(TelemetryError::SampleRatio(sample_ratio));
    }
    let invalid = |reason: String| TelemetryError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let uri: axum::http::Uri = endpoint
        .parse()
        .map_err(|err: axum::http::uri::InvalidUri| invalid(err.to_string()))?;
    if uri.scheme_str() != Some("http") && uri.scheme_str() != Some("https") {
        return Err(invalid("expected http://host:port".to_owned()));
    }
    // A lazily connected channel: a collector that starts later, or goes
    // away, costs exported spans, never the service's start or its requests.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|err| invalid(err.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_owned())
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        )
        .build())
}

/// Makes the trace context a caller sent (`carrier`: its headers) the
/// parent of `span`, a span that was just created and not yet entered, and
/// records the trace id in the span's `trace_id` field (declared `Empty`),
/// so that its log lines carry `TRACE_ID`. Without a context in the carrier
/// the span starts a trace. Does nothing while traces are off.
pub fn adopt_parent(span: &Span, carrier: &dyn Extractor) {
    if !enabled() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(carrier);
    if parent.span().span_context().is_valid() {
        // Only fails for a span already started or disabled; then it keeps
        // the parent it has.
        let _ = span.set_parent(parent);
    }
    record_trace_id(span);
}

/// What a span is in a trace: a request served, a call made, a message
/// published or consumed, or work inside one of those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
    Producer,
    Consumer,
    Internal,
}

impl SpanKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
            Self::Internal => "internal",
        }
    }
}

/// Names `span` in the trace (`otel.name`, e.g. `POST /handle`) and gives
/// its kind. The span declares both fields `Empty`, so the logs show them
/// only while traces are on. Call before the span is entered.
pub fn describe(span: &Span, kind: SpanKind, name: std::fmt::Arguments<'_>) {
    if enabled() {
        span.record("otel.kind", kind.as_str());
        span.record("otel.name", tracing::field::display(name));
    }
}

/// A span for a call to `downstream` (`auth`, `logger`, `rabbitmq`) over
/// `transport` (`http`, `grpc`, `rpc`, `amqp`), named `downstream transport`
/// in the trace; a disabled span while traces are off. Mark a failure with
/// [`failed`].
pub fn call_span(downstream: &str, transport: &str, kind: SpanKind) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "call",
        downstream,
        transport,
        otel.kind = tracing::field::Empty,
        otel.name = tracing::field::Empty,
    );
    describe(&span, kind, format_args!("{downstream} {transport}"));
    span
}

/// Marks a served request's span with its HTTP status, as an error when
/// the status is a 5xx (a 4xx is the client's doing).
pub fn answered(span: &Span, status: axum::http::StatusCode) {
    if enabled() {
        span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            span.set_status(opentelemetry::trace::Status::error(status.to_string()));
        }
    }
}

/// Marks `span` as failed, with `why`.
pub fn failed(span: &Span, why: &dyn std::fmt::Display) {
    if enabled() {
        span.set_status(opentelemetry::trace::Status::error(why.to_string()));
    }
}

/// Runs `work` inside the span `span` makes while traces are on, and as it
/// is otherwise: a span that only a trace would show costs nothing then.
pub async fn traced<F: std::future::Future>(span: impl FnOnce() -> Span, work: F) -> F::Output {
    if enabled() {
        work.instrument(span()).await
    } else {
        work.await
    }
}

/// Records `span`'s trace id in its `trace_id` field (for spans whose
/// parent is the current span, not a remote caller).
pub fn record_trace_id(span: &Span) {
    if !enabled() {
        return;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
    }
}

/// The current span's trace context, to be handed to work that runs later
/// outside it (a queued event) and made its parent there with
/// [`set_parent`]; `None` while traces are off.
pub fn current_context() -> Option<opentelemetry::Context> {
    enabled().then(|| Span::current().context())
}

/// Makes `parent` (from [`current_context`]) the parent of `span`.
pub fn set_parent(span: &Span, parent: Option<&opentelemetry::Context>) {
    if let Some(parent) = parent {
        let _ = span.set_parent(parent.clone());
    }
}

/// Writes the current span's trace context into `carrier` (an outgoing
/// request's headers or message's properties).
pub fn inject(carrier: &mut dyn Injector) {
    if enabled() {
        inject_context(&Span::current().context(), carrier);
    }
}

/// Writes `context`'s trace context into `carrier`.
pub fn inject_context(context: &opentelemetry::Context, carrier: &mut dyn Injector) {
    TraceContextPropagator::new().inject_context(context, carrier);
}

/// [`inject`] into HTTP headers (gRPC metadata are HTTP/2 headers too).
pub fn inject_headers(headers: &mut HeaderMap) {
    inject(&mut HeaderCarrier(headers));
}

/// The current span's `traceparent`, for carriers that are not header
/// maps (an entry of a tarpc batch); `None` while traces are off.
pub fn traceparent() -> Option<String> {
    let mut fields = Traceparent(None);
    inject(&mut fields);
    fields.0
}

/// The trace context a [`traceparent`] names (an invalid one names none).
pub fn context_from_traceparent(traceparent: &str) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Traceparent(Some(traceparent.to_owned())))
}

/// Makes the context `traceparent` names the parent of `span` (not yet
/// entered) and records its trace id; nothing while traces are off.
pub fn adopt_traceparent(span: &Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(traceparent) = traceparent {
        let parent = context_from_traceparent(traceparent);
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
    record_trace_id(span);
}

const TRACEPARENT: &str = "traceparent";

struct Traceparent(Option<String>);

impl Injector for Traceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

impl Extractor for Traceparent {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0.as_deref()).flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// HTTP headers as a carrier of trace context, both ways.
pub struct HeaderCarrier<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Incoming HTTP headers, read only.
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

fn journald_layer(service: &str) -> Option<tracing_journald::Layer> {
    match tracing_journald::layer() {
        Ok(layer) => Some(
            layer
                .with_field_prefix(None)
                .with_syslog_identifier(service.to_owned()),
        ),
        Err(err) => {
            eprintln!("journald is not reachable ({err}); logging to stderr");
            None
        }
    }
}

/// systemd sets `JOURNAL_STREAM=<dev>:<inode>` for the stream it connected to
/// stdout/stderr; it only counts if stderr is still that very stream (a child
/// with redirected stderr inherits the variable but not the stream).
fn stderr_is_journal() -> bool {
    let Some(expected) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    match rustix::fs::fstat(std::io::stderr().as_fd()) {
        Ok(stat) => expected == format!("{}:{}", stat.st_dev, stat.st_ino),
        Err(_) => false,
    }
}
