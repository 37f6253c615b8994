//! One run of everything: start the stack on loopback (temporary folder, free
//! ports), measure the ceilings and every scenario on it, measure the
//! footprint, and compute each path's ratio to its ceiling.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use switchboard_stack::{ServiceName, Stack, StackOptions};
use switchboard_testkit::{FerretBackend, MongoDb, MongoKind};

use crate::cpu::{CpuMeter, Tracked};
use crate::load::LoadSpec;
use crate::report::{Machine, Report, Row};
use crate::scenarios::{self, BROKER_VIAS, LOGGER_DOORS, Targets};
use crate::{ceilings, cost};

/// What to run and how hard.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub spec: LoadSpec,
    /// Concurrency of the login scenario (bcrypt-bound: more only adds queueing).
    pub auth_concurrency: usize,
    pub bcrypt_cost: u32,
    /// Documents per `insert_many` in the batched store ceiling.
    pub batch: usize,
    /// Where the service binaries are (default: next to this executable).
    pub bin_dir: Option<PathBuf>,
    /// Scenario names to run (`None`: all).
    pub only: Option<Vec<String>>,
    /// Extra service settings: (service, `section.key`, value).
    pub settings: Vec<(ServiceName, String, String)>,
    /// Collection sizes `logger-read` is measured at, ascending; the first
    /// is also what the `store-*-read` rows seed.
    pub read_sizes: Vec<u64>,
    /// Run the `cost-*` rows (a stack per configuration, see the `cost`
    /// module) without `only` naming them; `only` selects them either way.
    pub cost_group: bool,
    /// The `telemetry.sample_ratio`s measured besides 1.0 (`cost-*-traced-<n>pct`).
    pub cost_sample_ratios: Vec<f64>,
}

impl SuiteOptions {
    fn wants(&self, scenario: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|name| scenario.starts_with(name.as_str())))
    }

    /// [`SuiteOptions::wants`] for the cost group, which only runs by
    /// default when `cost_group` is set.
    pub(crate) fn wants_cost(&self, scenario: &str) -> bool {
        match &self.only {
            Some(_) => self.wants(scenario),
            None => self.cost_group,
        }
    }
}

const SERVICES: [ServiceName; 6] = [
    ServiceName::Logger,
    ServiceName::Mail,
    ServiceName::Auth,
    ServiceName::Listener,
    ServiceName::Broker,
    ServiceName::Frontend,
];

pub(crate) fn stack_options(options: &SuiteOptions) -> StackOptions {
    // Durable like a production store: a temporary stack's PostgreSQL would
    // otherwise skip fsync, and every log path would look faster than it is.
    let mut stack = StackOptions::temporary()
        .seed_user(true)
        .rabbitmq_management(false)
        .durable(true);
    // The services' logs on stderr, e.g. with `--set logger.runtime.log_filter=debug`
    // to see the logger's batch sizes.
    if std::env::var_os("SWITCHBOARD_BENCH_CONSOLE").is_some() {
        stack = stack.console(switchboard_stack::Console { color: false });
    }
    if let Some(dir) = &options.bin_dir {
        stack = stack.bin_dir(dir);
    }
    // Measure the gateway, not the rate limiter's rejections.
    stack = stack.setting(ServiceName::Broker, "limits.rate_per_second", 0);
    stack = stack.setting(
        ServiceName::Auth,
        "security.bcrypt_cost",
        options.bcrypt_cost,
    );
    for service in SERVICES {
        // One INFO line per request would measure the log pipe, not the service.
        stack = stack.setting(service, "runtime.log_filter", "warn");
    }
    for (service, key, value) in &options.settings {
        stack = stack.setting(*service, key, value);
    }
    stack
}

pub(crate) fn targets(stack: &Stack) -> anyhow::Result<Targets> {
    let addr = |service, socket| {
        stack
            .socket_addr(service, socket)
            .ok_or_else(|| anyhow!("the stack has no {socket} socket for {service:?}"))
    };
    Ok(Targets {
        broker: addr(ServiceName::Broker, "http")?,
        logger_http: addr(ServiceName::Logger, "http")?,
        logger_rpc: stack.logger_rpc_addr(),
        logger_grpc_url: stack.logger_grpc_url(),
        mongodb_url: stack
            .mongodb_url()
            .ok_or_else(|| anyhow!("no MongoDB in the stack"))?,
        logs_database: "logs".to_owned(),
        amqp_url: stack
            .amqp_url()
            .ok_or_else(|| anyhow!("no RabbitMQ in the stack"))?,
    })
}

