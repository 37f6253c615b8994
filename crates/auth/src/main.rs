//! The `switchboard-auth` binary: serves by default; `user add` / `user list`
//! administer the users table with the same configuration.

use std::process::ExitCode;

use clap::Parser;
use switchboard_auth::cli::{self, Command, UserCommand};
use switchboard_auth::{Listeners, Settings, run};
use switchboard_runtime::config::{self, LogTarget, Sources};
use switchboard_runtime::service::{ConfigArg, Fatal, Service, exit_with};

const SERVICE: &str = "auth";

/// User authentication for Switchboard.
#[derive(Debug, Parser)]
#[command(name = "switchboard-auth", version, about)]
struct Cli {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: Option<Command>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return exit_with(Err(format!("cannot start the async runtime: {err}"))),
    };
    match cli.command {
        None => runtime.block_on(serve(&cli.config)),
        Some(command) => runtime.block_on(administer(&cli.config, command)),
    }
}

async fn serve(config: &ConfigArg) -> ExitCode {
    exit_with(start(config).await)
}

async fn start(config: &ConfigArg) -> Result<(), Fatal> {
    let mut service = Service::<Settings>::start(SERVICE, config)?;
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
        Listeners { http, metrics },
        service.shutdown.clone(),
    );
    service.run_until_drained(work, "in-flight requests").await
}

async fn administer(config: &ConfigArg, command: Command) -> ExitCode {
    let settings: Settings = match config::load(
        SERVICE,
        &Sources::from_process(SERVICE, config.config.clone()),
    ) {
        Ok(settings) => settings,
        Err(err) => return exit_with(Err(err)),
    };
    // A command's output is its result; only problems belong on stderr.
    let mut log = settings.runtime.clone();
    log.log_filter = "warn".to_owned();
    log.log_target = LogTarget::Stderr;
    switchboard_runtime::telemetry::init_logs("switchboard-auth", &log);
    let stdout = std::io::stdout();
    let result = match command {
        Command::User(UserCommand::Add(args)) => {
            match cli::read_password(std::io::stdin().lock()) {
                Ok(password) => cli::add_user(&settings, &args, password, stdout.lock()).await,
                Err(err) => Err(err),
            }
        }
        Command::User(UserCommand::List) => cli::list_users(&settings, stdout.lock()).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Once, plainly: the administrator reads this, not the journal.
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
