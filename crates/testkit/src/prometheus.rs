//! Prometheus: scrapes the `/metrics` of the targets it is given into a
//! time-series database of its own, so a test can prove a service really
//! was scraped (`up{job="…"} == 1`) and read what it exposed through PromQL.
//!
//! The configuration (`prometheus.yml`) is written into the server's folder
//! at each start from the builder's jobs; the database is `data/` beside it.
//! Ready means `GET /-/ready` answers 200 and `GET /api/v1/targets` lists
//! every configured target (Prometheus applies its configuration to the
//! scrape manager a moment after it says it is ready). Prometheus 3 refuses a scrape
//! whose `Content-Type` it does not know unless the job names a fallback
//! protocol, which Prometheus 2 (Debian 12 ships 2.42) does not know: the
//! fallback (`PrometheusText0.0.4`) is written only for a Prometheus 3 or
//! later, as `prometheus --version` says.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;

use crate::binary::find_binary;
use crate::error::{Error, Result};
use crate::net::{http_request, port_is_free, url_encode};
use crate::process::{Startup, Supervised, log_tail, looks_like_port_clash, startup_error};
use crate::workdir::Workdir;
use crate::{ServerOptions, try_free_port};

const SERVER: &str = "prometheus";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Writes the head block and closes the database; a few hundred ms here.
const STOP_GRACE: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 3;
const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(5);
/// Prometheus' own default `scrape_timeout`; never longer than the interval.
const MAX_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the `wait_*` helpers ask again.
const POLL: Duration = Duration::from_millis(100);

/// One `scrape_configs` entry: a job name (Prometheus' `job` label) and the
/// `host:port` addresses whose `/metrics` it scrapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeJob {
    pub name: String,
    pub targets: Vec<String>,
}

/// One sample of an instant query: its labels (`__name__` included when the
/// result keeps it) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One active target as `GET /api/v1/targets` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// The `job` label.
    pub job: String,
    /// The `instance` label (`host:port`).
    pub instance: String,
    /// `http://host:port/metrics`.
    pub scrape_url: String,
    /// `up`, `down`, or `unknown` before the first scrape.
    pub health: String,
    /// Why the last scrape failed; empty when it succeeded.
    pub last_error: String,
}

/// A Prometheus server on 127.0.0.1 scraping the configured jobs. Dropping
/// it stops the server (and removes a temporary folder).
#[derive(Debug)]
pub struct Prometheus {
    workdir: Workdir,
    port: u16,
    binary: PathBuf,
    major_version: Option<u32>,
    jobs: Vec<ScrapeJob>,
    self_job: Option<String>,
    scrape_interval: Duration,
    startup_timeout: Duration,
    process: Option<Supervised>,
}

/// Options for [`Prometheus`]; see [`Prometheus::builder`].
#[derive(Debug, Clone)]
pub struct PrometheusBuilder {
    dir: Option<PathBuf>,
    port: Option<u16>,
    jobs: Vec<ScrapeJob>,
    self_job: Option<String>,
    scrape_interval: Duration,
    startup_timeout: Option<Duration>,
}

impl Default for PrometheusBuilder {
    fn default() -> Self {
        Self {
            dir: None,
            port: None,
            jobs: Vec::new(),
            self_job: None,
            scrape_interval: DEFAULT_SCRAPE_INTERVAL,
            startup_timeout: None,
        }
    }
}

impl PrometheusBuilder {
    /// Persistent folder (configuration, `data/`, log); the data survive a
    /// restart. Default: a temporary folder.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Fixed port of the web UI and API. Default: a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Scrapes `targets` (`host:port`, e.g. a `SocketAddr`'s text) under the
    /// job name `name`. Repeatable; jobs keep their order.
    pub fn job<T: ToString>(
        mut self,
        name: impl Into<String>,
        targets: impl IntoIterator<Item = T>,
    ) -> Self {
        self.jobs.push(ScrapeJob {
            name: name.into(),
            targets: targets.into_iter().map(|t| t.to_string()).collect(),
        });
        self
    }

