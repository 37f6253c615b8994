//! Server processes: each in its own process group, output to a log file,
//! stopped as a group, and watched by a reaper that kills the group (and removes
//! the temporary folder) once the process that started it is gone, whatever
//! way it died.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::error::{Error, Result};

/// How often the reaper checks whether the test process is still there.
const REAPER_INTERVAL: &str = "0.5";

/// Polls `kill -0` on the starter; when it is gone, SIGKILLs the server's group,
/// waits (bounded) for it to die, then removes the temporary folder if any.
/// `$1` starter pid, `$2` server process group, `$3` folder to remove or empty,
/// `$4` poll interval. No `--` before the negative pid: dash's `kill` rejects it.
const REAPER_SCRIPT: &str = r#"
while kill -0 "$1" 2>/dev/null; do sleep "$4"; done
kill -KILL "-$2" 2>/dev/null
if [ -n "$3" ]; then
  i=0
  while kill -0 "-$2" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  rm -rf -- "$3"
fi
"#;

const SYSTEMD_VARIABLES: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// A running server process, leader of its own process group.
#[derive(Debug)]
pub(crate) struct Supervised {
    server: String,
    child: Child,
    reaper: Option<Child>,
    exit: Option<ExitStatus>,
    stopped: bool,
}

/// How start-up went.
pub(crate) enum Startup {
    Ready,
    Exited(ExitStatus),
    TimedOut,
}

impl Supervised {
    /// Spawns `command` in a new process group with stdin closed and stdout and
    /// stderr appended to `log`, plus its reaper. `removable` is the temporary
    /// folder the reaper deletes after killing the group.
    pub(crate) fn spawn(
        server: &str,
        mut command: Command,
        log: &Path,
        removable: Option<&Path>,
    ) -> Result<Self> {
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let log_clone = log_file
            .try_clone()
            .map_err(|e| Error::io(format!("duplicating the handle of {}", log.display()), e))?;
        // Under systemd (the dev stack as a unit) these would make PostgreSQL
        // or RabbitMQ talk to our service manager as if they were the unit.
        for variable in SYSTEMD_VARIABLES {
            command.env_remove(variable);
        }
        command
            .stdin(Stdio::null())
            .stdout(log_clone)
            .stderr(log_file)
            .process_group(0);
        let child = command.spawn().map_err(|e| {
            Error::io(
                format!("starting {server} ({:?})", command.get_program()),
                e,
            )
        })?;
        let mut supervised = Self {
            server: server.to_owned(),
            child,
            reaper: None,
            exit: None,
            stopped: false,
        };
        match spawn_reaper(supervised.pid(), removable) {
            Ok(reaper) => supervised.reaper = Some(reaper),
            Err(error) => {
                // Without a reaper a crash of the test would leak the server: refuse.
                supervised.kill_now();
                return Err(error);
            }
        }
        Ok(supervised)
    }

    /// The process id, which is also the process group id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited (reaping it).
    pub(crate) fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Polls `ready` every `interval` until it returns true, the process
    /// exits, or `timeout` passes.
    pub(crate) fn wait_ready(
        &mut self,
        timeout: Duration,
        interval: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Startup {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Startup::Exited(status);
            }
            if ready() {
                // A server that binds, answers once and then dies of a late
                // error (another instance holding its data) is not ready.
                return match self.exit_status() {
                    Some(status) => Startup::Exited(status),
                    None => Startup::Ready,
                };
            }
            if Instant::now() >= deadline {
                return Startup::TimedOut;
            }
            std::thread::sleep(interval);
        }
    }

    /// Stops the process group: `first` to the leader (the server's own clean
    /// shutdown signal), up to `grace` for it to exit, then SIGKILL to the whole
    /// group, then a bounded wait until no member of the group is left.
    /// Idempotent.
    pub(crate) fn stop(&mut self, first: Signal, grace: Duration) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let started = Instant::now();
        let pgid = self.pgid();
        if self.exit_status().is_none() && first != Signal::KILL && !grace.is_zero() {
            if let Some(pid) = pgid {
                let _ = rustix::process::kill_process(pid, first);
            }
            let deadline = Instant::now() + grace;
            while self.exit_status().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if let Some(pgid) = pgid {
            // Also after a clean exit of the leader: children it left behind
            // (RabbitMQ's beam after its wrapper) would otherwise linger.
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        }
        if self.exit.is_none() {
            self.exit = self.child.wait().ok();
        }
        if let Some(pgid) = pgid {
            let deadline = Instant::now() + Duration::from_secs(5);
            while group_has_live_members(pgid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.stop_reaper();
        tracing::debug!(server = %self.server, elapsed = ?started.elapsed(), "stopped");
    }

    /// SIGKILL to the group at once.
    pub(crate) fn kill_now(&mut self) {
        self.stop(Signal::KILL, Duration::ZERO);
    }

    fn pgid(&self) -> Option<Pid> {
        Pid::from_raw(i32::try_from(self.child.id()).ok()?)
    }

    fn stop_reaper(&mut self) {
        if let Some(mut reaper) = self.reaper.take() {
            // The reaper leads its own group (it and its `sleep`).
            if let Some(pgid) = i32::try_from(reaper.id()).ok().and_then(Pid::from_raw) {
                let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
            }
            let _ = reaper.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill_now();
    }
}

fn spawn_reaper(server_pgid: u32, removable: Option<&Path>) -> Result<Child> {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(REAPER_SCRIPT)
        .arg("switchboard-testkit-reaper")
        .arg(std::process::id().to_string())
        .arg(server_pgid.to_string())
        .arg(removable.map(Path::as_os_str).unwrap_or_default())
        .arg(REAPER_INTERVAL)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Own group: stopping the server's group, or a Ctrl-C to the test's
        // terminal group, must not take the reaper with it.
        .process_group(0);
    command
        .spawn()
        .map_err(|e| Error::io("starting the reaper (/bin/sh)", e))
}

/// Whether any process other than a zombie still belongs to process group `pgid`.
/// Zombies count as gone: once reparented they are reaped by whatever PID 1 is,
/// which may take a while or never happen in a minimal container.
pub(crate) fn group_has_live_members(pgid: Pid) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return rustix::process::test_kill_process_group(pgid).is_ok();
    };
    let wanted = pgid.as_raw_nonzero().get();
    entries.filter_map(|entry| entry.ok()).any(|entry| {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        is_pid
            && proc_state(&entry.path().join("stat"))
                .is_some_and(|(state, pgrp)| pgrp == wanted && state != 'Z')
    })
}

