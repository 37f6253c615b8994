//! The results table (text) and its JSON form, so runs can be compared.

use serde::Serialize;

use crate::cpu::CpuUsage;
use crate::load::RunStats;

/// One measured line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    /// `req/s`, `docs/s`, `verifies/s`, `msgs/s`…
    pub unit: String,
    pub concurrency: usize,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub ok: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_samples: Vec<String>,
    /// The ceiling this row is compared with, and the ratio to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Free-form facts (lost/duplicated counts, RSS, start times…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Cores each process kept busy while the scenario ran (warm-up included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUsage>,
}

impl Row {
    pub fn from_stats(scenario: &str, unit: &str, concurrency: usize, stats: &RunStats) -> Self {
        Self {
            scenario: scenario.to_owned(),
            unit: unit.to_owned(),
            concurrency,
            throughput: stats.throughput(),
            p50_ms: stats.percentile_ms(0.5),
            p99_ms: stats.percentile_ms(0.99),
            p999_ms: stats.percentile_ms(0.999),
            ok: stats.ok,
            errors: stats.errors,
            error_samples: stats.error_samples.clone(),
            versus: None,
            ratio: None,
            notes: Vec::new(),
            cpu: None,
        }
    }

    /// Records where the CPU went while `operations` (warm-up included) were
    /// done, and what that costs per operation.
    pub fn attach_cpu(&mut self, usage: CpuUsage, operations: u64) {
        self.notes.push(usage.note());
        if let (Some(us), Some(rate)) = (
            usage.machine_us_per(operations),
            usage.cpu_bound_rate(operations),
        ) {
            self.notes.push(format!(
                "machine CPU per operation: {us:.0} µs; at that cost {} cores cap this path at {rate:.0} {}",
                usage.cpus, self.unit
            ));
        }
        self.cpu = Some(usage);
    }

    /// A row that only carries facts (footprint).
    pub fn facts(scenario: &str, notes: Vec<String>) -> Self {
        Self {
            scenario: scenario.to_owned(),
            unit: String::new(),
            concurrency: 0,
            throughput: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            ok: 0,
            errors: 0,
            error_samples: Vec::new(),
            versus: None,
            ratio: None,
            notes,
            cpu: None,
        }
    }
}

/// Everything one run printed, plus what it ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub store: String,
    pub note: String,
}

impl Machine {
    pub fn detect(store: &str) -> Self {
        let cpus = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1);
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split(':').nth(1))
                    .map(|model| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            cpus,
            cpu_model,
            store: store.to_owned(),
            note: format!(
                "load generator, services and dependency servers share these {cpus} CPUs; every number is for the whole machine under that sharing"
            ),
        }
    }
}

impl Report {
    /// Sets `ratio` of row `scenario` against the throughput of row `ceiling`.
    pub fn compare(&mut self, scenario: &str, ceiling: &str) {
        let Some(reference) = self
            .rows
            .iter()
            .find(|row| row.scenario == ceiling)
            .map(|row| row.throughput)
        else {
            return;
        };
        if let Some(row) = self.rows.iter_mut().find(|row| row.scenario == scenario) {
            row.versus = Some(ceiling.to_owned());
            row.ratio = (reference > 0.0).then(|| row.throughput / reference);
        }
    }

    /// Adds "N% of <reference>" to the notes of row `scenario` (a second comparison).
    pub fn note_ratio(&mut self, scenario: &str, reference: &str) {
        let Some(base) = self
            .rows
            .iter()
            .find(|row| row.scenario == reference)
            .map(|row| row.throughput)
        else {
            return;
        };
        if let Some(row) = self.rows.iter_mut().find(|row| row.scenario == scenario)
            && base > 0.0
        {
            let percent = row.throughput / base * 100.0;
            row.notes.push(format!("{percent:.0}% of {reference}"));
        }
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "machine: {} CPUs ({}); store: {}\nnote: {}\n\n",
            self.machine.cpus, self.machine.cpu_model, self.machine.store, self.machine.note
        ));
        out.push_str(&format!(
            "{:<28} {:>5} {:>12} {:<11} {:>9} {:>9} {:>9} {:>7}  {}\n",
            "scenario",
            "conc",
            "throughput",
            "unit",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "vs ceiling"
        ));
        out.push_str(&format!("{}\n", "-".repeat(118)));
        for row in &self.rows {
            if row.unit.is_empty() {
                continue;
            }
            let versus = match (&row.versus, row.ratio) {
                (Some(ceiling), Some(ratio)) => format!("{:>5.0}% of {ceiling}", ratio * 100.0),
                _ => String::new(),
            };
            out.push_str(&format!(
                "{:<28} {:>5} {:>12.1} {:<11} {:>9.2} {:>9.2} {:>9.2} {:>7}  {}\n",
                row.scenario,
                row.concurrency,
                row.throughput,
                row.unit,
                row.p50_ms,
                row.p99_ms,
                row.p999_ms,
                row.errors,
                versus
            ));
        }
        for row in &self.rows {
            if !row.notes.is_empty() || !row.error_samples.is_empty() {
                out.push_str(&format!("\n{}:\n", row.scenario));
                for note in &row.notes {
                    out.push_str(&format!("  {note}\n"));
                }
                for sample in &row.error_samples {
                    out.push_str(&format!("  error: {sample}\n"));
                }
            }
        }
        out
    }
}
