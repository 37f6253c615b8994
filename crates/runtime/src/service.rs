//! Start-up and serving shared by every service binary: read the configuration,
//! install logging, collect inherited sockets, wire SIGTERM/SIGINT and the
//! watchdog, and serve HTTP with a graceful drain.

use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::config::{self, ConfigError, RuntimeSettings, Sources};
use crate::lifecycle::{self, Shutdown};
use crate::listen::{ListenError, Listeners};

/// The `--config FILE` option every service binary takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArg {
    /// TOML configuration file (else `SWITCHBOARD_<SERVICE>_CONFIG`, else built-in defaults).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Settings types expose their `[runtime]` section to the shared start-up code.
pub trait ServiceSettings: Default + Serialize + DeserializeOwned {
    fn runtime(&self) -> &RuntimeSettings;
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// A started service: its settings, the sockets it was handed, and its shutdown switch.
#[derive(Debug)]
pub struct Service<S> {
    pub name: &'static str,
    pub settings: S,
    pub listeners: Listeners,
    pub shutdown: Shutdown,
}

impl<S: ServiceSettings> Service<S> {
    /// `service` is the short name (`auth`); logs and the journal use
    /// `switchboard-<service>`. Must run inside the tokio runtime.
    pub fn start(service: &'static str, config: &ConfigArg) -> Result<Self, StartError> {
        let settings: S = config::load(
            service,
            &Sources::from_process(service, config.config.clone()),
        )?;
        crate::telemetry::init(&format!("switchboard-{service}"), settings.runtime());
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
        })
    }

    /// Logs sockets the service manager passed that no part of the service claimed.
    pub fn warn_unclaimed_sockets(&self) {
        for name in self.listeners.unclaimed() {
            tracing::warn!(socket = %name, "a socket was passed in under a name this service does not use");
        }
    }
}

/// How long connections accepted just before shutdown get to send their first
/// request before they are closed. A client that connected an instant before
/// SIGTERM has its request in flight; closing its connection unread would turn
/// a `systemctl restart` into a connection reset for it.
const FIRST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// Serves `router` on `listener` until `shutdown`, then drains: it stops
/// accepting (new connections wait in the socket's backlog, which systemd keeps
/// open for the next instance), lets just-accepted connections send their
/// request, and waits for in-flight requests to finish. The caller bounds the
/// drain with [`crate::lifecycle::drain_within`].
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    let graceful = GracefulShutdown::new();
    let builder = Builder::new(TokioExecutor::new());
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
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
        let service = router.clone().map_request(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        );
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::time::sleep(FIRST_REQUEST_GRACE).await;
    graceful.shutdown().await;
    Ok(())
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
