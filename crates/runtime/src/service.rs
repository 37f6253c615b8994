//! Start-up and serving shared by every service binary: read the configuration,
//! install logging, collect inherited sockets, wire SIGTERM/SIGINT and the
//! watchdog, and serve HTTP with a graceful drain.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::config::{self, ConfigError, RuntimeSettings, Sources, TelemetrySettings};
use crate::connection::{Activity, Counted, Expiry, Observed, Timeouts};
use crate::lifecycle::{self, Shutdown};
use crate::limits::{ConnectionLimit, HttpLimits};
use crate::listen::{ListenError, Listeners};

/// The `--config FILE` option every service binary takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArg {
    /// TOML configuration file (else `SWITCHBOARD_<SERVICE>_CONFIG`, else built-in defaults).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Settings types expose their `[runtime]` and `[telemetry]` sections to the
/// shared start-up code.
pub trait ServiceSettings: Default + Serialize + DeserializeOwned {
    fn runtime(&self) -> &RuntimeSettings;
    fn telemetry(&self) -> &TelemetrySettings;
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
}

/// A started service: its settings, the sockets it was handed, and its shutdown switch.
#[derive(Debug)]
pub struct Service<S> {
    pub name: &'static str,
    pub settings: S,
    pub listeners: Listeners,
    pub shutdown: Shutdown,
    /// The trace exporter, flushed when [`Self::run_until_drained`] ends.
    pub traces: crate::telemetry::TraceExporter,
}

impl<S: ServiceSettings> Service<S> {
    /// `service` is the short name (`auth`); logs and the journal use
    /// `switchboard-<service>`. Must run inside the tokio runtime.
    pub fn start(service: &'static str, config: &ConfigArg) -> Result<Self, StartError> {
        let settings: S = config::load(
            service,
            &Sources::from_process(service, config.config.clone()),
        )?;
        let traces = crate::telemetry::init(
            &format!("switchboard-{service}"),
            settings.runtime(),
            settings.telemetry(),
        )?;
        let listeners = Listeners::from_env()?;
        let shutdown = Shutdown::new();
        shutdown.trigger_on_signals().map_err(StartError::Signals)?;
        lifecycle::spawn_watchdog();
        lifecycle::status("starting");
        Ok(Self {
            name: service,
            settings,
            listeners,
            shutdown,
            traces,
        })
    }

    /// Logs sockets the service manager passed that no part of the service claimed.
    pub fn warn_unclaimed_sockets(&self) {
        for name in self.listeners.unclaimed() {
            tracing::warn!(socket = %name, "a socket was passed in under a name this service does not use");
        }
    }

    /// Runs the service's work (its library's `run`) to the end. Once
    /// shutdown is requested it has `runtime.shutdown_timeout_ms` to drain;
    /// beyond that the work is dropped and the error says so: "`unfinished`
    /// did not finish within runtime.shutdown_timeout_ms".
    pub async fn run_until_drained<E>(
        &self,
        work: impl Future<Output = Result<(), E>>,
        unfinished: &str,
    ) -> Result<(), Fatal>
    where
        E: Into<Fatal>,
    {
        let timeout = self.settings.runtime().shutdown_timeout();
        let ended = match lifecycle::drain_within(&self.shutdown, timeout, work).await {
            Ok(result) => result.map_err(Into::into),
            Err(()) => Err(format!(
                "{unfinished} did not finish within runtime.shutdown_timeout_ms"
            )
            .into()),
        };
        self.traces.flush().await;
        ended
    }
}

/// What a service binary's start-up and run fail with: any error, reported
/// once by [`exit_with`].
pub type Fatal = Box<dyn std::error::Error + Send + Sync>;

/// How long connections accepted just before shutdown get to send their first
/// request before they are closed. A client that connected an instant before
/// SIGTERM has its request in flight; closing its connection unread would turn
/// a `systemctl restart` into a connection reset for it.
const FIRST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// How long a connection closed for idling may take to go: an HTTP/2 peer is
/// sent a GOAWAY and need not answer it, an HTTP/1 response may be stuck
/// behind a client that does not read. Dropped after this.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// [`serve_http_with`] with the default [`HttpLimits`].
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    serve_http_with(listener, router, shutdown, &HttpLimits::default()).await
}

