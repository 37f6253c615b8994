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
//! ([`inject_headers`], [`entry`] with [`HeaderExtractor`]), AMQP message
//! headers (the `amqp` module's carrier), and tarpc's own context, which
//! tarpc fills from the same spans. Whether a trace is kept is decided where
//! its work enters a service ([`entry`]), so that the spans of traces not
//! kept cost no OpenTelemetry work. Without an endpoint none of this runs:
//! [`enabled`] is false and every helper here returns at once.

use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample,
};
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogTarget, RuntimeSettings, TelemetrySettings};

mod entry;

pub use entry::{Entry, Traced, entry, entry_from_traceparent};

/// Why traces could not be set up; the service does not start (an operator
/// who asked for traces should not find out later that there are none).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid telemetry.sample_ratio {0}: must be between 0.0 and 1.0")]
    SampleRatio(f64),
    #[error("invalid telemetry.otlp_endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
}

/// The trace exporter of a running service. [`TraceExporter::flush`] before the
/// process exits sends the spans still queued.
#[derive(Clone, Default)]
pub struct TraceExporter {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for TraceExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceExporter")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

/// How long the exit waits for the last spans to reach the collector: a
/// collector that is gone must not hold up a `systemctl stop`.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

impl TraceExporter {
    /// Exports what is queued and stops the exporter, within a short bound.
    pub async fn flush(&self) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        // The batch processor's shutdown blocks on its own thread's answer.
        let stopped =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "the last spans may not have reached the collector");
            }
            Err(err) => tracing::warn!(error = %err, "stopping the trace exporter failed"),
        }
    }
}

/// Whether traces are on in this process (an OTLP endpoint was configured).
pub fn enabled() -> bool {
    sample_ratio().is_some()
}

/// `telemetry.sample_ratio` while traces are on.
fn sample_ratio() -> Option<f64> {
    SAMPLE_RATIO.get().copied().flatten()
}

static SAMPLE_RATIO: OnceLock<Option<f64>> = OnceLock::new();

/// Whether the log filter lets spans of our level (`info`) through: when it
/// does not, the entry span of a trace not kept is not made at all.
fn logs_want_spans() -> bool {
    LOGS_WANT_SPANS.get().copied().unwrap_or(true)
}

static LOGS_WANT_SPANS: OnceLock<bool> = OnceLock::new();

/// Installs the global subscriber for `service` (e.g. `switchboard-auth`):
/// logs as `runtime` says, and traces when `telemetry` names an endpoint.
/// Must run inside the tokio runtime when traces are on (the exporter's gRPC
/// channel lives there). Later calls keep the first subscriber.
pub fn init(
    service: &str,
    runtime: &RuntimeSettings,
    telemetry: &TelemetrySettings,
) -> Result<TraceExporter, TelemetryError> {
    if tracing::dispatcher::has_been_set() {
        tracing::debug!("a tracing subscriber was already installed");
        return Ok(TraceExporter::default());
    }
    let provider = match &telemetry.otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(service, endpoint, telemetry.sample_ratio)?),
        None => None,
    };
    // The log filter applies to the logs only: `log_filter = "warn"` must
    // not silence the spans a trace is made of.
    let log_filter = log_filter(runtime);
    let _ = LOGS_WANT_SPANS.set(
        log_filter
            .max_level_hint()
            .is_none_or(|most| most >= LevelFilter::INFO),
    );
    let logs = logs_layer(service, runtime);
    let installed = match &provider {
        Some(provider) => {
            traced_subscriber(logs, log_filter, provider.tracer("switchboard")).try_init()
        }
        None => tracing_subscriber::registry()
            .with(logs.with_filter(log_filter))
            .try_init(),
    };
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
        return Ok(TraceExporter::default());
    }
    let _ = SAMPLE_RATIO.set(provider.is_some().then_some(telemetry.sample_ratio));
    Ok(TraceExporter { provider })
}

