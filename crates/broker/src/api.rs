//! The broker's HTTP API (routes and JSON of ARCHITECTURE.md, compatible with
//! the original Go broker) and its OpenAPI document.
//!
//! Routes are registered only through `utoipa_axum::routes!`, so every routed
//! handler is in the document by construction; `tests/openapi.rs` checks the
//! other direction (every documented operation is served) and that the
//! committed `openapi.json` is current.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchboard_runtime::http::{self as rt_http, ApiError, ApiJson, Envelope, reply};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clients::{AuthFailure, Downstreams};
use crate::layers::RateLimit;
use crate::payload::{
    DownstreamStatus, DownstreamsReply, HandleReplySchema, LogGrpcBodySchema, LogPayload, LogVia,
    Reply, RequestPayload,
};
use crate::settings::Admin;
use switchboard_wire::LogLimits;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub downstreams: Arc<Downstreams>,
    /// `downstream.default_log_via`.
    pub default_via: LogVia,
    /// The logger's rules for an entry (`[limits] max_log_*`), applied
    /// before anything is forwarded or published.
    pub log_limits: LogLimits,
    /// Served at `/openapi.json` (in the state rather than an `Extension`
    /// layer, which would wrap every route).
    pub document: Document,
}

/// The generated OpenAPI document, serialized once, served at `/openapi.json`.
#[derive(Debug, Clone)]
pub struct Document(pub Arc<String>);

impl Document {
    pub fn new(document: &utoipa::openapi::OpenApi) -> Self {
        let json = document.to_pretty_json().unwrap_or_else(|err| {
            format!("{{\"error\":true,\"message\":\"cannot serialize the document: {err}\"}}")
        });
        Self(Arc::new(json))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchboard-broker",
        description = "API gateway of Switchboard: one URL for clients; forwards to auth (HTTP), \
                       logger (RPC, gRPC, HTTP or RabbitMQ) and mail (HTTP). Every JSON reply has the \
                       envelope {\"error\", \"message\", \"data\"?}."
    ),
    paths(healthz, readyz),
    components(schemas(Reply, LogVia, DownstreamStatus)),
    tags(
        (name = "broker", description = "The original broker's routes"),
        (name = "operations", description = "Health, readiness and this document")
    )
)]
struct ApiDoc;

/// The routes with their documentation; `/handle` behind `rate_limit`;
/// `/downstreams` and `/logs` only when `[admin]` exposes them, otherwise
/// they are unknown paths like any other.
pub fn api_router(rate_limit: Option<RateLimit>, admin: &Admin) -> OpenApiRouter<AppState> {
    let (schemas, paths, handle_route) = routes!(handle);
    let handle_route = match rate_limit.clone() {
        Some(layer) => handle_route.layer(layer),
        None => handle_route,
    };
    let router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(hit_broker))
        .routes(routes!(ping))
        .routes((schemas, paths, handle_route))
        .routes(routes!(log_grpc))
        .routes(routes!(openapi_json));
    let router = if admin.expose_downstreams {
        router.routes(routes!(downstreams))
    } else {
        router
    };
    if admin.expose_logs {
        // Each request is a read of the log store: limited like `/handle`.
        let (schemas, paths, logs_route) = routes!(recent_logs);
        let logs_route = match rate_limit {
            Some(layer) => logs_route.layer(layer),
            None => logs_route,
        };
        router.routes((schemas, paths, logs_route))
    } else {
        router
    }
}

/// The OpenAPI document of the broker's API, with every route it can serve
/// (`/downstreams` and `/logs` included).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let everything = Admin {
        expose_downstreams: true,
        expose_logs: true,
    };
    api_router(None, &everything).into_openapi()
}

/// The broker answers (the original's "Hit the broker").
#[utoipa::path(
    post, path = "/", tag = "broker",
    responses((status = 200, description = "The broker is up", body = Reply,
               example = json!({"error": false, "message": "Hit the broker"})))
)]
async fn hit_broker() -> Response {
    // The envelope `reply(StatusCode::OK, Envelope::ok("Hit the broker"))`
    // would serialize, written out once: this is the route load balancers
    // and benchmarks hit, and it need not allocate.
    const HIT: &str = r#"{"error":false,"message":"Hit the broker"}"#;
    ([(header::CONTENT_TYPE, "application/json")], HIT).into_response()
}

/// Heartbeat (go-chi's `middleware.Heartbeat`): `.` as plain text.
#[utoipa::path(
    get, path = "/ping", tag = "broker",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain", example = "."))
)]
async fn ping() -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], ".").into_response()
}

