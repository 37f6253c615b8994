//! `switchboard-frontend`: reads its configuration, takes the `http` socket
//! from systemd (or binds `listen.http`) and serves the test page until SIGTERM.

use clap::Parser;
use switchboard_frontend::settings::Settings;
use switchboard_frontend::{FrontendListeners, run};
use switchboard_runtime::service::{self, ConfigArg, Fatal, Service};

/// Serves the Switchboard test page.
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
    let mut service = Service::<Settings>::start("frontend", &cli.config)?;
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
        FrontendListeners { http, metrics },
        service.shutdown.clone(),
    );
    service.run_until_drained(work, "in-flight requests").await
}
