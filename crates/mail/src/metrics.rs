//! Mail's own metrics, beside the runtime's (requests, process): messages
//! by outcome and how long the SMTP server took to take one.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;
use switchboard_runtime::metrics::{Metrics, latency_histogram};

/// How a `POST /send` ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SendOutcome {
    /// The SMTP server accepted the message.
    sent,
    /// The request was refused as bad input; nothing was sent.
    refused,
    /// The SMTP server failed, was busy or did not answer in time.
    failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SendLabels {
    outcome: SendOutcome,
}

/// What mail counts, registered in the service's [`Metrics`].
#[derive(Debug, Clone)]
pub struct MailMetrics {
    sends: Family<SendLabels, Counter>,
    durations: Histogram,
}

impl MailMetrics {
    pub fn register(registry: &Metrics) -> Self {
        let metrics = Self {
            sends: Family::default(),
            durations: latency_histogram(),
        };
        registry.register(
            "switchboard_mail_sends",
            "Messages asked for, by outcome (sent, refused, failed)",
            metrics.sends.clone(),
        );
        registry.register_with_unit(
            "switchboard_mail_send_duration",
            "Time the SMTP server took to accept (or fail) one message",
            Unit::Seconds,
            metrics.durations.clone(),
        );
        metrics
    }

    pub fn send(&self, outcome: SendOutcome) {
        self.sends.get_or_create(&SendLabels { outcome }).inc();
    }

    pub fn smtp_took(&self, took: std::time::Duration) {
        self.durations.observe(took.as_secs_f64());
    }
}
