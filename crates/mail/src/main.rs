//! `switchboard-mail`: reads its configuration, takes the `http` socket from
//! systemd (or binds `listen.http`) and runs the service until SIGTERM.

use clap::Parser;
use switchboard_mail::settings::Settings;
use switchboard_mail::{MailListeners, run};
use switchboard_runtime::lifecycle;
use switchboard_runtime::service::{self, ConfigArg, Service};

/// Renders and sends e-mail through an SMTP relay.
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
        Service::<Settings>::start("mail", &cli.config).map_err(|err| err.to_string())?;
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
        run(settings.clone(), MailListeners { http }, shutdown.clone()),
    )
    .await
    {
        Ok(result) => result.map_err(|err| err.to_string()),
        Err(()) => {
            Err("in-flight requests did not finish within runtime.shutdown_timeout_ms".into())
        }
    }
}
