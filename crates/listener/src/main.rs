//! `switchboard-listener`: reads its configuration, starts logging and signal
//! handling, and runs the consumer until SIGTERM (see the library for the rest).

use clap::Parser;
use switchboard_listener::{ListenerListeners, Settings, run};
use switchboard_runtime::service::{self, ConfigArg, Fatal, Service};

/// Consumes RabbitMQ's `logs_topic` events and stores them through the logger.
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
    let mut service = Service::<Settings>::start("listener", &cli.config)?;
    let metrics = service
        .listeners
        .tcp_optional("metrics", service.settings.listen.metrics)
        .await?;
    service.warn_unclaimed_sockets();
    let work = run(
        service.settings.clone(),
        ListenerListeners { metrics },
        service.shutdown.clone(),
    );
    service
        .run_until_drained(work, "deliveries in flight (RabbitMQ redelivers them)")
        .await
}
