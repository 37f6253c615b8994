//! Auth's own metrics, beside the runtime's (requests, process, AMQP
//! publishes): logins by outcome, the throttle's refusals by scope, and
//! bcrypt (hashes waiting for a worker, and how long one takes).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;
use switchboard_runtime::metrics::Metrics;

use crate::throttle::Scope;

/// How a login ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LoginOutcome {
    /// 202: the password matched an active user.
    ok,
    /// Any other 4xx: bad input (400), or wrong credentials (401).
    invalid,
    /// 429: refused by the throttle without a password check.
    throttled,
    /// The user database or bcrypt failed.
    failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    outcome: LoginOutcome,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum ScopeLabel {
    account,
    address,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    scope: ScopeLabel,
}

/// What auth counts, registered in the service's [`Metrics`].
#[derive(Debug, Clone)]
pub struct AuthMetrics {
    registry: Metrics,
    logins: Family<LoginLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    pub(crate) bcrypt_waiting: Gauge,
    pub(crate) bcrypt_duration: Histogram,
}

impl AuthMetrics {
    pub fn register(registry: &Metrics) -> Self {
        let metrics = Self {
            registry: registry.clone(),
            logins: Family::default(),
            refusals: Family::default(),
            bcrypt_waiting: Gauge::default(),
            // bcrypt at cost 10–14 takes 50 ms to a few seconds.
            bcrypt_duration: Histogram::new([
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        };
        registry.register(
            "switchboard_auth_logins",
            "Logins, by outcome (ok, invalid, throttled, failed)",
            metrics.logins.clone(),
        );
        registry.register(
            "switchboard_auth_throttle_refusals",
            "Logins the throttle refused, by scope (account or address)",
            metrics.refusals.clone(),
        );
        registry.register(
            "switchboard_auth_bcrypt_waiting",
            "Password checks waiting for a bcrypt worker",
            metrics.bcrypt_waiting.clone(),
        );
        registry.register_with_unit(
            "switchboard_auth_bcrypt_duration",
            "Time one bcrypt hash or verification takes on its worker",
            Unit::Seconds,
            metrics.bcrypt_duration.clone(),
        );
        metrics
    }

    /// The registry these live in (and the request metrics beside them).
    pub fn registry(&self) -> &Metrics {
        &self.registry
    }

    pub fn login(&self, outcome: LoginOutcome) {
        self.logins.get_or_create(&LoginLabels { outcome }).inc();
    }

    pub fn refused(&self, scope: Scope) {
        let scope = match scope {
            Scope::Account => ScopeLabel::account,
            Scope::Address => ScopeLabel::address,
        };
        self.refusals.get_or_create(&RefusalLabels { scope }).inc();
    }
}
