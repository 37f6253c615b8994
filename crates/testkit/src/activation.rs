//! Running a service binary the way systemd runs it, for the binary tests of
//! every service: its listening sockets passed by `systemd-socket-activate`
//! (as `.socket` units pass them), a notify socket in place of systemd's to
//! read `READY=1`, `STATUS=…` and `STOPPING=1`, SIGTERM, and a wait for the
//! exit that returns as soon as the process is gone.
//!
//! `systemd-socket-activate` (package `systemd`) must be installed: its
//! absence is an error naming the fix, never a skip. scripts/setup installs
//! it; the Nix check derivation (`nixos/cargo-tests.nix`) has it in
//! `nativeCheckInputs`.
//!
//! ```no_run
//! use std::time::Duration;
//! use switchboard_testkit::activation::{NotifySocket, SocketActivation, sigterm, wait_for_exit};
//!
//! # fn main() -> switchboard_testkit::Result<()> {
//! let mut notify = NotifySocket::bind()?;
//! let port = switchboard_testkit::free_port();
//! let mut child = SocketActivation::new()
//!     .listen(format!("127.0.0.1:{port}"), "http")
//!     .env("NOTIFY_SOCKET", notify.path().display().to_string())
//!     .spawn("/path/to/switchboard-broker")?;
//! assert!(notify.wait_for("READY=1", Duration::from_secs(10)));
//! sigterm(&child)?;
//! let status = wait_for_exit(&mut child, Duration::from_secs(15));
//! assert!(status.is_some_and(|status| status.success()));
//! # Ok(())
//! # }
//! ```

use std::ffi::{OsStr, OsString};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, Signal};

use crate::binary::find_binary;
use crate::error::{Error, Result};

/// The program that binds the sockets and execs the service with them.
pub const ACTIVATOR: &str = "systemd-socket-activate";

/// Where `systemd-socket-activate` is; the error names the package and the fix.
pub fn activator() -> Result<PathBuf> {
    find_binary(ACTIVATOR)
}

/// A `systemd-socket-activate` command line: the sockets to bind (each with
/// its `FileDescriptorName=`), the environment to pass on (the activator
/// passes on only the variables named with `-E`, plus `LISTEN_*`), and an
/// optional wrapper the service runs under.
///
/// The activator binds every socket first and execs the service, in its own
/// process, on the first connection; connections made meanwhile wait in the
/// backlog instead of being refused. The returned [`Child`] is therefore the
/// service itself once it runs: signals sent to it reach the service.
#[derive(Debug, Clone, Default)]
pub struct SocketActivation {
    listen: Vec<String>,
    fdnames: Vec<String>,
    env: Vec<(String, String)>,
    wrapper: Vec<OsString>,
    args: Vec<OsString>,
}

impl SocketActivation {
    /// No sockets, no environment yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A listening socket at `address` (`127.0.0.1:8080`), passed with the
    /// name `fdname` (the unit's `FileDescriptorName=`), in call order.
    pub fn listen(mut self, address: impl std::fmt::Display, fdname: &str) -> Self {
        self.listen.push(address.to_string());
        self.fdnames.push(fdname.to_owned());
        self
    }

    /// One variable of the service's environment.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Several variables of the service's environment.
    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// A command the activator execs instead of the service, with the
    /// service's path appended (e.g. `["unshare", "--net", "--"]`).
    pub fn wrapper<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.wrapper = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// Arguments for the service, after its path.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The activator's arguments for `binary`.
    pub fn arguments(&self, binary: impl AsRef<OsStr>) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        for address in &self.listen {
            args.push("--listen".into());
            args.push(address.into());
        }
        if !self.fdnames.is_empty() {
            args.push(format!("--fdname={}", self.fdnames.join(":")).into());
        }
        for (key, value) in &self.env {
            args.push(format!("--setenv={key}={value}").into());
        }
        args.extend(self.wrapper.iter().cloned());
        args.push(binary.as_ref().to_owned());
        args.extend(self.args.iter().cloned());
        args
    }

    /// The command line for `binary`, with stdin and stdout null and stderr
    /// inherited (libtest shows it for a failing test); set other stdio on it
    /// before spawning.
    pub fn command(&self, binary: impl AsRef<OsStr>) -> Result<Command> {
        let mut command = Command::new(activator()?);
        command
            .args(self.arguments(binary))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Ok(command)
    }

    /// Starts `binary` under the activator.
    pub fn spawn(&self, binary: impl AsRef<OsStr>) -> Result<Child> {
        self.command(binary)?
            .spawn()
            .map_err(|source| Error::io(format!("starting {ACTIVATOR}"), source))
    }
}

