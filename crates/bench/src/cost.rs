//! What observability costs (issue 16, item 6): `broker-hit` and
//! `broker-log` over RPC with metrics scraped and with traces exported,
//! against neither, in one run.
//!
//! A service reads its configuration once, at start, so each configuration
//! is a stack of its own (broker and logger, their dependency servers, fresh
//! data), started, measured and stopped one after the other: `off`,
//! `metrics`, `traced` (every request), `traced-<n>pct` for each
//! `--cost-sample-ratios`, and `off-again`. The second `off` shows how far
//! two identical stacks differ on this machine, so an overhead below that is
//! noise; overheads are against the mean of the two.
//!
//! What "off" can mean: every service records its metrics in-process on every
//! request (the edge counts each answer), and nothing switches that off, so
//! recording is in every row. `off` is the metrics door open and nobody
//! reading it, and no trace exporter; `metrics` adds a real Prometheus
//! scraping broker and logger every second; `traced` adds an OTLP/gRPC
//! exporter in both services, sending to an in-process
//! [`Collector`](switchboard_testkit::otlp::Collector), with `metrics`'
//! scraping still on (traces come on top of metrics in production too).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use switchboard_stack::{ServiceName, Stack};
use switchboard_testkit::otlp::Collector;

use crate::cpu::{CpuMeter, Tracked};
use crate::load::LoadSpec;
use crate::report::Row;
use crate::scenarios::{self, Targets};
use crate::suite::{self, SuiteOptions};

/// How often Prometheus scrapes in the `metrics` and `traced` stacks: more
/// often than a production setup (15 s is usual), so the cost shows.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// The services the cost stacks run: the two the measured paths pass.
const SERVICES: [ServiceName; 2] = [ServiceName::Broker, ServiceName::Logger];

/// The measured paths, by the part of the row name after `cost-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `POST /` on the broker: its edge alone.
    Hit,
    /// `POST /handle` log actions over RPC: broker, tarpc, logger, store.
    LogRpc,
}

impl Path {
    const ALL: [Path; 2] = [Path::Hit, Path::LogRpc];

    fn key(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::LogRpc => "log-rpc",
        }
    }

    fn row_name(self, config: &Config) -> String {
        format!("cost-{}-{}", self.key(), config.label)
    }
}

/// One stack's observability settings.
#[derive(Debug, Clone)]
struct Config {
    /// `off`, `metrics`, `traced`, `traced-10pct`, `off-again`.
    label: String,
    /// Prometheus scrapes broker and logger every [`SCRAPE_INTERVAL`].
    scraped: bool,
    /// `telemetry.sample_ratio`, with `telemetry.otlp_endpoint` set; `None`:
    /// traces off.
    sample_ratio: Option<f64>,
}

impl Config {
    fn is_off(&self) -> bool {
        !self.scraped && self.sample_ratio.is_none()
    }

    fn describe(&self) -> String {
        let metrics = if self.scraped {
            format!(
                "metrics scraped by Prometheus every {} s",
                SCRAPE_INTERVAL.as_secs()
            )
        } else {
            "metrics recorded, door not scraped".to_owned()
        };
        match self.sample_ratio {
            None => format!("{metrics}; traces off"),
            Some(ratio) => format!(
                "{metrics}; traces exported over OTLP/gRPC to the bench's collector, telemetry.sample_ratio = {ratio:?} at the broker (the logger follows its parent)"
            ),
        }
    }
}

fn configs(ratios: &[f64]) -> Vec<Config> {
    let config = |label: &str, scraped, sample_ratio| Config {
        label: label.to_owned(),
        scraped,
        sample_ratio,
    };
    let mut configs = vec![
        config("off", false, None),
        config("metrics", true, None),
        config("traced", true, Some(1.0)),
    ];
    for &ratio in ratios {
        let label = format!("traced-{}pct", percent_label(ratio));
        // Row names must be unique: a ratio given twice runs once.
        if configs.iter().all(|config| config.label != label) {
            configs.push(config(&label, true, Some(ratio)));
        }
    }
    configs.push(config("off-again", false, None));
    configs
}