/// Whether process `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    proc_state(&PathBuf::from(format!("/proc/{pid}/stat"))).is_some_and(|(state, _)| state != 'Z')
}

/// (state, process group) from `/proc/PID/stat`.
fn proc_state(stat: &Path) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// The last `lines` lines (at most 8 KiB) of a log file, for error messages.
pub(crate) fn log_tail(log: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 8 * 1024;
    let Ok(mut file) = std::fs::File::open(log) else {
        return format!("(no log at {})", log.display());
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(MAX_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.trim().is_empty() {
        "(log is empty)".to_owned()
    } else {
        tail
    }
}

/// Whether a failed start looks like a lost port race: worth retrying with
/// new ports. Every server we run says "address already in use" (Erlang:
/// `eaddrinuse`) in some capitalisation.
pub(crate) fn looks_like_port_clash(log_text: &str) -> bool {
    let lower = log_text.to_ascii_lowercase();
    lower.contains("already in use")
        || lower.contains("eaddrinuse")
        || lower.contains("address in use")
}

/// Turns a failed [`Startup`] into an error quoting the log.
pub(crate) fn startup_error(
    server: &str,
    startup: Startup,
    waited: Duration,
    logs: &[&Path],
) -> Error {
    let (log, tail) = logs_tail(logs);
    match startup {
        Startup::Exited(status) => Error::Exited {
            server: server.to_owned(),
            status: status.to_string(),
            log,
            tail,
        },
        Startup::TimedOut | Startup::Ready => Error::NotReady {
            server: server.to_owned(),
            waited,
            log,
            tail,
        },
    }
}

/// The first log's path and the tails of all given logs that exist.
fn logs_tail(logs: &[&Path]) -> (PathBuf, String) {
    let first = logs.first().map(|p| p.to_path_buf()).unwrap_or_default();
    let tails: Vec<String> = logs
        .iter()
        .filter(|log| log.exists())
        .map(|log| {
            if logs.len() > 1 {
                format!("--- {} ---\n{}", log.display(), log_tail(log, 30))
            } else {
                log_tail(log, 40)
            }
        })
        .collect();
    let tail = if tails.is_empty() {
        format!("(no log at {})", first.display())
    } else {
        tails.join("\n")
    };
    (first, tail)
}

/// Runs a helper command to completion and returns its stdout, or an error
/// with its output when it fails.
pub(crate) fn run_command(mut command: Command) -> Result<String> {
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
    let rendered = crate::binary::display_command(Path::new(&program), &args);
    command.stdin(Stdio::null());
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .output()
        .map_err(|e| Error::io(format!("running `{rendered}`"), e))?;
    if status.success() {
        return Ok(String::from_utf8_lossy(&stdout).into_owned());
    }
    let mut output = String::from_utf8_lossy(&stderr).trim().to_owned();
    let stdout = String::from_utf8_lossy(&stdout);
    if !stdout.trim().is_empty() {
        output.push('\n');
        output.push_str(stdout.trim());
    }
    Err(Error::CommandFailed {
        command: rendered,
        status: status.to_string(),
        output,
    })
}
