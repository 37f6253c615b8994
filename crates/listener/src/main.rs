//! `switchboard-listener`: reads its configuration, starts logging and signal
//! handling, and runs the consumer until SIGTERM (see the library for the rest).

use clap::Parser;
use switchboard_listener::{Settings, run};
use switchboard_runtime::lifecycle;
use switchboard_runtime::service::{self, ConfigArg, Service};

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
    let service = match Service::<Settings>::start("listener", &cli.config) {
        Ok(service) => service,
        Err(err) => return service::exit_with(Err(err)),
    };
    // The listener has no socket; anything passed in is a unit mistake.
    service.warn_unclaimed_sockets();
    let Service {
        settings, shutdown, ..
    } = service;
    let drain = settings.runtime.shutdown_timeout();
    let result =
        match lifecycle::drain_within(&shutdown, drain, run(settings, shutdown.clone())).await {
            Ok(result) => result.map_err(|err| err.to_string()),
            Err(()) => Err(
                "deliveries were still in flight when the shutdown timeout ran out; \
                        RabbitMQ redelivers them"
                    .to_owned(),
            ),
        };
    service::exit_with(result)
}
