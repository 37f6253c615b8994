//! The HTTP door: `POST /log` (the original JSON API) and the read API for
//! operators and tests (`GET /logs`, `GET /logs/{id}`), plus health endpoints.
//! `GET /logs` pages by keyset: a full page carries `Link: <…&cursor=…>;
//! rel="next"` (RFC 8288), so the body stays the bare array it always was.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use bson::DateTime;
use serde::Deserialize;
use switchboard_runtime::http::{
    ApiError, ApiJson, Envelope, ReadinessCheck, reply, standard_service,
};
use switchboard_runtime::metrics::RouteTemplate;
use switchboard_wire::LogEntry;

use crate::entry::MAX_ID_BYTES;
use crate::ingest::{Ingest, IngestError};
use crate::metrics;
use crate::store::{Cursor, RecentQuery, Store, StoreError};

/// `GET /logs` returns this many entries unless `limit` says otherwise.
pub const DEFAULT_READ_LIMIT: u32 = 100;

/// What the handlers share.
#[derive(Debug, Clone)]
struct Door {
    ingest: Ingest,
    store: Store,
    max_read_limit: u32,
}

/// The HTTP door's router with the standard layers (request ids, tracing,
/// panic catching, body limit) and `/healthz` + `/readyz`.
pub fn router(ingest: Ingest, store: Store, max_read_limit: u32) -> Router {
    let rules = ingest.rules();
    // JSON may escape every byte of a string as `\u00XX` (six bytes), so a
    // body carrying a maximal entry may be up to six times its size.
    let max_body = 6 * (rules.max_name_bytes + rules.max_data_bytes + MAX_ID_BYTES) + 4096;
    let readiness_store = store.clone();
    let readiness: ReadinessCheck = Arc::new(move || {
        let store = readiness_store.clone();
        Box::pin(async move {
            store
                .ping()
                .await
                .map(|()| "ready; mongodb: ok".to_owned())
                .map_err(|err| format!("mongodb: {err}"))
        })
    });
    let metrics = ingest.metrics().registry().clone();
    let door = Door {
        ingest,
        store,
        max_read_limit: max_read_limit.max(1),
    };
    let routes = Router::new()
        .route("/log", post(write_log))
        .route("/logs", get(recent_logs))
        .route("/logs/{id}", get(one_log))
        .with_state(door);
    standard_service(routes, readiness, max_body, &metrics)
}

async fn write_log(State(door): State<Door>, ApiJson(entry): ApiJson<LogEntry>) -> Response {
    match door
        .ingest
        .log(metrics::Door::http, entry.name, entry.data, entry.id)
        .await
    {
        Ok(_) => reply(StatusCode::ACCEPTED, Envelope::ok("logged")),
        Err(err) => ingest_error(err).into_response(),
    }
}

fn ingest_error(err: IngestError) -> ApiError {
    match &err {
        IngestError::Invalid(_) => ApiError::bad_request(err.to_string()),
        IngestError::Conflict { .. } => {
            tracing::info!(error = %err, "refused a conflicting repeat of an id");
            ApiError::new(StatusCode::CONFLICT, err.to_string())
        }
        IngestError::Store(_) => {
            tracing::warn!(error = %err, "write failed");
            ApiError::unavailable(err.to_string())
        }
    }
}

fn store_error(err: StoreError) -> ApiError {
    tracing::warn!(error = %err, "read failed");
    ApiError::unavailable(format!("log store unavailable: {err}"))
}

/// Query string of `GET /logs`. Unknown parameters are refused, so a typo
/// (`limt=5`) is an error instead of a silently ignored filter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecentParams {
    limit: Option<String>,
    name: Option<String>,
    before: Option<String>,
    cursor: Option<String>,
}

