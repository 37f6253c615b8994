//! `switchboard-auth`: user authentication against PostgreSQL with bcrypt, and
//! a login event on RabbitMQ's `logs_topic` for every successful login.
//!
//! [`run`] is the whole server: the caller binds (or inherits) the listener and
//! owns the shutdown switch, so tests drive the service exactly as the binary
//! does. [`cli`] holds the `user add` / `user list` commands.

pub mod api;
pub mod cli;
pub mod domain;
pub mod events;
pub mod hashing;
pub mod metrics;
pub mod settings;
pub mod store;
pub mod throttle;

use switchboard_runtime::amqp::{AmqpEndpoint, AmqpUrlError};
use switchboard_runtime::metrics::{self as runtime_metrics, Metrics};
use switchboard_runtime::{Shutdown, lifecycle, wait};
use tokio::net::TcpListener;

use crate::api::AppState;
use crate::hashing::{HashError, PasswordHasher};
use crate::metrics::AuthMetrics;
pub use crate::settings::Settings;
use crate::store::{StoreError, UserStore};
use crate::throttle::LoginThrottle;

/// The sockets the service serves on.
#[derive(Debug)]
pub struct Listeners {
    /// HTTP JSON API; socket name `http`.
    pub http: TcpListener,
    /// The metrics door (socket name `metrics`), if auth has one.
    pub metrics: Option<TcpListener>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Settings(#[from] settings::InvalidSetting),
    #[error("cannot prepare password hashing: {0}")]
    Hashing(#[from] HashError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `events.amqp_url` or its password file; never shows the password.
    #[error(transparent)]
    Amqp(#[from] AmqpUrlError),
    #[error("serving HTTP failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Runs the service until `shutdown` fires, then drains in-flight requests,
/// gives queued login events a last chance to reach RabbitMQ, and returns.
///
/// Start-up waits for PostgreSQL (retrying with backoff, reported as the
/// systemd status) and migrates it; `READY=1` follows only then. RabbitMQ is
/// not waited for: login events queue in memory until it answers.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), Error> {
    settings.validate()?;
    // Served from the start: a wait for PostgreSQL is worth watching too.
    let registry = Metrics::new();
    let metrics = AuthMetrics::register(&registry);
    let metrics_door = runtime_metrics::spawn_door(listeners.metrics, &registry);
    // Before anything waits: a missing password file is a start-up error.
    let rabbitmq = AmqpEndpoint::from_settings(
        "events.amqp_url",
        &settings.events.amqp_url,
        settings.events.amqp_password_file.as_deref(),
    )?
    .with_nodes("events.amqp_nodes", &settings.events.amqp_nodes)?;
    lifecycle::status("preparing password hashing");
    let hasher = PasswordHasher::new(settings.security.bcrypt_cost)
        .await?
        .with_metrics(&metrics);
    let store = UserStore::connect_lazy(&settings.database)?;
    let throttle = LoginThrottle::new(store.pool().clone(), &settings.throttle)?;
    let answered = wait::until_ready("PostgreSQL", &shutdown, || store.check_connection()).await;
    if answered.is_none() {
        wait_for(metrics_door).await;
        return Ok(());
    }
    lifecycle::status("migrating the database");
    store.migrate().await?;

    // Stopped only after HTTP has drained, so the last logins' events are queued.
    let publisher_stop = Shutdown::new();
    let (events, publisher) = events::spawn_publisher(
        &settings.events,
        rabbitmq,
        publisher_stop.clone(),
        &registry,
    );
    let app = api::app(
        AppState {
            store: store.clone(),
            hasher,
            events,
            throttle,
            metrics,
        },
        settings.security.max_body_bytes,
    );
    let address = listeners.http.local_addr().ok();
    tracing::info!(
        ?address,
        bcrypt_cost = settings.security.bcrypt_cost,
        max_failures_per_account = settings.throttle.max_failures_per_account,
        max_failures_per_address = settings.throttle.max_failures_per_address,
        throttle_window_ms = settings.throttle.window_ms,
        "serving"
    );
    lifecycle::ready();
    lifecycle::status("serving");
    let served = switchboard_runtime::service::serve_http_with(
        listeners.http,
        app,
        shutdown,
        &settings.http,
    )
    .await;

    publisher_stop.trigger();
    if let Err(err) = publisher.await {
        tracing::error!(error = %err, "the login event publisher failed");
    }
    store.close().await;
    wait_for(metrics_door).await;
    served.map_err(Error::Serve)
}

async fn wait_for(door: Option<runtime_metrics::Door>) {
    if let Some(door) = door {
        door.close().await;
    }
}
