//! The HTTP API: `POST /authenticate` (wire contract), plus the runtime's
//! `/healthz` and `/readyz`, the latter also telling how RabbitMQ is doing.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use serde::Deserialize;
use switchboard_runtime::http::{
    ApiError, ApiJson, Envelope, ReadinessCheck, reply, request_id, standard_service,
};

use crate::domain::{Email, InvalidInput, Password};
use crate::events::{Events, LoginEvent};
use crate::hashing::{HashError, PasswordHasher, Verdict};
use crate::store::{StoreError, UserStore};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: UserStore,
    pub hasher: PasswordHasher,
    pub events: Events,
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
    let api = Router::new()
        .route("/authenticate", post(authenticate))
        .with_state(state);
    standard_service(api, readiness, max_body_bytes)
}

async fn authenticate(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiJson(credentials): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    let email = Email::parse(&credentials.email).map_err(LoginError::from)?;
    let password = Password::parse(credentials.password).map_err(LoginError::from)?;
    let user = app
        .store
        .find_by_email(&email)
        .await
        .map_err(LoginError::from)?;
    // Unknown users are checked against the dummy hash: same bcrypt time.
    let verdict = match app
        .hasher
        .verify(&password, user.as_ref().map(|u| u.password.as_str()))
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
        (Verdict::Match, Some(_)) => {
            tracing::info!(email = %email, "login refused: user is inactive");
            return Err(LoginError::InvalidCredentials.into());
        }
        _ => {
            tracing::info!(email = %email, "login refused: invalid credentials");
            return Err(LoginError::InvalidCredentials.into());
        }
    };
    let request_id = request_id(&headers).map(str::to_owned);
    app.events.submit(LoginEvent::new(&email, request_id));
    tracing::info!(email = %email, user_id = user.id, "logged in");
    Ok(reply(
        StatusCode::ACCEPTED,
        Envelope::ok_with(format!("Logged in user {}", user.email), user.view()),
    ))
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
