//! Waiting at start-up for a dependency (PostgreSQL, MongoDB, the SMTP relay)
//! before a service reports READY: retried with the runtime's [`Backoff`],
//! each failure said in the unit's status line (`systemctl status` shows why
//! it is not up yet), and abandoned as soon as shutdown is requested so that
//! a `systemctl stop` during an outage does not wait for the dependency.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::{Shutdown, lifecycle};

/// The first pause between two attempts, and the longest.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
pub const MAX_RETRY: Duration = Duration::from_secs(5);

/// Calls `attempt` until it succeeds (its value) or shutdown is requested
/// (`None`, also while an attempt is running). `what` names the dependency
/// in the status line and the log: "waiting for {what}: {error}".
///
/// The journal gets the first failure and then every tenth: one line per
/// attempt would drown it in a long outage, and the status line always has
/// the latest error.
pub async fn until_ready<T, E, F, Fut>(what: &str, shutdown: &Shutdown, mut attempt: F) -> Option<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(FIRST_RETRY, MAX_RETRY);
    let mut failures: u32 = 0;
    loop {
        let outcome = tokio::select! {
            outcome = attempt() => outcome,
            () = shutdown.requested() => return None,
        };
        match outcome {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(attempts = failures + 1, "{what} answers");
                }
                return Some(value);
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(error = %err, attempts = failures, "waiting for {what}");
                }
                lifecycle::status(&format!("waiting for {what} (attempt {failures}): {err}"));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shutdown.requested() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_until_the_dependency_answers() {
        let shutdown = Shutdown::new();
        let calls = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&calls);
        let value = until_ready("the test dependency", &shutdown, move || {
            let call = counted.fetch_add(1, Ordering::SeqCst);
            async move { if call < 3 { Err("refused") } else { Ok(call) } }
        })
        .await;
        assert_eq!(value, Some(3));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait() {
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            trigger.trigger();
        });
        let value: Option<()> =
            until_ready("a dependency that never answers", &shutdown, || async {
                Err::<(), _>("refused")
            })
            .await;
        assert_eq!(value, None);
    }
}