/// `10`, `1`, `0.5`, `0`: a ratio as a percentage in a row name.
fn percent_label(ratio: f64) -> String {
    let text = format!("{:.3}", ratio * 100.0);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Whether any row of the cost group is selected.
pub(crate) fn wanted(options: &SuiteOptions) -> bool {
    configs(&options.cost_sample_ratios).iter().any(|config| {
        Path::ALL
            .iter()
            .any(|path| options.wants_cost(&path.row_name(config)))
    })
}

/// The batch span processor's settings the services run with: the SDK
/// reads them from the environment, which the services inherit from the
/// bench.
struct BatchSettings {
    schedule_delay: Duration,
    from_env: Vec<String>,
}

impl BatchSettings {
    /// The SDK's default `OTEL_BSP_SCHEDULE_DELAY`.
    const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(5_000);

    fn from_env() -> Self {
        let mut from_env: Vec<String> = std::env::vars()
            .filter(|(name, _)| name.starts_with("OTEL_BSP_"))
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        from_env.sort();
        let schedule_delay = std::env::var("OTEL_BSP_SCHEDULE_DELAY")
            .ok()
            .and_then(|ms| ms.trim().parse().ok())
            .map_or(Self::DEFAULT_SCHEDULE_DELAY, Duration::from_millis);
        Self {
            schedule_delay,
            from_env,
        }
    }

    fn note(&self) -> String {
        if self.from_env.is_empty() {
            "batch span processor: the SDK's defaults (OTEL_BSP_SCHEDULE_DELAY 5000 ms, OTEL_BSP_MAX_QUEUE_SIZE 2048, OTEL_BSP_MAX_EXPORT_BATCH_SIZE 512); set OTEL_BSP_* for the bench to change them".to_owned()
        } else {
            format!(
                "batch span processor: {} (from the bench's environment), SDK defaults otherwise",
                self.from_env.join(", ")
            )
        }
    }
}

/// One row of the group and what produced it.
struct Measured {
    path: Path,
    config: Config,
    row: Row,
    /// Spans the collector received per request sent (traced rows).
    spans_per_request: Option<f64>,
}

/// The cost rows, and the store the stacks ran.
pub(crate) struct Outcome {
    pub rows: Vec<Row>,
    pub store: Option<String>,
}

/// Runs every selected configuration, one stack after the other, and adds
/// the overheads and a summary row (`cost`).
pub(crate) async fn run(options: &SuiteOptions) -> anyhow::Result<Outcome> {
    // Counting only: a full run sends millions of spans.
    let collector = Collector::start_counting().context("start the OTLP collector")?;
    let batch = BatchSettings::from_env();
    let configs = configs(&options.cost_sample_ratios);
    let mut measured: Vec<Measured> = Vec::new();
    let mut store = None;
    for config in &configs {
        let paths: Vec<Path> = Path::ALL
            .into_iter()
            .filter(|path| options.wants_cost(&path.row_name(config)))
            .collect();
        if paths.is_empty() {
            continue;
        }
        eprintln!(
            "bench: cost, {} ({}): starting broker and logger…",
            config.label,
            config.describe()
        );
        match run_config(options, config, &paths, &collector, &batch).await {
            Ok((rows, kind)) => {
                store = store.or(kind);
                measured.extend(rows);
            }
            Err(err) => {
                measured.extend(paths.iter().map(|&path| Measured {
                    path,
                    config: config.clone(),
                    row: failed_row(path, config, &err),
                    spans_per_request: None,
                }));
            }
        }
    }
    let summary = compare(&mut measured, &batch);
    // The report groups each path's rows, in configuration order.
    let mut rows: Vec<Row> = Vec::with_capacity(measured.len() + 1);
    for path in Path::ALL {
        rows.extend(
            measured
                .iter()
                .filter(|m| m.path == path)
                .map(|m| m.row.clone()),
        );
    }
    if !rows.is_empty() {
        rows.push(Row::facts("cost", summary));
    }
    Ok(Outcome { rows, store })
}

/// A row for a configuration whose stack failed: counted as an error, so a
/// smoke run fails and a full run keeps its other rows.
fn failed_row(path: Path, config: &Config, err: &anyhow::Error) -> Row {
    let mut row = Row::facts(&path.row_name(config), vec![config.describe()]);
    row.unit = "req/s".to_owned();
    row.errors = 1;
    row.error_samples = vec![format!("not measured: {err:#}")];
    row
}

/// Starts the configuration's stack, measures `paths` on it, stops it.
async fn run_config(
    options: &SuiteOptions,
    config: &Config,
    paths: &[Path],
    collector: &Collector,
    batch: &BatchSettings,
) -> anyhow::Result<(Vec<Measured>, Option<String>)> {
    let mut stack_options = suite::stack_options(options)
        .services(SERVICES)
        .seed_user(false);
    if config.scraped {
        stack_options = stack_options
            .prometheus(true)
            .prometheus_scrape_interval(SCRAPE_INTERVAL);
    }
    if let Some(ratio) = config.sample_ratio {
        // After the --set overrides, so these win.
        for service in SERVICES {
            stack_options = stack_options
                .setting(service, "telemetry.otlp_endpoint", collector.endpoint())
                .setting(service, "telemetry.sample_ratio", format!("{ratio:?}"));
        }
    }
    let stack = tokio::task::spawn_blocking(move || Stack::start(stack_options))
        .await?
        .with_context(|| format!("start the {} stack", config.label))?;
    let measured = measure_config(&stack, options.spec, config, paths, collector, batch).await;
    let store = stack.mongodb_kind().map(str::to_owned);
    tokio::task::spawn_blocking(move || stack.stop()).await?;
    Ok((measured?, store))
}

async fn measure_config(
    stack: &Stack,
    spec: LoadSpec,
    config: &Config,
    paths: &[Path],
    collector: &Collector,
    batch: &BatchSettings,
) -> anyhow::Result<Vec<Measured>> {
    let targets = suite::targets(stack)?;
    let mut processes = suite::tracked(stack);
    if config.scraped {
        // Measuring before Prometheus scrapes would measure `off` again.
        tokio::task::block_in_place(|| {
            let prometheus = stack
                .prometheus()
                .ok_or_else(|| anyhow!("the stack runs no Prometheus"))?;
            for service in SERVICES {
                prometheus
                    .wait_until_up(&service.metrics_job(), Duration::from_secs(30))
                    .with_context(|| format!("Prometheus scraping {service:?}"))?;
            }
            if let Some(pid) = prometheus.pid() {
                processes.push(Tracked {
                    label: "prometheus".into(),
                    pid,
                });
            }
            anyhow::Ok(())
        })?;
    }
    let mut rows = Vec::new();
    for &path in paths {
        let name = path.row_name(config);
        eprintln!("bench: {name}…");
        let spans_before = collector.span_counts();
        let meter = CpuMeter::start(processes.clone());
        let started = Instant::now();
        let stats = run_path(path, &targets, spec).await;
        let ran = started.elapsed();
        let mut row = Row::from_stats(&name, "req/s", spec.concurrency, &stats);
        row.attach_cpu(meter.finish(), stats.issued);
        row.notes.push(config.describe());
        if config.scraped {
            row.notes.push(scrape_note(stack, ran));
        }
        let mut spans_per_request = None;
        if let Some(ratio) = config.sample_ratio {
            let spans = spans_received(collector, &spans_before, stats.issued, batch);
            row.notes.push(spans.note);
            if ratio == 1.0 && spans.total == 0 {
                row.errors += 1;
                row.error_samples.push(
                    "every request was to be traced, and the collector received no span".into(),
                );
            }
            spans_per_request = Some(spans.per_request);
        }
        rows.push(Measured {
            path,
            config: config.clone(),
            row,
            spans_per_request,
        });
    }
    Ok(rows)
}

async fn run_path(path: Path, targets: &Targets, spec: LoadSpec) -> crate::load::RunStats {
    match path {
        Path::Hit => scenarios::broker_hit(targets, spec).await,
        Path::LogRpc => scenarios::broker_log(targets, "rpc", spec).await,
    }
}

/// How often Prometheus scraped broker and logger while the path ran, and
/// how long a scrape took: proof that `metrics` was on.
fn scrape_note(stack: &Stack, ran: Duration) -> String {
    let window = ran.as_secs_f64().ceil().max(1.0) as u64;
    tokio::task::block_in_place(|| {
        let Some(prometheus) = stack.prometheus() else {
            return "Prometheus not running".to_owned();
        };
        let parts: Vec<String> = SERVICES
            .iter()
            .map(|service| {
                let job = service.metrics_job();
                let scrapes = prometheus
                    .query_value(&format!("sum_over_time(up{{job=\"{job}\"}}[{window}s])"));
                let seconds = prometheus.query_value(&format!(
                    "avg_over_time(scrape_duration_seconds{{job=\"{job}\"}}[{window}s])"
                ));
                match (scrapes, seconds) {
                    (Ok(Some(scrapes)), Ok(Some(seconds))) => {
                        format!("{job} {scrapes:.0} scrapes of {:.1} ms", seconds * 1000.0)
                    }
                    (Err(err), _) | (_, Err(err)) => format!("{job}: query failed: {err}"),
                    _ => format!("{job}: no scrape"),
                }
            })
            .collect();
        format!(
            "Prometheus in the {window} s the run took (warm-up included): {}",
            parts.join(", ")
        )
    })
}

/// What the collector received from one path.
struct Spans {
    total: u64,
    per_request: f64,
    note: String,
}

/// Waits until the services' exporters have sent what they queued (the
/// next path must not pay for this one's spans, and the count must be
/// whole), then says how many spans this path produced.
fn spans_received(
    collector: &Collector,
    before: &BTreeMap<String, u64>,
    issued: u64,
    batch: &BatchSettings,
) -> Spans {
    let quiet = batch.schedule_delay + Duration::from_secs(1);
    let settled = tokio::task::block_in_place(|| {
        collector.wait_until_quiet(quiet, quiet * 10 + Duration::from_secs(30))
    });
    let after = collector.span_counts();
    let per_service: Vec<String> = after
        .iter()
        .map(|(service, &count)| {
            let delta = count - before.get(service).copied().unwrap_or(0);
            (service, delta)
        })
        .filter(|(_, delta)| *delta > 0)
        .map(|(service, delta)| format!("{service} {delta}"))
        .collect();
    let received: u64 = after.values().sum::<u64>() - before.values().sum::<u64>();
    let per_request = if issued > 0 {
        received as f64 / issued as f64
    } else {
        0.0
    };
    let mut note = format!(
        "spans received by the collector: {received} ({}), {per_request:.3} per request sent (warm-up included; with every request traced, less than the spans one request makes means the exporters dropped some)",
        if per_service.is_empty() {
            "none".to_owned()
        } else {
            per_service.join(", ")
        }
    );
    if let Err(err) = settled {
        note.push_str(&format!("; still arriving when counted: {err}"));
    }
    Spans {
        total: received,
        per_request,
        note,
    }
}

/// Puts each row's overhead against `off` (the mean of its runs) in the
/// table's comparison column and its notes, and returns the summary.
fn compare(measured: &mut [Measured], batch: &BatchSettings) -> Vec<String> {
    let mut summary = vec![
        "overhead = how much lower throughput is than with everything off (negative: higher), off being the mean of the `off` and `off-again` stacks".to_owned(),
        "off: metrics are still recorded in-process on every request (the services have no switch for that, so it is in every row); off = the metrics door not scraped and no trace exporter".to_owned(),
        format!(
            "metrics: a real Prometheus on this machine scrapes broker and logger every {} s; traced: both services export over OTLP/gRPC to a collector in the bench's process (its CPU is the load generator's), with the scraping still on",
            SCRAPE_INTERVAL.as_secs()
        ),
        batch.note(),
    ];
    let mut overheads: BTreeMap<String, Vec<(Path, f64)>> = BTreeMap::new();
    for path in Path::ALL {
        let done = |m: &&Measured| m.path == path && m.row.ok > 0;
        // The sampler at work: spans per request against every request traced.
        let all_traced = measured
            .iter()
            .filter(done)
            .find(|m| m.config.sample_ratio == Some(1.0))
            .and_then(|m| m.spans_per_request)
            .filter(|&spans| spans > 0.0);
        if let Some(all_traced) = all_traced {
            for m in measured.iter_mut().filter(|m| m.path == path) {
                if let (Some(ratio), Some(spans)) = (m.config.sample_ratio, m.spans_per_request)
                    && ratio < 1.0
                {
                    m.row.notes.push(format!(
                        "requests traced: {:.1}% (its spans per request against {}-traced's {all_traced:.3})",
                        spans / all_traced * 100.0,
                        path.key()
                    ));
                }
            }
        }

        let offs: Vec<(f64, f64)> = measured
            .iter()
            .filter(done)
            .filter(|m| m.config.is_off())
            .map(|m| (m.row.throughput, m.row.p99_ms))
            .collect();
        if offs.is_empty() {
            continue;
        }
        let base_throughput = offs.iter().map(|o| o.0).sum::<f64>() / offs.len() as f64;
        let base_p99 = offs.iter().map(|o| o.1).sum::<f64>() / offs.len() as f64;
        if base_throughput <= 0.0 {
            continue;
        }
        if let [first, second] = offs[..] {
            summary.push(format!(
                "{}: the two off stacks ran {:.1} and {:.1} req/s, {:.1}% apart: smaller overheads are noise",
                path.key(),
                first.0,
                second.0,
                (first.0 - second.0).abs() / base_throughput * 100.0
            ));
        }
        let metrics = measured
            .iter()
            .filter(done)
            .find(|m| m.config.label == "metrics")
            .map(|m| m.row.throughput);
        for m in measured.iter_mut() {
            if m.path != path || m.row.ok == 0 {
                continue;
            }
            let row = &mut m.row;
            let overhead = (1.0 - row.throughput / base_throughput) * 100.0;
            row.versus = Some(format!("cost-{}-off (mean of {})", path.key(), offs.len()));
            row.ratio = Some(row.throughput / base_throughput);
            let p99 = if base_p99 > 0.0 {
                format!("{:+.1}%", (row.p99_ms / base_p99 - 1.0) * 100.0)
            } else {
                "n/a".to_owned()
            };
            let against = if m.config.is_off() {
                "this off run against the mean of the off runs"
            } else {
                "overhead vs off"
            };
            row.notes.push(format!(
                "{against} ({base_throughput:.1} req/s, p99 {base_p99:.2} ms): throughput {}, p99 {p99}",
                lower_or_higher(overhead)
            ));
            if m.config.sample_ratio.is_some()
                && let Some(metrics) = metrics.filter(|&m| m > 0.0)
            {
                row.notes.push(format!(
                    "tracing's own part (vs metrics, {metrics:.1} req/s): throughput {}",
                    lower_or_higher((1.0 - row.throughput / metrics) * 100.0)
                ));
            }
            if !m.config.is_off() {
                overheads
                    .entry(m.config.label.clone())
                    .or_default()
                    .push((path, overhead));
            }
        }
    }
    summary.extend(verdicts(measured, &overheads));
    summary
}

/// `3.0% lower` for an overhead of 3.0, `2.0% higher` for -2.0.
fn lower_or_higher(overhead: f64) -> String {
    if overhead >= 0.0 {
        format!("{overhead:.1}% lower")
    } else {
        format!("{:.1}% higher", -overhead)
    }
}

/// The targets against what was measured, and the sampling setting
/// that brings tracing under 5%.
fn verdicts(measured: &[Measured], overheads: &BTreeMap<String, Vec<(Path, f64)>>) -> Vec<String> {
    let describe = |label: &str| -> Option<(String, f64)> {
        let of_label = overheads.get(label)?;
        let worst = of_label
            .iter()
            .map(|(_, overhead)| *overhead)
            .fold(f64::NEG_INFINITY, f64::max);
        let parts: Vec<String> = of_label
            .iter()
            .map(|(path, overhead)| format!("{} {overhead:.1}%", path.key()))
            .collect();
        Some((parts.join(", "), worst))
    };
    let verdict = |worst: f64, target: f64| {
        if worst <= target {
            format!("target ≤ {target:.0}%: met")
        } else {
            format!("target ≤ {target:.0}%: missed")
        }
    };
    let mut lines = Vec::new();
    if let Some((parts, worst)) = describe("metrics") {
        lines.push(format!(
            "metrics scraped every {} s: overhead {parts} ({})",
            SCRAPE_INTERVAL.as_secs(),
            verdict(worst, 5.0)
        ));
    }
    if let Some((parts, worst)) = describe("traced") {
        lines.push(format!(
            "every request traced (with metrics): overhead {parts} ({})",
            verdict(worst, 15.0)
        ));
    }
    // Sampled configurations, the largest ratio first.
    let mut sampled: Vec<(f64, &str)> = Vec::new();
    for Measured { config, .. } in measured {
        if let Some(ratio) = config.sample_ratio
            && ratio < 1.0
            && !sampled.iter().any(|(_, label)| *label == config.label)
        {
            sampled.push((ratio, config.label.as_str()));
        }
    }
    sampled.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut under_five = None;
    for &(ratio, label) in &sampled {
        if let Some((parts, worst)) = describe(label) {
            lines.push(format!(
                "traced at telemetry.sample_ratio = {ratio:?} (with metrics): overhead {parts} ({})",
                verdict(worst, 5.0)
            ));
            if worst <= 5.0 && under_five.is_none() {
                under_five = Some(ratio);
            }
        }
    }
    if !sampled.is_empty() {
        lines.push(match under_five {
            Some(ratio) => format!(
                "sampling that keeps tracing (with metrics) under 5% on both paths: telemetry.sample_ratio = {ratio:?}, the largest ratio tested that does"
            ),
            None => {
                let mut line =
                    "no sample ratio tested keeps tracing (with metrics) under 5% on both paths"
                        .to_owned();
                if sampled.iter().any(|&(ratio, _)| ratio == 0.0) {
                    line.push_str("; ratio 0 exports nothing, so its row is what tracing costs before any span is sampled: work done for every request once an endpoint is set, which no ratio removes");
                }
                line
            }
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_labels_are_short() {
        assert_eq!(percent_label(0.1), "10");
        assert_eq!(percent_label(0.01), "1");
        assert_eq!(percent_label(0.005), "0.5");
        assert_eq!(percent_label(0.0), "0");
        assert_eq!(percent_label(1.0), "100");
    }

    #[test]
    fn configurations_start_and_end_with_off() {
        let labels: Vec<String> = configs(&[0.1, 0.0, 0.1])
            .into_iter()
            .map(|config| config.label)
            .collect();
        assert_eq!(
            labels,
            [
                "off",
                "metrics",
                "traced",
                "traced-10pct",
                "traced-0pct",
                "off-again"
            ]
        );
    }

    fn row(name: &str, throughput: f64) -> Row {
        let mut row = Row::facts(name, Vec::new());
        row.unit = "req/s".into();
        row.throughput = throughput;
        row.p99_ms = 10.0;
        row.ok = 100;
        row
    }

    #[test]
    fn overheads_are_against_the_mean_of_the_off_runs() {
        let configs = configs(&[0.1]);
        let throughputs = [1000.0, 970.0, 860.0, 960.0, 1000.0];
        let mut measured: Vec<Measured> = configs
            .iter()
            .zip(throughputs)
            .map(|(config, throughput)| Measured {
                path: Path::Hit,
                config: config.clone(),
                row: row(&Path::Hit.row_name(config), throughput),
                spans_per_request: config.sample_ratio.map(|ratio| 3.0 * ratio),
            })
            .collect();
        let summary = compare(&mut measured, &BatchSettings::from_env());
        let metrics = &measured[1].row;
        assert_eq!(metrics.ratio, Some(0.97));
        assert!(
            metrics.notes[0].contains("throughput 3.0% lower"),
            "{:?}",
            metrics.notes
        );
        let sampled = &measured[3].row;
        assert!(
            sampled.notes[0].starts_with("requests traced: 10.0%"),
            "{:?}",
            sampled.notes
        );
        let text = summary.join("\n");
        assert!(
            text.contains("metrics scraped every 1 s: overhead hit 3.0% (target ≤ 5%: met)"),
            "{text}"
        );
        assert!(
            text.contains(
                "every request traced (with metrics): overhead hit 14.0% (target ≤ 15%: met)"
            ),
            "{text}"
        );
        assert!(
            text.contains("telemetry.sample_ratio = 0.1, the largest ratio tested"),
            "{text}"
        );
        assert!(text.contains("0.0% apart"), "{text}");
    }
}
