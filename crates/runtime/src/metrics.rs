//! Prometheus metrics: one registry per service, served in the Prometheus
//! text format (0.0.4) on `GET /metrics` of a door of its own (socket
//! `metrics`), never on a service's API door, whose clients need not see them.
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client:
//! typed metrics held by the code that updates them and an explicit registry
//! (no global recorder, so two services in one test process keep their
//! counts apart), label sets as Rust types (bounded by construction), and
//! the text format Prometheus 2.x reads.
//!
//! What every service exports through here: requests by route, method and
//! status and their durations (recorded by [`crate::edge::Edge`]), calls to
//! downstreams by transport and outcome ([`Outbound`]), and the process
//! (`process_*`, read from `/proc/self` on each scrape). A service's own
//! metrics are registered with [`Metrics::register`]; names follow
//! Prometheus' conventions: `switchboard_` prefix, base units (`_seconds`,
//! `_bytes`), counters end in `_total` (added by the encoder), labels from
//! small closed sets — never a user's e-mail or a log entry's name.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};
use tokio::net::TcpListener;

use crate::Shutdown;

/// Bucket bounds (seconds) for request and call durations: 250 µs to 10 s,
/// fine where this system's answers usually fall (a few ms) and wide enough
/// for a store's tail.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A histogram with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A service's registry: cheap to clone, shared by everything that
/// registers or updates a metric, rendered on each scrape.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
    http: HttpMetrics,
    // Registered on first use and shared after: a family registered twice
    // would be exposed twice, and Prometheus rejects such a scrape.
    outbound: Arc<OnceLock<Outbound>>,
    publishes: Arc<OnceLock<PublishMetrics>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the process metrics and the HTTP request metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector::new()));
        let http = HttpMetrics::default();
        registry.register(
            "switchboard_http_requests",
            "HTTP requests answered, by route (the path template; `other` for \
             unknown paths, `preflight` for CORS preflights), method and status",
            http.requests.clone(),
        );
        registry.register_with_unit(
            "switchboard_http_request_duration",
            "Time from a request's head to its answer, by route and method",
            Unit::Seconds,
            http.durations.clone(),
        );
        Self {
            registry: Arc::new(RwLock::new(registry)),
            http,
            outbound: Arc::default(),
            publishes: Arc::default(),
        }
    }

    /// Adds a metric. `name` in full (`switchboard_…`), without the unit or
    /// `_total`, which the encoder appends.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.write().register(name, help, metric);
    }

    /// [`Metrics::register`] with a unit suffix (`Unit::Seconds` → `_seconds`).
    pub fn register_with_unit(&self, name: &str, help: &str, unit: Unit, metric: impl Metric) {
        self.write().register_with_unit(name, help, unit, metric);
    }

    /// Adds metrics read at each scrape from state the service keeps anyway.
    pub fn register_collector(&self, collector: impl Collector) {
        self.write().register_collector(Box::new(collector));
    }

    /// The request metrics [`crate::edge::Edge`] records.
    pub fn http(&self) -> &HttpMetrics {
        &self.http
    }

    /// The families of calls to downstreams, registered once per registry.
    pub fn outbound(&self) -> Outbound {
        self.outbound
            .get_or_init(|| self.register_outbound())
            .clone()
    }

    fn register_outbound(&self) -> Outbound {
        let mut registry = self.write();
        let outbound = Outbound::default();
        registry.register(
            "switchboard_outbound_calls",
            "Calls to downstreams, by downstream, transport (http, grpc, rpc, amqp) \
             and outcome (ok, refused: the downstream said no; failed; timeout)",
            outbound.calls.clone(),
        );
        registry.register_with_unit(
            "switchboard_outbound_call_duration",
            "Duration of calls to downstreams, by downstream and transport",
            Unit::Seconds,
            outbound.durations.clone(),
        );
        outbound
    }

    /// The families of a confirming AMQP publisher, registered once per registry.
    pub fn amqp_publishes(&self) -> PublishMetrics {
        self.publishes
            .get_or_init(|| self.register_publishes())
            .clone()
    }

    fn register_publishes(&self) -> PublishMetrics {
        let publishes = PublishMetrics {
            pending: Gauge::default(),
            confirm: latency_histogram(),
            publishes: Family::default(),
        };
        let mut registry = self.write();
        registry.register(
            "switchboard_amqp_publishes_pending",
            "AMQP publishes waiting for RabbitMQ's confirm",
            publishes.pending.clone(),
        );
        registry.register_with_unit(
            "switchboard_amqp_publish_confirm_duration",
            "Time from an AMQP publish to RabbitMQ's confirm",
            Unit::Seconds,
            publishes.confirm.clone(),
        );
        registry.register(
            "switchboard_amqp_publishes",
            "AMQP publishes, by outcome (confirmed; refused: returned or nacked; failed)",
            publishes.publishes.clone(),
        );
        publishes
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        let registry = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        {
            tracing::warn!(error = %err, "cannot encode the metrics");
        }
        text
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Labels of an answered request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

/// Labels of a request's duration.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub method: &'static str,
}

