//! The edge every HTTP request of a JSON service passes: one tower service in
//! place of a stack of four (tower-http's set-request-id, trace, propagate-
//! request-id and catch-panic), so a request pays for one future and one span
//! instead of a future, a poll and a header look-up per layer.
//!
//! [`Edge`] gives the request its id (the client's `x-request-id`, or a fresh
//! one), runs it inside one `request` span that carries the id, logs one INFO
//! line per answer, and puts the id on the response; [`PanicGuard`], right
//! around the router, answers a panic with the JSON 500 instead of dropping
//! the connection. The edge also counts each answer and its duration in the
//! service's [`crate::metrics::HttpMetrics`]. `scripts/profile-edge`
//! counts what it costs per request.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::FutureExt as _;
use futures::future::{CatchUnwind, Either, Map};
use tower::{Layer, Service};

use crate::http::{ApiError, REQUEST_ID_HEADER};
use crate::metrics::{HttpMetrics, method_label};
use crate::telemetry::{self, HeaderExtractor, SpanKind};

/// What every service here answers: a response, never an error.
type Answered = Result<Response, Infallible>;
/// The future of [`Edge`] and [`Deadline`]: one allocation per request.
type BoxedAnswer = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// Wraps a router in [`Edge`], which records its requests in `metrics`.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    metrics: HttpMetrics,
}

impl EdgeLayer {
    pub fn new(metrics: HttpMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Edge {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    metrics: HttpMetrics,
}

impl<S> Service<Request<Body>> for Edge<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxedAnswer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let header = HeaderName::from_static(REQUEST_ID_HEADER);
        let id = match request.headers().get(&header) {
            Some(id) => id.clone(),
            None => {
                let id = fresh_request_id();
                request.headers_mut().insert(header.clone(), id.clone());
                id
            }
        };
        // Named by its method until the answer says its route: a client's
        // path never names a span (nor labels a metric).
        let trace = telemetry::entry(&HeaderExtractor(request.headers())).span(
            SpanKind::Server,
            format_args!("{}", method_label(request.method())),
            || {
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %id.to_str().unwrap_or("-"),
                    trace_id = tracing::field::Empty,
                    otel.kind = tracing::field::Empty,
                    otel.name = tracing::field::Empty,
                )
            },
        );
        let traced = trace.is_traced().then(|| trace.span().clone());
        // The method and URI are reference-counted: kept for the metrics at
        // no allocation.
        let mut counted = Counted {
            metrics: self.metrics.clone(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            started: Instant::now(),
            answered: false,
            traced,
        };
        let started = counted.started;
        let answer = trace.in_scope(|| self.inner.call(request));
        Box::pin(trace.instrument(async move {
            let Ok(mut response) = answer.await;
            counted.answered(&response);
            // The line tower-http's trace layer wrote, so the journal
            // reads as before.
            tracing::info!(
                latency = %format_args!("{} ms", started.elapsed().as_millis()),
                status = response.status().as_u16(),
                "finished processing request"
            );
            response.headers_mut().insert(header, id);
            Ok(response)
        }))
    }
}

/// A request on its way through [`Edge`], counted once it is answered, or,
/// when it is dropped unanswered, as a `503`: what the request deadline
/// ([`Deadline`], outside the edge) answers then. (A client that went away
/// drops its request too and is counted the same.)
struct Counted {
    metrics: HttpMetrics,
    method: axum::http::Method,
    uri: axum::http::Uri,
    started: Instant,
    answered: bool,
    /// The request's span while its trace is kept, to be named by the route
    /// and marked by the status (also when the deadline drops the request).
    traced: Option<tracing::Span>,
}

impl Counted {
    fn answered(&mut self, response: &Response) {
        self.answered = true;
        let route = self.metrics.record(
            &self.method,
            self.uri.path(),
            response,
            self.started.elapsed(),
        );
        if let Some(span) = &self.traced {
            telemetry::answered(span, method_label(&self.method), route, response.status());
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if !self.answered {
            let mut timed_out = Response::new(Body::empty());
            *timed_out.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            self.answered(&timed_out);
        }
    }
}

/// Answers a panic of the service it wraps, in routing or in a handler, with
/// the JSON 500 (never the panic's text) instead of a dropped connection.
/// Innermost, right around the router, so that the layers between it and
/// [`Edge`] (the broker's CORS) still put their headers on that answer.
#[derive(Debug, Clone)]
pub struct PanicGuard<S> {
    inner: S,
}

impl<S> PanicGuard<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<Request<Body>> for PanicGuard<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    // Named, not boxed: this layer costs no allocation per request.
    type Future = Either<
        Map<
            CatchUnwind<AssertUnwindSafe<S::Future>>,
            fn(std::thread::Result<Answered>) -> Answered,
        >,
        Ready<Answered>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // Routing runs here, the handler when the future is polled: a panic
        // can come from either.
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(answer) => Either::Left(
                AssertUnwindSafe(answer)
                    .catch_unwind()
                    .map(settle as fn(std::thread::Result<Answered>) -> Answered),
            ),
            Err(_panic) => Either::Right(std::future::ready(Ok(panicked()))),
        }
    }
}

fn settle(answered: std::thread::Result<Answered>) -> Answered {
    answered.unwrap_or_else(|_panic| Ok(panicked()))
}

fn panicked() -> Response {
    tracing::error!("request handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

/// The server-side bound on a request (`http.request_timeout_ms`), put
/// around the router by [`crate::service::serve_http_with`]: a request not
/// answered in time is dropped and answered `503` with the envelope, carrying
/// the client's request id when it sent one.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    timeout: Option<Duration>,
}

impl<S> Deadline<S> {
    /// `None`: no bound.
    pub fn new(inner: S, timeout: Option<Duration>) -> Self {
        Self { inner, timeout }
    }
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxedAnswer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(timeout) = self.timeout else {
            return Box::pin(self.inner.call(request));
        };
        let request_id = request.headers().get(REQUEST_ID_HEADER).cloned();
        let (method, uri) = (request.method().clone(), request.uri().clone());
        let answer = self.inner.call(request);
        Box::pin(async move {
            if let Ok(answered) = tokio::time::timeout(timeout, answer).await {
                return answered;
            }
            tracing::warn!(%method, path = uri.path(), timeout_ms = timeout.as_millis(), "request not answered in time");
            let mut response = ApiError::unavailable(format!(
                "the request was not answered within {} ms",
                timeout.as_millis()
            ))
            .into_response();
            if let Some(id) = request_id {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(REQUEST_ID_HEADER), id);
            }
            Ok(response)
        })
    }
}

/// A fresh request id: a UUID of version 8 (RFC 9562's layout for ids made
/// by an application's own rules) whose first half is random per process and
/// whose second half counts. Unique like a version 4 UUID (a process never
/// repeats one, two processes share a prefix with odds of 2^-60), without a
/// `getrandom` call per request.
fn fresh_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits = (u128::from(prefix) << 64) | u128::from(count);
    let id = uuid::Builder::from_custom_bytes(bits.to_be_bytes()).into_uuid();
    let mut text = uuid::Uuid::encode_buffer();
    let text = id.hyphenated().encode_lower(&mut text);
    // Hex digits and hyphens are always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_request_ids_are_distinct_version_8_uuids() {
        let first = fresh_request_id();
        let second = fresh_request_id();
        assert_ne!(first, second);
        for id in [first, second] {
            let text = id.to_str().expect("ascii");
            let parsed = uuid::Uuid::parse_str(text).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 8, "{text}");
        }
    }
}
