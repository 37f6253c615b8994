//! Readiness, status, watchdog and shutdown, told to systemd over `$NOTIFY_SOCKET`.
//!
//! Without a notify socket (a plain `cargo run`) every notification is a no-op,
//! so services call these unconditionally.

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Tells the service manager that startup is finished: call only once the
/// service's dependencies answer and its listeners serve.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A one-line status shown by `systemctl status`.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// Tells the service manager that shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        // The manager may be gone while we shut down; never worth failing for.
        tracing::debug!(error = %err, "sd_notify failed");
    }
}

/// Pings the watchdog at half the interval systemd asked for (`WatchdogSec=`).
///
/// The pings come from a task on the service's own runtime, so a runtime that
/// stops making progress stops pinging and systemd restarts the service.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    let period = (interval / 2).max(Duration::from_millis(100));
    tracing::info!(?interval, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            ticker.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}

/// A shutdown request shared by every part of a service: the signal handler
/// triggers it, servers and background loops wait on it.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests shutdown (idempotent).
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown was requested.
    pub fn requested(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// Triggers shutdown on the first SIGTERM or SIGINT, telling systemd we are stopping.
    pub fn trigger_on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let this = self.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
                () = this.requested() => return,
            };
            tracing::info!(signal = name, "shutting down: draining in-flight requests");
            stopping();
            this.trigger();
        });
        Ok(())
    }
}

/// Runs `work` (servers with graceful shutdown wired to `shutdown`) and bounds
/// the drain: once shutdown was requested, `work` gets `timeout` to finish.
/// Returns `Err(())` when the drain had to be cut short.
pub async fn drain_within<F>(
    shutdown: &Shutdown,
    timeout: Duration,
    work: F,
) -> Result<F::Output, ()>
where
    F: Future,
{
    tokio::pin!(work);
    tokio::select! {
        output = &mut work => return Ok(output),
        () = shutdown.requested() => {}
    }
    match tokio::time::timeout(timeout, work).await {
        Ok(output) => Ok(output),
        Err(_) => {
            tracing::warn!(
                ?timeout,
                "drain timed out; exiting with requests still in flight"
            );
            Err(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[tokio::test]
    async fn drain_waits_for_work_that_finishes_in_time() {
        let shutdown = Shutdown::new();
        let work = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.requested().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                "drained"
            }
        };
        shutdown.trigger();
        let outcome = drain_within(&shutdown, Duration::from_secs(5), work).await;
        assert_eq!(outcome, Ok("drained"));
    }

    #[tokio::test]
    async fn drain_is_cut_short_after_the_timeout() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let started = std::time::Instant::now();
        let outcome = drain_within(
            &shutdown,
            Duration::from_millis(50),
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(outcome, Err(()));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn work_finishing_before_shutdown_is_returned() {
        let shutdown = Shutdown::new();
        let outcome = drain_within(&shutdown, Duration::from_millis(1), async { 7 }).await;
        assert_eq!(outcome, Ok(7));
    }

    /// The notifications reach a real notify socket in systemd's format. The
    /// environment is process-wide, so this is the only test that sets it and it
    /// runs the exchange in a child process of the test binary.
    #[test]
    fn notifications_reach_the_notify_socket() {
        if std::env::var_os("SWITCHBOARD_NOTIFY_CHILD").is_some() {
            ready();
            status("serving 3 sockets");
            stopping();
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let exe = std::env::current_exe().expect("test binary");
        let status_code = std::process::Command::new(exe)
            .args([
                "--exact",
                "lifecycle::tests::notifications_reach_the_notify_socket",
                "--nocapture",
            ])
            .env("SWITCHBOARD_NOTIFY_CHILD", "1")
            .env("NOTIFY_SOCKET", &path)
            .status()
            .expect("run child");
        assert!(status_code.success());
        let mut received = Vec::new();
        let mut buf = [0u8; 512];
        for _ in 0..3 {
            let n = socket.recv(&mut buf).expect("datagram");
            received.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
        }
        assert_eq!(
            received,
            ["READY=1", "STATUS=serving 3 sockets", "STOPPING=1"]
        );
    }
}
