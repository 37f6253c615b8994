//! An OTLP/gRPC trace collector for tests and the benchmark (feature `otlp`).
//!
//! It is a real `TraceService`, generated from the official OpenTelemetry
//! protocol definitions (`opentelemetry-proto`) and served by tonic, so a
//! service's exporter talks to it exactly as it would to an OpenTelemetry
//! Collector, and a test sees what the exporter really sent: the resource's
//! `service.name`, the ids, the parent links, the span kinds and attributes.
//! It mocks nothing of ours.
//!
//! Like the rest of the testkit it is usable from synchronous code and from
//! any test runtime: the server runs on a tokio runtime of its own, in a
//! thread of its own, and the waits block on a condition variable.

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span as ProtoSpan, span, status};
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::{Error, Result};

/// The resource attribute that names the sending service.
const SERVICE_NAME: &str = "service.name";

/// What a span is to its trace, as the exporter sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `SPAN_KIND_UNSPECIFIED`, or a value this version does not know.
    Unspecified,
    /// Work inside one process.
    Internal,
    /// The handling of a request that came in.
    Server,
    /// A request going out, answered synchronously.
    Client,
    /// A message sent (e.g. published to RabbitMQ).
    Producer,
    /// A message received and processed.
    Consumer,
}

impl Kind {
    fn from_proto(kind: i32) -> Self {
        match span::SpanKind::try_from(kind) {
            Ok(span::SpanKind::Internal) => Self::Internal,
            Ok(span::SpanKind::Server) => Self::Server,
            Ok(span::SpanKind::Client) => Self::Client,
            Ok(span::SpanKind::Producer) => Self::Producer,
            Ok(span::SpanKind::Consumer) => Self::Consumer,
            Ok(span::SpanKind::Unspecified) | Err(_) => Self::Unspecified,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        })
    }
}

/// A span's status as the exporter sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Nothing set (the default).
    Unset,
    /// Explicitly successful.
    Ok,
    /// Failed, with the status message (possibly empty).
    Error(String),
}

/// One received span, flattened: the fields of its resource and its own that
/// tests check.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectedSpan {
    /// The resource attribute `service.name`; empty when the exporter sent none.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id (16 hex digits), `None` for a root span.
    pub parent_span_id: Option<String>,
    /// Server, client, producer...
    pub kind: Kind,
    /// String, integer, boolean and double values as text; arrays as
    /// `[a, b]`, byte strings as hex.
    pub attributes: BTreeMap<String, String>,
    /// The linked spans, as `(trace_id, span_id)`.
    pub links: Vec<(String, String)>,
    /// The span's status.
    pub status: Status,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
}

impl CollectedSpan {
    /// True when `parent` is this span's direct parent (same trace, and this
    /// span's parent id is `parent`'s id).
    pub fn is_child_of(&self, parent: &CollectedSpan) -> bool {
        self.trace_id == parent.trace_id
            && self.parent_span_id.as_deref() == Some(parent.span_id.as_str())
    }

    /// True for a span without a parent.
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_none()
    }

    /// The attribute's value as text, if the span has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    fn from_proto(service: &str, span: ProtoSpan) -> Self {
        let status = match span.status {
            Some(status) if status.code == status::StatusCode::Error as i32 => {
                Status::Error(status.message)
            }
            Some(status) if status.code == status::StatusCode::Ok as i32 => Status::Ok,
            _ => Status::Unset,
        };
        Self {
            service: service.to_owned(),
            name: span.name,
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
            kind: Kind::from_proto(span.kind),
            attributes: span
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), render_value(kv.value.as_ref())))
                .collect(),
            links: span
                .links
                .iter()
                .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                .collect(),
            status,
            start_unix_nano: span.start_time_unix_nano,
            end_unix_nano: span.end_time_unix_nano,
        }
    }
}

/// What the collector holds; the condition variable is notified on every
/// export, so waits wake exactly when something arrived.
struct Received {
    spans: Vec<CollectedSpan>,
    per_service: BTreeMap<String, u64>,
    total: u64,
    /// When the last span arrived (the collector's start before the first).
    last_arrival: Instant,
}