/// Performs `action` through the matching downstream.
#[utoipa::path(
    post, path = "/handle", tag = "broker",
    request_body(content = RequestPayload, description = "The action and its object",
        example = json!({"action": "log", "log": {"name": "event", "data": "some data", "via": "grpc"}})),
    responses(
        (status = 202, description = "Done: `auth` answers `Authenticated!` with the user; `log` answers `logged`; `mail` answers `Message sent to <to>`", body = HandleReplySchema),
        (status = 400, description = "Malformed JSON, unknown action, missing sub-object, a log entry the logger would refuse (`invalid log entry: …`), or the downstream's validation message", body = Reply),
        (status = 401, description = "`invalid credentials`", body = Reply),
        (status = 409, description = "`log.id` is already stored with another name or data", body = Reply),
        (status = 429, description = "Rate limit of this client IP exceeded, or (`auth`) auth's limit of failed logins for the account or the client; `Retry-After` says when to try again", body = Reply),
        (status = 502, description = "The downstream is unreachable or failed", body = Reply),
        (status = 504, description = "The downstream did not answer in time", body = Reply),
    )
)]
async fn handle(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ApiJson(payload): ApiJson<RequestPayload>,
) -> Result<Response, ApiError> {
    let request_id = rt_http::request_id(&headers);
    match payload.action.as_str() {
        "auth" => {
            let credentials = payload.auth.ok_or_else(|| missing_object("auth"))?;
            // Auth counts failed logins per client address: the client's,
            // not the broker's own.
            let client = peer.map(|Extension(ConnectInfo(peer))| peer.ip());
            let user = match state
                .downstreams
                .authenticate(&credentials, request_id, client)
                .await
            {
                Ok(user) => user,
                Err(AuthFailure::Throttled(throttled)) => return Ok(throttled.into_response()),
                Err(AuthFailure::Downstream(err)) => return Err(err.into_reply(request_id)),
            };
            Ok(reply(
                StatusCode::ACCEPTED,
                Envelope::ok_with("Authenticated!", user),
            ))
        }
        "log" => {
            let entry = payload.log.ok_or_else(|| missing_object("log"))?;
            let via = entry.via.unwrap_or(state.default_via);
            log(&state, entry, via, request_id).await
        }
        "mail" => {
            let mail = payload.mail.ok_or_else(|| missing_object("mail"))?;
            state
                .downstreams
                .send_mail(&mail, request_id)
                .await
                .map_err(|err| err.into_reply(request_id))?;
            Ok(reply(
                StatusCode::ACCEPTED,
                Envelope::ok(format!("Message sent to {}", mail.to)),
            ))
        }
        _ => Err(ApiError::bad_request("unknown action")),
    }
}

fn missing_object(action: &str) -> ApiError {
    ApiError::bad_request(format!(
        "action \"{action}\" requires the \"{action}\" object"
    ))
}

async fn log(
    state: &AppState,
    entry: LogPayload,
    via: LogVia,
    request_id: Option<&str>,
) -> Result<Response, ApiError> {
    // The logger's own rules, here: over AMQP an entry the logger refuses
    // would be accepted with 202 and then dead-lettered, after the client left.
    let entry = state
        .log_limits
        .parse(entry.name, entry.data, entry.id)
        .map_err(|invalid| ApiError::bad_request(invalid.message()))?;
    state
        .downstreams
        .log(entry, via, request_id)
        .await
        .map_err(|err| err.into_reply(request_id))?;
    Ok(reply(StatusCode::ACCEPTED, Envelope::ok("logged")))
}

/// Stores a log entry over gRPC (the original's `/log-grpc`).
#[utoipa::path(
    post, path = "/log-grpc", tag = "broker",
    request_body(content = LogGrpcBodySchema,
        description = "The `/handle` body of a `log` action (what the original front-end sends), or just the log object",
        example = json!({"action": "log", "log": {"name": "event", "data": "some data"}})),
    responses(
        (status = 202, description = "`logged`", body = Reply),
        (status = 400, description = "Malformed body or the logger's validation message", body = Reply),
        (status = 502, description = "The logger is unreachable or failed", body = Reply),
        (status = 504, description = "The logger did not answer in time", body = Reply),
    )
)]
async fn log_grpc(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let object = match body.get("log") {
        Some(inner) if inner.is_object() => inner.clone(),
        _ => body,
    };
    let entry: LogPayload = serde_json::from_value(object)
        .map_err(|err| ApiError::bad_request(format!("invalid log entry: {err}")))?;
    log(&state, entry, LogVia::Grpc, rt_http::request_id(&headers)).await
}

