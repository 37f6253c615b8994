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

/// Serves `router` on `listener` until `shutdown`, then lets in-flight requests finish.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.requested())
    .await
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
