//! `switchboard-stack`: starts the whole system on this machine for
//! development — PostgreSQL, RabbitMQ, MongoDB (or FerretDB), MailHog, the
//! six services and Prometheus scraping them, on loopback — prints where
//! everything is, streams the services' logs, and stops it all on Ctrl-C.
//! State lives in `.stack/` and is reused by the next start.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, ValueEnum};
use switchboard_stack::{
    Console, DEV_USER_EMAIL, DEV_USER_PASSWORD, DependencyPorts, ServiceName, ServicePorts, Stack,
    StackError, StackOptions,
};
use switchboard_testkit::{FerretBackend, MongoKind};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Start Switchboard and its dependency servers on loopback for development.
#[derive(Debug, Parser)]
#[command(name = "switchboard-stack", version, about)]
struct Cli {
    /// State folder (server data, logs); a second start reuses it.
    #[arg(long, value_name = "DIR", default_value = ".stack")]
    state_dir: PathBuf,
    /// Folder of the switchboard-* service binaries [default: this executable's folder].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Add N to every dependency server's port (5432, 5672, 15672, 27017, 1025, 8025)
    /// and to Prometheus' (9090), e.g. to run beside the system's PostgreSQL and RabbitMQ.
    #[arg(long, value_name = "N", default_value_t = 0)]
    port_offset: u16,
    /// Add N to every service port (8080-8084, 5001, 50001, metrics 9180-9185).
    #[arg(long, value_name = "N", default_value_t = 0)]
    service_port_offset: u16,
    /// PostgreSQL's port (overrides --port-offset).
    #[arg(long, value_name = "PORT")]
    postgres_port: Option<u16>,
    /// RabbitMQ's AMQP port (overrides --port-offset).
    #[arg(long, value_name = "PORT")]
    amqp_port: Option<u16>,
    /// RabbitMQ's management UI port (overrides --port-offset).
    #[arg(long, value_name = "PORT")]
    rabbitmq_management_port: Option<u16>,
    /// MongoDB's (or FerretDB's) port (overrides --port-offset).
    #[arg(long, value_name = "PORT")]
    mongodb_port: Option<u16>,
    /// The MongoDB-protocol server: `mongod`, or `ferretdb` (free software,
    /// runs on CPUs without AVX). Default: `mongod` if installed, else FerretDB.
    #[arg(long, value_enum, value_name = "SERVER")]
    mongodb_server: Option<MongoServer>,
    /// FerretDB's backend: `postgresql` (a database of its own on the
    /// stack's PostgreSQL), `sqlite` (fsync per commit) or `sqlite-normal`
    /// (no fsync on commit: survives a crash of FerretDB, not of the machine).
    /// Default: postgresql, the fastest and most durable (README, Performance).
    #[arg(long, value_name = "BACKEND")]
    store: Option<FerretBackend>,
    /// MailHog's SMTP port (overrides --port-offset).
    #[arg(long, value_name = "PORT")]
    smtp_port: Option<u16>,
    /// MailHog's web UI and API port (overrides --port-offset).
    #[arg(long, value_name = "PORT")]
    mailhog_port: Option<u16>,
    /// Prometheus' web UI and API port (overrides --port-offset).
    #[arg(long, value_name = "PORT")]
    prometheus_port: Option<u16>,
    /// Do not run Prometheus (the services' metrics sockets stay open).
    #[arg(long)]
    no_prometheus: bool,
    /// Start a service only when the first connection arrives on one of its
    /// sockets, as systemd socket activation does (not its metrics socket: a
    /// scrape starts nothing; the listener, with no other socket, starts at once).
    #[arg(long)]
    lazy: bool,
    /// Run only these services (comma-separated), and the servers they need.
    #[arg(long, value_name = "SERVICE,...", value_delimiter = ',')]
    only: Vec<ServiceName>,
    /// Override a configuration key of a service, e.g.
    /// `--set broker.limits.rate_per_second=5` (repeatable).
    #[arg(long = "set", value_name = "SERVICE.SECTION.KEY=VALUE")]
    settings: Vec<String>,
    /// Colour the per-service log prefixes.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MongoServer {
    Mongod,
    Ferretdb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    let interrupt = Arc::new(AtomicBool::new(false));
    let options = options(&cli)?.interrupt(Arc::clone(&interrupt));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the signal handler: {e}"))?;
    // Installed before anything starts, so that Ctrl-C during start-up stops
    // what was started instead of killing the stack outright.
    let mut signals = {
        let _context = runtime.enter();
        Signals::install().map_err(|e| format!("cannot install signal handlers: {e}"))?
    };

    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let starter = std::thread::spawn(move || {
        let result = Stack::start(options);
        let _ = started_tx.send(());
        result
    });
    let interrupted = runtime.block_on(async {
        tokio::pin!(started_rx);
        let mut interrupted = false;
        loop {
            tokio::select! {
                _ = &mut started_rx => return interrupted,
                name = signals.recv() => {
                    interrupted = true;
                    interrupt.store(true, Ordering::Relaxed);
                    eprintln!("==> {name}: stopping once the current step is done");
                }
            }
        }
    });
    let started = starter
        .join()
        .map_err(|_| "the start-up thread panicked".to_owned())?;
    let stack = match started {
        Ok(stack) => stack,
        // What had started was stopped when the start was abandoned.
        Err(StackError::Interrupted) => {
            eprintln!("==> stopped before start-up finished");
            return Ok(ExitCode::from(130));
        }
        Err(err) => return Err(err.to_string()),
    };
    if interrupted {
        stack.stop();
        return Ok(ExitCode::from(130));
    }

