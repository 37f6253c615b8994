//! The `switchboard-logger` binary: configuration, sockets, and [`run`].

use clap::Parser;
use switchboard_logger::{DoorListeners, Settings, run};
use switchboard_runtime::lifecycle;
use switchboard_runtime::service::{self, ConfigArg, Service};

/// Switchboard's central log store: HTTP, RPC and gRPC doors in front of MongoDB.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: ConfigArg,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    service::exit_with(start(&cli).await)
}

async fn start(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut service = Service::<Settings>::start("logger", &cli.config)?;
    let listen = service.settings.listen.clone();
    let listeners = DoorListeners {
        http: service.listeners.tcp("http", listen.http).await?,
        rpc: service.listeners.tcp("rpc", listen.rpc).await?,
        grpc: service.listeners.tcp("grpc", listen.grpc).await?,
    };
    service.warn_unclaimed_sockets();
    let timeout = service.settings.runtime.shutdown_timeout();
    let shutdown = service.shutdown.clone();
    match lifecycle::drain_within(
        &shutdown,
        timeout,
        run(service.settings, listeners, shutdown.clone()),
    )
    .await
    {
        Ok(result) => result.map_err(Into::into),
        Err(()) => {
            Err("in-flight requests did not finish within runtime.shutdown_timeout_ms".into())
        }
    }
}
