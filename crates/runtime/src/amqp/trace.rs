//! The W3C trace context in AMQP message headers (`traceparent`,
//! `tracestate` as long strings), the carrier OpenTelemetry's messaging
//! conventions use: a consumer's span continues the publisher's trace.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::telemetry;

/// Adds the current span's trace context to `headers`; nothing while
/// traces are off.
pub fn inject(headers: &mut FieldTable) {
    telemetry::inject(&mut HeadersCarrier(headers));
}

/// Adds `span`'s trace context to `headers`: the span of a publish that
/// runs outside the work that produced the message (a queued event).
pub fn inject_span(span: &tracing::Span, headers: &mut FieldTable) {
    if telemetry::enabled() {
        telemetry::inject_context(&span.context(), &mut HeadersCarrier(headers));
    }
}

/// Makes the trace a message's headers carry the parent of `span` (not yet
/// entered) and records its trace id; a message without one starts a trace.
pub fn adopt_parent(span: &tracing::Span, headers: Option<&FieldTable>) {
    let empty = FieldTable::default();
    telemetry::adopt_parent(span, &HeadersReader(headers.unwrap_or(&empty)));
}

struct HeadersCarrier<'a>(&'a mut FieldTable);

impl Injector for HeadersCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(
            ShortString::from(key.to_owned()),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
}

struct HeadersReader<'a>(&'a FieldTable);

impl Extractor for HeadersReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
            AMQPValue::ShortString(value) => Some(value.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(ShortString::as_str).collect()
    }
}
