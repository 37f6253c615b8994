//! The listener's metrics, beside the runtime's (process, calls to the
//! logger): deliveries by outcome, deliveries in flight, and whether the
//! breaker holds deliveries back. Read on each scrape from the counters the
//! status line shows ([`Stats`]) and from the [`Breaker`], so the journal's
//! status and the metrics never disagree.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use switchboard_runtime::metrics::Metrics;

use crate::backoff::Breaker;
use crate::stats::Stats;

#[derive(Debug)]
struct Deliveries {
    stats: Arc<Stats>,
    breaker: Arc<Breaker>,
}

/// Registers the listener's metrics in `registry`.
pub fn register(registry: &Metrics, stats: Arc<Stats>, breaker: Arc<Breaker>) {
    registry.register_collector(Deliveries { stats, breaker });
}

impl Collector for Deliveries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.stats.counts();
        let deliveries = encoder.encode_descriptor(
            "switchboard_listener_deliveries",
            "Attempts to store deliveries, by outcome (stored: acked after the logger stored \
             it; retried: the logger could not store it this time, so it was requeued or, as \
             the breaker's probe, held for the next probe; dead_lettered)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        let mut family = deliveries;
        for (outcome, count) in [
            ("stored", counts.stored),
            ("retried", counts.retried),
            ("dead_lettered", counts.dead_lettered),
        ] {
            ConstCounter::new(count).encode(family.encode_family(&[("outcome", outcome)])?)?;
        }
        let in_flight = ConstGauge::new(counts.in_flight as i64);
        in_flight.encode(encoder.encode_descriptor(
            "switchboard_listener_deliveries_in_flight",
            "Deliveries received and not yet settled",
            None,
            in_flight.metric_type(),
        )?)?;
        let open = ConstGauge::new(i64::from(self.breaker.is_shut()));
        open.encode(encoder.encode_descriptor(
            "switchboard_listener_breaker_open",
            "1 while the breaker holds deliveries back because the logger failed",
            None,
            open.metric_type(),
        )?)?;
        Ok(())
    }
}