/// The subscriber while traces are on: the logs under `log_filter`, and
/// the trace layer, which turns the spans of kept traces into OpenTelemetry
/// spans. (Every layer has a filter of its own: one without would turn each
/// call site the others all turn down, hyper's `trace!` lines, into one
/// asked on every call.)
fn traced_subscriber<L>(
    logs: L,
    log_filter: EnvFilter,
    tracer: opentelemetry_sdk::trace::SdkTracer,
) -> impl tracing::Subscriber
+ for<'lookup> tracing_subscriber::registry::LookupSpan<'lookup>
+ Send
+ Sync
where
    L: Layer<Registry> + Send + Sync + 'static,
{
    tracing_subscriber::registry()
        .with(logs.with_filter(log_filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_threads(false)
                .with_location(false)
                // Busy and idle times per span cost two clock reads per
                // poll; a span's duration is what a trace shows.
                .with_tracked_inactivity(false)
                // Nothing here reads OpenTelemetry's own current context
                // (tarpc and ours go through the spans), so entering a span
                // need not install it: a thread-local swap on every poll.
                .with_context_activation(false)
                // Log events stay out of the spans (each would be a span
                // event, formatted whether or not its trace is kept): the
                // journal has them under TRACE_ID.
                .with_counting_event_filter(tracing_subscriber::filter::filter_fn(|_| false))
                .with_filter(entry::KeptTraces {
                    spans: traced_spans(),
                }),
        )
}

/// Journald under systemd (or when asked), stderr otherwise.
fn logs_layer<S>(service: &str, runtime: &RuntimeSettings) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'lookup> tracing_subscriber::registry::LookupSpan<'lookup>,
{
    let journald = match runtime.log_target {
        LogTarget::Stderr => None,
        LogTarget::Journald => journald_layer(service),
        LogTarget::Auto if stderr_is_journal() => journald_layer(service),
        LogTarget::Auto => None,
    };
    match journald {
        Some(journald) => journald.boxed(),
        None => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .boxed(),
    }
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
    // No TLS in the exporter (yet): a collector across hosts is reached
    // through a local agent, as the units allow loopback only.
    if uri.scheme_str() != Some("http") {
        return Err(invalid(
            "expected http://host:port (the exporter speaks OTLP/gRPC without TLS)".to_owned(),
        ));
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
        .with_sampler(WithinRatio(Sampler::TraceIdRatioBased(sample_ratio)))
        .with_id_generator(entry::PresetIds::default())
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

/// The sampler: a span whose parent is in this process follows its
/// parent; a trace started here, or continued from a caller (another
/// service, or a client of the broker), is kept when the trace id falls
/// within `telemetry.sample_ratio` and the caller kept it too. The ratio
/// test is a function of the trace id alone, so services with the same
/// ratio decide alike and a trace is kept whole; and a client's
/// `traceparent` cannot raise the share of requests recorded above the
/// ratio (the stock parent-based sampler would record whatever a caller
/// marks sampled).
#[derive(Debug, Clone)]
struct WithinRatio(Sampler);

impl ShouldSample for WithinRatio {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[opentelemetry::KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> SamplingResult {
        let parent = parent_context
            .filter(|context| context.has_active_span())
            .map(|context| context.span().span_context().clone());
        let follow = |decision| SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state: parent
                .as_ref()
                .map(|parent| parent.trace_state().clone())
                .unwrap_or_default(),
        };
        match &parent {
            Some(parent) if !parent.is_remote() && parent.is_sampled() => {
                follow(SamplingDecision::RecordAndSample)
            }
            Some(parent) if !parent.is_sampled() => follow(SamplingDecision::Drop),
            _ => self
                .0
                .should_sample(parent_context, trace_id, name, span_kind, attributes, links),
        }
    }
}

/// The trace context in `carrier` (empty when it has none).
fn extract(carrier: &dyn Extractor) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(carrier)
}

/// Whether a trace id falls within `ratio`: the test of the sampler's
/// [`Sampler::TraceIdRatioBased`], so an early decision and the sampler's
/// agree.
fn within_ratio(ratio: f64, trace_id: opentelemetry::trace::TraceId) -> bool {
    Sampler::TraceIdRatioBased(ratio)
        .should_sample(
            None,
            trace_id,
            "",
            &opentelemetry::trace::SpanKind::Internal,
            &[],
            &[],
        )
        .decision
        == SamplingDecision::RecordAndSample
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
/// only while traces are on (the only time this is called). Call before the
/// span is entered.
fn describe(span: &Span, kind: SpanKind, name: std::fmt::Arguments<'_>) {
    span.record("otel.kind", kind.as_str());
    span.record("otel.name", tracing::field::display(name));
}

/// A span for a call to `downstream` (`auth`, `logger`, `rabbitmq`) over
/// `transport` (`http`, `grpc`, `rpc`, `amqp`), named `downstream transport`
/// in the trace; a disabled span while traces are off or the current trace
/// is not kept. Mark a failure with [`failed`].
pub fn call_span(downstream: &str, transport: &str, kind: SpanKind) -> Span {
    if !in_kept_trace() {
        return Span::none();
    }
    let span = new_call_span(downstream, transport);
    describe(&span, kind, format_args!("{downstream} {transport}"));
    span
}

fn new_call_span(downstream: &str, transport: &str) -> Span {
    tracing::info_span!(
        "call",
        downstream,
        transport,
        otel.kind = tracing::field::Empty,
        otel.name = tracing::field::Empty,
    )
}

/// Whether traces are on and the current span is in a kept trace: the test
/// before making a span only a trace would show.
fn in_kept_trace() -> bool {
    enabled() && Span::current().context().span().span_context().is_sampled()
}

/// A span for a step of the work (`bcrypt`, `store insert`), named `name`
/// in the trace; use it through [`traced`], so that it exists only in a
/// kept trace.
pub fn step_span(name: &str, kind: SpanKind) -> Span {
    let span = tracing::info_span!(
        "step",
        step = name,
        otel.kind = tracing::field::Empty,
        otel.name = tracing::field::Empty,
    );
    describe(&span, kind, format_args!("{name}"));
    span
}

/// Names a served request's span by its route (`POST /handle`; `other`
/// for a path no route matched) and marks it with its HTTP status, as an
/// error when the status is a 5xx (a 4xx is the client's doing).
pub fn answered(span: &Span, method: &str, route: &str, status: axum::http::StatusCode) {
    if !enabled() {
        return;
    }
    let context = span.context();
    let otel_span = context.span();
    otel_span.update_name(format!("{method} {route}"));
    otel_span.set_attribute(opentelemetry::KeyValue::new("http.route", route.to_owned()));
    otel_span.set_attribute(opentelemetry::KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    if status.is_server_error() {
        otel_span.set_status(opentelemetry::trace::Status::error(status.to_string()));
    }
}

/// Marks `span` as failed, with `why`.
pub fn failed(span: &Span, why: &dyn std::fmt::Display) {
    if enabled() {
        span.set_status(opentelemetry::trace::Status::error(why.to_string()));
    }
}

/// Runs `work` inside the span `span` makes while the current trace is
/// kept, and as it is otherwise: a span that only a trace would show costs
/// nothing then.
pub async fn traced<F: std::future::Future>(span: impl FnOnce() -> Span, work: F) -> F::Output {
    if in_kept_trace() {
        work.instrument(span()).await
    } else {
        work.await
    }
}

/// Records `span`'s trace id in its `trace_id` field.
fn record_trace_id(span: &Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    // An unsampled trace reaches no collector: its id would lead nowhere.
    if span_context.is_sampled() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
    }
}

/// Writes the current span's trace context into `carrier` (an outgoing
/// request's headers or message's properties).
pub fn inject(carrier: &mut dyn Injector) {
    inject_span(&Span::current(), carrier);
}

/// Writes `span`'s trace context into `carrier`; while the work of a trace
/// not kept runs, that trace flagged so.
fn inject_span(span: &Span, carrier: &mut dyn Injector) {
    if enabled()
        && let Some(context) = context_to_send(span)
    {
        inject_context(&context, carrier);
    }
}

fn context_to_send(span: &Span) -> Option<opentelemetry::Context> {
    if let Some(unkept) = entry::running_unkept() {
        return Some(unkept.context());
    }
    let context = span.context();
    context.span().span_context().is_valid().then_some(context)
}

/// Writes `context`'s trace context into `carrier`.
pub fn inject_context(context: &opentelemetry::Context, carrier: &mut dyn Injector) {
    TraceContextPropagator::new().inject_context(context, carrier);
}

/// [`inject`] into HTTP headers (gRPC metadata are HTTP/2 headers too).
pub fn inject_headers(headers: &mut HeaderMap) {
    inject(&mut HeaderCarrier(headers));
}

/// The current span's trace context as headers of their own, for an
/// outgoing request to continue the trace (none while traces are off).
pub fn trace_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    inject_headers(&mut headers);
    headers
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

/// Outgoing HTTP headers, written to.
pub struct HeaderCarrier<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes an empty `tracestate` when there is none.
        if value.is_empty() {
            return;
        }
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

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };

    use super::*;

    pub(super) fn parent(remote: bool, sampled: bool, trace_id: TraceId) -> opentelemetry::Context {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            trace_id,
            SpanId::from(7),
            flags,
            remote,
            TraceState::default(),
        ))
    }

    fn decide(ratio: f64, parent: Option<&opentelemetry::Context>, trace_id: TraceId) -> bool {
        WithinRatio(Sampler::TraceIdRatioBased(ratio))
            .should_sample(
                parent,
                trace_id,
                "span",
                &opentelemetry::trace::SpanKind::Server,
                &[],
                &[],
            )
            .decision
            == SamplingDecision::RecordAndSample
    }

    #[test]
    fn a_caller_cannot_raise_the_share_of_traces_kept() {
        let trace = TraceId::from(0x5eed_u128 << 64 | 0xffff_ffff_ffff_fff0);
        // Ratio 0: nothing a caller sends is kept, whatever it marks.
        assert!(!decide(0.0, Some(&parent(true, true, trace)), trace));
        assert!(!decide(0.0, None, trace));
        // A span inside the process follows its parent.
        assert!(decide(0.0, Some(&parent(false, true, trace)), trace));
        // Ratio 1: a caller's decision holds either way.
        assert!(decide(1.0, Some(&parent(true, true, trace)), trace));
        assert!(!decide(1.0, Some(&parent(true, false, trace)), trace));
    }

    #[test]
    fn services_with_the_same_ratio_keep_the_same_traces() {
        let mut kept = 0;
        for n in 0..1_000_u128 {
            let trace = TraceId::from(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
            let started_here = decide(0.25, None, trace);
            let continued = decide(0.25, Some(&parent(true, started_here, trace)), trace);
            assert_eq!(started_here, continued, "trace {trace} split");
            kept += usize::from(started_here);
        }
        assert!((150..350).contains(&kept), "{kept} of 1000 kept at 0.25");
    }

    #[test]
    fn an_empty_tracestate_is_not_sent() {
        let trace = TraceId::from(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c_u128);
        let mut headers = HeaderMap::new();
        inject_context(&parent(true, true, trace), &mut HeaderCarrier(&mut headers));
        assert_eq!(
            headers
                .get("traceparent")
                .and_then(|value| value.to_str().ok()),
            Some("00-0af7651916cd43dd8448eb211c80319c-0000000000000007-01")
        );
        assert!(headers.get("tracestate").is_none(), "{headers:?}");
        let extracted = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        assert_eq!(extracted.span().span_context().trace_id(), trace);
    }

    #[test]
    fn traces_off_send_and_read_nothing() {
        // No subscriber with traces is installed in unit tests.
        assert!(!enabled());
        let mut headers = HeaderMap::new();
        inject_headers(&mut headers);
        assert!(headers.is_empty(), "{headers:?}");
        assert_eq!(traceparent(), None);
    }
}
