//! Counters of what happened to deliveries, and the one-line status systemd
//! shows for the unit (`systemctl status switchboard-listener`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use switchboard_runtime::Shutdown;
use switchboard_runtime::lifecycle;

/// Totals since the process started; shared by every delivery task.
#[derive(Debug, Default)]
pub struct Stats {
    stored: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    in_flight: AtomicU64,
    phase: Mutex<Phase>,
}

/// What the listener is doing, for the status line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Starting,
    /// Not connected to RabbitMQ; the text says why.
    Connecting(String),
    Consuming,
    /// Consuming, but deliveries wait because the logger does not answer.
    LoggerUnavailable,
    Stopping,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Forwarded and acknowledged.
    pub stored: u64,
    /// Nacked with requeue because the logger did not store them.
    pub retried: u64,
    /// Sent to the dead-letter exchange.
    pub dead_lettered: u64,
    /// Received and not settled yet.
    pub in_flight: u64,
}

/// A delivery being handled; counted in flight until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stats {
    pub fn stored(&self) {
        self.stored.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> Counts {
        Counts {
            stored: self.stored.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }

    /// Counts a delivery in flight while the returned guard lives.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn set_phase(&self, phase: Phase) {
        *self
            .phase
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = phase;
    }

    pub fn phase(&self) -> Phase {
        self.phase
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The status line for the current phase and counts.
    pub fn status_line(&self) -> String {
        let Counts {
            stored,
            retried,
            dead_lettered,
            ..
        } = self.counts();
        let counts = format!("{stored} stored, {retried} retried, {dead_lettered} dead-lettered");
        match self.phase() {
            Phase::Starting => "starting".to_owned(),
            Phase::Connecting(why) => format!("connecting to RabbitMQ ({why}); {counts}"),
            Phase::Consuming => format!("consuming: {counts}"),
            Phase::LoggerUnavailable => {
                format!("consuming, waiting for the logger: {counts}")
            }
            Phase::Stopping => format!("stopping: {counts}"),
        }
    }
}

/// Sends the status line whenever it changed, at most once per `period`.
pub async fn report_status(
    stats: std::sync::Arc<Stats>,
    logger_waiting: impl Fn() -> bool,
    period: Duration,
    shutdown: Shutdown,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.requested() => return,
        }
        match stats.phase() {
            Phase::Consuming if logger_waiting() => stats.set_phase(Phase::LoggerUnavailable),
            Phase::LoggerUnavailable if !logger_waiting() => stats.set_phase(Phase::Consuming),
            _ => {}
        }
        let line = stats.status_line();
        if line != last {
            lifecycle::status(&line);
            last = line;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_has_the_counts() {
        let stats = Stats::default();
        stats.set_phase(Phase::Consuming);
        stats.stored();
        stats.stored();
        stats.retried();
        stats.dead_lettered();
        assert_eq!(
            stats.status_line(),
            "consuming: 2 stored, 1 retried, 1 dead-lettered"
        );
        stats.set_phase(Phase::Connecting("connection refused".into()));
        assert_eq!(
            stats.status_line(),
            "connecting to RabbitMQ (connection refused); 2 stored, 1 retried, 1 dead-lettered"
        );
    }
}
