//! `switchboard-mail`: renders a message from templates compiled into the binary
//! and sends it as `multipart/alternative` (plain text and HTML) through one
//! pooled SMTP connection to the configured relay.
//!
//! `POST /send` `{"from","to","subject","message"}` answers 202
//! `{"error":false,"message":"sent to <to>"}` once the relay accepted the
//! message; bad input is a 400 saying what is wrong, a failing relay a 502 and
//! a relay that does not answer in time a 504, both naming the relay.
//!
//! The binary (`main.rs`) only reads the configuration and takes the listening
//! socket; tests call [`run`] with a listener of their own.

pub mod message;
pub mod metrics;
pub mod settings;
pub mod smtp;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use lettre::message::Mailbox;
use switchboard_runtime::http::{ApiError, ApiJson, Envelope, ReadinessCheck, reply, request_id};
use switchboard_runtime::metrics::{self as runtime_metrics, Metrics};
use switchboard_runtime::telemetry::{self, SpanKind};
use switchboard_runtime::{Shutdown, lifecycle, wait};
use tokio::net::TcpListener;
use tracing::Instrument as _;

use crate::message::{Outgoing, SendRequest, ValidMailbox};
use crate::metrics::{MailMetrics, SendOutcome};
use crate::settings::Settings;
use crate::smtp::{Mailer, SendError, SetupError};

/// The sockets the service serves on, bound (or inherited) by the caller.
#[derive(Debug)]
pub struct MailListeners {
    /// The HTTP API; socket name `http`.
    pub http: TcpListener,
    /// The metrics door (socket name `metrics`), if mail has one.
    pub metrics: Option<TcpListener>,
}

/// Why the service could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Smtp(#[from] SetupError),
    #[error("sender.name / sender.address do not form a valid mailbox: {0}")]
    DefaultSender(String),
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// What every request needs.
#[derive(Debug)]
struct AppState {
    mailer: Mailer,
    default_sender: ValidMailbox,
    max_message_bytes: usize,
    metrics: MailMetrics,
}

/// Connects to the SMTP server (retrying until it answers or `shutdown`
/// fires), reports READY, serves `listeners` until `shutdown`, then drains.
///
/// The SMTP password is read from `smtp.password_file`, else from
/// `$CREDENTIALS_DIRECTORY/smtp-password` when that file exists.
pub async fn run(
    settings: Settings,
    listeners: MailListeners,
    shutdown: Shutdown,
) -> Result<(), Error> {
    // Served from the start: a wait for the SMTP server is worth watching too.
    let registry = Metrics::new();
    let metrics = MailMetrics::register(&registry);
    let metrics_door = runtime_metrics::spawn_door(listeners.metrics, &registry);
    let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let password = smtp::load_password(
        settings.smtp.password_file.as_deref(),
        credentials_dir.as_deref(),
    )?;
    let default_sender = default_sender(&settings)?;
    let mailer = Mailer::new(&settings.smtp, password)?;

    if wait::until_ready("the SMTP server", &shutdown, || mailer.test_connection())
        .await
        .is_none()
    {
        wait_for(metrics_door).await;
        return Ok(());
    }
    tracing::info!(server = %mailer.server(), "SMTP server answers");

    let state = Arc::new(AppState {
        mailer,
        default_sender,
        max_message_bytes: settings.limits.max_message_bytes,
        metrics,
    });
    let router = switchboard_runtime::http::standard_service(
        routes(state.clone()),
        readiness(state.clone()),
        max_body_bytes(settings.limits.max_message_bytes),
        &registry,
    );
    tracing::info!(
        addr = ?listeners.http.local_addr().ok(),
        smtp = %state.mailer.server(),
        "serving"
    );
    lifecycle::status(&format!(
        "serving; sending through {}",
        state.mailer.server()
    ));
    lifecycle::ready();
    let served = switchboard_runtime::service::serve_http_with(
        listeners.http,
        router,
        shutdown,
        &settings.http,
    )
    .await;
    state.mailer.shutdown().await;
    wait_for(metrics_door).await;
    served.map_err(Error::Serve)
}

async fn wait_for(door: Option<runtime_metrics::Door>) {
    if let Some(door) = door {
        door.close().await;
    }
}

/// The routes of the service (health routes are added by the runtime).
fn routes(state: Arc<AppState>) -> Router {
    Router::new().route("/send", post(send)).with_state(state)
}

fn readiness(state: Arc<AppState>) -> ReadinessCheck {
    Arc::new(move || {
        let state = state.clone();
        Box::pin(async move {
            state
                .mailer
                .test_connection()
                .await
                .map(|()| "ready; smtp: ok".to_owned())
                .map_err(|err| err.to_string())
        })
    })
}

/// JSON escapes can make a body several times larger than the message in it;
/// the message's own limit is checked after parsing, with a precise error.
fn max_body_bytes(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_mul(2)
        .saturating_add(64 * 1024)
}

fn default_sender(settings: &Settings) -> Result<ValidMailbox, Error> {
    let name = settings.sender.name.trim();
    let formatted = if name.is_empty() {
        settings.sender.address.clone()
    } else {
        // Mailbox's Display quotes the name where RFC 5322 needs it.
        let address =
            settings.sender.address.parse().map_err(|err| {
                Error::DefaultSender(format!("{:?}: {err}", settings.sender.address))
            })?;
        Mailbox::new(Some(name.to_owned()), address).to_string()
    };
    ValidMailbox::parse("sender", &formatted).map_err(|err| Error::DefaultSender(err.to_string()))
}

/// `POST /send`, counted by outcome.
async fn send(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    request: Result<ApiJson<SendRequest>, ApiError>,
) -> Response {
    let metrics = state.metrics.clone();
    let response = match request {
        Ok(ApiJson(request)) => send_one(state, headers, request)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(refused) => refused.into_response(),
    };
    metrics.send(match response.status() {
        StatusCode::ACCEPTED => SendOutcome::sent,
        status if status.is_client_error() => SendOutcome::refused,
        _ => SendOutcome::failed,
    });
    response
}

async fn send_one(
    state: Arc<AppState>,
    headers: HeaderMap,
    request: SendRequest,
) -> Result<Response, ApiError> {
    let outgoing = Outgoing::parse(&request, &state.default_sender, state.max_message_bytes)
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let email = message::build(&outgoing, request_id(&headers)).map_err(|err| {
        tracing::error!(error = %err, "cannot build an e-mail from a valid request");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot build the e-mail; see the mail service's log",
        )
    })?;
    let to = outgoing.to.address();
    let started = std::time::Instant::now();
    let span = telemetry::call_span("mail-server", "smtp", SpanKind::Client);
    let sent = state.mailer.send(email).instrument(span.clone()).await;
    if let Err(err) = &sent {
        telemetry::failed(&span, err);
    }
    state.metrics.smtp_took(started.elapsed());
    match sent {
        Ok(()) => {
            tracing::info!(to = %to, from = %outgoing.from.address(), "message sent");
            Ok(reply(
                StatusCode::ACCEPTED,
                Envelope::ok(format!("sent to {}", request.to.trim())),
            ))
        }
        Err(err) => {
            tracing::warn!(error = %err, to = %to, "message not sent");
            Err(match err {
                SendError::Busy { .. } | SendError::Timeout { .. } => {
                    ApiError::gateway_timeout(err.to_string())
                }
                SendError::Failed { .. } => ApiError::bad_gateway(err.to_string()),
            })
        }
    }
}