/// The RED metrics of a service's HTTP door.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(latency_histogram),
        }
    }
}

/// Put on the answer of a router's fallbacks (no route for the path, or not
/// for the method): the path must not become a label (anyone could mint one
/// per request).
#[derive(Debug, Clone, Copy)]
pub struct Unrouted;

/// Put on every answer of a route with parameters (`/logs/{id}`), as an
/// `Extension` in the handler's reply: its template is the label, not the
/// path. (Fixed paths need nothing: their path is their template.)
#[derive(Debug, Clone, Copy)]
pub struct RouteTemplate(pub &'static str);

/// More distinct routes than any service has: past this, a path is `other`
/// (a parameterized route that forgot its [`RouteTemplate`] cannot grow the
/// label set without bound).
const MAX_ROUTES: usize = 64;

impl HttpMetrics {
    /// Counts one answer. `path` is the request's path: a route's template
    /// is its [`RouteTemplate`], else its path (a fixed route's path is its
    /// template); paths that matched no route, and preflights the CORS
    /// layer answered before routing, are `other` and `preflight`. Returns
    /// the route (a trace names the request's span by it).
    pub fn record(
        &self,
        method: &Method,
        path: &str,
        response: &Response,
        elapsed: Duration,
    ) -> &'static str {
        let method_label = method_label(method);
        let extensions = response.extensions();
        let route = if let Some(RouteTemplate(template)) = extensions.get::<RouteTemplate>() {
            template
        } else if extensions.get::<Unrouted>().is_some() {
            "other"
        } else if *method == Method::OPTIONS {
            "preflight"
        } else {
            intern_route(path)
        };
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method: method_label,
                status: response.status().as_u16(),
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels {
                route,
                method: method_label,
            })
            .observe(elapsed.as_secs_f64());
        route
    }
}

/// A method as a label: the standard ones by name, any other as `other`.
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Routed paths as `&'static str`, so a label costs no allocation per
/// request. Bounded: only paths a router matched get here, and each
/// service has a fixed handful of routes.
fn intern_route(path: &str) -> &'static str {
    static ROUTES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(RwLock::default);
    if let Some(known) = routes
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(path)
    {
        return known;
    }
    let mut routes = routes.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = routes.get(path) {
        return known;
    }
    if routes.len() >= MAX_ROUTES {
        return "other";
    }
    let interned: &'static str = Box::leak(path.to_owned().into_boxed_str());
    routes.insert(interned);
    interned
}

/// Holds a gauge one higher while it lives: a request waiting, a message
/// in flight, counted even when its future is dropped half-way.
#[derive(Debug)]
pub struct Held(Gauge);

