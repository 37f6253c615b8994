//! One service under the stack's care, the way systemd runs a `Type=notify`
//! unit with a `.socket` unit beside it.
//!
//! The stack owns the listening sockets; each incarnation of the service gets
//! duplicates at fds 3.. with `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID`
//! (the child's own pid: it is spawned through `sh -c 'LISTEN_PID=$$ exec …'`,
//! since std cannot set a variable between fork and exec without `unsafe`),
//! and a notify socket of its own (`NOTIFY_SOCKET`, a unix datagram socket
//! bound afresh per incarnation so that a late datagram of a killed process
//! never counts for its successor). Its stdout and stderr go through one pipe
//! to the service's log. It runs in a process group of its own, watched by a
//! tiny `sh` reaper that kills the group if the stack dies without cleaning up.
//!
//! In lazy mode the service is spawned only when a connection waits on one of
//! its sockets (not the `metrics` one: a scrape does not start a service),
//! and the sockets are watched again whenever it exits.

use std::io::{BufRead, BufReader, ErrorKind};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, Signal};

use crate::error::{Result, StackError};
use crate::output::{ServiceLog, Terminal};
use crate::service::ServiceName;
use crate::sockets::NamedSocket;

/// How often background threads look at the stack's closing flag.
const TICK: Duration = Duration::from_millis(200);
/// After SIGKILL, how long to wait for the process to be gone.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Lines of a service's log quoted in error messages.
const ERROR_TAIL: usize = 40;

/// Variables of our own service manager (when the stack runs as a unit) that
/// would confuse a child.
const MANAGER_VARIABLES: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
];

/// Sets `LISTEN_PID` to the pid the service will have: `exec` keeps the shell's.
const LISTEN_PID_WRAPPER: &str = r#"LISTEN_PID=$$ exec "$0" "$@""#;

/// Kills the service's process group once the stack (`$1`) is gone.
const REAPER_SCRIPT: &str = r#"
while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
kill -KILL "-$2" 2>/dev/null
"#;

/// `logger` for a service's first instance, `logger-2` for its second.
pub(crate) fn instance_label(service: ServiceName, instance: usize) -> String {
    if instance <= 1 {
        service.as_str().to_owned()
    } else {
        format!("{service}-{instance}")
    }
}

/// What a service is doing, as far as the stack knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServicePhase {
    /// Not running, nothing will start it.
    Stopped,
    /// Lazy mode: not running; the first connection to a socket starts it.
    WaitingForConnection,
    /// Spawned, `READY=1` not yet received.
    Starting,
    /// Sent `READY=1`.
    Ready,
    /// Asked to stop (SIGTERM sent, or it sent `STOPPING=1`).
    Stopping,
    /// Exited without being asked to; the exit status.
    Exited(String),
}

/// State shared by the stack and all its supervisors.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) terminal: Terminal,
    /// Folder of the notify sockets.
    pub(crate) run_dir: PathBuf,
    /// Set when the stack shuts down: background threads end.
    pub(crate) closing: AtomicBool,
    pub(crate) stop_timeout: Duration,
    /// How long [`crate::Stack::start_service`] waits for `READY=1`.
    pub(crate) ready_timeout: Duration,
}

#[derive(Debug)]
struct Running {
    generation: u64,
    child: Child,
    reaper: Option<Child>,
    spawned_at: Instant,
}

#[derive(Debug)]
struct SlotState {
    /// Counts spawns; threads of an old incarnation compare and quit.
    generation: u64,
    phase: ServicePhase,
    process: Option<Running>,
    /// The last `STATUS=` the service sent.
    status: Option<String>,
    /// Lazy mode: watch the sockets and spawn on the first connection.
    armed: bool,
    stop_requested: bool,
}

/// One service: its binary, configuration, sockets, log and current process.
#[derive(Debug)]
pub(crate) struct Supervisor {
    pub(crate) service: ServiceName,
    /// 1 for the service, 2.. for further instances of it
    /// ([`crate::StackOptions::instances`]).
    pub(crate) instance: usize,
    /// The service's name, or `<service>-<n>` for a further instance: its
    /// log file, notify socket and console prefix.
    pub(crate) label: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
    lazy: bool,
    pub(crate) sockets: Mutex<Vec<NamedSocket>>,
    pub(crate) log: ServiceLog,
    state: Mutex<SlotState>,
    changed: Condvar,
    shared: Arc<Shared>,
}