    print_table(&stack);
    let name = runtime.block_on(signals.recv());
    eprintln!("==> {name}: stopping");
    stack.stop();
    Ok(ExitCode::SUCCESS)
}

fn options(cli: &Cli) -> Result<StackOptions, String> {
    let offset_ports = DependencyPorts::USUAL
        .offset(cli.port_offset)
        .ok_or_else(|| format!("--port-offset {} pushes a port past 65535", cli.port_offset))?;
    let ports = DependencyPorts {
        postgres: cli.postgres_port.unwrap_or(offset_ports.postgres),
        amqp: cli.amqp_port.unwrap_or(offset_ports.amqp),
        rabbitmq_management: cli
            .rabbitmq_management_port
            .unwrap_or(offset_ports.rabbitmq_management),
        mongodb: cli.mongodb_port.unwrap_or(offset_ports.mongodb),
        smtp: cli.smtp_port.unwrap_or(offset_ports.smtp),
        mailhog_http: cli.mailhog_port.unwrap_or(offset_ports.mailhog_http),
        prometheus: cli.prometheus_port.unwrap_or(offset_ports.prometheus),
    };
    let color = match cli.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let mut options = StackOptions::persistent(&cli.state_dir)
        .dependency_ports(ports)
        .service_ports(ServicePorts::Default {
            offset: cli.service_port_offset,
        })
        .lazy(cli.lazy)
        .prometheus(!cli.no_prometheus)
        .console(Console { color });
    if let Some(dir) = &cli.bin_dir {
        options = options.bin_dir(dir);
    }
    match cli.mongodb_server {
        Some(MongoServer::Mongod) => options = options.mongodb_server(MongoKind::Mongod),
        Some(MongoServer::Ferretdb) => options = options.mongodb_server(MongoKind::FerretDb),
        None => {}
    }
    if let Some(backend) = cli.store {
        options = options.ferretdb_backend(backend);
    }
    if !cli.only.is_empty() {
        options = options.services(cli.only.iter().copied());
    }
    for setting in &cli.settings {
        let (service, key, value) = parse_setting(setting)?;
        options = options.setting(service, key, value);
    }
    Ok(options)
}