struct Shared {
    keep_spans: bool,
    received: Mutex<Received>,
    arrived: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Received> {
        // A waiter's predicate may have panicked while holding the lock; the
        // data is still consistent (it is only ever appended to).
        self.received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Receiver(Arc<Shared>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> std::result::Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut counts: Vec<(String, u64)> = Vec::new();
        let mut spans = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| resource.attributes.iter().find(|kv| kv.key == SERVICE_NAME))
                .map(|kv| render_value(kv.value.as_ref()))
                .unwrap_or_default();
            let mut count = 0;
            for scope_spans in resource_spans.scope_spans {
                count += scope_spans.spans.len() as u64;
                if self.0.keep_spans {
                    spans.extend(
                        scope_spans
                            .spans
                            .into_iter()
                            .map(|span| CollectedSpan::from_proto(&service, span)),
                    );
                }
            }
            counts.push((service, count));
        }
        let counts_total: u64 = counts.iter().map(|(_, count)| count).sum();
        {
            let mut received = self.0.lock();
            for (service, count) in counts {
                *received.per_service.entry(service).or_default() += count;
                received.total += count;
            }
            // An export without spans (the SDK sends none) ends no quiet period.
            if counts_total > 0 {
                received.last_arrival = Instant::now();
            }
            received.spans.extend(spans);
        }
        self.0.arrived.notify_all();
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC trace receiver on a free port of 127.0.0.1, stopped on drop.
///
/// ```no_run
/// # fn main() -> switchboard_testkit::Result<()> {
/// use std::time::Duration;
/// use switchboard_testkit::otlp::{Collector, render_tree};
///
/// let collector = Collector::start()?;
/// // Give the service `[telemetry] otlp_endpoint = collector.endpoint()`,
/// // send it a request with a known trace id, then:
/// # let trace_id = "0af7651916cd43dd8448eb211c80319c";
/// let spans = collector.wait_for_trace(trace_id, Duration::from_secs(10), |spans| {
///     spans.iter().any(|s| s.service == "switchboard-logger")
/// })?;
/// println!("{}", render_tree(&spans));
/// # Ok(())
/// # }
/// ```
pub struct Collector {
    address: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    /// Starts a collector that keeps every span it receives.
    pub fn start() -> Result<Self> {
        Self::start_inner(true)
    }

    /// Starts a collector that only counts spans (per service and in
    /// total) and keeps none: for load runs, where keeping millions of spans
    /// would measure the test's memory instead of the services.
    pub fn start_counting() -> Result<Self> {
        Self::start_inner(false)
    }

    fn start_inner(keep_spans: bool) -> Result<Self> {
        // Bound here, not in the thread: the port is known and a failure is
        // returned before start() does.
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("binding the OTLP collector to 127.0.0.1:0", e))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::io("reading the OTLP collector's address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("making the OTLP collector's socket non-blocking", e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("building the OTLP collector's runtime", e))?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(|e| Error::io("registering the OTLP collector's socket", e))?
        };

        let shared = Arc::new(Shared {
            keep_spans,
            received: Mutex::new(Received {
                spans: Vec::new(),
                per_service: BTreeMap::new(),
                total: 0,
                last_arrival: Instant::now(),
            }),
            arrived: Condvar::new(),
        });
        let service = TraceServiceServer::new(Receiver(Arc::clone(&shared)));
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("otlp-collector-{}", address.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let serve = Server::builder()
                        .add_service(service)
                        .serve_with_incoming(TcpIncoming::from(listener));
                    tokio::select! {
                        result = serve => {
                            if let Err(error) = result {
                                tracing::error!(%address, %error, "OTLP collector stopped");
                            }
                        }
                        // Sent or dropped: either way the handle is gone.
                        _ = stopped => {}
                    }
                });
                // Not a graceful shutdown: exporters keep their connections
                // open, and a test's drop must not wait for them.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| Error::io("spawning the OTLP collector's thread", e))?;

