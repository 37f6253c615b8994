//! Where the CPU went during a scenario: how many cores each process of the
//! system (the services, the dependency servers, the load generator) kept busy,
//! read from `/proc`, next to how busy the whole machine was.
//!
//! Throughput alone cannot say why a path stops where it does. When the
//! machine's cores are all busy, the path is bound by CPU, and the CPU time per
//! request tells what one more request costs and who pays for it; when they are
//! not, the limit is elsewhere (a lock, a fsync, a round trip).

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

/// A process to account for, with every descendant that is not tracked itself
/// (RabbitMQ's wrapper script and its `beam.smp`, PostgreSQL's backends).
#[derive(Debug, Clone)]
pub struct Tracked {
    pub label: String,
    pub pid: u32,
}

/// CPU ticks of every process and of the machine at one moment.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    /// (busy, total) jiffies of all CPUs, from the `cpu` line of `/proc/stat`.
    machine: (u64, u64),
    /// Ticks (user + system) charged to each tracked label.
    per_label: Vec<(String, u64)>,
}

/// What one scenario cost, in cores kept busy (1.0 = one CPU all the time).
#[derive(Debug, Clone, Serialize)]
pub struct CpuUsage {
    pub wall_seconds: f64,
    pub cpus: usize,
    /// Cores the whole machine kept busy (every process, the kernel included).
    pub machine_cores: f64,
    /// Cores each tracked process (and its untracked descendants) kept busy.
    pub per_process_cores: Vec<(String, f64)>,
}

impl CpuUsage {
    /// One line for the report, e.g.
    /// `CPU (cores busy of 2): machine 1.97; broker 0.41, logger 0.30, …`.
    pub fn note(&self) -> String {
        let mut busy: Vec<&(String, f64)> = self
            .per_process_cores
            .iter()
            .filter(|(_, cores)| *cores >= 0.005)
            .collect();
        busy.sort_by(|a, b| b.1.total_cmp(&a.1));
        let parts: Vec<String> = busy
            .iter()
            .map(|(label, cores)| format!("{label} {cores:.2}"))
            .collect();
        format!(
            "CPU (cores busy of {}): machine {:.2}; {}",
            self.cpus,
            self.machine_cores,
            parts.join(", ")
        )
    }

    /// CPU time of the whole machine per operation, in microseconds, when
    /// `operations` were done during the measured interval.
    pub fn machine_us_per(&self, operations: u64) -> Option<f64> {
        (operations > 0).then(|| self.machine_cores * self.wall_seconds * 1e6 / operations as f64)
    }

    /// The highest rate the machine could sustain at this CPU cost per
    /// operation if every core did nothing else.
    pub fn cpu_bound_rate(&self, operations: u64) -> Option<f64> {
        self.machine_us_per(operations)
            .filter(|us| *us > 0.0)
            .map(|us| self.cpus as f64 * 1e6 / us)
    }
}

/// Reads the ticks of every process now and charges them to `tracked`.
pub fn snapshot(tracked: &[Tracked]) -> CpuSnapshot {
    let processes = read_processes();
    let tracked_pids: HashMap<u32, &str> = tracked
        .iter()
        .map(|entry| (entry.pid, entry.label.as_str()))
        .collect();
    let mut per_label: HashMap<&str, u64> = tracked
        .iter()
        .map(|entry| (entry.label.as_str(), 0))
        .collect();
    for (&pid, process) in &processes {
        if let Some(label) = owner(pid, &processes, &tracked_pids) {
            *per_label.entry(label).or_default() += process.ticks;
        }
    }
    CpuSnapshot {
        at: Instant::now(),
        machine: read_machine().unwrap_or((0, 0)),
        per_label: tracked
            .iter()
            .map(|entry| {
                let ticks = per_label.get(entry.label.as_str()).copied().unwrap_or(0);
                (entry.label.clone(), ticks)
            })
            .collect(),
    }
}

/// The usage between two snapshots of the same tracked set.
pub fn usage(before: &CpuSnapshot, after: &CpuSnapshot) -> CpuUsage {
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let cpus = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    let ticks_per_second = rustix::param::clock_ticks_per_second() as f64;
    let (busy, total) = (
        after.machine.0.saturating_sub(before.machine.0),
        after.machine.1.saturating_sub(before.machine.1),
    );
    let machine_cores = if total > 0 {
        busy as f64 / total as f64 * cpus as f64
    } else {
        0.0
    };
    let per_process_cores = after
        .per_label
        .iter()
        .map(|(label, ticks_after)| {
            let ticks_before = before
                .per_label
                .iter()
                .find(|(other, _)| other == label)
                .map_or(0, |(_, ticks)| *ticks);
            let ticks = ticks_after.saturating_sub(ticks_before) as f64;
            let cores = if wall > 0.0 {
                ticks / ticks_per_second / wall
            } else {
                0.0
            };
            (label.clone(), cores)
        })
        .collect();
    CpuUsage {
        wall_seconds: wall,
        cpus,
        machine_cores,
        per_process_cores,
    }
}