impl Held {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Labels of a call to a downstream.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub downstream: &'static str,
    pub transport: Transport,
    pub outcome: CallOutcome,
}

/// Labels of a call's duration.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallRouteLabels {
    pub downstream: &'static str,
    pub transport: Transport,
}

/// How a service reached a downstream.
#[derive(
    Debug, Clone, Copy, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue,
)]
#[allow(non_camel_case_types)]
pub enum Transport {
    http,
    grpc,
    rpc,
    amqp,
}

impl Transport {
    /// The label value, also the transport's name in traces.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::http => "http",
            Self::grpc => "grpc",
            Self::rpc => "rpc",
            Self::amqp => "amqp",
        }
    }
}

/// How a call ended.
#[derive(
    Debug, Clone, Copy, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue,
)]
#[allow(non_camel_case_types)]
pub enum CallOutcome {
    /// Answered with success.
    ok,
    /// Answered with a refusal of the input (4xx, invalid, conflict).
    refused,
    /// Unreachable, or answered with a failure of its own.
    failed,
    /// No answer within the deadline.
    timeout,
}

/// Calls to downstreams: how many by outcome, and how long they took.
#[derive(Debug, Clone)]
pub struct Outbound {
    calls: Family<CallLabels, Counter>,
    durations: Family<CallRouteLabels, Histogram>,
}

impl Default for Outbound {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            durations: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl Outbound {
    /// Counts one call to `downstream` (a fixed name: `auth`, `logger`, …).
    pub fn record(
        &self,
        downstream: &'static str,
        transport: Transport,
        outcome: CallOutcome,
        elapsed: Duration,
    ) {
        self.calls
            .get_or_create(&CallLabels {
                downstream,
                transport,
                outcome,
            })
            .inc();
        self.durations
            .get_or_create(&CallRouteLabels {
                downstream,
                transport,
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// Labels of a publish's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishLabels {
    pub outcome: PublishOutcome,
}

/// How a confirmed publish ended.
#[derive(
    Debug, Clone, Copy, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue,
)]
#[allow(non_camel_case_types)]
pub enum PublishOutcome {
    /// RabbitMQ confirmed it: it is queued.
    confirmed,
    /// RabbitMQ did not take it: no queue is bound (returned) or it nacked.
    refused,
    /// No connection, the connection failed under the publish, or no
    /// confirm came before the caller's deadline.
    failed,
}

/// A confirming AMQP publisher's metrics ([`crate::amqp::ConfirmChannel`]).
#[derive(Debug, Clone)]
pub struct PublishMetrics {
    pending: Gauge,
    confirm: Histogram,
    publishes: Family<PublishLabels, Counter>,
}

/// Counts a publish as pending while it lives, even when the caller's
/// deadline drops it.
#[derive(Debug)]
pub struct PendingPublish {
    metrics: PublishMetrics,
    started: std::time::Instant,
    finished: bool,
}

impl PublishMetrics {
    /// A publish begins.
    pub fn start(&self) -> PendingPublish {
        self.pending.inc();
        PendingPublish {
            metrics: self.clone(),
            started: std::time::Instant::now(),
            finished: false,
        }
    }
}

impl PendingPublish {
    /// The publish ended with `outcome`.
    pub fn finish(mut self, outcome: PublishOutcome) {
        self.count(outcome);
    }