/// A notify socket like systemd's (`$NOTIFY_SOCKET`), in a folder of its own
/// that is removed on drop. Datagrams are read in order; each one read is
/// kept in [`NotifySocket::seen`].
#[derive(Debug)]
pub struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
    seen: Vec<String>,
    /// Index in `seen` of the first datagram no wait has consumed yet.
    unconsumed: usize,
}

impl NotifySocket {
    /// Binds a fresh socket under the system temp dir.
    pub fn bind() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("notify")
            .tempdir()
            .map_err(|source| Error::io("creating a folder for the notify socket", source))?;
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path)
            .map_err(|source| Error::io(format!("binding {}", path.display()), source))?;
        Ok(Self {
            _dir: dir,
            path,
            socket,
            seen: Vec::new(),
            unconsumed: 0,
        })
    }

    /// The value for the service's `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every datagram read so far, in order of arrival.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Reads one datagram, waiting at most `timeout` for it.
    fn read(&mut self, timeout: Duration) -> Result<bool> {
        // A zero timeout means "block forever" to SO_RCVTIMEO.
        let timeout = timeout.max(Duration::from_millis(1));
        self.socket
            .set_read_timeout(Some(timeout))
            .map_err(|source| Error::io("setting the notify socket's timeout", source))?;
        let mut buffer = [0u8; 4096];
        match self.socket.recv(&mut buffer) {
            Ok(n) => {
                self.seen
                    .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
                Ok(true)
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(source) => Err(Error::io("reading the notify socket", source)),
        }
    }

    /// Waits up to `timeout` for a datagram that satisfies `matches`, looking
    /// first at those read but not consumed by an earlier wait. On a match,
    /// consumes the datagrams up to and including it and returns those before
    /// it; `None` after `timeout` (nothing is consumed then).
    ///
    /// # Panics
    /// If the socket cannot be read (not a timeout), which no test survives.
    pub fn wait_for_datagram(
        &mut self,
        mut matches: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Option<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut next = self.unconsumed;
        loop {
            while next < self.seen.len() {
                if matches(&self.seen[next]) {
                    let before = self.seen[self.unconsumed..next].to_vec();
                    self.unconsumed = next + 1;
                    return Some(before);
                }
                next += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if let Err(error) = self.read(left) {
                panic!("switchboard-testkit: {error}");
            }
        }
    }

    /// Waits up to `timeout` for a datagram with a line equal to `line`
    /// (`READY=1`); true if one came. See [`NotifySocket::wait_for_datagram`].
    pub fn wait_for(&mut self, line: &str, timeout: Duration) -> bool {
        self.wait_for_datagram(|datagram| datagram.lines().any(|l| l == line), timeout)
            .is_some()
    }

    /// The datagrams not consumed yet plus those arriving until none has come
    /// for `quiet`; all of them are consumed.
    ///
    /// # Panics
    /// If the socket cannot be read (not a timeout).
    pub fn drain(&mut self, quiet: Duration) -> Vec<String> {
        loop {
            match self.read(quiet) {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => panic!("switchboard-testkit: {error}"),
            }
        }
        let drained = self.seen[self.unconsumed..].to_vec();
        self.unconsumed = self.seen.len();
        drained
    }
}

/// `GET path` on a fresh connection to `127.0.0.1:port` (`Connection:
/// close`, a read timeout of 30 s), the whole raw reply: status line, headers
/// and body, as a socket-activated service wrote them.
pub fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Sends SIGTERM to `child`, as `systemctl stop` does to a service.
pub fn sigterm(child: &Child) -> Result<()> {
    rustix::process::kill_process(Pid::from_child(child), Signal::TERM)
        .map_err(|errno| Error::io(format!("sending SIGTERM to {}", child.id()), errno.into()))
}

/// Waits up to `timeout` for `child` to exit and returns its status. After
/// `timeout` the child is killed (SIGKILL) and reaped, and `None` is
/// returned: a test that waits in vain leaves nothing running.
///
/// The wait returns as soon as the process is gone (a pidfd becomes
/// readable), without polling.
///
/// # Panics
/// If the child's status cannot be read, which no test survives.
pub fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    // Opened while the child is not yet reaped, so it refers to this child.
    let pidfd = rustix::process::pidfd_open(Pid::from_child(child), PidfdFlags::empty()).ok();
    loop {
        if let Some(status) = child.try_wait().expect("reading the child's status") {
            return Some(status);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        match &pidfd {
            Some(pidfd) => {
                let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
                let timespec = Timespec::try_from(left).ok();
                // EINTR and the like: look at the child again.
                let _ = rustix::event::poll(&mut fds, timespec.as_ref());
            }
            // Kernels before 5.3 have no pidfd: look again shortly.
            None => std::thread::sleep(left.min(Duration::from_millis(20))),
        }
    }
}

/// A child process killed and reaped on drop, so that a failing test leaves
/// nothing behind.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Whether this process may run `unshare --net` (create a network
/// namespace, which needs CAP_SYS_ADMIN): `Ok(())` if so, else the reason,
/// for a test to skip with. A missing `unshare` (package util-linux) is an
/// error naming the fix, not a reason to skip.
pub fn network_namespaces_permitted() -> Result<std::result::Result<(), String>> {
    let unshare = find_binary("unshare")?;
    let output = Command::new(&unshare)
        .args(["--net", "true"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::io(format!("running {} --net true", unshare.display()), source))?;
    if output.status.success() {
        return Ok(Ok(()));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Ok(Err(format!(
        "`unshare --net` is not permitted here ({}): the test needs CAP_SYS_ADMIN, which the Nix build sandbox does not grant",
        stderr.trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(notify: &NotifySocket, datagram: &str) {
        let client = UnixDatagram::unbound().expect("client socket");
        client
            .send_to(datagram.as_bytes(), notify.path())
            .expect("send");
    }

    #[test]
    fn waits_consume_in_order_and_drain_takes_the_rest() {
        let mut notify = NotifySocket::bind().expect("bind");
        for datagram in [
            "STATUS=starting",
            "READY=1\nSTATUS=up",
            "STATUS=busy",
            "STOPPING=1",
        ] {
            send(&notify, datagram);
        }
        let before = notify
            .wait_for_datagram(
                |d| d.lines().any(|l| l == "READY=1"),
                Duration::from_secs(5),
            )
            .expect("READY=1");
        assert_eq!(before, ["STATUS=starting"]);
        // READY=1 is consumed: a second wait for it does not see the first.
        assert!(!notify.wait_for("READY=1", Duration::from_millis(50)));
        assert_eq!(
            notify.drain(Duration::from_millis(50)),
            ["STATUS=busy", "STOPPING=1"]
        );
        assert_eq!(notify.seen().len(), 4);
        assert!(notify.drain(Duration::from_millis(10)).is_empty());
    }

    #[test]
    fn a_line_must_match_exactly() {
        let mut notify = NotifySocket::bind().expect("bind");
        send(&notify, "READY=10");
        assert!(!notify.wait_for("READY=1", Duration::from_millis(50)));
        send(&notify, "STATUS=x\nREADY=1");
        assert!(notify.wait_for("READY=1", Duration::from_secs(5)));
    }

    #[test]
    fn wait_for_exit_returns_the_status_and_kills_on_timeout() {
        let mut quick = Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .expect("sh");
        let status = wait_for_exit(&mut quick, Duration::from_secs(10)).expect("exited");
        assert_eq!(status.code(), Some(3));

        let mut slow = Command::new("sleep").arg("60").spawn().expect("sleep");
        let started = Instant::now();
        assert!(wait_for_exit(&mut slow, Duration::from_millis(200)).is_none());
        assert!(started.elapsed() < Duration::from_secs(10));
        // Killed and reaped: nothing left to wait for.
        assert!(slow.try_wait().expect("status").is_some());
    }

    #[test]
    fn sigterm_stops_a_child() {
        let mut child = Command::new("sleep").arg("60").spawn().expect("sleep");
        sigterm(&child).expect("SIGTERM");
        let status = wait_for_exit(&mut child, Duration::from_secs(10)).expect("exited");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(15));
    }

    #[test]
    fn the_arguments_name_sockets_environment_and_wrapper() {
        let args: Vec<String> = SocketActivation::new()
            .listen("127.0.0.1:1", "http")
            .listen("127.0.0.1:2", "rpc")
            .env("A", "1")
            .envs([("B", "two words")])
            .wrapper(["unshare", "--net", "--"])
            .args(["--config", "x.toml"])
            .arguments("/bin/service")
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--listen",
                "127.0.0.1:1",
                "--listen",
                "127.0.0.1:2",
                "--fdname=http:rpc",
                "--setenv=A=1",
                "--setenv=B=two words",
                "unshare",
                "--net",
                "--",
                "/bin/service",
                "--config",
                "x.toml"
            ]
        );
    }
}