/// Serves `router` on `listener` within `limits` until `shutdown`, then
/// drains: it stops accepting (new connections wait in the socket's backlog,
/// which systemd keeps open for the next instance), lets just-accepted
/// connections send their request, and waits for in-flight requests to
/// finish. The caller bounds the drain with [`crate::lifecycle::drain_within`].
///
/// `limits`: at most `max_connections` at once (beyond, the next connection
/// waits in the backlog), heads within `header_read_timeout`, idle
/// connections closed after `idle_timeout`, answers within
/// `request_timeout` (else `503` with the envelope), heads of at most
/// `max_header_bytes`, `http2_max_concurrent_streams` streams per HTTP/2
/// connection.
pub async fn serve_http_with(
    listener: TcpListener,
    router: axum::Router,
    shutdown: Shutdown,
    limits: &HttpLimits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;
    use tower::ServiceExt as _;

    let request_timeout = limits.request_timeout();
    let mut builder = Builder::new(TokioExecutor::new());
    // The head and idle deadlines are the connection task's (see
    // `connection`): hyper's own header timer would also close kept-alive
    // connections at rest after the header timeout. With a timer set it
    // would apply its 30 s default, so it is switched off explicitly.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None::<std::time::Duration>);
    if limits.max_header_bytes > 0 {
        // hyper refuses (panics on) buffers under 8 KiB.
        builder
            .http1()
            .max_buf_size(limits.max_header_bytes.max(8192));
        builder
            .http2()
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(
            (limits.http2_max_concurrent_streams > 0)
                .then_some(limits.http2_max_concurrent_streams),
        );
    let timeouts = Timeouts {
        header_read: limits.header_read_timeout(),
        idle: limits.idle_timeout(),
    };
    let connections = ConnectionLimit::new("http", limits.max_connections);
    let tasks = TaskTracker::new();
    let drain = CancellationToken::new();
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = connections.admit() => permit,
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Per-connection failures (the peer reset before accept,
                    // fd exhaustion) must not end the server; back off briefly.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        // The deadline wraps the router from outside, unboxed (as a
        // `Router::layer` it would wrap every route).
        let service = crate::edge::Deadline::new(router.clone(), request_timeout).map_request(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        );
        let service = Counted::new(TowerToHyperService::new(service), Arc::clone(&activity));
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(Observed::new(stream, Arc::clone(&activity))),
                service,
            )
            .into_owned();
        let drain = drain.clone();
        tasks.spawn(async move {
            let _slot = permit;
            drive_connection(connection, &activity, timeouts, drain).await;
        });
    }
    drop(listener);
    tokio::time::sleep(FIRST_REQUEST_GRACE).await;
    drain.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Polls one connection to its end, closing it at its deadline or when the
/// server drains.
async fn drive_connection<C>(
    connection: C,
    activity: &Activity,
    timeouts: Timeouts,
    drain: tokio_util::sync::CancellationToken,
) where
    C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + GracefulConnection,
{
    tokio::pin!(connection);
    let mut closing = false;
    let mut give_up: Option<Instant> = None;
    loop {
        let deadline = if closing {
            None
        } else {
            activity.deadline(timeouts)
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            () = activity.changed(), if !closing => {}
            () = sleep_until(deadline.map(|(at, _)| at)) => {
                // The deadline may have moved since it was read.
                match activity.deadline(timeouts) {
                    Some((at, Expiry::Header)) if at <= Instant::now() => {
                        // Half a head (or nothing) has nothing to finish; hyper
                        // would keep waiting for the rest.
                        tracing::debug!("closing a connection that did not send a request head in time");
                        return;
                    }
                    Some((at, Expiry::Idle)) if at <= Instant::now() => {
                        tracing::debug!("closing an idle connection");
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                        give_up = Some(Instant::now() + CLOSE_GRACE);
                    }
                    _ => {}
                }
            }
            () = drain.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = sleep_until(give_up) => {
                tracing::debug!("an idle connection did not close within its grace; dropping it");
                return;
            }
        }
    }
}

/// hyper's connections, as far as [`drive_connection`] needs them.
trait GracefulConnection {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, E, B> GracefulConnection
    for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper_util::server::conn::auto::HttpServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper_util::server::conn::auto::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reports a fatal start-up or run error the way an operator will look for it
/// (journal and stderr) and turns it into the process exit status.
pub fn exit_with(result: Result<(), impl std::fmt::Display>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "exiting");
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_millis(300)).await;
        "slow done"
    }

    async fn start() -> (
        std::net::SocketAddr,
        Shutdown,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = axum::Router::new()
            .route("/fast", get(|| async { "fast done" }))
            .route("/slow", get(slow));
        let shutdown = Shutdown::new();
        let server = tokio::spawn(serve_http(listener, router, shutdown.clone()));
        (addr, shutdown, server)
    }

    async fn read_reply(stream: &mut tokio::net::TcpStream) -> String {
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.expect("read");
        reply
    }

    #[tokio::test]
    async fn a_connection_accepted_before_shutdown_still_gets_its_answer() {
        let (addr, shutdown, server) = start().await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
        shutdown.trigger();
        // The request arrives after shutdown began, within the grace period.
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream
            .write_all(b"GET /fast HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let reply = read_reply(&mut stream).await;
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.ends_with("fast done"),
            "{reply}"
        );
        server.await.expect("join").expect("serve");
    }

    #[tokio::test]
    async fn in_flight_requests_finish_and_new_connections_are_not_accepted() {
        let (addr, shutdown, server) = start().await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        shutdown.trigger();
        let reply = read_reply(&mut stream).await;
        assert!(reply.ends_with("slow done"), "{reply}");
        server.await.expect("join").expect("serve");
        // The listener is gone once serving returned.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