impl Supervisor {
    #[allow(clippy::too_many_arguments)] // one call site, every argument a different thing
    pub(crate) fn new(
        service: ServiceName,
        instance: usize,
        binary: PathBuf,
        env: Vec<(String, String)>,
        lazy: bool,
        sockets: Vec<NamedSocket>,
        log: ServiceLog,
        shared: Arc<Shared>,
    ) -> Arc<Self> {
        Arc::new(Self {
            service,
            instance,
            label: instance_label(service, instance),
            binary,
            env,
            // The listener's only socket is `metrics`, which activates
            // nothing: it starts at once, lazy or not.
            lazy: lazy && sockets.iter().any(|socket| socket.activates),
            sockets: Mutex::new(sockets),
            log,
            state: Mutex::new(SlotState {
                generation: 0,
                phase: ServicePhase::Stopped,
                process: None,
                status: None,
                armed: false,
                stop_requested: false,
            }),
            changed: Condvar::new(),
            shared,
        })
    }

    /// Whether this service starts on its first connection.
    pub(crate) fn is_lazy(&self) -> bool {
        self.lazy
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note(&self, message: &str) {
        self.log
            .line(&self.shared.terminal, &format!("[stack] {message}"));
    }

    pub(crate) fn phase(&self) -> ServicePhase {
        self.lock().phase.clone()
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.lock()
            .process
            .as_ref()
            .map(|running| running.child.id())
    }

    /// Lazy mode: wait for the first connection instead of starting now.
    pub(crate) fn arm(self: &Arc<Self>) {
        let mut state = self.lock();
        if state.process.is_none() {
            state.armed = true;
            state.phase = ServicePhase::WaitingForConnection;
            self.changed.notify_all();
        }
    }

    /// Spawns the service unless it runs; reopens sockets closed with
    /// [`Supervisor::close_sockets`].
    pub(crate) fn start(self: &Arc<Self>) -> Result<()> {
        let mut state = self.lock();
        if let Some(running) = &state.process {
            let generation = running.generation;
            if !self.reap(&mut state, generation) {
                return Ok(());
            }
        }
        {
            let mut sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
            for socket in sockets.iter_mut() {
                socket.reopen().map_err(|e| {
                    StackError::io(
                        format!(
                            "binding {} again for {} ({})",
                            socket.addr, self.service, socket.name
                        ),
                        e,
                    )
                })?;
            }
        }
        state.armed = false;
        self.spawn(&mut state)
    }

    fn spawn(self: &Arc<Self>, state: &mut SlotState) -> Result<()> {
        let spawn_error = |source| StackError::Spawn {
            service: self.service,
            source,
        };
        let generation = state.generation + 1;
        let notify_path = self.shared.run_dir.join(format!("{}.notify", self.label));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).map_err(|e| {
            StackError::io(
                format!("binding the notify socket {}", notify_path.display()),
                e,
            )
        })?;
        notify.set_read_timeout(Some(TICK)).map_err(spawn_error)?;

        let mut mappings = Vec::new();
        let mut names = Vec::new();
        {
            let sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
            for socket in sockets.iter() {
                if let Some(fd) = socket.duplicate().map_err(spawn_error)? {
                    let child_fd = 3 + i32::try_from(mappings.len()).unwrap_or(i32::MAX - 3);
                    mappings.push(FdMapping {
                        parent_fd: fd,
                        child_fd,
                    });
                    names.push(socket.name);
                }
            }
        }

        let (reader, writer) = std::io::pipe().map_err(spawn_error)?;
        let mut command = if mappings.is_empty() {
            Command::new(&self.binary)
        } else {
            let mut wrapper = Command::new("/bin/sh");
            wrapper.arg("-c").arg(LISTEN_PID_WRAPPER).arg(&self.binary);
            wrapper
        };
        for variable in MANAGER_VARIABLES {
            command.env_remove(variable);
        }
        if !mappings.is_empty() {
            command
                .env("LISTEN_FDS", mappings.len().to_string())
                .env("LISTEN_FDNAMES", names.join(":"));
        }
        command
            .env("NOTIFY_SOCKET", &notify_path)
            // The stack colours its own prefixes; escapes would litter the log files.
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(writer.try_clone().map_err(spawn_error)?)
            .stderr(writer)
            // Own group: a Ctrl-C in the terminal reaches the stack only, which
            // then stops the services in order.
            .process_group(0);
        command
            .fd_mappings(mappings)
            .map_err(|e| spawn_error(std::io::Error::other(e)))?;
        let child = command.spawn().map_err(spawn_error)?;
        // Closes our copies of the pipe's write end and of the sockets' duplicates.
        drop(command);
        let pid = child.id();
        let reaper = match spawn_reaper(pid) {
            Ok(reaper) => Some(reaper),
            Err(err) => {
                self.note(&format!("cannot start the reaper ({err}); continuing"));
                None
            }
        };
        state.generation = generation;
        state.process = Some(Running {
            generation,
            child,
            reaper,
            spawned_at: Instant::now(),
        });
        state.phase = ServicePhase::Starting;
        state.status = None;
        state.stop_requested = false;
        state.armed = false;
        self.changed.notify_all();
        self.note(&format!("started (pid {pid})"));

        let supervisor = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("{}-notify", self.label))
            .spawn(move || supervisor.receive_notifications(generation, notify))
            .map_err(spawn_error)?;
        let supervisor = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("{}-output", self.label))
            .spawn(move || supervisor.forward_output(generation, reader))
            .map_err(spawn_error)?;
        Ok(())
    }

    /// Reads `READY=1`, `STATUS=…`, `STOPPING=1` from the service's notify socket.
    fn receive_notifications(self: Arc<Self>, generation: u64, socket: UnixDatagram) {
        let mut buffer = [0u8; 4096];
        loop {
            if self.shared.closing.load(Ordering::Relaxed) {
                return;
            }
            {
                let state = self.lock();
                let current = state
                    .process
                    .as_ref()
                    .is_some_and(|running| running.generation == generation);
                if !current {
                    return;
                }
            }
            let received = match socket.recv(&mut buffer) {
                Ok(received) => received,
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue;
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => {
                    self.note(&format!("notify socket failed: {err}"));
                    return;
                }
            };
            let text = String::from_utf8_lossy(&buffer[..received]).into_owned();
            let mut state = self.lock();
            let Some(running) = state.process.as_ref() else {
                continue;
            };
            if running.generation != generation {
                continue;
            }
            let spawned_at = running.spawned_at;
            for line in text.lines() {
                match line.split_once('=') {
                    Some(("READY", "1")) if state.phase == ServicePhase::Starting => {
                        state.phase = ServicePhase::Ready;
                        self.note(&format!("ready after {:.1?}", spawned_at.elapsed()));
                    }
                    Some(("STATUS", status)) => state.status = Some(status.to_owned()),
                    Some(("STOPPING", "1")) => state.phase = ServicePhase::Stopping,
                    _ => {}
                }
            }
            self.changed.notify_all();
        }
    }

    /// Copies the service's output lines to its log; at end of output, reaps it.
    fn forward_output(self: Arc<Self>, generation: u64, reader: std::io::PipeReader) {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    while matches!(line.last(), Some(b'\n' | b'\r')) {
                        line.pop();
                    }
                    self.log
                        .line(&self.shared.terminal, &String::from_utf8_lossy(&line));
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // End of output: the process exited (or closed its output, then it is
        // reaped by whoever stops it).
        let deadline = Instant::now() + KILL_GRACE;
        loop {
            let mut state = self.lock();
            if self.reap(&mut state, generation) || Instant::now() > deadline {
                return;
            }
            drop(
                self.changed
                    .wait_timeout(state, Duration::from_millis(20))
                    .map(|(guard, _)| guard),
            );
        }
    }

    /// Records the exit of incarnation `generation` if it has exited; true
    /// when that incarnation is gone (now or before).
    fn reap(&self, state: &mut SlotState, generation: u64) -> bool {
        let Some(running) = state.process.as_mut() else {
            return true;
        };
        if running.generation != generation {
            return true;
        }
        let status = match running.child.try_wait() {
            Ok(Some(status)) => describe(status),
            Ok(None) => return false,
            Err(err) => format!("unknown ({err})"),
        };
        if let Some(mut running) = state.process.take() {
            stop_reaper(&mut running);
        }
        let closing = self.shared.closing.load(Ordering::Relaxed);
        if state.stop_requested {
            state.phase = ServicePhase::Stopped;
            self.note(&format!("stopped ({status})"));
        } else {
            state.phase = ServicePhase::Exited(status.clone());
            self.note(&format!("exited ({status})"));
            if !closing {
                self.shared
                    .terminal
                    .progress(format!("{} exited unexpectedly ({status})", self.label));
            }
        }
        if self.lazy && !closing {
            state.armed = true;
            state.phase = ServicePhase::WaitingForConnection;
        }
        self.changed.notify_all();
        true
    }

    /// Waits for `READY=1` from the current incarnation.
    pub(crate) fn wait_ready(
        &self,
        timeout: Duration,
        interrupt: Option<&AtomicBool>,
    ) -> Result<()> {
        let started = Instant::now();
        let mut state = self.lock();
        loop {
            if let Some(generation) = state.process.as_ref().map(|r| r.generation) {
                self.reap(&mut state, generation);
            }
            match &state.phase {
                ServicePhase::Ready => return Ok(()),
                ServicePhase::Exited(status) => {
                    return Err(StackError::ServiceExited {
                        service: self.service,
                        status: status.clone(),
                        log_tail: self.log.tail(ERROR_TAIL),
                    });
                }
                ServicePhase::Stopped | ServicePhase::WaitingForConnection
                    if state.process.is_none() =>
                {
                    return Err(StackError::ServiceExited {
                        service: self.service,
                        status: "not running".to_owned(),
                        log_tail: self.log.tail(ERROR_TAIL),
                    });
                }
                _ => {}
            }
            if interrupt.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
                return Err(StackError::Interrupted);
            }
            if started.elapsed() >= timeout {
                return Err(StackError::NotReady {
                    service: self.service,
                    waited: timeout,
                    status: state.status.clone().unwrap_or_else(|| "none".to_owned()),
                    log_tail: self.log.tail(ERROR_TAIL),
                });
            }
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(50))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Stops the service: SIGTERM, up to the stop timeout to drain, then
    /// SIGKILL to its group. The sockets stay open; in lazy mode they are
    /// watched again afterwards.
    pub(crate) fn stop(&self) {
        let generation = {
            let mut state = self.lock();
            state.armed = false;
            let Some(running) = &state.process else {
                if state.phase == ServicePhase::WaitingForConnection {
                    state.phase = ServicePhase::Stopped;
                }
                drop(state);
                self.rearm_if_lazy();
                return;
            };
            let generation = running.generation;
            let pid = running.child.id();
            state.stop_requested = true;
            state.phase = ServicePhase::Stopping;
            signal_process(pid, Signal::TERM);
            generation
        };
        if !self.wait_gone(generation, self.shared.stop_timeout) {
            self.note(&format!(
                "still running {:?} after SIGTERM: sending SIGKILL",
                self.shared.stop_timeout
            ));
            if let Some(pid) = self.pid() {
                signal_group(pid, Signal::KILL);
            }
            if !self.wait_gone(generation, KILL_GRACE) {
                self.note("did not exit after SIGKILL");
            }
        }
        self.rearm_if_lazy();
    }

    fn rearm_if_lazy(&self) {
        if self.lazy && !self.shared.closing.load(Ordering::Relaxed) {
            let mut state = self.lock();
            if state.process.is_none() {
                state.armed = true;
                state.phase = ServicePhase::WaitingForConnection;
                self.changed.notify_all();
            }
        }
    }

    fn wait_gone(&self, generation: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if self.reap(&mut state, generation) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(20))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Sends `signal` to the service's main process; does not wait.
    pub(crate) fn kill(&self, signal: Signal) -> bool {
        let Some((pid, generation)) = self
            .lock()
            .process
            .as_ref()
            .map(|running| (running.child.id(), running.generation))
        else {
            return false;
        };
        self.note(&format!("sending {}", signal_name(signal)));
        signal_process(pid, signal);
        if signal == Signal::KILL {
            // Certain death: wait for it, so that a start right after this
            // spawns a new process instead of finding the dying one.
            self.wait_gone(generation, KILL_GRACE);
        }
        true
    }

    /// Closes the stack's sockets of this service: new connections are refused
    /// once the service is stopped too. [`Supervisor::start`] reopens them.
    pub(crate) fn close_sockets(&self) {
        let mut sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        for socket in sockets.iter_mut() {
            socket.close();
        }
    }

    /// Lazy mode: spawns the service when a connection waits on one of its
    /// sockets. Runs until the stack closes.
    pub(crate) fn watch_for_connections(self: Arc<Self>) {
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: i64::try_from(TICK.as_nanos()).unwrap_or(200_000_000),
        };
        while !self.shared.closing.load(Ordering::Relaxed) {
            let listeners: Vec<std::net::TcpListener> = {
                let state = self.lock();
                if !state.armed || state.process.is_some() {
                    drop(self.changed.wait_timeout(state, TICK));
                    continue;
                }
                let sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
                sockets
                    .iter()
                    .filter(|socket| socket.activates)
                    .filter_map(|socket| socket.listener.as_ref()?.try_clone().ok())
                    .collect()
            };
            if listeners.is_empty() {
                std::thread::sleep(TICK);
                continue;
            }
            let mut fds: Vec<PollFd<'_>> = listeners
                .iter()
                .map(|listener| PollFd::new(listener, PollFlags::IN))
                .collect();
            let waiting = match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(ready) => ready > 0,
                Err(_) => false,
            };
            if !waiting {
                continue;
            }
            let mut state = self.lock();
            if state.armed && state.process.is_none() {
                self.note("a connection is waiting: starting");
                if let Err(err) = self.spawn(&mut state) {
                    // Not armed again: the next connection would fail the same way.
                    state.armed = false;
                    state.phase = ServicePhase::Exited(err.to_string());
                    self.note(&format!("activation failed: {err}"));
                    self.shared
                        .terminal
                        .progress(format!("{}: activation failed: {err}", self.service));
                }
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match Signal::from_named_raw(signal) {
            Some(named) => format!("killed by {}", signal_name(named)),
            None => format!("killed by signal {signal}"),
        },
        (None, None) => status.to_string(),
    }
}

