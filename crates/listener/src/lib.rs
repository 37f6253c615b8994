//! `switchboard-listener`: consumes the events on RabbitMQ's `logs_topic`
//! exchange and stores each one through the logger, acknowledging a message
//! only once the logger has stored it.
//!
//! - [`settings`]: the `[amqp]`, `[logger]` and `[runtime]` sections;
//! - [`topology`]: the exchanges, the durable (quorum) queue and the
//!   dead-letter queue, declared on every connect;
//! - [`consumer`]: one connection's consuming, and what happens to each delivery;
//! - [`event`]: what an event is, and how its idempotency id is chosen;
//! - [`dead_letter`]: dead letters carrying the reason in their headers;
//! - [`logger_client`]: the one long-lived client to the logger (RPC or HTTP);
//! - [`backoff`]: reconnect delays and the breaker that holds deliveries back
//!   while the logger is down;
//! - [`stats`]: the counters behind the systemd status line;
//! - [`metrics`]: the same counters, and the breaker, for Prometheus.
//!
//! [`run`] reconnects by itself, with capped exponential backoff, whenever
//! RabbitMQ goes away; it returns only on shutdown or on a configuration or
//! topology error that no retry can fix.

pub mod backoff;
pub mod consumer;
pub mod dead_letter;
pub mod event;
pub mod logger_client;
pub mod metrics;
pub mod settings;
pub mod stats;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use switchboard_runtime::Shutdown;
use switchboard_runtime::amqp::{AmqpEndpoint, AmqpUrlError};
use switchboard_runtime::metrics::{self as runtime_metrics, Metrics};
use tokio::net::TcpListener;

pub use settings::Settings;

use crate::backoff::{Backoff, Breaker};
use crate::consumer::{Context, Progress, SessionError};
use crate::stats::{Phase, Stats};
use crate::topology::{QueueKind, TopologyError};

/// First delay before reconnecting to RabbitMQ, doubled up to [`RECONNECT_MAX`].
pub const RECONNECT_INITIAL: Duration = Duration::from_millis(200);
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// First delay a failed forward shuts the gate for, doubled per failed probe
/// up to [`LOGGER_BACKOFF_MAX`].
pub const LOGGER_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
pub const LOGGER_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The status line is refreshed at most this often.
pub const STATUS_PERIOD: Duration = Duration::from_secs(1);

/// Why the listener stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Settings(#[from] settings::InvalidSetting),
    /// `amqp.url` or its password file; never shows the password.
    #[error("invalid configuration: {0}")]
    Amqp(#[from] AmqpUrlError),
    #[error("cannot build the HTTP client for the logger: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error(transparent)]
    Topology(TopologyError),
}

/// The sockets the listener serves on: only its metrics door.
#[derive(Debug, Default)]
pub struct ListenerListeners {
    /// The metrics door (socket name `metrics`), if the listener has one.
    pub metrics: Option<TcpListener>,
}

/// Consumes until `shutdown` fires, then settles the deliveries in flight and
/// closes the connection. READY=1 goes to systemd once consuming has begun.
pub async fn run(
    settings: Settings,
    listeners: ListenerListeners,
    shutdown: Shutdown,
) -> Result<(), Error> {
    settings.validate()?;
    let rabbitmq = AmqpEndpoint::from_settings(
        "amqp.url",
        &settings.amqp.url,
        settings.amqp.password_file.as_deref(),
    )?
    .with_nodes("amqp.nodes", &settings.amqp.nodes)?;
    tracing::debug!(%rabbitmq, nodes = ?rabbitmq.nodes(), user = rabbitmq.username(), password_from = ?rabbitmq.password_source(), "RabbitMQ");
    let stats = Arc::new(Stats::default());
    let registry = Metrics::new();
    let context = Arc::new(Context {
        rabbitmq: consumer::connector(rabbitmq),
        logger: logger_client::LoggerClient::new(&settings.logger, &registry)?,
        limits: settings.limits.log_limits(),
        breaker: Arc::new(Breaker::new(Backoff::new(
            LOGGER_BACKOFF_INITIAL,
            LOGGER_BACKOFF_MAX,
        ))),
        stats: stats.clone(),
        shutdown: shutdown.clone(),
        amqp: settings.amqp,
    });
    metrics::register(&registry, stats.clone(), context.breaker.clone());
    let metrics_door = runtime_metrics::spawn_door(listeners.metrics, &registry);
    let reporter = tokio::spawn(stats::report_status(
        stats.clone(),
        {
            let breaker = context.breaker.clone();
            move || breaker.is_shut()
        },
        STATUS_PERIOD,
        shutdown.clone(),
    ));

    let mut progress = Progress {
        queue_kind: QueueKind::Quorum,
        ready_sent: false,
        reconnect: Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX),
    };
    let outcome = loop {
        if shutdown.is_triggered() {
            break Ok(());
        }
        let delay = match consumer::session(&context, &mut progress).await {
            Ok(()) => break Ok(()),
            Err(SessionError::Topology(conflict @ TopologyError::Conflict { .. })) => {
                break Err(Error::Topology(conflict));
            }
            // The connection was closed by the refusal; reconnect at once and
            // declare a classic queue.
            Err(SessionError::Topology(TopologyError::QuorumUnsupported(_))) => Duration::ZERO,
            Err(err) => {
                let delay = progress.reconnect.next_delay();
                tracing::warn!(error = %err, retry_in = ?delay, "RabbitMQ is not available");
                stats.set_phase(Phase::Connecting(err.to_string()));
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.requested() => break Ok(()),
        }
    };
    reporter.abort();
    if let Some(door) = metrics_door {
        door.close().await;
    }
    let counts = stats.counts();
    tracing::info!(
        stored = counts.stored,
        retried = counts.retried,
        dead_lettered = counts.dead_lettered,
        "stopped"
    );
    outcome
}