/// Measures from now until [`CpuMeter::finish`].
pub struct CpuMeter {
    tracked: Vec<Tracked>,
    before: CpuSnapshot,
}

impl CpuMeter {
    pub fn start(tracked: Vec<Tracked>) -> Self {
        let before = snapshot(&tracked);
        Self { tracked, before }
    }

    pub fn finish(self) -> CpuUsage {
        usage(&self.before, &snapshot(&self.tracked))
    }
}

struct Process {
    parent: u32,
    ticks: u64,
}

/// The tracked label a process is charged to: its own, else its nearest
/// tracked ancestor's; `None` for processes outside the tracked trees.
fn owner<'a>(
    pid: u32,
    processes: &HashMap<u32, Process>,
    tracked: &HashMap<u32, &'a str>,
) -> Option<&'a str> {
    let mut current = pid;
    // The chain is finite (it ends at PID 1); the bound guards against a
    // parent table read while processes were being reparented.
    for _ in 0..64 {
        if let Some(label) = tracked.get(&current) {
            return Some(label);
        }
        current = processes.get(&current)?.parent;
        if current == 0 {
            return None;
        }
    }
    None
}

fn read_processes() -> HashMap<u32, Process> {
    let mut processes = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return processes;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read: skip it.
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some(process) = parse_stat(&stat)
        {
            processes.insert(pid, process);
        }
    }
    processes
}

/// Parent and user + system ticks from `/proc/<pid>/stat`. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_stat(stat: &str) -> Option<Process> {
    let (_, rest) = stat.rsplit_once(')')?;
    // rest: " S ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …"
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let parent = fields.get(1)?.parse().ok()?;
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(Process {
        parent,
        ticks: user + system,
    })
}

/// (busy, total) jiffies over all CPUs.
fn read_machine() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine(stat.lines().next()?)
}

fn parse_machine(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let values: Vec<u64> = fields
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat =
            "4242 (beam.smp (1) x) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 30 0";
        let process = parse_stat(stat).expect("parses");
        assert_eq!(process.parent, 17);
        assert_eq!(process.ticks, 300);
    }

    #[test]
    fn machine_busy_excludes_idle_and_iowait() {
        let (busy, total) =
            parse_machine("cpu  100 5 50 800 40 3 2 0 0 0").expect("parses the cpu line");
        assert_eq!(total, 1000);
        assert_eq!(busy, 160);
        assert_eq!(parse_machine("cpu0 1 2 3 4 5 6 7 8"), None);
    }

    #[test]
    fn descendants_are_charged_to_their_nearest_tracked_ancestor() {
        let processes = HashMap::from([
            (
                10,
                Process {
                    parent: 1,
                    ticks: 1,
                },
            ), // the load generator
            (
                20,
                Process {
                    parent: 10,
                    ticks: 2,
                },
            ), // a service it started
            (
                30,
                Process {
                    parent: 10,
                    ticks: 3,
                },
            ), // rabbitmq-server wrapper
            (
                31,
                Process {
                    parent: 30,
                    ticks: 4,
                },
            ), // its beam.smp
            (
                40,
                Process {
                    parent: 1,
                    ticks: 5,
                },
            ), // unrelated
        ]);
        let tracked = HashMap::from([(10, "bench"), (20, "broker"), (30, "rabbitmq")]);
        assert_eq!(owner(20, &processes, &tracked), Some("broker"));
        assert_eq!(owner(31, &processes, &tracked), Some("rabbitmq"));
        assert_eq!(owner(10, &processes, &tracked), Some("bench"));
        assert_eq!(owner(40, &processes, &tracked), None);
    }

    #[test]
    fn the_load_generator_itself_is_measured() {
        let tracked = vec![Tracked {
            label: "self".into(),
            pid: std::process::id(),
        }];
        let meter = CpuMeter::start(tracked);
        let started = Instant::now();
        let mut spin = 0u64;
        while started.elapsed().as_millis() < 300 {
            spin = spin.wrapping_add(std::hint::black_box(1));
        }
        let usage = meter.finish();
        let own = usage.per_process_cores[0].1;
        assert!(own > 0.1, "a busy loop kept {own} cores busy ({spin})");
        assert!(usage.machine_cores >= own * 0.5, "{usage:?}");
    }
}
