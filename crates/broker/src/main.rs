//! `switchboard-broker`: reads the configuration, takes the `http` and
//! `metrics` sockets (inherited from systemd or bound), and runs the broker
//! until SIGTERM.

use clap::Parser;
use switchboard_broker::{BrokerListeners, Settings, run};
use switchboard_runtime::service::{self, ConfigArg, Fatal, Service};

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
    service::exit_with(start(&cli).await)
}

async fn start(cli: &Cli) -> Result<(), Fatal> {
    let mut service = Service::<Settings>::start("broker", &cli.config)?;
    let http = service
        .listeners
        .tcp("http", service.settings.listen.http)
        .await?;
    let metrics = service
        .listeners
        .tcp_optional("metrics", service.settings.listen.metrics)
        .await?;
    service.warn_unclaimed_sockets();
    let work = run(
        service.settings.clone(),
        BrokerListeners { http, metrics },
        service.shutdown.clone(),
    );
    service.run_until_drained(work, "in-flight requests").await
}