/// `SIGKILL` rather than rustix's `Signal::KILL`.
fn signal_name(signal: Signal) -> String {
    let debug = format!("{signal:?}");
    format!("SIG{}", debug.strip_prefix("Signal::").unwrap_or(&debug))
}

fn pid_of(pid: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(pid).ok()?)
}

fn signal_process(pid: u32, signal: Signal) {
    if let Some(pid) = pid_of(pid) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// The service leads its own group; its group id is its pid.
fn signal_group(pid: u32, signal: Signal) {
    if let Some(pid) = pid_of(pid) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

fn spawn_reaper(service_pid: u32) -> std::io::Result<Child> {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(REAPER_SCRIPT)
        .arg("switchboard-stack-reaper")
        .arg(std::process::id().to_string())
        .arg(service_pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Own group: a Ctrl-C must not take it, nor stopping the service's group.
        .process_group(0)
        .spawn()
}

fn stop_reaper(running: &mut Running) {
    if let Some(mut reaper) = running.reaper.take() {
        // The reaper leads its own group (it and its `sleep`).
        signal_group(reaper.id(), Signal::KILL);
        let _ = reaper.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor(service: ServiceName, lazy: bool, dir: &std::path::Path) -> Arc<Supervisor> {
        let shared = Arc::new(Shared {
            terminal: Terminal::new(None),
            run_dir: dir.to_path_buf(),
            closing: AtomicBool::new(false),
            stop_timeout: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(1),
        });
        let sockets = service
            .sockets()
            .iter()
            .map(|spec| NamedSocket::bind(spec, 0).expect("bind"))
            .collect();
        let log = ServiceLog::create(service, service.as_str(), dir).expect("log");
        Supervisor::new(
            service,
            1,
            PathBuf::from("/bin/false"),
            Vec::new(),
            lazy,
            sockets,
            log,
            shared,
        )
    }

    /// The listener's only socket is `metrics`, which activates nothing: in
    /// lazy mode it still starts at once; a service with another socket waits.
    #[test]
    fn only_activating_sockets_make_a_service_lazy() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!supervisor(ServiceName::Listener, true, dir.path()).is_lazy());
        assert!(supervisor(ServiceName::Frontend, true, dir.path()).is_lazy());
        assert!(!supervisor(ServiceName::Frontend, false, dir.path()).is_lazy());
    }
}
