//! The broker's HTTP API (routes and JSON of ARCHITECTURE.md, compatible with
//! the original Go broker) and its OpenAPI document.
//!
//! Routes are registered only through `utoipa_axum::routes!`, so every routed
//! handler is in the document by construction; `tests/openapi.rs` checks the
//! other direction (every documented operation is served) and that the
//! committed `openapi.json` is current.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchboard_runtime::http::{self as rt_http, ApiError, ApiJson, Envelope, reply};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clients::Downstreams;
use crate::layers::RateLimit;
use crate::payload::{
    DownstreamStatus, DownstreamsReply, HandleReplySchema, LogGrpcBodySchema, LogPayload, LogVia,
    Reply, RequestPayload,
};
use switchboard_wire::MAX_ID_BYTES;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub downstreams: Arc<Downstreams>,
    /// `downstream.default_log_via`.
    pub default_via: LogVia,
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

/// The routes with their documentation; `/handle` behind `rate_limit`.
pub fn api_router(rate_limit: Option<RateLimit>) -> OpenApiRouter<AppState> {
    let (schemas, paths, handle_route) = routes!(handle);
    let handle_route = match rate_limit {
        Some(layer) => handle_route.layer(layer),
        None => handle_route,
    };
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(hit_broker))
        .routes(routes!(ping))
        .routes((schemas, paths, handle_route))
        .routes(routes!(log_grpc))
        .routes(routes!(downstreams))
        .routes(routes!(openapi_json))
}

/// The OpenAPI document of the broker's API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_router(None).into_openapi()
}

/// The broker answers (the original's "Hit the broker").
#[utoipa::path(
    post, path = "/", tag = "broker",
    responses((status = 200, description = "The broker is up", body = Reply,
               example = json!({"error": false, "message": "Hit the broker"})))
)]
async fn hit_broker() -> Response {
    reply(StatusCode::OK, Envelope::ok("Hit the broker"))
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
        (status = 400, description = "Malformed JSON, unknown action, missing sub-object, or the downstream's validation message", body = Reply),
        (status = 401, description = "`invalid credentials`", body = Reply),
        (status = 429, description = "Rate limit of this client IP exceeded", body = Reply),
        (status = 502, description = "The downstream is unreachable or failed", body = Reply),
        (status = 504, description = "The downstream did not answer in time", body = Reply),
    )
)]
async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(payload): ApiJson<RequestPayload>,
) -> Result<Response, ApiError> {
    let request_id = rt_http::request_id(&headers);
    match payload.action.as_str() {
        "auth" => {
            let credentials = payload.auth.ok_or_else(|| missing_object("auth"))?;
            let user = state
                .downstreams
                .authenticate(&credentials, request_id)
                .await?;
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
            state.downstreams.send_mail(&mail, request_id).await?;
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
    if entry.name.trim().is_empty() {
        return Err(ApiError::bad_request("log.name must not be empty"));
    }
    // Checked here, not only by the logger: over AMQP a bad id would be
    // accepted with 202 and then refused by the logger, after the client left.
    if let Some(id) = &entry.id {
        if id.is_empty() {
            return Err(ApiError::bad_request("log.id must not be empty when given"));
        }
        if id.len() > MAX_ID_BYTES {
            return Err(ApiError::bad_request(format!(
                "log.id is {} bytes long; the limit is {MAX_ID_BYTES} bytes",
                id.len()
            )));
        }
        if id.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(ApiError::bad_request(
                "log.id must be visible ASCII (no spaces or control characters)",
            ));
        }
    }
    state
        .downstreams
        .log(entry.name, entry.data, entry.id, via, request_id)
        .await?;
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
#[utoipa::path(
    get, path = "/downstreams", tag = "operations",
    responses((status = 200, description = "Each downstream probed now", body = DownstreamsReply))
)]
async fn downstreams(State(state): State<AppState>) -> Response {
    let statuses = state.downstreams.reachability().await;
    let up = statuses.iter().filter(|status| status.reachable).count();
    let message = format!("{up} of {} downstreams reachable", statuses.len());
    reply(StatusCode::OK, Envelope::ok_with(message, statuses))
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3 document of this API", content_type = "application/json"))
)]
async fn openapi_json(Extension(document): Extension<Document>) -> Response {
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
/// do not answer are named in the message either way.
pub async fn readiness(downstreams: &Downstreams) -> Result<String, String> {
    let statuses = downstreams.reachability().await;
    if statuses.iter().any(|status| status.reachable) {
        let down: Vec<String> = statuses
            .iter()
            .filter(|status| !status.reachable)
            .map(|status| format!("{} ({}): {}", status.name, status.address, status.detail))
            .collect();
        if down.is_empty() {
            return Ok("ready; every downstream answers".to_owned());
        }
        tracing::debug!(unreachable = %down.join("; "), "ready, with some downstreams unreachable");
        return Ok(format!("ready; unreachable: {}", down.join("; ")));
    }
    Err(format!(
        "no downstream is reachable: {}",
        statuses
            .iter()
            .map(|status| format!("{} ({}): {}", status.name, status.address, status.detail))
            .collect::<Vec<_>>()
            .join("; ")
    ))
}
