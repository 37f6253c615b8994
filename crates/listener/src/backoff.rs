//! The circuit breaker that keeps a logger outage from turning into a
//! redelivery storm (its delays: the runtime's [`Backoff`]).
//!
//! # Why a breaker and not just a delay per message
//!
//! A message that failed is nacked with requeue, and RabbitMQ hands it straight
//! back to this very consumer. Were every message retried on its own, an
//! outage would spin through the queue at full speed, and each round would
//! raise every message's delivery count until the quorum queue dead-letters
//! messages that were never at fault. The breaker instead makes every
//! delivery wait at one gate: after a failure the gate stays shut for a
//! backoff delay, then lets a single delivery through as a probe. A failed
//! probe doubles the delay (up to the cap) and waits at the gate again,
//! unacknowledged and **not** requeued, so an outage costs each message at
//! most the one requeue of the moment it began, however long it lasts; a
//! success opens the gate for all. A message that fails while others pass
//! (a poison message) fails with the gate open, is requeued each time, and
//! reaches the delivery limit as it should.

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use switchboard_runtime::backoff::Backoff;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How a delivery got through the gate; reported back with the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The gate was open.
    Normal,
    /// The gate was shut and this delivery tests whether the logger is back.
    Probe,
}

#[derive(Debug)]
enum Gate {
    Open,
    /// Shut until the instant, then a probe may pass.
    Shut {
        until: Instant,
    },
    /// A probe is in flight; everyone else waits for its verdict.
    Probing,
}

#[derive(Debug)]
struct State {
    gate: Gate,
    backoff: Backoff,
}

/// The gate every delivery passes before it is forwarded to the logger.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    changed: Notify,
}

