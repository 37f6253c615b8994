//! HTTP conventions shared by the JSON services: the `{"error","message","data"}`
//! envelope, errors that say what is wrong (and never leak a panic), a JSON body
//! extractor that accepts any content type as the original clients expect,
//! request ids, request tracing, and the `/healthz` + `/readyz` endpoints.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::layer::util::Identity;
use tower::{Layer, Service};

use crate::metrics::{Metrics, Unrouted};

/// The header that carries a request's id across every hop (the wire's).
pub use switchboard_wire::REQUEST_ID_HEADER;

/// The reply envelope of every JSON endpoint (wire contract).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Envelope<T = serde_json::Value> {
    pub error: bool,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data: Option<T>,
}

impl Envelope<serde_json::Value> {
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            error: false,
            message: message.into(),
            data: None,
        }
    }
}

impl<T> Envelope<T> {
    pub fn ok_with(message: impl Into<String>, data: T) -> Self {
        Self {
            error: false,
            message: message.into(),
            data: Some(data),
        }
    }
}

/// A successful reply: status plus envelope.
pub fn reply<T: Serialize>(status: StatusCode, envelope: Envelope<T>) -> Response {
    (status, axum::Json(envelope)).into_response()
}

/// An error reply: `{"error":true,"message":...}` with a 4xx/5xx status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, message)
    }
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let envelope = Envelope::<()> {
            error: true,
            message: self.message,
            data: None,
        };
        (self.status, axum::Json(envelope)).into_response()
    }
}

/// The request-body limit, kept in the request so error messages can state it.
#[derive(Debug, Clone, Copy)]
struct BodyLimit(usize);

/// A JSON body, parsed whatever the `Content-Type` says (the original system's
/// clients, and `curl -d`, do not always send `application/json`). Every
/// failure is a 400 whose message says what is wrong with the body.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().copied();
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                match limit {
                    Some(BodyLimit(max)) => ApiError::bad_request(format!(
                        "request body is larger than the limit of {max} bytes"
                    )),
                    None => ApiError::bad_request("request body is too large"),
                }
            } else {
                ApiError::bad_request(format!("cannot read request body: {rejection}"))
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body with an error message fit for a client.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|err| ApiError::bad_request(format!("invalid JSON body: {err}")))
}

/// What `/readyz` asks: `Ok(detail)` when the service's dependencies answer
/// (the detail, e.g. the state of optional dependencies, becomes the message),
/// else the name of the one that does not and why.
pub type ReadinessCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// A readiness check that always passes (services without dependencies).
pub fn always_ready() -> ReadinessCheck {
    Arc::new(|| Box::pin(async { Ok("ready".to_owned()) }))
}

/// `/healthz` (the process serves requests) and `/readyz` (dependencies answer).
pub fn health_routes<S: Clone + Send + Sync + 'static>(readiness: ReadinessCheck) -> Router<S> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { reply(StatusCode::OK, Envelope::ok("alive")) }),
        )
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    match readiness().await {
                        Ok(detail) => reply(StatusCode::OK, Envelope::ok(detail)),
                        Err(why) => {
                            ApiError::unavailable(format!("not ready: {why}")).into_response()
                        }
                    }
                }
            }),
        )
}

/// Wraps a service's router with what every JSON service has: health routes,
/// JSON 404/405, a body limit, request metrics in `metrics`, [`crate::edge::Edge`] (request ids, generated
/// or propagated, and one tracing span per request that carries the id) and
/// [`crate::edge::PanicGuard`] (a plain JSON 500 instead of a dropped
/// connection).
pub fn standard_service(
    router: Router,
    readiness: ReadinessCheck,
    max_body_bytes: usize,
    metrics: &Metrics,
) -> Router {
    standard_service_with(router, readiness, max_body_bytes, metrics, Identity::new())
}

/// [`standard_service`] with `layer` (CORS, say) between the edge and the
/// router, so that its answers carry request ids too.
///
/// The edge, `layer` and the body limits wrap the routed service once, from
/// outside (`fallback_service` of an empty router), rather than through
/// `Router::layer`, which wraps every route and costs each request a boxed
/// service clone and a boxed future per layer (`scripts/profile-edge`).
pub fn standard_service_with<L>(
    router: Router,
    readiness: ReadinessCheck,
    max_body_bytes: usize,
    metrics: &Metrics,
    layer: L,
) -> Router
where
    L: Layer<crate::edge::PanicGuard<Router>>,
    L::Service:
        Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request>>::Future: Send + 'static,
{
    let routed = router
        .merge(health_routes(readiness))
        .fallback(|| async {
            let mut response = ApiError::not_found("no such endpoint").into_response();
            response.extensions_mut().insert(Unrouted);
            response
        })
        .method_not_allowed_fallback(|| async {
            // A route's path with another method: under a route with
            // parameters the path is the client's, so not a label either.
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
            .into_response();
            response.extensions_mut().insert(Unrouted);
            response
        });
    let edge = tower::ServiceBuilder::new()
        .layer(crate::edge::EdgeLayer::new(metrics.http().clone()))
        .layer(axum::Extension(BodyLimit(max_body_bytes)))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(layer)
        .service(crate::edge::PanicGuard::new(routed));
    Router::new().fallback_service(edge)
}