impl RecentParams {
    fn into_query(self, max_limit: u32) -> Result<RecentQuery, ApiError> {
        let limit = match self.limit.as_deref() {
            None => DEFAULT_READ_LIMIT,
            Some(text) => match text.parse::<u64>() {
                Ok(0) | Err(_) => {
                    return Err(ApiError::bad_request(format!(
                        "limit must be a whole number from 1 to {max_limit}, not {text:?}"
                    )));
                }
                Ok(limit) => u32::try_from(limit).unwrap_or(u32::MAX),
            },
        };
        let before = match self.before.as_deref() {
            None => None,
            Some(text) => Some(DateTime::parse_rfc3339_str(text).map_err(|_| {
                ApiError::bad_request(format!(
                    "before must be an RFC 3339 time such as 2024-05-01T12:00:00Z, not {text:?}"
                ))
            })?),
        };
        let after = match self.cursor.as_deref() {
            None => None,
            Some(token) => {
                if before.is_some() {
                    return Err(ApiError::bad_request(
                        "before and cursor exclude each other: a cursor already says where the page starts",
                    ));
                }
                Some(Cursor::parse(token).map_err(|err| ApiError::bad_request(err.to_string()))?)
            }
        };
        Ok(RecentQuery {
            limit: limit.min(max_limit),
            name: self.name,
            before,
            after,
        })
    }
}

async fn recent_logs(
    State(door): State<Door>,
    params: Result<Query<RecentParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|rejection| {
        ApiError::bad_request(format!("bad query string: {}", rejection.body_text()))
    })?;
    let query = params.into_query(door.max_read_limit)?;
    let started = Instant::now();
    let page = door.store.recent(&query).await;
    door.ingest.metrics().read(started.elapsed());
    let page = page.map_err(store_error)?;
    let mut response = (StatusCode::OK, axum::Json(page.entries)).into_response();
    if let Some(next) = page.next
        && let Ok(link) = http::HeaderValue::try_from(next_link(&query, &next))
    {
        response.headers_mut().insert(http::header::LINK, link);
    }
    Ok(response)
}

/// `</logs?limit=…&name=…&cursor=…>; rel="next"`: the same read, one page on.
fn next_link(query: &RecentQuery, next: &Cursor) -> String {
    let mut params = form_urlencoded::Serializer::new(String::new());
    params.append_pair("limit", &query.limit.to_string());
    if let Some(name) = &query.name {
        params.append_pair("name", name);
    }
    params.append_pair("cursor", &next.encode());
    format!("</logs?{}>; rel=\"next\"", params.finish())
}

async fn one_log(
    State(door): State<Door>,
    id: Result<Path<String>, PathRejection>,
) -> (Extension<RouteTemplate>, Result<Response, ApiError>) {
    // The template, not the id, is the metrics' label, on every answer.
    let template = Extension(RouteTemplate("/logs/{id}"));
    let id = match id {
        Ok(Path(id)) => id,
        Err(rejection) => {
            let refused = ApiError::bad_request(format!("bad entry id: {}", rejection.body_text()));
            return (template, Err(refused));
        }
    };
    let started = Instant::now();
    let found = door.store.get(&id).await;
    door.ingest.metrics().read(started.elapsed());
    let answer = match found.map_err(store_error) {
        Ok(Some(entry)) => Ok((StatusCode::OK, axum::Json(entry)).into_response()),
        Ok(None) => Err(ApiError::not_found(format!("no log entry with id {id:?}"))),
        Err(err) => Err(err),
    };
    (template, answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(limit: Option<&str>, before: Option<&str>) -> RecentParams {
        RecentParams {
            limit: limit.map(Into::into),
            name: None,
            before: before.map(Into::into),
            cursor: None,
        }
    }

    #[test]
    fn limit_defaults_and_is_capped() {
        let query = params(None, None).into_query(1000).expect("defaults");
        assert_eq!(query.limit, DEFAULT_READ_LIMIT);
        let query = params(Some("5000"), None).into_query(1000).expect("capped");
        assert_eq!(query.limit, 1000);
        let query = params(Some("99999999999"), None)
            .into_query(10)
            .expect("capped");
        assert_eq!(query.limit, 10);
    }

    #[test]
    fn bad_limits_and_times_are_400() {
        for bad in ["0", "-1", "ten", ""] {
            let err = params(Some(bad), None).into_query(1000).expect_err(bad);
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert!(err.message.contains("limit"), "{}", err.message);
        }
        let err = params(None, Some("yesterday"))
            .into_query(1000)
            .expect_err("bad time");
        assert!(err.message.contains("RFC 3339"), "{}", err.message);
        let query = params(None, Some("2024-05-01T12:00:00+02:00"))
            .into_query(1000)
            .expect("offset time");
        assert_eq!(
            query.before.map(DateTime::timestamp_millis),
            Some(1_714_557_600_000)
        );
    }
}
