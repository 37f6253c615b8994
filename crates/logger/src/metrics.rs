//! The logger's own metrics, beside the runtime's (requests, process):
//! writes by door and outcome, the group commit (entries per insert, the
//! store's write time, writes waiting for their batch) and the store's read
//! time.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Unit;
use switchboard_runtime::metrics::{Held, Metrics, latency_histogram};

/// The door a write came in by.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Door {
    http,
    rpc,
    grpc,
}

/// How a write ended; the same words on every door.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WriteOutcome {
    stored,
    invalid,
    conflict,
    unavailable,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    door: Door,
    outcome: WriteOutcome,
}

/// What the logger counts, registered in the service's [`Metrics`].
#[derive(Debug, Clone)]
pub struct LoggerMetrics {
    registry: Metrics,
    writes: Family<WriteLabels, Counter>,
    batch_entries: Histogram,
    store_writes: Histogram,
    writes_waiting: Gauge,
    store_reads: Histogram,
}

impl LoggerMetrics {
    pub fn register(registry: &Metrics) -> Self {
        let metrics = Self {
            registry: registry.clone(),
            writes: Family::default(),
            // 1, 2, 4, … 4,096: a batch is at most `batching.max_batch`.
            batch_entries: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            store_writes: latency_histogram(),
            writes_waiting: Gauge::default(),
            store_reads: latency_histogram(),
        };
        registry.register(
            "switchboard_logger_writes",
            "Log writes, by door (http, rpc, grpc) and outcome (stored, invalid, conflict, unavailable)",
            metrics.writes.clone(),
        );
        registry.register(
            "switchboard_logger_batch_entries",
            "Entries per store insert (the group commit's batch size)",
            metrics.batch_entries.clone(),
        );
        registry.register_with_unit(
            "switchboard_logger_store_write_duration",
            "Time one batch insert takes in the store",
            Unit::Seconds,
            metrics.store_writes.clone(),
        );
        registry.register(
            "switchboard_logger_writes_waiting",
            "Writes waiting for their batch to be stored",
            metrics.writes_waiting.clone(),
        );
        registry.register_with_unit(
            "switchboard_logger_store_read_duration",
            "Time one read (GET /logs, /logs/{id}) takes in the store",
            Unit::Seconds,
            metrics.store_reads.clone(),
        );
        metrics
    }

    /// The registry these live in.
    pub fn registry(&self) -> &Metrics {
        &self.registry
    }

    pub fn write(&self, door: Door, outcome: WriteOutcome) {
        self.writes
            .get_or_create(&WriteLabels { door, outcome })
            .inc();
    }

    pub fn batch_stored(&self, entries: usize, took: std::time::Duration) {
        self.batch_entries.observe(entries as f64);
        self.store_writes.observe(took.as_secs_f64());
    }

    /// Counts a write as waiting while the returned guard lives.
    pub fn waiting(&self) -> Held {
        Held::new(&self.writes_waiting)
    }

    pub fn read(&self, took: std::time::Duration) {
        self.store_reads.observe(took.as_secs_f64());
    }
}