/// The request id of the current request, to pass on to downstreams.
pub fn request_id(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
}

/// A header value for a request id we generated ourselves.
pub fn request_id_value(id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;

    #[derive(serde::Deserialize)]
    struct Login {
        email: String,
    }

    async fn spawn(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}")
    }

    async fn boom() -> &'static str {
        panic!("secret panic text")
    }

    fn app(readiness: ReadinessCheck) -> Router {
        let router = Router::new()
            .route(
                "/echo",
                post(|ApiJson(login): ApiJson<Login>| async move {
                    reply(
                        StatusCode::ACCEPTED,
                        Envelope::ok(format!("hello {}", login.email)),
                    )
                }),
            )
            .route("/panic", get(boom))
            .route(
                "/id",
                get(|headers: axum::http::HeaderMap| async move {
                    request_id(&headers).unwrap_or("none").to_owned()
                }),
            );
        standard_service(router, readiness, 64, &crate::metrics::Metrics::new())
    }

    #[tokio::test]
    async fn json_without_content_type_is_accepted() {
        let base = spawn(app(always_ready())).await;
        let response = reqwest::Client::new()
            .post(format!("{base}/echo"))
            .body(r#"{"email":"a@b.c"}"#)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 202);
        let body: Envelope = response.json().await.expect("json");
        assert_eq!(body, Envelope::ok("hello a@b.c"));
    }

    #[tokio::test]
    async fn bad_bodies_get_400_with_a_reason() {
        let base = spawn(app(always_ready())).await;
        let client = reqwest::Client::new();
        for (body, expected) in [
            ("", "empty"),
            ("{not json", "invalid JSON"),
            ("{}", "missing field `email`"),
            (r#"{"email":5}"#, "invalid type"),
            (
                r#"{"email":"0123456789012345678901234567890123456789012345678901234567890123456789"}"#,
                "limit of 64 bytes",
            ),
        ] {
            let response = client
                .post(format!("{base}/echo"))
                .body(body)
                .send()
                .await
                .expect("send");
            assert_eq!(response.status(), 400, "body {body:?}");
            let envelope: Envelope = response.json().await.expect("json");
            assert!(envelope.error);
            assert!(
                envelope.message.contains(expected),
                "{body:?} -> {}",
                envelope.message
            );
        }
    }

    #[tokio::test]
    async fn panics_become_a_plain_500_and_unknown_paths_a_json_404() {
        let base = spawn(app(always_ready())).await;
        let response = reqwest::get(format!("{base}/panic")).await.expect("send");
        assert_eq!(response.status(), 500);
        let text = response.text().await.expect("text");
        assert!(!text.contains("secret panic text"), "{text}");
        let response = reqwest::get(format!("{base}/nowhere")).await.expect("send");
        assert_eq!(response.status(), 404);
        let envelope: Envelope = response.json().await.expect("json");
        assert!(envelope.error);
    }

    #[tokio::test]
    async fn request_ids_are_generated_and_propagated() {
        let base = spawn(app(always_ready())).await;
        let client = reqwest::Client::new();
        let generated = client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("send");
        assert!(generated.headers().get(REQUEST_ID_HEADER).is_some());
        // The handler sees the id the client is answered with, and each
        // request gets its own.
        let mut seen = Vec::new();
        for _ in 0..2 {
            let response = client.get(format!("{base}/id")).send().await.expect("send");
            let answered = response.headers()[REQUEST_ID_HEADER]
                .to_str()
                .expect("ascii")
                .to_owned();
            let handled = response.text().await.expect("body");
            assert_eq!(answered, handled);
            seen.push(answered);
        }
        assert_ne!(seen[0], seen[1]);
        let propagated = client
            .get(format!("{base}/healthz"))
            .header(REQUEST_ID_HEADER, "abc-123")
            .send()
            .await
            .expect("send");
        assert_eq!(propagated.headers()[REQUEST_ID_HEADER], "abc-123");
    }

    #[tokio::test]
    async fn readiness_reports_its_detail_when_ready() {
        let detailed: ReadinessCheck =
            Arc::new(|| Box::pin(async { Ok("ready; amqp: reconnecting".to_owned()) }));
        let base = spawn(app(detailed)).await;
        let response = reqwest::get(format!("{base}/readyz")).await.expect("send");
        assert_eq!(response.status(), 200);
        let envelope: Envelope = response.json().await.expect("json");
        assert_eq!(envelope.message, "ready; amqp: reconnecting");
    }

    #[tokio::test]
    async fn readiness_reports_the_failing_dependency() {
        let failing: ReadinessCheck =
            Arc::new(|| Box::pin(async { Err("postgres: connection refused".to_owned()) }));
        let base = spawn(app(failing)).await;
        assert_eq!(
            reqwest::get(format!("{base}/healthz"))
                .await
                .expect("send")
                .status(),
            200
        );
        let response = reqwest::get(format!("{base}/readyz")).await.expect("send");
        assert_eq!(response.status(), 503);
        let envelope: Envelope = response.json().await.expect("json");
        assert!(
            envelope.message.contains("postgres"),
            "{}",
            envelope.message
        );
    }
}