    fn count(&mut self, outcome: PublishOutcome) {
        self.finished = true;
        if outcome == PublishOutcome::confirmed {
            self.metrics
                .confirm
                .observe(self.started.elapsed().as_secs_f64());
        }
        self.metrics
            .publishes
            .get_or_create(&PublishLabels { outcome })
            .inc();
    }
}

/// A publish whose caller gave up (its deadline dropped it) is a failure.
impl Drop for PendingPublish {
    fn drop(&mut self) {
        if !self.finished {
            self.count(PublishOutcome::failed);
        }
        self.metrics.pending.dec();
    }
}

/// `process_*` metrics as Prometheus' own clients name them, read from
/// `/proc/self` on each scrape.
#[derive(Debug)]
struct ProcessCollector {
    started: f64,
    ticks_per_second: f64,
    page_size: f64,
}

impl ProcessCollector {
    fn new() -> Self {
        Self {
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64()),
            ticks_per_second: rustix::param::clock_ticks_per_second() as f64,
            page_size: rustix::param::page_size() as f64,
        }
    }
}

/// `utime + stime` (clock ticks) and `rss` (pages) from `/proc/self/stat`.
fn cpu_ticks_and_rss_pages(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) may hold spaces and parentheses; the
    // fields counted from 3 start after its last `)`.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field n of proc(5) is fields[n - 3] here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss: u64 = fields.get(21)?.parse().ok()?;
    Some((utime + stime, rss))
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some((ticks, rss_pages)) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(cpu_ticks_and_rss_pages)
        {
            let cpu = ConstCounter::new(ticks as f64 / self.ticks_per_second);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent",
                None,
                cpu.metric_type(),
            )?)?;
            let rss = ConstGauge::new(rss_pages as f64 * self.page_size);
            rss.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size",
                None,
                rss.metric_type(),
            )?)?;
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle read_dir holds is one of the entries.
            let open = entries.count().saturating_sub(1);
            let fds = ConstGauge::new(open as i64);
            fds.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                fds.metric_type(),
            )?)?;
        }
        let started = ConstGauge::new(self.started);
        started.encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "When the process started its metrics, in seconds since the Unix epoch",
            None,
            started.metric_type(),
        )?)?;
        Ok(())
    }
}

/// The metrics door: `GET /metrics` (and the health routes), within the
/// runtime's HTTP limits, until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics served");
    }
    crate::service::serve_http(listener, router(metrics), shutdown).await
}

/// A metrics door served in the background; see [`spawn_door`].
#[derive(Debug)]
pub struct Door {
    stop: Shutdown,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Door {
    /// Stops serving and waits until the door is closed.
    pub async fn close(mut self) {
        self.stop.trigger();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// A service that returns early (`?` on a start-up error) closes its door
/// without waiting.
impl Drop for Door {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

/// Serves the metrics door in the background when the service has one (a
/// `metrics` socket was passed, or `listen.metrics` is set), until
/// [`Door::close`]: not until the service's shutdown request, so that the
/// drain after it can be watched too, and a service that stops on an error
/// of its own closes its door just the same.
pub fn spawn_door(listener: Option<TcpListener>, metrics: &Metrics) -> Option<Door> {
    let listener = listener?;
    let stop = Shutdown::new();
    let (metrics, serving) = (metrics.clone(), stop.clone());
    let task = tokio::spawn(async move {
        if let Err(err) = serve(listener, metrics, serving).await {
            tracing::warn!(error = %err, "the metrics door stopped");
        }
    });
    Some(Door {
        stop,
        task: Some(task),
    })
}

/// The metrics door's routes: `GET /metrics` only.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { exposition(&metrics) }
            }),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "this door serves GET /metrics only\n",
            )
        })
}