/// `broker.limits.rate_per_second=5` → (broker, `limits.rate_per_second`, `5`).
fn parse_setting(text: &str) -> Result<(ServiceName, &str, &str), String> {
    let bad = || {
        format!(
            "--set {text:?}: expected SERVICE.SECTION.KEY=VALUE, e.g. broker.limits.rate_per_second=5"
        )
    };
    let (path, value) = text.split_once('=').ok_or_else(bad)?;
    let (service, key) = path.split_once('.').ok_or_else(bad)?;
    if key.is_empty() {
        return Err(bad());
    }
    let service = service
        .parse::<ServiceName>()
        .map_err(|e| format!("--set {text:?}: {e}"))?;
    Ok((service, key, value))
}

fn print_table(stack: &Stack) {
    let mut rows: Vec<(String, String)> = Vec::new();
    let services = stack.services();
    let runs = |service| services.contains(&service);
    // Each service's row ends with its Prometheus socket.
    let metrics = |service| format!("  metrics {}", stack.metrics_url(service));
    if runs(ServiceName::Frontend) {
        rows.push((
            "front-end".into(),
            format!("{}{}", stack.frontend_url(), metrics(ServiceName::Frontend)),
        ));
    }
    if runs(ServiceName::Broker) {
        rows.push((
            "broker".into(),
            format!("{}{}", stack.broker_url(), metrics(ServiceName::Broker)),
        ));
    }
    if let Some(url) = stack.mailhog_url() {
        rows.push(("MailHog UI".into(), url));
    }
    if let Some(url) = stack.rabbitmq_management_url() {
        rows.push((
            "RabbitMQ management".into(),
            format!("{url}  (guest / guest)"),
        ));
    }
    if let Some(url) = stack.prometheus_url() {
        rows.push((
            "Prometheus".into(),
            format!("{url}  (jobs switchboard-<service>)"),
        ));
    }
    if runs(ServiceName::Auth) {
        rows.push((
            "auth".into(),
            format!("{}{}", stack.auth_url(), metrics(ServiceName::Auth)),
        ));
    }
    if runs(ServiceName::Logger) {
        rows.push((
            "logger".into(),
            format!(
                "{}  rpc {}  grpc {}{}",
                stack.logger_http_url(),
                stack.logger_rpc_addr(),
                stack.logger_grpc_url(),
                metrics(ServiceName::Logger)
            ),
        ));
    }
    if runs(ServiceName::Mail) {
        rows.push((
            "mail".into(),
            format!("{}{}", stack.mail_url(), metrics(ServiceName::Mail)),
        ));
    }
    if runs(ServiceName::Listener) {
        rows.push((
            "listener".into(),
            format!("metrics {}", stack.metrics_url(ServiceName::Listener)),
        ));
    }
    if let Some(url) = stack.postgres_url("users") {
        rows.push(("PostgreSQL".into(), url));
    }
    if let (Some(url), Some(kind)) = (stack.mongodb_url(), stack.mongodb_kind()) {
        rows.push((format!("MongoDB ({kind})"), url));
    }
    if let Some(url) = stack.amqp_url() {
        rows.push(("AMQP".into(), url));
    }
    if runs(ServiceName::Auth) {
        rows.push((
            "dev user".into(),
            format!("{DEV_USER_EMAIL} / {DEV_USER_PASSWORD}"),
        ));
    }
    rows.push((
        "logs".into(),
        format!("{}/<service>.log", stack.state_dir().join("logs").display()),
    ));
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    eprintln!();
    eprintln!(
        "Switchboard is running (state in {}):",
        stack.state_dir().display()
    );
    for (label, value) in rows {
        eprintln!("  {label:<width$}  {value}");
    }
    eprintln!("Press Ctrl-C to stop.");
    eprintln!();
}

/// SIGINT, SIGTERM and SIGHUP all mean "stop".
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_service_key_and_value() {
        assert_eq!(
            parse_setting("broker.limits.rate_per_second=5"),
            Ok((ServiceName::Broker, "limits.rate_per_second", "5"))
        );
        assert_eq!(
            parse_setting("mail.sender.name=A=B"),
            Ok((ServiceName::Mail, "sender.name", "A=B"))
        );
        assert!(parse_setting("broker=5").is_err());
        assert!(parse_setting("nosuch.key=1").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