        Ok(Self {
            address,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where exporters send to: `http://127.0.0.1:PORT` (OTLP/gRPC).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The address the collector listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Every span kept so far, in the order received (none for a
    /// [`Collector::start_counting`] collector).
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.shared.lock().spans.clone()
    }

    /// The kept spans of one trace (`trace_id`: 32 hex digits, any case).
    pub fn trace(&self, trace_id: &str) -> Vec<CollectedSpan> {
        let trace_id = trace_id.to_ascii_lowercase();
        of_trace(&self.shared.lock().spans, &trace_id)
    }

    /// How many spans arrived, kept or not.
    pub fn span_count(&self) -> u64 {
        self.shared.lock().total
    }

    /// How many spans arrived per `service.name`, kept or not.
    pub fn span_counts(&self) -> BTreeMap<String, u64> {
        self.shared.lock().per_service.clone()
    }

    /// Waits until `done` holds for the spans of `trace_id` received so far,
    /// and returns them. On timeout, the error draws what did arrive of the
    /// trace (service, name, kind, parent), so a failing test says what is
    /// missing.
    pub fn wait_for_trace(
        &self,
        trace_id: &str,
        timeout: Duration,
        done: impl Fn(&[CollectedSpan]) -> bool,
    ) -> Result<Vec<CollectedSpan>> {
        let trace_id = trace_id.to_ascii_lowercase();
        self.wait(
            timeout,
            |received| {
                let spans = of_trace(&received.spans, &trace_id);
                done(&spans).then_some(spans)
            },
            |received| {
                let spans = of_trace(&received.spans, &trace_id);
                format!(
                    "trace {trace_id} to be complete; {} of its spans arrived{}",
                    spans.len(),
                    indented_tree(&spans)
                )
            },
        )
    }

    /// Waits for the first kept span for which `matches` holds (e.g. to
    /// learn the trace id a service generated) and returns it. On timeout,
    /// the error names every span that did arrive.
    pub fn wait_for_span(
        &self,
        timeout: Duration,
        matches: impl Fn(&CollectedSpan) -> bool,
    ) -> Result<CollectedSpan> {
        self.wait(
            timeout,
            |received| received.spans.iter().find(|span| matches(span)).cloned(),
            |received| {
                format!(
                    "a matching span; {} spans arrived, none matching{}",
                    received.spans.len(),
                    indented_tree(&received.spans)
                )
            },
        )
    }

    /// Waits until no span has arrived for `quiet` since the call (or since
    /// the last span that arrived after it), at most `timeout`, and returns
    /// how many spans arrived in all. A batch exporter sends what it holds at
    /// least once per schedule delay (`OTEL_BSP_SCHEDULE_DELAY`, 5 s by
    /// default), so a quiet period somewhat longer than that, begun after
    /// the spans were made, means the exporters' queues are empty.
    pub fn wait_until_quiet(&self, quiet: Duration, timeout: Duration) -> Result<u64> {
        let called = Instant::now();
        let deadline = called + timeout;
        let mut received = self.shared.lock();
        loop {
            let now = Instant::now();
            let quiet_at = received.last_arrival.max(called) + quiet;
            if now >= quiet_at {
                return Ok(received.total);
            }
            if now >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "{quiet:?} without spans; {} arrived, the last {:?} ago",
                        received.total,
                        now - received.last_arrival
                    ),
                    waited: timeout,
                });
            }
            received = self
                .shared
                .arrived
                .wait_timeout(received, quiet_at.min(deadline) - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    fn wait<T>(
        &self,
        timeout: Duration,
        check: impl Fn(&Received) -> Option<T>,
        describe: impl Fn(&Received) -> String,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut received = self.shared.lock();
        loop {
            if let Some(found) = check(&received) {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: describe(&received),
                    waited: timeout,
                });
            }
            received = self
                .shared
                .arrived
                .wait_timeout(received, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collector")
            .field("endpoint", &self.endpoint())
            .field("keep_spans", &self.shared.keep_spans)
            .finish_non_exhaustive()
    }
}

/// Draws spans as indented trees, one line per span:
/// `service: name [kind]`, children under their parent in start order. A span
/// whose parent is not among `spans` is drawn as a root, marked
/// `(parent <id> missing)`.
pub fn render_tree(spans: &[CollectedSpan]) -> String {
    let present: HashSet<(&str, &str)> = spans
        .iter()
        .map(|span| (span.trace_id.as_str(), span.span_id.as_str()))
        .collect();
    let mut order: Vec<&CollectedSpan> = spans.iter().collect();
    order.sort_by_key(|span| span.start_unix_nano);

    let mut out = String::new();
    let mut drawn = vec![false; order.len()];
    let mut stack: Vec<(usize, usize)> = Vec::new();
    let parent_present = |span: &CollectedSpan| {
        span.parent_span_id
            .as_deref()
            .is_some_and(|parent| present.contains(&(span.trace_id.as_str(), parent)))
    };
    // Roots first; then whatever a cycle of parent ids kept unreachable.
    let roots = (0..order.len()).filter(|&i| !parent_present(order[i]));
    let starts: Vec<usize> = roots.chain(0..order.len()).collect();
    for start in starts {
        if drawn[start] {
            continue;
        }
        stack.push((start, 0));
        while let Some((i, depth)) = stack.pop() {
            if drawn[i] {
                continue;
            }
            drawn[i] = true;
            let span = order[i];
            let _ = write!(
                out,
                "{:indent$}{}: {} [{}]",
                "",
                if span.service.is_empty() {
                    "(no service.name)"
                } else {
                    &span.service
                },
                span.name,
                span.kind,
                indent = depth * 2
            );
            if let Some(parent) = &span.parent_span_id
                && depth == 0
                && !parent_present(span)
            {
                let _ = write!(out, " (parent {parent} missing)");
            }
            if let Status::Error(message) = &span.status {
                let _ = write!(out, " error: {message}");
            }
            out.push('\n');
            // Pushed in reverse so the earliest child is drawn first.
            for child in (0..order.len()).rev() {
                if !drawn[child] && order[child].is_child_of(span) {
                    stack.push((child, depth + 1));
                }
            }
        }
    }
    out
}

fn indented_tree(spans: &[CollectedSpan]) -> String {
    if spans.is_empty() {
        return String::new();
    }
    let mut out = String::from(":\n");
    for line in render_tree(spans).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

fn of_trace(spans: &[CollectedSpan], trace_id: &str) -> Vec<CollectedSpan> {
    spans
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .cloned()
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn render_value(value: Option<&AnyValue>) -> String {
    let Some(value) = value.and_then(|value| value.value.as_ref()) else {
        return String::new();
    };
    match value {
        any_value::Value::StringValue(text) => text.clone(),
        any_value::Value::BoolValue(flag) => flag.to_string(),
        any_value::Value::IntValue(number) => number.to_string(),
        any_value::Value::DoubleValue(number) => number.to_string(),
        any_value::Value::BytesValue(bytes) => hex(bytes),
        any_value::Value::ArrayValue(array) => {
            let items: Vec<String> = array
                .values
                .iter()
                .map(|item| render_value(Some(item)))
                .collect();
            format!("[{}]", items.join(", "))
        }
        any_value::Value::KvlistValue(list) => {
            let items: Vec<String> = list
                .values
                .iter()
                .map(|KeyValue { key, value, .. }| {
                    format!("{key}: {}", render_value(value.as_ref()))
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        // Only profiles use string tables; a trace never should.
        any_value::Value::StringValueStrindex(index) => format!("<string table #{index}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use opentelemetry::trace::{
        Span as _, SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// A real OTLP/gRPC exporter behind a batch processor, as a service
    /// would set it up. The returned runtime drives the exporter's channel
    /// and must outlive the provider.
    fn provider(
        endpoint: String,
        service: &'static str,
    ) -> (tokio::runtime::Runtime, SdkTracerProvider) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let exporter = {
            let _entered = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .expect("exporter")
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        (runtime, provider)
    }

    #[test]
    fn receives_what_the_otlp_exporter_sends() {
        let collector = Collector::start().expect("collector");
        let (_runtime, provider) = provider(collector.endpoint(), "switchboard-test");
        let tracer = provider.tracer("otlp-test");

        let mut parent = tracer
            .span_builder("POST /handle")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.response.status_code", 202_i64),
                KeyValue::new("url.path", "/handle"),
            ])
            .start(&tracer);
        let trace_id = parent.span_context().trace_id().to_string();
        let parent_id = parent.span_context().span_id().to_string();
        parent.set_attribute(KeyValue::new("retried", false));
        let cx = Context::new().with_remote_span_context(parent.span_context().clone());
        let mut child = tracer
            .span_builder("logger.log_entry")
            .with_kind(SpanKind::Client)
            .with_links(vec![opentelemetry::trace::Link::with_context(
                parent.span_context().clone(),
            )])
            .start_with_context(&tracer, &cx);
        child.set_status(opentelemetry::trace::Status::error("logger (rpc) failed"));
        child.end();
        parent.end();
        provider.force_flush().expect("flush");

        let spans = collector
            .wait_for_trace(&trace_id, Duration::from_secs(10), |spans| spans.len() == 2)
            .expect("both spans");
        let root = spans.iter().find(|s| s.is_root()).expect("a root");
        let leaf = spans.iter().find(|s| !s.is_root()).expect("a child");
        assert_eq!(root.name, "POST /handle");
        assert_eq!(root.service, "switchboard-test");
        assert_eq!(root.kind, Kind::Server);
        assert_eq!(root.span_id, parent_id);
        assert_eq!(root.trace_id.len(), 32);
        assert_eq!(root.span_id.len(), 16);
        assert_eq!(root.attribute("http.response.status_code"), Some("202"));
        assert_eq!(root.attribute("url.path"), Some("/handle"));
        assert_eq!(root.attribute("retried"), Some("false"));
        assert_eq!(leaf.name, "logger.log_entry");
        assert_eq!(leaf.kind, Kind::Client);
        assert!(leaf.is_child_of(root), "{}", render_tree(&spans));
        assert!(!root.is_child_of(leaf));
        assert_eq!(leaf.links, vec![(trace_id.clone(), parent_id.clone())]);
        assert_eq!(leaf.status, Status::Error("logger (rpc) failed".to_owned()));
        assert_eq!(
            render_tree(&spans),
            "switchboard-test: POST /handle [server]\n  \
             switchboard-test: logger.log_entry [client] error: logger (rpc) failed\n"
        );
        assert_eq!(collector.trace(&trace_id.to_uppercase()), spans);
        assert_eq!(collector.span_count(), 2);
        assert_eq!(
            collector.span_counts(),
            BTreeMap::from([("switchboard-test".to_owned(), 2)])
        );
        let found = collector
            .wait_for_span(Duration::from_secs(1), |s| s.name == "logger.log_entry")
            .expect("found");
        assert_eq!(&found, leaf);
        provider.shutdown().expect("shutdown");
    }

    #[test]
    fn a_timed_out_wait_draws_what_arrived() {
        let collector = Collector::start().expect("collector");
        let (_runtime, provider) = provider(collector.endpoint(), "switchboard-broker");
        let tracer = provider.tracer("otlp-test");
        let root = tracer
            .span_builder("POST /handle")
            .with_kind(SpanKind::Server)
            .start(&tracer);
        let trace_id = root.span_context().trace_id().to_string();
        let cx = Context::new().with_span(root);
        tracer
            .span_builder("logger.log_entry")
            .with_kind(SpanKind::Client)
            .start_with_context(&tracer, &cx)
            .end();
        drop(cx);
        provider.force_flush().expect("flush");

        let error = collector
            .wait_for_trace(&trace_id, Duration::from_millis(300), |spans| {
                spans.iter().any(|s| s.service == "switchboard-logger")
            })
            .expect_err("no logger span ever comes");
        let message = error.to_string();
        assert!(message.contains("timed out after 300ms"), "{message}");
        assert!(message.contains(&trace_id), "{message}");
        assert!(
            message.contains(
                "2 of its spans arrived:\n  \
                 switchboard-broker: POST /handle [server]\n    \
                 switchboard-broker: logger.log_entry [client]\n"
            ),
            "{message}"
        );
        provider.shutdown().expect("shutdown");
    }

    #[test]
    fn a_counting_collector_counts_and_keeps_nothing() {
        let collector = Collector::start_counting().expect("collector");
        let (_runtime, provider) = provider(collector.endpoint(), "switchboard-logger");
        let tracer = provider.tracer("otlp-test");
        for _ in 0..3 {
            tracer.start("write").end();
        }
        provider.force_flush().expect("flush");
        let waiting = Instant::now();
        let quiet = Duration::from_millis(200);
        assert_eq!(
            collector
                .wait_until_quiet(quiet, Duration::from_secs(5))
                .expect("quiet"),
            3
        );
        let waited = waiting.elapsed();
        assert!(
            waited >= quiet && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        assert_eq!(collector.span_count(), 3);
        assert_eq!(
            collector.span_counts(),
            BTreeMap::from([("switchboard-logger".to_owned(), 3)])
        );
        assert!(collector.spans().is_empty());
        provider.shutdown().expect("shutdown");
    }

    #[test]
    fn the_tree_marks_missing_parents_and_survives_cycles() {
        let span = |name: &str, id: &str, parent: Option<&str>| CollectedSpan {
            service: "switchboard-logger".to_owned(),
            name: name.to_owned(),
            trace_id: "0".repeat(32),
            span_id: id.to_owned(),
            parent_span_id: parent.map(str::to_owned),
            kind: Kind::Server,
            attributes: BTreeMap::new(),
            links: Vec::new(),
            status: Status::Unset,
            start_unix_nano: 0,
            end_unix_nano: 0,
        };
        let tree = render_tree(&[
            span("a", "1111111111111111", Some("9999999999999999")),
            // A span that claims to be its own parent must not loop.
            span("b", "2222222222222222", Some("2222222222222222")),
        ]);
        assert_eq!(
            tree,
            "switchboard-logger: a [server] (parent 9999999999999999 missing)\n\
             switchboard-logger: b [server]\n"
        );
    }
}