fn exposition(metrics: &Metrics) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_read_after_the_command_name() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 50 0 0 20 0 4 0 12345 104857600 2560 18446744073709551615";
        assert_eq!(cpu_ticks_and_rss_pages(stat), Some((300, 2560)));
        assert_eq!(cpu_ticks_and_rss_pages("garbage"), None);
    }

    #[test]
    fn the_exposition_has_process_request_and_call_metrics_with_bounded_labels() {
        let metrics = Metrics::new();
        let ok = Response::new(axum::body::Body::empty());
        let mut unrouted = Response::new(axum::body::Body::empty());
        unrouted.extensions_mut().insert(Unrouted);
        metrics
            .http()
            .record(&Method::POST, "/handle", &ok, Duration::from_millis(3));
        metrics.http().record(
            &Method::GET,
            "/user-chosen/x",
            &unrouted,
            Duration::from_millis(1),
        );
        metrics.outbound().record(
            "logger",
            Transport::rpc,
            CallOutcome::ok,
            Duration::from_millis(2),
        );
        let text = metrics.render();
        for expected in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            r#"switchboard_http_requests_total{route="/handle",method="POST",status="200"} 1"#,
            r#"switchboard_http_requests_total{route="other",method="GET",status="200"} 1"#,
            r#"switchboard_http_request_duration_seconds_bucket{route="/handle",method="POST",le="0.005"} 1"#,
            r#"switchboard_outbound_calls_total{downstream="logger",transport="rpc",outcome="ok"} 1"#,
            r#"switchboard_outbound_call_duration_seconds_count{downstream="logger",transport="rpc"} 1"#,
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("user-chosen"), "{text}");
    }

    #[tokio::test]
    async fn the_door_serves_the_exposition_until_closed_or_dropped() {
        let metrics = Metrics::new();
        for close in [true, false] {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let door = spawn_door(Some(listener), &metrics).expect("a door");
            let response = reqwest::get(format!("http://{addr}/metrics"))
                .await
                .expect("scrape");
            assert_eq!(response.status(), 200);
            assert_eq!(
                response.headers()["content-type"],
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE
            );
            assert!(
                response
                    .text()
                    .await
                    .expect("text")
                    .contains("process_open_fds")
            );
            if close {
                door.close().await;
            } else {
                drop(door);
            }
            // Closed means the listening socket is gone.
            let mut refused = false;
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(addr).await.is_err() {
                    refused = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(refused, "the door at {addr} still accepts (close: {close})");
        }
        assert!(spawn_door(None, &metrics).is_none());
    }

    #[test]
    fn families_register_once_and_an_abandoned_publish_is_a_failure() {
        let metrics = Metrics::new();
        let (first, second) = (metrics.outbound(), metrics.outbound());
        for outbound in [first, second] {
            outbound.record(
                "logger",
                Transport::rpc,
                CallOutcome::ok,
                Duration::from_millis(1),
            );
        }
        let publishes = metrics.amqp_publishes();
        let _ = metrics.amqp_publishes();
        publishes.start().finish(PublishOutcome::confirmed);
        drop(publishes.start());
        let text = metrics.render();
        for family in [
            "# TYPE switchboard_outbound_calls_total counter",
            "# TYPE switchboard_amqp_publishes_total counter",
        ] {
            assert_eq!(text.matches(family).count(), 1, "{family} in\n{text}");
        }
        for expected in [
            r#"switchboard_outbound_calls_total{downstream="logger",transport="rpc",outcome="ok"} 2"#,
            r#"switchboard_amqp_publishes_total{outcome="confirmed"} 1"#,
            r#"switchboard_amqp_publishes_total{outcome="failed"} 1"#,
            "switchboard_amqp_publishes_pending 0",
            "switchboard_amqp_publish_confirm_duration_seconds_count 1",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[tokio::test]
    async fn a_request_the_deadline_drops_is_counted_as_its_503() {
        let metrics = Metrics::new();
        let router = crate::http::standard_service(
            Router::new().route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            ),
            crate::http::always_ready(),
            1024,
            &metrics,
        );
        let limits = crate::HttpLimits {
            request_timeout_ms: 100,
            ..crate::HttpLimits::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = Shutdown::new();
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { crate::service::serve_http_with(listener, router, shutdown, &limits).await }
        });
        let response = reqwest::get(format!("http://{addr}/slow"))
            .await
            .expect("send");
        assert_eq!(response.status(), 503);
        assert!(
            metrics.render().contains(
                r#"switchboard_http_requests_total{route="/slow",method="GET",status="503"} 1"#
            ),
            "{}",
            metrics.render()
        );
        shutdown.trigger();
        server.await.expect("join").expect("serve");
    }
}