/// Every process whose CPU a scenario is charged with: the load generator
/// (this process), the six services and the dependency servers.
pub(crate) fn tracked(stack: &Stack) -> Vec<Tracked> {
    let mut tracked = vec![Tracked {
        label: "load generator".into(),
        pid: std::process::id(),
    }];
    for service in SERVICES {
        if let Some(pid) = stack.service_pid(service) {
            tracked.push(Tracked {
                label: format!("{service:?}").to_lowercase(),
                pid,
            });
        }
    }
    let dependencies = [
        ("rabbitmq", stack.rabbitmq().and_then(|server| server.pid())),
        (
            stack.mongodb_kind().unwrap_or("store"),
            stack.mongodb().and_then(|server| server.pid()),
        ),
        (
            "postgresql",
            stack.postgres().and_then(|server| server.pid()),
        ),
        ("mailhog", stack.mailhog().and_then(|server| server.pid())),
        (
            "epmd",
            stack.rabbitmq().and_then(|server| server.epmd_pid()),
        ),
    ];
    for (label, pid) in dependencies {
        if let Some(pid) = pid {
            tracked.push(Tracked {
                label: label.to_owned(),
                pid,
            });
        }
    }
    tracked
}

/// Resident set size of a process, in KiB, from `/proc`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
}

fn rss_notes(stack: &Stack, when: &str) -> Vec<String> {
    SERVICES
        .iter()
        .map(
            |&service| match stack.service_pid(service).and_then(rss_kib) {
                Some(kib) => format!("{when}: {service:?} RSS {:.1} MiB", kib as f64 / 1024.0),
                None => format!("{when}: {service:?} RSS unknown (not running)"),
            },
        )
        .collect()
}

/// The bare axum ceiling runs in a process of its own, like a real service.
struct BareServer {
    child: Child,
    addr: SocketAddr,
}