    /// Also scrapes Prometheus' own `/metrics` under the job name `name`.
    pub fn scrape_itself(mut self, name: impl Into<String>) -> Self {
        self.self_job = Some(name.into());
        self
    }

    /// How often every target is scraped. Default 5 s. The scrape timeout is
    /// the interval, at most 10 s.
    pub fn scrape_interval(mut self, interval: Duration) -> Self {
        self.scrape_interval = interval;
        self
    }

    /// How long to wait for `/-/ready`. Default 60 s (a persistent database
    /// replays its write-ahead log first).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = Some(timeout);
        self
    }

    /// Starts the server.
    pub fn start(self) -> Result<Prometheus> {
        if self.scrape_interval < Duration::from_millis(1) {
            return Err(Error::Config(format!(
                "prometheus: scrape interval {:?} is below 1 ms",
                self.scrape_interval
            )));
        }
        let binary = find_binary(SERVER)?;
        let workdir = Workdir::create(SERVER, self.dir.as_deref(), false)?;
        if let Some(port) = self.port
            && !port_is_free(port)
        {
            return Err(Error::PortInUse {
                server: SERVER.to_owned(),
                port,
            });
        }
        let major_version = major_version(&binary);
        let mut server = Prometheus {
            workdir,
            port: 0,
            binary,
            major_version,
            jobs: self.jobs,
            self_job: self.self_job,
            scrape_interval: self.scrape_interval,
            startup_timeout: self.startup_timeout.unwrap_or(DEFAULT_TIMEOUT),
            process: None,
        };
        let may_retry = server.workdir.is_temporary() && self.port.is_none();
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = match self.port {
                Some(port) => port,
                None => try_free_port()?,
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(error) if may_retry && attempt < PORT_ATTEMPTS && server.lost_port_race() => {
                    tracing::debug!(%error, "prometheus lost a port race, retrying with a new port");
                    let _ = std::fs::remove_file(server.log_path());
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl Prometheus {
    /// Starts a server of its own in a temporary folder on a free port,
    /// scraping nothing (add jobs with [`Prometheus::builder`]).
    pub fn start() -> Result<Prometheus> {
        Self::builder().start()
    }

    /// Options: jobs, folder, port, scrape interval, start-up timeout.
    pub fn builder() -> PrometheusBuilder {
        PrometheusBuilder::default()
    }

    /// Starts with the common [`ServerOptions`] (folder and port) and `jobs`.
    pub fn start_with(options: &ServerOptions, jobs: &[ScrapeJob]) -> Result<Prometheus> {
        let mut builder = Self::builder();
        builder.dir = options.dir.clone();
        builder.port = options.port;
        builder.jobs = jobs.to_vec();
        builder.start()
    }

    /// The port of the web UI and the HTTP API on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`: the web UI, `/api/v1/…`, `/-/ready`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The jobs it scrapes (without the one for itself).
    pub fn jobs(&self) -> &[ScrapeJob] {
        &self.jobs
    }

    /// The major version `prometheus --version` gave, if it said.
    pub fn major_version(&self) -> Option<u32> {
        self.major_version
    }

    /// The server's folder (configuration, `data/`, log).
    pub fn dir(&self) -> &Path {
        self.workdir.path()
    }

    /// The configuration written at the last start.
    pub fn config_path(&self) -> PathBuf {
        self.workdir.path().join("prometheus.yml")
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.workdir.path().join("prometheus.log")
    }

    /// The server's process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    /// Whether the server is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// An instant query (`GET /api/v1/query`): every sample of a vector
    /// result, or the one value of a scalar result.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql)))?;
        let result = &data["result"];
        match data["resultType"].as_str() {
            Some("vector") => result
                .as_array()
                .map(|samples| samples.iter().map(sample).collect())
                .unwrap_or_else(|| Ok(Vec::new())),
            Some("scalar") => Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: point_value(result)?,
            }]),
            other => Err(protocol(format!(
                "query {promql:?} gave a result of type {other:?}, not a vector or scalar"
            ))),
        }
    }

    /// The value of an instant query that yields one sample (or a scalar);
    /// `None` when it yields none. More than one sample is an error.
    pub fn query_value(&self, promql: &str) -> Result<Option<f64>> {
        let samples = self.query(promql)?;
        match samples.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.value)),
            many => Err(protocol(format!(
                "query {promql:?} gave {} samples, expected at most one: {many:?}",
                many.len()
            ))),
        }
    }

    /// Polls [`Prometheus::query_value`] until its value satisfies `wanted`,
    /// and returns that value. Scrapes happen on Prometheus' schedule, so
    /// tests wait for them instead of sleeping.
    pub fn wait_for_value(
        &self,
        promql: &str,
        wanted: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.query_value(promql)?;
            if let Some(value) = value
                && wanted(value)
            {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "{promql} to have the wanted value (last: {value:?}); targets: {}",
                        self.describe_targets()
                    ),
                    waited: timeout,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until every target of `job` was scraped successfully:
    /// `min(up{job="<job>"}) == 1`.
    pub fn wait_until_up(&self, job: &str, timeout: Duration) -> Result<()> {
        let promql = format!("min(up{{job=\"{}\"}})", escape_label_value(job));
        self.wait_for_value(&promql, |up| up == 1.0, timeout)
            .map(drop)
    }

    /// The active targets (`GET /api/v1/targets?state=active`), in the
    /// order Prometheus lists them.
    pub fn targets(&self) -> Result<Vec<ScrapeTarget>> {
        let data = self.api("/api/v1/targets?state=active")?;
        let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        Ok(data["activeTargets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|target| ScrapeTarget {
                job: text(&target["labels"]["job"]),
                instance: text(&target["labels"]["instance"]),
                scrape_url: text(&target["scrapeUrl"]),
                health: text(&target["health"]),
                last_error: text(&target["lastError"]),
            })
            .collect())
    }

    /// Stops the server (SIGTERM: it closes its database); the folder and
    /// port are kept for [`Prometheus::start_again`]. No-op when stopped.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Signal::TERM, STOP_GRACE);
        }
    }

    /// Starts a stopped server again on the same port with the same
    /// database. No-op when running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        self.launch()
    }

    /// `GET path` of the HTTP API; its `data` on `"status": "success"`.
    fn api(&self, path: &str) -> Result<Value> {
        if self.process.is_none() {
            return Err(Error::Stopped {
                server: SERVER.to_owned(),
            });
        }
        let response = http_request("GET", self.port, path)
            .map_err(|e| Error::io(format!("GET {}{path}", self.url()), e))?;
        let body: Value = serde_json::from_str(&response.body).map_err(|e| {
            protocol(format!(
                "GET {path} answered {} without JSON ({e}): {:.200}",
                response.status, response.body
            ))
        })?;
        if response.status != 200 || body["status"] != "success" {
            return Err(protocol(format!(
                "GET {path} answered {}: {} {}",
                response.status,
                body["errorType"].as_str().unwrap_or_default(),
                body["error"].as_str().unwrap_or(&response.body)
            )));
        }
        Ok(body["data"].clone())
    }

    /// `job instance health (last error)` of every target, for messages.
    fn describe_targets(&self) -> String {
        match self.targets() {
            Ok(targets) if targets.is_empty() => "none".to_owned(),
            Ok(targets) => targets
                .iter()
                .map(|t| {
                    let mut line = format!("{} {} {}", t.job, t.instance, t.health);
                    if !t.last_error.is_empty() {
                        let _ = write!(line, " ({})", t.last_error);
                    }
                    line
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(error) => format!("unknown ({error})"),
        }
    }

    /// Every job of the configuration, the one for itself first.
    fn all_jobs(&self) -> Vec<ScrapeJob> {
        let mut jobs: Vec<ScrapeJob> = Vec::new();
        if let Some(name) = &self.self_job {
            jobs.push(ScrapeJob {
                name: name.clone(),
                targets: vec![format!("127.0.0.1:{}", self.port)],
            });
        }
        jobs.extend(self.jobs.iter().cloned());
        jobs
    }

    /// `prometheus.yml` for the current port.
    fn config(&self) -> String {
        let interval = self.scrape_interval;
        render_config(
            interval,
            interval.min(MAX_SCRAPE_TIMEOUT),
            &self.all_jobs(),
            self.major_version.is_some_and(|major| major >= 3),
        )
    }

    fn launch(&mut self) -> Result<()> {
        let started = Instant::now();
        let config = self.config_path();
        std::fs::write(&config, self.config())
            .map_err(|e| Error::io(format!("writing {}", config.display()), e))?;
        let data = self.workdir.path().join("data");
        let mut command = Command::new(&self.binary);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .current_dir(self.workdir.path());
        let log = self.log_path();
        let mut process = Supervised::spawn(SERVER, command, &log, self.workdir.removable())?;
        let port = self.port;
        let expected = self
            .all_jobs()
            .iter()
            .flat_map(|job| job.targets.iter().map(move |target| (&job.name, target)))
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let startup = process.wait_ready(self.startup_timeout, Duration::from_millis(50), || {
            http_request("GET", port, "/-/ready").is_ok_and(|r| r.status == 200)
                && active_targets(port).is_some_and(|count| count >= expected)
        });
        match startup {
            Startup::Ready => {
                tracing::debug!(port, elapsed = ?started.elapsed(), "prometheus ready");
                self.process = Some(process);
                Ok(())
            }
            failed => {
                process.kill_now();
                Err(startup_error(SERVER, failed, self.startup_timeout, &[&log]))
            }
        }
    }

    fn lost_port_race(&self) -> bool {
        looks_like_port_clash(&log_tail(&self.log_path(), 20))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How many active targets `GET /api/v1/targets` lists; `None` on any failure.
fn active_targets(port: u16) -> Option<usize> {
    let response = http_request("GET", port, "/api/v1/targets?state=active").ok()?;
    let body: Value = serde_json::from_str(&response.body).ok()?;
    body["data"]["activeTargets"].as_array().map(Vec::len)
}

fn protocol(detail: String) -> Error {
    Error::Protocol {
        server: SERVER.to_owned(),
        detail,
    }
}

/// `{"metric": {...}, "value": [time, "1"]}` of a vector result.
fn sample(item: &Value) -> Result<Sample> {
    let labels = item["metric"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Sample {
        labels,
        value: point_value(&item["value"])?,
    })
}

/// The value of a `[time, "value"]` pair (`"NaN"`, `"+Inf"` included).
fn point_value(point: &Value) -> Result<f64> {
    let text = point[1]
        .as_str()
        .ok_or_else(|| protocol(format!("not a [time, value] pair: {point}")))?;
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse()
            .map_err(|_| protocol(format!("not a number: {text:?}"))),
    }
}

/// `prometheus.yml`: the global scrape interval and timeout, then one
/// `static_configs` job each. `fallback` adds Prometheus 3's
/// `fallback_scrape_protocol` (Prometheus 2 refuses the key).
fn render_config(
    interval: Duration,
    timeout: Duration,
    jobs: &[ScrapeJob],
    fallback: bool,
) -> String {
    let mut yaml = String::from(
        "# Written by switchboard-testkit at every start of this Prometheus; edits are lost.\n",
    );
    let _ = writeln!(yaml, "global:");
    let _ = writeln!(yaml, "  scrape_interval: {}", duration(interval));
    let _ = writeln!(yaml, "  scrape_timeout: {}", duration(timeout));
    if jobs.is_empty() {
        yaml.push_str("scrape_configs: []\n");
        return yaml;
    }
    yaml.push_str("scrape_configs:\n");
    for job in jobs {
        let _ = writeln!(yaml, "  - job_name: {}", quoted(&job.name));
        if fallback {
            yaml.push_str("    fallback_scrape_protocol: PrometheusText0.0.4\n");
        }
        let targets: Vec<String> = job.targets.iter().map(|t| quoted(t)).collect();
        yaml.push_str("    static_configs:\n");
        let _ = writeln!(yaml, "      - targets: [{}]", targets.join(", "));
    }
    yaml
}

/// A Prometheus duration: `5s`, or `250ms` when not whole seconds.
fn duration(value: Duration) -> String {
    if value.subsec_millis() == 0 {
        format!("{}s", value.as_secs())
    } else {
        format!("{}ms", value.as_millis())
    }
}

/// A double-quoted YAML scalar.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A PromQL label value between double quotes.
fn escape_label_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The major version from `prometheus --version` (`prometheus, version
/// 2.42.0+ds (branch: …)`); `None` if it says nothing usable.
fn major_version(binary: &Path) -> Option<u32> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_major_version(&text)
}

fn parse_major_version(text: &str) -> Option<u32> {
    let rest = text.split("version ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_debian_and_nix_builds_are_read() {
        assert_eq!(
            parse_major_version(
                "prometheus, version 2.42.0+ds (branch: debian/sid, revision: 2.42.0+ds-5+b5)\n  build user: team+pkg-go@tracker.debian.org"
            ),
            Some(2)
        );
        assert_eq!(
            parse_major_version("prometheus, version 3.14.0 (branch: unknown, revision: unknown)"),
            Some(3)
        );
        assert_eq!(parse_major_version("usage: prometheus [<flags>]"), None);
    }

    #[test]
    fn the_configuration_lists_every_job_and_the_fallback_only_when_asked() {
        let jobs = [
            ScrapeJob {
                name: "switchboard-broker".to_owned(),
                targets: vec!["127.0.0.1:9180".to_owned()],
            },
            ScrapeJob {
                name: "two \"quoted\"".to_owned(),
                targets: vec!["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()],
            },
        ];
        let yaml = render_config(Duration::from_secs(5), Duration::from_secs(5), &jobs, false);
        assert_eq!(
            yaml.lines().skip(1).collect::<Vec<_>>(),
            vec![
                "global:",
                "  scrape_interval: 5s",
                "  scrape_timeout: 5s",
                "scrape_configs:",
                "  - job_name: \"switchboard-broker\"",
                "    static_configs:",
                "      - targets: [\"127.0.0.1:9180\"]",
                "  - job_name: \"two \\\"quoted\\\"\"",
                "    static_configs:",
                "      - targets: [\"127.0.0.1:1\", \"127.0.0.1:2\"]",
            ]
        );
        let v3 = render_config(
            Duration::from_millis(1500),
            Duration::from_millis(1500),
            &jobs[..1],
            true,
        );
        assert!(v3.contains("  scrape_interval: 1500ms\n"), "{v3}");
        assert!(
            v3.contains("    fallback_scrape_protocol: PrometheusText0.0.4\n"),
            "{v3}"
        );
        assert!(
            render_config(Duration::from_secs(1), Duration::from_secs(1), &[], true)
                .ends_with("scrape_configs: []\n")
        );
    }

    #[test]
    fn query_results_are_read_with_special_values() {
        let item: Value = serde_json::json!({
            "metric": {"__name__": "up", "job": "x", "instance": "127.0.0.1:1"},
            "value": [1_700_000_000.5, "1"]
        });
        let parsed = sample(&item).expect("sample");
        assert_eq!(parsed.value, 1.0);
        assert_eq!(parsed.labels["job"], "x");
        assert!(
            point_value(&serde_json::json!([0, "NaN"]))
                .expect("NaN")
                .is_nan()
        );
        assert_eq!(
            point_value(&serde_json::json!([0, "+Inf"])).expect("inf"),
            f64::INFINITY
        );
        assert!(point_value(&serde_json::json!([0, 1])).is_err());
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
    }
}
