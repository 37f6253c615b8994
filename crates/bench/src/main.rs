//! `switchboard-bench`: see the crate README. The heavy lifting is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchboard_bench::load::LoadSpec;
use switchboard_bench::suite::{self, SuiteOptions};
use switchboard_stack::ServiceName;

#[derive(Debug, Parser)]
#[command(about = "Measure every Switchboard path against the machine's own ceilings")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the stack and run every scenario (or those named with --only).
    All(RunArgs),
    /// A few hundred requests per scenario: proves every scenario works (CI).
    /// The cost group (a stack per configuration) runs only when `--only`
    /// names it, e.g. `--only cost`.
    Smoke(RunArgs),
    /// Internal: the bare axum handler the HTTP ceiling is measured on.
    #[command(hide = true)]
    ServeBare {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Internal: an OTLP/gRPC collector that counts spans (for
    /// scripts/profile-edge): prints its endpoint, serves until stdin closes,
    /// then prints the spans it received.
    #[command(hide = true)]
    ServeCollector,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Warm-up seconds per scenario (not measured).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Concurrent connections or in-flight requests.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Open loop: requests per second per scenario (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Concurrency of the login scenario.
    #[arg(long, default_value_t = 8)]
    auth_concurrency: usize,
    /// bcrypt cost of the auth service and the bcrypt ceiling.
    #[arg(long, default_value_t = 12)]
    bcrypt_cost: u32,
    /// Documents per insert_many in the batched store ceiling.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Only scenarios whose names start with one of these (comma-separated),
    /// e.g. `broker-log,ceiling-store`.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Where the service binaries are (default: next to this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// A service setting for this run, `SERVICE.SECTION.KEY=VALUE`, e.g.
    /// `listener.amqp.prefetch=256` (repeatable).
    #[arg(long = "set", value_parser = parse_setting)]
    settings: Vec<(ServiceName, String, String)>,
    /// Entries in the log collection at which `logger-read` is measured
    /// (seeded with insert_many, cumulatively), e.g. `10000,100000,1000000`.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    read_sizes: Vec<u64>,
    /// The `telemetry.sample_ratio`s the cost group measures besides every
    /// request traced (rows `cost-*-traced-<n>pct`); 0 is tracing on with
    /// nothing sampled, its fixed cost.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.01,0", value_parser = parse_ratio)]
    cost_sample_ratios: Vec<f64>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn options(args: &RunArgs, smoke: bool) -> SuiteOptions {
    let spec = if smoke {
        LoadSpec {
            warmup: Duration::ZERO,
            duration: Duration::from_secs(60),
            concurrency: args.concurrency.min(16),
            rate: None,
            max_requests: Some(300),
        }
    } else {
        LoadSpec {
            warmup: Duration::from_secs(args.warmup),
            duration: Duration::from_secs(args.duration),
            concurrency: args.concurrency,
            rate: args.rate,
            max_requests: None,
        }
    };
    SuiteOptions {
        spec,
        auth_concurrency: args.auth_concurrency,
        bcrypt_cost: if smoke {
            args.bcrypt_cost.min(6)
        } else {
            args.bcrypt_cost
        },
        batch: args.batch,
        bin_dir: args.bin_dir.clone(),
        only: args.only.clone(),
        settings: args.settings.clone(),
        read_sizes: if smoke {
            vec![1_000]
        } else {
            args.read_sizes.clone()
        },
        // A smoke run proves the scenarios work; the cost group only adds
        // configurations (a stack start each) and runs when named.
        cost_group: !smoke,
        cost_sample_ratios: args.cost_sample_ratios.clone(),
    }
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!(
            "{text:?}: expected a sample ratio from 0 to 1, e.g. 0.05"
        )),
    }
}

fn parse_setting(text: &str) -> Result<(ServiceName, String, String), String> {
    let invalid =
        || format!("{text:?}: expected SERVICE.SECTION.KEY=VALUE, e.g. listener.amqp.prefetch=256");
    let (path, value) = text.split_once('=').ok_or_else(invalid)?;
    let (service, key) = path.split_once('.').ok_or_else(invalid)?;
    let service: ServiceName = service.parse().map_err(|err| format!("{text:?}: {err}"))?;
    Ok((service, key.to_owned(), value.to_owned()))
}

async fn serve_collector() -> ExitCode {
    let collector = match switchboard_testkit::otlp::Collector::start_counting() {
        Ok(collector) => collector,
        Err(err) => {
            eprintln!("serve-collector: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", collector.endpoint());
    // The caller holds stdin open for as long as the collector is wanted.
    let _ =
        tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
            .await;
    println!("spans {}", collector.span_count());
    ExitCode::SUCCESS
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (args, smoke) = match cli.command {
        Command::ServeBare { listen } => {
            return match switchboard_bench::ceilings::serve_bare(listen).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("serve-bare: {err:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::ServeCollector => return serve_collector().await,
        Command::All(args) => (args, false),
        Command::Smoke(args) => (args, true),
    };
    let report = match suite::run(options(&args, smoke)).await {
        Ok(report) => report,
        Err(err) => {
            eprintln!("bench: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", report.to_text());
    if let Some(path) = &args.json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(path, json));
        if let Err(err) = written {
            eprintln!("bench: cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
    }
    // A smoke run proves every scenario works: any error fails it.
    let failed: Vec<&str> = report
        .rows
        .iter()
        .filter(|row| row.errors > 0 || (!row.unit.is_empty() && row.ok == 0))
        .map(|row| row.scenario.as_str())
        .collect();
    if smoke && !failed.is_empty() {
        eprintln!("bench: smoke run failed in: {}", failed.join(", "));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
