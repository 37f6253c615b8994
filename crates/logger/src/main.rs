//! The `switchboard-logger` binary: configuration, sockets, and [`run`].

use clap::Parser;
use switchboard_logger::{DoorListeners, Settings, run};
use switchboard_runtime::service::{self, ConfigArg, Fatal, Service};

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

async fn start(cli: &Cli) -> Result<(), Fatal> {
    let mut service = Service::<Settings>::start("logger", &cli.config)?;
    let listen = service.settings.listen.clone();
    let listeners = DoorListeners {
        http: service.listeners.tcp("http", listen.http).await?,
        rpc: service.listeners.tcp("rpc", listen.rpc).await?,
        grpc: service.listeners.tcp("grpc", listen.grpc).await?,
        metrics: service
            .listeners
            .tcp_optional("metrics", listen.metrics)
            .await?,
    };
    service.warn_unclaimed_sockets();
    let work = run(
        service.settings.clone(),
        listeners,
        service.shutdown.clone(),
    );
    service.run_until_drained(work, "in-flight requests").await
}
