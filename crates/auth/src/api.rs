//! The HTTP API: `POST /authenticate` (wire contract), plus the runtime's
//! `/healthz` and `/readyz`, the latter also telling how RabbitMQ is doing.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use serde::Deserialize;
use switchboard_runtime::http::{
    ApiError, ApiJson, Envelope, ReadinessCheck, reply, request_id, standard_service,
};

use crate::domain::{Email, InvalidInput, Password};
use crate::events::{Events, LoginEvent};
use crate::hashing::{HashError, PasswordHasher, Verdict};
use crate::metrics::{AuthMetrics, LoginOutcome};
use crate::store::{StoreError, UserStore};
use crate::throttle::{LoginThrottle, Refusal};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: UserStore,
    pub hasher: PasswordHasher,
    pub events: Events,
    pub throttle: LoginThrottle,
    pub metrics: AuthMetrics,
}

/// The body of `POST /authenticate`.
#[derive(Debug, Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

/// Why a login did not succeed, mapped onto the wire contract's statuses.
#[derive(Debug, thiserror::Error)]
enum LoginError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// Wrong password, unknown user and inactive user look the same to the
    /// client (no account enumeration).
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] HashError),
}

impl From<LoginError> for ApiError {
    fn from(err: LoginError) -> Self {
        match err {
            LoginError::Invalid(invalid) => ApiError::bad_request(invalid.to_string()),
            LoginError::InvalidCredentials => ApiError::unauthorized("invalid credentials"),
            LoginError::Store(StoreError::Timeout) => {
                tracing::error!("the user database did not answer in time");
                ApiError::gateway_timeout("the user database did not answer in time")
            }
            LoginError::Store(err) => {
                tracing::error!(error = %err, "user lookup failed");
                ApiError::bad_gateway("the user database is unavailable")
            }
            LoginError::Hash(err) => {
                tracing::error!(error = %err, "password check failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

/// The service's router with the shared conventions (health, request ids,
/// body limit, JSON errors) applied.
pub fn app(state: AppState, max_body_bytes: usize) -> Router {
    let readiness = readiness_check(state.store.clone(), state.events.clone());
    let metrics = state.metrics.registry().clone();
    let api = Router::new()
        .route("/authenticate", post(authenticate))
        .with_state(state);
    standard_service(api, readiness, max_body_bytes, &metrics)
}

/// `POST /authenticate`, counted by outcome.
async fn authenticate(
    State(app): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    credentials: Result<ApiJson<Credentials>, ApiError>,
) -> Response {
    let metrics = app.metrics.clone();
    let response = match credentials {
        Ok(ApiJson(credentials)) => login(app, peer, headers, credentials)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(refused) => refused.into_response(),
    };
    metrics.login(match response.status() {
        StatusCode::ACCEPTED => LoginOutcome::ok,
        StatusCode::TOO_MANY_REQUESTS => LoginOutcome::throttled,
        status if status.is_client_error() => LoginOutcome::invalid,
        _ => LoginOutcome::failed,
    });
    response
}

async fn login(
    app: AppState,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    credentials: Credentials,
) -> Result<Response, ApiError> {
    let email = Email::parse(&credentials.email).map_err(LoginError::from)?;
    let password = Password::parse(credentials.password).map_err(LoginError::from)?;
    let peer = peer.map(|Extension(ConnectInfo(peer))| peer);
    let client = app.throttle.client_address(peer, &headers);
    // Before the user lookup, so that what a refused attempt costs cannot
    // depend on whether the account exists, and without waiting for bcrypt.
    if let Some(refusal) = app
        .throttle
        .check(&email, &client)
        .await
        .map_err(LoginError::from)?
    {
        app.metrics.refused(refusal.scope);
        return Ok(throttled(&email, &client, refusal));
    }
    let user = app
        .store
        .find_by_email(&email)
        .await
        .map_err(LoginError::from)?;
    let permit = app.hasher.permit().await.map_err(LoginError::from)?;
    // Again, now that bcrypt can start: attempts that queued for a permit
    // see the failures recorded meanwhile, so a burst of concurrent guesses
    // gets past the limit by at most the runs in progress, not by the burst.
    if let Some(refusal) = app
        .throttle
        .check(&email, &client)
        .await
        .map_err(LoginError::from)?
    {
        app.metrics.refused(refusal.scope);
        return Ok(throttled(&email, &client, refusal));
    }
    // Unknown users are checked against the dummy hash: same bcrypt time.
    let verdict = match app
        .hasher
        .verify_with(
            permit,
            &password,
            user.as_ref().map(|u| u.password.as_str()),
        )
        .await
    {
        Ok(verdict) => verdict,
        Err(HashError::Bcrypt(err)) => {
            tracing::error!(email = %email, error = %err, "stored password hash is unusable");
            Verdict::Mismatch
        }
        Err(other) => return Err(LoginError::from(other).into()),
    };
    let user = match (verdict, user) {
        (Verdict::Match, Some(user)) if user.is_active() => user,
        (verdict, _) => {
            if verdict == Verdict::Match {
                tracing::info!(email = %email, %client, "login refused: user is inactive");
            } else {
                tracing::info!(email = %email, %client, "login refused: invalid credentials");
            }
            // Counted like any failure: a limit that an inactive user's right
            // password did not reach would tell that password apart.
            app.throttle
                .record_failure(&email, &client)
                .await
                .map_err(LoginError::from)?;
            return Err(LoginError::InvalidCredentials.into());
        }
    };
    // A count that is not reset only errs on the side of caution; the user
    // proved the password, so the login stands.
    if let Err(err) = app.throttle.record_success(&email).await {
        tracing::warn!(email = %email, error = %err, "could not reset the failed-login count");
    }
    let request_id = request_id(&headers).map(str::to_owned);
    app.events.submit(LoginEvent::new(&email, request_id));
    tracing::info!(email = %email, user_id = user.id, "logged in");
    Ok(reply(
        StatusCode::ACCEPTED,
        Envelope::ok_with(format!("Logged in user {}", user.email), user.view()),
    ))
}

/// 429 with `Retry-After` and the envelope: the same for every kind of
/// account, since unknown ones are counted like known ones.
fn throttled(email: &Email, client: &str, refusal: Refusal) -> Response {
    tracing::info!(
        email = %email,
        %client,
        scope = ?refusal.scope,
        retry_after_secs = refusal.retry_after_secs,
        "login refused: too many failed logins"
    );
    let mut response =
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, refusal.message()).into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(refusal.retry_after_secs),
    );
    response
}

/// Ready means PostgreSQL answers; RabbitMQ is optional (events wait in
/// memory), but its state is part of the message either way, e.g.
/// `ready; postgres: ok; amqp: connected, 0 pending`.
fn readiness_check(store: UserStore, events: Events) -> ReadinessCheck {
    std::sync::Arc::new(move || {
        let store = store.clone();
        let events = events.clone();
        Box::pin(async move {
            store
                .ping()
                .await
                .map(|()| format!("ready; postgres: ok; amqp: {}", events.summary()))
                .map_err(|err| format!("postgres: {err}; amqp: {}", events.summary()))
        })
    })
}
