//! The W3C trace context in AMQP message headers (`traceparent`,
//! `tracestate` as long strings), the carrier OpenTelemetry's messaging
//! conventions use: a consumer's span continues the publisher's trace.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::propagation::{Extractor, Injector};

use crate::telemetry;

/// Adds the current span's trace context to `headers`; nothing while
/// traces are off.
pub fn inject(headers: &mut FieldTable) {
    telemetry::inject(&mut HeadersCarrier(headers));
}

/// Adds the trace context of `traced`, a publish that runs outside the work
/// that produced the message (a queued event), to `headers`.
pub fn inject_traced(traced: &telemetry::Traced, headers: &mut FieldTable) {
    traced.inject(&mut HeadersCarrier(headers));
}

/// The trace of a message consumed: the one its headers carry, or a new
/// one.
pub fn entry(headers: Option<&FieldTable>) -> telemetry::Entry {
    let empty = FieldTable::default();
    telemetry::entry(&HeadersReader(headers.unwrap_or(&empty)))
}

struct HeadersCarrier<'a>(&'a mut FieldTable);

impl Injector for HeadersCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes an empty `tracestate` when there is none.
        if value.is_empty() {
            return;
        }
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

#[cfg(test)]
mod tests {
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    #[test]
    fn the_trace_context_travels_in_message_headers() {
        let trace = TraceId::from(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c_u128);
        let sent = opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            trace,
            SpanId::from(9),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ));
        let mut headers = FieldTable::default();
        telemetry::inject_context(&sent, &mut HeadersCarrier(&mut headers));
        assert!(headers.contains_key("traceparent"), "{headers:?}");
        assert!(!headers.contains_key("tracestate"), "empty tracestate sent");
        let received = TraceContextPropagator::new().extract(&HeadersReader(&headers));
        assert_eq!(received.span().span_context().trace_id(), trace);
        assert!(received.span().span_context().is_remote());
    }

    #[test]
    fn a_short_string_header_is_read_too() {
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("traceparent"),
            AMQPValue::ShortString(ShortString::from(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )),
        );
        headers.insert(ShortString::from("count"), AMQPValue::LongInt(3));
        let reader = HeadersReader(&headers);
        assert_eq!(
            reader.get("traceparent"),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(reader.get("count"), None);
    }
}
