//! The load generator: drives a set of workers in a closed loop (each worker
//! sends its next request when the previous one answered) or an open loop
//! (requests are due on a fixed schedule and latency is measured from when a
//! request was due, not when it was sent, so a stalled server cannot hide its
//! stall by slowing the generator down — no coordinated omission).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// How a scenario is driven.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    /// Requests before this much time has passed are not recorded (connections
    /// warm up, caches fill, the logger's batches reach their steady size).
    pub warmup: Duration,
    /// Measured time after the warm-up.
    pub duration: Duration,
    /// Workers (connections or in-flight requests).
    pub concurrency: usize,
    /// `Some(r)`: open loop at `r` requests per second; `None`: closed loop.
    pub rate: Option<f64>,
    /// Stop after this many measured requests (smoke runs), whichever comes first.
    pub max_requests: Option<u64>,
}

/// One worker's way of making a request. `seq` is unique across all workers of
/// a run, so requests can carry unique names.
pub trait Worker: Send + 'static {
    fn call(&mut self, seq: u64) -> impl Future<Output = Result<(), String>> + Send;
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunStats {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies of successful requests, in microseconds.
    pub latency_us: Histogram<u64>,
    /// A few error messages, to say what went wrong.
    pub error_samples: Vec<String>,
    /// Sequence numbers issued, measured or not (warm-up included).
    pub issued: u64,
}

impl RunStats {
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }
    pub fn percentile_ms(&self, q: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 60 s with 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

struct WorkerResult {
    ok: u64,
    errors: u64,
    latency: Histogram<u64>,
    error_samples: Vec<String>,
}

/// Runs `workers` under `spec` and merges what they measured.
pub async fn run<W: Worker>(workers: Vec<W>, spec: LoadSpec) -> RunStats {
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let stop_at = measure_from + spec.duration;
    let next_seq = Arc::new(AtomicU64::new(0));
    let measured = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(workers.len());
    for mut worker in workers {
        let next_seq = next_seq.clone();
        let measured = measured.clone();
        tasks.push(tokio::spawn(async move {
            let mut result = WorkerResult {
                ok: 0,
                errors: 0,
                latency: new_histogram(),
                error_samples: Vec::new(),
            };
            loop {
                if spec
                    .max_requests
                    .is_some_and(|max| measured.load(Ordering::Relaxed) >= max)
                {
                    break;
                }
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                let due = match spec.rate {
                    Some(rate) => {
                        let due = start + Duration::from_secs_f64(seq as f64 / rate);
                        if due >= stop_at {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => {
                        let now = Instant::now();
                        if now >= stop_at {
                            break;
                        }
                        now
                    }
                };
                let outcome = worker.call(seq).await;
                let finished = Instant::now();
                if due < measure_from {
                    continue;
                }
                measured.fetch_add(1, Ordering::Relaxed);
                match outcome {
                    Ok(()) => {
                        result.ok += 1;
                        let micros = finished.duration_since(due).as_micros().max(1) as u64;
                        let _ = result.latency.record(micros.min(60_000_000));
                    }
                    Err(message) => {
                        result.errors += 1;
                        if result.error_samples.len() < 3 {
                            result.error_samples.push(message);
                        }
                    }
                }
            }
            result
        }));
    }
    let mut stats = RunStats {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_us: new_histogram(),
        error_samples: Vec::new(),
        issued: 0,
    };
    for task in tasks {
        match task.await {
            Ok(result) => {
                stats.ok += result.ok;
                stats.errors += result.errors;
                let _ = stats.latency_us.add(&result.latency);
                for sample in result.error_samples {
                    if stats.error_samples.len() < 5 {
                        stats.error_samples.push(sample);
                    }
                }
            }
            Err(err) => {
                stats.errors += 1;
                stats.error_samples.push(format!("worker failed: {err}"));
            }
        }
    }
    let end = Instant::now();
    stats.elapsed = end
        .saturating_duration_since(measure_from)
        .min(spec.duration.max(Duration::from_millis(1)));
    if spec.max_requests.is_some() {
        // Smoke runs stop early: count the time they really took.
        stats.elapsed = end.saturating_duration_since(measure_from);
    }
    stats.issued = next_seq.load(Ordering::Relaxed);
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sleeper(Duration);

    impl Worker for Sleeper {
        async fn call(&mut self, seq: u64) -> Result<(), String> {
            tokio::time::sleep(self.0).await;
            if seq % 10 == 9 {
                Err(format!("request {seq} failed"))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn closed_loop_counts_successes_errors_and_latency() {
        let spec = LoadSpec {
            warmup: Duration::from_millis(20),
            duration: Duration::from_millis(200),
            concurrency: 4,
            rate: None,
            max_requests: None,
        };
        let workers = (0..4).map(|_| Sleeper(Duration::from_millis(2))).collect();
        let stats = run(workers, spec).await;
        assert!(stats.ok > 50, "{stats:?}");
        assert!(stats.errors > 0 && stats.errors < stats.ok, "{stats:?}");
        assert!(
            stats.percentile_ms(0.5) >= 2.0,
            "{}",
            stats.percentile_ms(0.5)
        );
        assert!(!stats.error_samples.is_empty());
    }

    #[tokio::test]
    async fn open_loop_charges_queueing_to_latency() {
        // One worker, 10 ms per request, 200 requests/s due: the schedule falls
        // behind, and latency measured from the due time must show it.
        let spec = LoadSpec {
            warmup: Duration::ZERO,
            duration: Duration::from_millis(300),
            concurrency: 1,
            rate: Some(200.0),
            max_requests: None,
        };
        let stats = run(vec![Sleeper(Duration::from_millis(10))], spec).await;
        assert!(
            stats.percentile_ms(0.99) > 50.0,
            "p99 {} ms",
            stats.percentile_ms(0.99)
        );
    }

    #[tokio::test]
    async fn max_requests_stops_a_smoke_run_early() {
        let spec = LoadSpec {
            warmup: Duration::ZERO,
            duration: Duration::from_secs(30),
            concurrency: 2,
            rate: None,
            max_requests: Some(40),
        };
        let started = Instant::now();
        let stats = run(
            vec![
                Sleeper(Duration::from_millis(1)),
                Sleeper(Duration::from_millis(1)),
            ],
            spec,
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            stats.ok + stats.errors >= 40 && stats.ok + stats.errors <= 42,
            "{stats:?}"
        );
    }
}