impl BareServer {
    fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(std::env::current_exe()?)
            .args(["serve-bare", "--listen", &addr.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .context("start the bare axum server")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                anyhow::bail!("the bare axum server did not listen on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { child, addr })
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Time from the first connection on a socket whose service is not running yet
/// (started lazily, as systemd socket activation does) to the first response.
async fn lazy_start(options: &SuiteOptions) -> anyhow::Result<Vec<String>> {
    let mut stack_options = StackOptions::temporary()
        .services([ServiceName::Frontend, ServiceName::Logger])
        .lazy(true)
        .seed_user(false);
    if let Some(dir) = &options.bin_dir {
        stack_options = stack_options.bin_dir(dir);
    }
    let stack = tokio::task::spawn_blocking(move || Stack::start(stack_options)).await??;
    let mut notes = Vec::new();
    for (service, path) in [
        (ServiceName::Frontend, "/healthz"),
        (ServiceName::Logger, "/readyz"),
    ] {
        let addr = stack
            .socket_addr(service, "http")
            .ok_or_else(|| anyhow!("no http socket for {service:?}"))?;
        let before = stack.service_pid(service);
        let started = Instant::now();
        let reply = reqwest_free_get(addr, path).await?;
        let elapsed = started.elapsed();
        notes.push(format!(
            "lazy start {service:?}: first connection to first response {:.1} ms (was running before: {}; answer: {})",
            elapsed.as_secs_f64() * 1000.0,
            before.is_some(),
            reply.lines().next().unwrap_or("")
        ));
        if let Some(kib) = stack.service_pid(service).and_then(rss_kib) {
            notes.push(format!(
                "lazy start {service:?}: RSS after first response {:.1} MiB",
                kib as f64 / 1024.0
            ));
        }
    }
    tokio::task::spawn_blocking(move || stack.stop()).await?;
    Ok(notes)
}

/// A single HTTP/1.1 GET on a fresh connection, returning the raw reply.
async fn reqwest_free_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut reply)).await??;
    Ok(reply)
}

/// How a scenario loads the system.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// The bare axum handler in a process of its own: the HTTP ceiling.
    BareHttp,
    StoreSingle,
    StoreBatched,
    /// One FerretDB backend on a server of its own, durable.
    Store(FerretBackend, StoreLoad),
    Bcrypt,
    Amqp,
    BrokerHit,
    /// Name reads through the logger with writes running, at this many entries.
    LoggerRead(u64),
    LoggerDirect(&'static str),
    BrokerLog(&'static str),
    /// Two rows: the broker's 202s and the events' way to the logger.
    BrokerLogAmqp,
    BrokerAuth,
}

/// What a `store-*` row measures on its backend.
#[derive(Debug, Clone, Copy)]
enum StoreLoad {
    Single,
    Batched,
    Read,
}

/// One measured row: its name (what `--only` selects by prefix), what it
/// counts, how it loads, with which load, and the concurrency it reports.
struct Scenario {
    name: String,
    unit: &'static str,
    load: Load,
    spec: LoadSpec,
    concurrency: usize,
    note: Option<String>,
}

/// Every measured row, in report order: the ceilings, then the paths
/// through the system.
fn table(options: &SuiteOptions, threads: usize) -> Vec<Scenario> {
    let spec = options.spec;
    let row = |name: &str, unit, load, spec: LoadSpec| Scenario {
        name: name.to_owned(),
        unit,
        load,
        spec,
        concurrency: spec.concurrency,
        note: None,
    };
    let batched = LoadSpec {
        concurrency: 4.min(spec.concurrency),
        ..spec
    };
    let auth = LoadSpec {
        concurrency: options.auth_concurrency,
        ..spec
    };
    let mut table = vec![
        row("ceiling-http", "req/s", Load::BareHttp, spec),
        row("ceiling-store-single", "docs/s", Load::StoreSingle, spec),
        Scenario {
            note: Some(format!(
                "{} documents per insert_many; latency is per batch",
                options.batch
            )),
            ..row(
                "ceiling-store-batched",
                "docs/s",
                Load::StoreBatched,
                batched,
            )
        },
    ];
    let read_seed = options.read_sizes.first().copied().unwrap_or(10_000);
    for backend in FerretBackend::ALL {
        let durability = format!(
            "FerretDB on {backend}: commits survive {}",
            backend.durability()
        );
        table.push(Scenario {
            note: Some(durability.clone()),
            ..row(
                &format!("store-{backend}-single"),
                "docs/s",
                Load::Store(backend, StoreLoad::Single),
                spec,
            )
        });
        table.push(Scenario {
            note: Some(format!(
                "{durability}; {} documents per insert_many; latency is per batch",
                options.batch
            )),
            ..row(
                &format!("store-{backend}-batched"),
                "docs/s",
                Load::Store(backend, StoreLoad::Batched),
                batched,
            )
        });
        table.push(Scenario {
            note: Some(format!(
                "{durability}; find {{name}} newest first, limit 5, on {read_seed} entries over {} names",
                ceilings::READ_NAMES
            )),
            ..row(&format!("store-{backend}-read"), "reads/s", Load::Store(backend, StoreLoad::Read), spec)
        });
    }
    table.extend([
        Scenario {
            concurrency: threads,
            note: Some(format!(
                "cost {} on {threads} blocking threads",
                options.bcrypt_cost
            )),
            ..row("ceiling-bcrypt", "verifies/s", Load::Bcrypt, spec)
        },
        Scenario {
            note: Some(
                "durable quorum queue, persistent messages; latency is publish to consume".into(),
            ),
            ..row("ceiling-amqp", "msgs/s", Load::Amqp, spec)
        },
        row("broker-hit", "req/s", Load::BrokerHit, spec),
    ]);
    for door in LOGGER_DOORS {
        let name = format!("logger-direct-{door}");
        table.push(row(&name, "req/s", Load::LoggerDirect(door), spec));
    }
    for via in BROKER_VIAS {
        let load = match via {
            "amqp" => Load::BrokerLogAmqp,
            _ => Load::BrokerLog(via),
        };
        table.push(row(&format!("broker-log-{via}"), "req/s", load, spec));
    }
    table.push(row("broker-auth", "req/s", Load::BrokerAuth, auth));
    // Last: they grow the logger's collection for every later row.
    for &size in &options.read_sizes {
        table.push(Scenario {
            note: Some(format!(
                "GET /logs?name=…&limit=5 over {} names on {size} entries, while 4 connections write through POST /log",
                ceilings::READ_NAMES
            )),
            ..row(&format!("logger-read-{}", size_label(size)), "reads/s", Load::LoggerRead(size), spec)
        });
    }
    table
}

/// `10k`, `1m`: a collection size as a row name shows it.
fn size_label(size: u64) -> String {
    match size {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// A FerretDB of its own on `backend`, syncing commits as production would.
async fn store_server(backend: FerretBackend) -> anyhow::Result<MongoDb> {
    tokio::task::spawn_blocking(move || {
        MongoDb::builder()
            .kind(MongoKind::FerretDb)
            .ferret_backend(backend)
            .durable(true)
            .start()
    })
    .await?
    .with_context(|| format!("start FerretDB on {backend}"))
}

/// Runs one `store-*` row on a server of its own, its CPU metered.
async fn measure_store(
    scenario: &Scenario,
    options: &SuiteOptions,
    backend: FerretBackend,
    load: StoreLoad,
) -> anyhow::Result<Vec<Row>> {
    let server = store_server(backend).await?;
    let mut processes = vec![Tracked {
        label: "load generator".into(),
        pid: std::process::id(),
    }];
    if let Some(pid) = server.pid() {
        processes.push(Tracked {
            label: "ferretdb".into(),
            pid,
        });
    }
    if let Some(pid) = server
        .private_postgres()
        .and_then(|postgres| postgres.pid())
    {
        processes.push(Tracked {
            label: "postgresql".into(),
            pid,
        });
    }
    let url = server.url();
    let read_seed = options.read_sizes.first().copied().unwrap_or(10_000);
    // The seeding is not what the read row measures.
    let meter_from_start = !matches!(load, StoreLoad::Read);
    let meter = meter_from_start.then(|| CpuMeter::start(processes.clone()));
    let stats = match load {
        StoreLoad::Single => ceilings::store_single(&url, scenario.spec).await?,
        StoreLoad::Batched => ceilings::store_batched(&url, scenario.spec, options.batch).await?,
        StoreLoad::Read => ceilings::store_read(&url, scenario.spec, read_seed).await?,
    };
    let mut row = Row::from_stats(&scenario.name, scenario.unit, scenario.concurrency, &stats);
    if let Some(meter) = meter {
        row.attach_cpu(meter.finish(), stats.issued);
    }
    row.notes.extend(scenario.note.clone());
    tokio::task::spawn_blocking(move || drop(server)).await?;
    Ok(vec![row])
}

/// Seeds the logger's collection up to `size` entries, then measures
/// `logger-read` on it.
///
/// Everything else in the collection goes first: the scenarios before this
/// one leave hundreds of thousands of entries behind, and a name read on
/// FerretDB scans every entry its backend holds, so "10k" would otherwise
/// be whatever the run wrote before (the full run of 2026-12-07 read 0
/// entries at "10k": every read ran into its timeout).
async fn measure_logger_read(
    scenario: &Scenario,
    stack: &Stack,
    targets: &Targets,
    size: u64,
) -> anyhow::Result<Vec<Row>> {
    let collection = scenarios::logs_collection(targets).await?;
    let seeded = mongodb::bson::doc! { "name": { "$regex": "^bench-read-[0-9]" } };
    collection
        .delete_many(mongodb::bson::doc! { "name": { "$not": { "$regex": "^bench-read-[0-9]" } } })
        .await
        .context("clear the entries other scenarios left")?;
    let have = collection
        .count_documents(seeded)
        .await
        .context("count seeded entries")?;
    let seeding = Instant::now();
    ceilings::seed(&collection, have, size).await?;
    let seeded_in = seeding.elapsed();
    let meter = CpuMeter::start(tracked(stack));
    let (reads, writes) = scenarios::logger_read(targets, scenario.spec).await;
    let mut row = Row::from_stats(&scenario.name, scenario.unit, scenario.concurrency, &reads);
    row.attach_cpu(meter.finish(), reads.issued + writes.issued);
    row.notes.extend(scenario.note.clone());
    row.notes.push(format!(
        "writes meanwhile: {:.0}/s, p99 {:.1} ms, {} errors; seeding {} entries took {:.1} s",
        writes.throughput(),
        writes.percentile_ms(0.99),
        writes.errors,
        size.saturating_sub(have),
        seeded_in.as_secs_f64()
    ));
    row.notes.extend(
        writes
            .error_samples
            .iter()
            .map(|sample| format!("write error: {sample}")),
    );
    Ok(vec![row])
}

/// Runs one scenario with the CPU of every process involved metered (bcrypt's
/// ceiling runs in this process alone and is not).
async fn measure(
    scenario: &Scenario,
    options: &SuiteOptions,
    stack: &Stack,
    targets: &Targets,
) -> anyhow::Result<Vec<Row>> {
    let spec = scenario.spec;
    match scenario.load {
        Load::Store(backend, load) => return measure_store(scenario, options, backend, load).await,
        Load::LoggerRead(size) => return measure_logger_read(scenario, stack, targets, size).await,
        _ => {}
    }
    let mut processes = tracked(stack);
    // Kept until the measurement is over.
    let mut bare = None;
    if let Load::BareHttp = scenario.load {
        let server = BareServer::start()?;
        processes.push(Tracked {
            label: "bare axum".into(),
            pid: server.child.id(),
        });
        bare = Some(server);
    }
    let meter = CpuMeter::start(processes);
    let stats = match scenario.load {
        Load::BareHttp => {
            let broker = bare.as_ref().map_or(targets.broker, |server| server.addr);
            let bare_targets = Targets {
                broker,
                ..targets.clone()
            };
            scenarios::broker_hit(&bare_targets, spec).await
        }
        Load::StoreSingle => ceilings::store_single(&targets.mongodb_url, spec).await?,
        Load::StoreBatched => {
            ceilings::store_batched(&targets.mongodb_url, spec, options.batch).await?
        }
        Load::Bcrypt => {
            ceilings::bcrypt_verifies(options.bcrypt_cost, scenario.concurrency, spec).await?
        }
        Load::Amqp => ceilings::amqp_confirm_ack(&targets.amqp_url, spec).await?,
        Load::Store(..) | Load::LoggerRead(_) => {
            anyhow::bail!("{} has a measurement of its own", scenario.name)
        }
        Load::BrokerHit => scenarios::broker_hit(targets, spec).await,
        Load::LoggerDirect(door) => scenarios::logger_direct(targets, door, spec).await?,
        Load::BrokerLog(via) => scenarios::broker_log(targets, via, spec).await,
        Load::BrokerAuth => scenarios::broker_auth(targets, spec).await,
        Load::BrokerLogAmqp => {
            let outcome = scenarios::broker_log_amqp(targets, spec).await?;
            return Ok(amqp_rows(scenario, &outcome, meter.finish()));
        }
    };
    let mut row = Row::from_stats(&scenario.name, scenario.unit, scenario.concurrency, &stats);
    if !matches!(scenario.load, Load::Bcrypt) {
        row.attach_cpu(meter.finish(), stats.issued);
    }
    row.notes.extend(scenario.note.clone());
    Ok(vec![row])
}

/// `broker-log-amqp` (the broker's 202s) and `broker-log-amqp-e2e` (the
/// events' way to the logger, consumer included).
fn amqp_rows(
    scenario: &Scenario,
    outcome: &scenarios::AmqpOutcome,
    cpu: crate::cpu::CpuUsage,
) -> Vec<Row> {
    let mut row = Row::from_stats(
        &scenario.name,
        scenario.unit,
        scenario.concurrency,
        &outcome.accepted,
    );
    row.notes.push(format!(
        "accepted {} (202, warm-up included), stored {}, lost {}, duplicated {}; the logger took in the last one {:.2} s after the last 202",
        outcome.accepted_total,
        outcome.stored,
        outcome.lost,
        outcome.duplicated,
        outcome.drain_time.as_secs_f64()
    ));
    row.notes.push(format!(
        "end to end (202 -> taken in by the logger, readable once its batch is stored), {} sampled events: p50 {:.1} ms, p99 {:.1} ms, {} not seen",
        outcome.end_to_end.ok,
        outcome.end_to_end.percentile_ms(0.5),
        outcome.end_to_end.percentile_ms(0.99),
        outcome.end_to_end.errors
    ));
    row.notes.push(format!(
        "end to end, consumer included: {:.1} events/s (accepted events over the time until the last one was stored)",
        outcome.end_to_end_rate
    ));
    let mut sustained = Row::from_stats(
        "broker-log-amqp-e2e",
        "events/s",
        scenario.concurrency,
        &outcome.end_to_end,
    );
    sustained.throughput = outcome.end_to_end_rate;
    sustained.ok = outcome.stored;
    sustained.errors = outcome.lost + outcome.duplicated;
    sustained.notes.push(
        "latency: from the broker's 202 until the logger took the event in (sampled, from the documents' created_at)".into(),
    );
    sustained.attach_cpu(cpu, outcome.accepted_total);
    vec![row, sustained]
}

/// Runs the suite and returns the report: the stack's rows, then the cost
/// group's (stacks of their own, one at a time, after the main one stopped).
pub async fn run(options: SuiteOptions) -> anyhow::Result<Report> {
    let mut report = Report {
        machine: Machine::detect("unknown"),
        rows: Vec::new(),
    };
    let threads = report.machine.cpus;
    let main_wanted = options.wants("footprint")
        || table(&options, threads)
            .iter()
            .any(|scenario| options.wants(&scenario.name));
    if main_wanted {
        report.machine.store = run_main(&options, &mut report.rows, threads).await?;
    }
    if cost::wanted(&options) {
        let outcome = cost::run(&options).await?;
        report.rows.extend(outcome.rows);
        if !main_wanted && let Some(store) = outcome.store {
            report.machine.store = store;
        }
    }

    for (scenario, ceiling) in [
        ("broker-hit", "ceiling-http"),
        ("broker-log-rpc", "ceiling-store-single"),
        ("broker-log-grpc", "ceiling-store-single"),
        ("broker-log-http", "ceiling-store-single"),
        ("logger-direct-rpc", "ceiling-store-single"),
        ("logger-direct-grpc", "ceiling-store-single"),
        ("logger-direct-http", "ceiling-store-single"),
        ("broker-log-amqp", "ceiling-amqp"),
        ("broker-log-amqp-e2e", "ceiling-amqp"),
        ("broker-auth", "ceiling-bcrypt"),
    ] {
        report.compare(scenario, ceiling);
    }
    for (scenario, reference) in [
        ("broker-log-rpc", "logger-direct-rpc"),
        ("broker-log-grpc", "logger-direct-grpc"),
        ("broker-log-http", "broker-log-rpc"),
    ] {
        report.note_ratio(scenario, reference);
    }
    Ok(report)
}

/// The stack of every service: the ceilings, the paths and the footprint.
/// Returns the store it ran.
async fn run_main(
    options: &SuiteOptions,
    rows: &mut Vec<Row>,
    threads: usize,
) -> anyhow::Result<String> {
    eprintln!("bench: starting the stack (dependency servers and six services) on loopback…");
    let stack_started = Instant::now();
    let stack_opts = stack_options(options);
    let stack = tokio::task::spawn_blocking(move || Stack::start(stack_opts))
        .await?
        .context("start the stack")?;
    eprintln!(
        "bench: stack up in {:.1} s",
        stack_started.elapsed().as_secs_f64()
    );
    let targets = targets(&stack)?;
    let store = stack.mongodb_kind().unwrap_or("unknown").to_owned();
    let idle_rss = rss_notes(&stack, "idle after start");
    for scenario in table(options, threads) {
        if options.wants(&scenario.name) {
            eprintln!("bench: {}…", scenario.name);
            rows.extend(measure(&scenario, options, &stack, &targets).await?);
        }
    }

    if options.wants("footprint") {
        eprintln!("bench: footprint…");
        let mut notes = idle_rss;
        notes.extend(rss_notes(&stack, "after the load"));
        match lazy_start(options).await {
            Ok(lazy) => notes.extend(lazy),
            Err(err) => notes.push(format!("lazy start not measured: {err:#}")),
        }
        rows.push(Row::facts("footprint", notes));
    }
    tokio::task::spawn_blocking(move || stack.stop()).await?;
    Ok(store)
}