/// Reachability of every downstream (the detail `/readyz` leaves out).
/// Served only with `[admin] expose_downstreams = true`: the list is a map
/// of the internal network.
#[utoipa::path(
    get, path = "/downstreams", tag = "operations",
    responses(
        (status = 200, description = "Each downstream probed now", body = DownstreamsReply),
        (status = 404, description = "`[admin] expose_downstreams` is off (the default)", body = Reply),
    )
)]
async fn downstreams(State(state): State<AppState>) -> Response {
    let statuses = state.downstreams.reachability().await;
    let up = statuses.iter().filter(|status| status.reachable).count();
    let message = format!("{up} of {} downstreams reachable", statuses.len());
    reply(StatusCode::OK, Envelope::ok_with(message, statuses))
}

/// How many entries `GET /logs` answers at most, and by default.
pub const MAX_RECENT_LOGS: u32 = 50;
const DEFAULT_RECENT_LOGS: u32 = 10;

/// The query of `GET /logs`; anything else is refused.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct RecentLogsQuery {
    /// 1 to 50 (default 10).
    limit: Option<String>,
}

/// The logger's newest entries, newest first, read through its HTTP door:
/// what the test page shows as events arrive. Served only with
/// `[admin] expose_logs = true`.
#[utoipa::path(
    get, path = "/logs", tag = "operations",
    params(RecentLogsQuery),
    responses(
        (status = 200, description = "`data`: the entries (`id`, `name`, `data`, `created_at`, `updated_at`)", body = Reply),
        (status = 400, description = "`limit` is not a whole number from 1 to 50, or an unknown parameter", body = Reply),
        (status = 404, description = "`[admin] expose_logs` is off (the default)", body = Reply),
        (status = 502, description = "The logger is unreachable or failed", body = Reply),
        (status = 504, description = "The logger did not answer in time", body = Reply),
    )
)]
async fn recent_logs(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<RecentLogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let limit = match query {
        Err(rejection) => {
            return ApiError::bad_request(format!("bad query string: {}", rejection.body_text()))
                .into_response();
        }
        Ok(axum::extract::Query(query)) => match query.limit.as_deref() {
            None => DEFAULT_RECENT_LOGS,
            Some(text) => match text.parse::<u32>() {
                Ok(limit @ 1..=MAX_RECENT_LOGS) => limit,
                _ => {
                    return ApiError::bad_request(format!(
                        "limit must be a whole number from 1 to {MAX_RECENT_LOGS}"
                    ))
                    .into_response();
                }
            },
        },
    };
    let request_id = rt_http::request_id(&headers);
    match state.downstreams.recent_logs(limit, request_id).await {
        Ok(entries) => {
            let count = entries.as_array().map_or(0, Vec::len);
            reply(
                StatusCode::OK,
                Envelope::ok_with(format!("{count} newest entries"), entries),
            )
        }
        Err(err) => err.into_reply(request_id).into_response(),
    }
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3 document of this API", content_type = "application/json"))
)]
async fn openapi_json(State(state): State<AppState>) -> Response {
    let document = state.document;
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.0.as_str().to_owned(),
    )
        .into_response()
}

/// The process serves requests (added by the runtime's standard service).
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`alive`", body = Reply))
)]
#[allow(dead_code)]
fn healthz() {}

/// Ready: serving, clients built and at least one downstream reachable
/// (added by the runtime's standard service).
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "`ready`", body = Reply),
        (status = 503, description = "No downstream is reachable; the message names each with its error", body = Reply),
    )
)]
#[allow(dead_code)]
fn readyz() {}

/// `/readyz`: the broker is useful while at least one downstream answers
/// (downstreams are socket-activated and start on demand, so one that is
/// down now is not a reason to take the gateway out of service); the ones that
/// do not answer are named in the message either way. `/readyz` is on the
/// client-facing port, so the reply names them only; their addresses and
/// errors go to the log (and to `/downstreams` where it is exposed).
pub async fn readiness(downstreams: &Downstreams) -> Result<String, String> {
    let statuses = downstreams.reachability().await;
    let down: Vec<&DownstreamStatus> = statuses.iter().filter(|status| !status.reachable).collect();
    if !down.is_empty() {
        let detail = down
            .iter()
            .map(|status| format!("{} ({}): {}", status.name, status.address, status.detail))
            .collect::<Vec<_>>()
            .join("; ");
        if down.len() < statuses.len() {
            tracing::debug!(unreachable = %detail, "ready, with some downstreams unreachable");
        } else {
            tracing::warn!(unreachable = %detail, "no downstream is reachable");
        }
    }
    let names = down
        .iter()
        .map(|status| status.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if down.is_empty() {
        Ok("ready; every downstream answers".to_owned())
    } else if down.len() < statuses.len() {
        Ok(format!("ready; unreachable: {names}"))
    } else {
        Err(format!("no downstream is reachable: {names}"))
    }
}
