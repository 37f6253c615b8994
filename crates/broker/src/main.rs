//! `switchboard-broker`: reads the configuration, takes the `http` socket
//! (inherited from systemd or bound), and runs the broker until SIGTERM.

use clap::Parser;
use switchboard_broker::{BrokerListeners, Settings, run};
use switchboard_runtime::lifecycle;
use switchboard_runtime::service::{self, ConfigArg, Service};

/// The Switchboard API gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: ConfigArg,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    service::exit_with(start(cli).await)
}

async fn start(cli: Cli) -> Result<(), String> {
    let mut service =
        Service::<Settings>::start("broker", &cli.config).map_err(|err| err.to_string())?;
    let http = service
        .listeners
        .tcp("http", service.settings.listen.http)
        .await
        .map_err(|err| err.to_string())?;
    service.warn_unclaimed_sockets();
    let shutdown = service.shutdown.clone();
    let timeout = service.settings.runtime.shutdown_timeout();
    let work = run(service.settings, BrokerListeners { http }, shutdown.clone());
    match lifecycle::drain_within(&shutdown, timeout, work).await {
        Ok(result) => result.map_err(|err| err.to_string()),
        Err(()) => Err("shutdown timed out with requests still in flight".to_owned()),
    }
}