impl Breaker {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            state: Mutex::new(State {
                gate: Gate::Open,
                backoff,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value updated in single assignments, so a
        // panic elsewhere cannot leave it half-written.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until this delivery may be forwarded. The ticket must be
    /// settled with the logger's verdict; dropped unsettled (the task was
    /// cancelled), it hands the probe on.
    pub async fn pass(self: &Arc<Self>) -> Ticket {
        let pass = self.wait().await;
        Ticket {
            breaker: self.clone(),
            pass,
            settled: false,
        }
    }

    async fn wait(&self) -> Pass {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the state is read, so a change between the
            // read and the wait still wakes us.
            notified.as_mut().enable();
            let wait_until = {
                let mut state = self.lock();
                match state.gate {
                    Gate::Open => return Pass::Normal,
                    Gate::Shut { until } if Instant::now() >= until => {
                        state.gate = Gate::Probing;
                        return Pass::Probe;
                    }
                    Gate::Shut { until } => Some(until),
                    Gate::Probing => None,
                }
            };
            match wait_until {
                Some(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = &mut notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn succeeded(&self) {
        let mut state = self.lock();
        let was_open = matches!(state.gate, Gate::Open);
        state.gate = Gate::Open;
        state.backoff.reset();
        drop(state);
        if !was_open {
            tracing::info!("the logger answers again; resuming");
            self.changed.notify_waiters();
        }
    }

    fn failed(&self, pass: Pass) -> Option<Duration> {
        let mut state = self.lock();
        // Deliveries that passed while the gate was open and fail together
        // (an outage hits all of them) count as one failure, not dozens.
        let counts = match (pass, &state.gate) {
            (Pass::Probe, _) => true,
            (Pass::Normal, Gate::Open) => true,
            (Pass::Normal, _) => false,
        };
        if !counts {
            return None;
        }
        let delay = state.backoff.next_delay();
        state.gate = Gate::Shut {
            until: Instant::now() + delay,
        };
        drop(state);
        self.changed.notify_waiters();
        Some(delay)
    }

    fn abandoned(&self, pass: Pass) {
        if pass != Pass::Probe {
            return;
        }
        let mut state = self.lock();
        if matches!(state.gate, Gate::Probing) {
            state.gate = Gate::Shut {
                until: Instant::now(),
            };
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// True while deliveries are held back.
    pub fn is_shut(&self) -> bool {
        !matches!(self.lock().gate, Gate::Open)
    }
}

/// Leave to forward one delivery.
#[derive(Debug)]
pub struct Ticket {
    breaker: Arc<Breaker>,
    pass: Pass,
    settled: bool,
}

impl Ticket {
    pub fn pass(&self) -> Pass {
        self.pass
    }

    /// The logger answered (stored or refused the entry): open the gate.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.breaker.succeeded();
    }

    /// The logger did not store the entry. Returns the delay the gate is now
    /// shut for, or `None` when another failure had already shut it.
    pub fn failed(mut self) -> Option<Duration> {
        self.settled = true;
        self.breaker.failed(self.pass)
    }
}

impl Drop for Ticket {
    /// A probe that ended without a verdict (its delivery went away with the
    /// connection, or shutdown cut it short) lets the next delivery probe.
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.abandoned(self.pass);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(initial_secs: u64) -> Arc<Breaker> {
        Arc::new(Breaker::new(Backoff::new(
            Duration::from_secs(initial_secs),
            Duration::from_secs(8 * initial_secs),
        )))
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_gate_lets_everyone_through() {
        let breaker = breaker(1);
        let first = breaker.pass().await;
        let second = breaker.pass().await;
        assert_eq!((first.pass(), second.pass()), (Pass::Normal, Pass::Normal));
        first.succeeded();
        second.succeeded();
        assert!(!breaker.is_shut());
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_failure_one_probe_passes_after_the_delay() {
        let breaker = breaker(1);
        let first = breaker.pass().await;
        let second = breaker.pass().await;
        let delay = first.failed().expect("first failure shuts");
        // Concurrent failures of the same outage do not lengthen the delay.
        assert_eq!(second.failed(), None);
        let started = Instant::now();
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let breaker = breaker.clone();
                tokio::spawn(async move {
                    let ticket = breaker.pass().await;
                    let pass = ticket.pass();
                    if pass == Pass::Normal {
                        ticket.succeeded();
                    } else {
                        // Hold the probe until the test settles it below.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        ticket.succeeded();
                    }
                    pass
                })
            })
            .collect();
        tokio::time::sleep(delay + Duration::from_millis(10)).await;
        // Exactly one waiter became the probe; the rest still wait for it.
        assert!(started.elapsed() >= delay);
        assert!(waiters.iter().all(|w| !w.is_finished()));
        assert!(breaker.is_shut());
        let mut passes = Vec::new();
        for waiter in waiters {
            passes.push(waiter.await.expect("task"));
        }
        assert_eq!(passes.iter().filter(|p| **p == Pass::Probe).count(), 1);
        assert_eq!(passes.iter().filter(|p| **p == Pass::Normal).count(), 4);
        assert!(!breaker.is_shut());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probes_double_the_delay_and_dropped_probes_are_replaced() {
        let breaker = breaker(1);
        let first = breaker.pass().await.failed().expect("shut");
        let probe = breaker.pass().await;
        assert_eq!(probe.pass(), Pass::Probe);
        let second = probe.failed().expect("probe failure counts");
        // Each delay is its base ±20 %: 1 s then 2 s, so [0.8, 1.2) then
        // [1.6, 2.4). Comparing the two delays with each other could not tell
        // doubling from jitter (ratios overlap), comparing with the bases can.
        let secs = |delay: Duration| delay.as_secs_f64();
        assert!((0.8..1.2).contains(&secs(first)), "{first:?}");
        assert!(
            (1.6..2.4).contains(&secs(second)),
            "{first:?} then {second:?}"
        );
        assert!(breaker.is_shut());
        let probe = breaker.pass().await;
        assert_eq!(probe.pass(), Pass::Probe);
        drop(probe);
        let probe = breaker.pass().await;
        assert_eq!(probe.pass(), Pass::Probe, "an abandoned probe is replaced");
        probe.succeeded();
        assert!(!breaker.is_shut());
        assert_eq!(breaker.pass().await.pass(), Pass::Normal);
    }
}
