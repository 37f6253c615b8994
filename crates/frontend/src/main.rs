//! `switchboard-frontend`: reads its configuration, takes the `http` socket
//! from systemd (or binds `listen.http`) and serves the test page until SIGTERM.

use clap::Parser;
use switchboard_frontend::settings::Settings;
use switchboard_frontend::{FrontendListeners, run};
use switchboard_runtime::lifecycle;
use switchboard_runtime::service::{self, ConfigArg, Service};

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
    service::exit_with(serve(cli).await)
}

async fn serve(cli: Cli) -> Result<(), String> {
    let mut service =
        Service::<Settings>::start("frontend", &cli.config).map_err(|err| err.to_string())?;
    let settings = service.settings.clone();
    let http = service
        .listeners
        .tcp("http", settings.listen.http)
        .await
        .map_err(|err| err.to_string())?;
    service.warn_unclaimed_sockets();
    let shutdown = service.shutdown.clone();
    match lifecycle::drain_within(
        &shutdown,
        settings.runtime.shutdown_timeout(),
        run(
            settings.clone(),
            FrontendListeners { http },
            shutdown.clone(),
        ),
    )
    .await
    {
        Ok(result) => result.map_err(|err| err.to_string()),
        Err(()) => {
            Err("in-flight requests did not finish within runtime.shutdown_timeout_ms".into())
        }
    }
}
