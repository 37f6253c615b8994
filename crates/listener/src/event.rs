//! What an event on `logs_topic` is, and how a delivery becomes a log entry.
//!
//! The body is the original system's JSON `{"name": "...", "data": "..."}`;
//! anything else cannot ever be stored, so it is refused here (and dead-lettered
//! at once) instead of being offered to the logger over and over.
//!
//! # The idempotency id, and why it is never derived from the content
//!
//! RabbitMQ redelivers a message whenever its acknowledgement did not arrive:
//! the listener was killed after the logger stored the event, the connection
//! broke, the logger answered after the timeout. The logger stores an entry
//! whose id it has seen before only once, so a message that carries an AMQP
//! `message_id` is stored **exactly once** however often it is delivered:
//! the id is forwarded unchanged.
//!
//! A message without a `message_id` is forwarded **without** an id, so it is
//! stored **at least once**: in the windows above it may be stored twice.
//! Deriving an id from exchange, routing key, body and timestamp would look
//! like exactly-once but would silently drop real events: a redelivery and a
//! second, identical event cannot be told apart (AMQP timestamps have
//! one-second resolution, and the original system's clients publish
//! `{"name":"event","data":"Some kind of data"}` on every click of the test
//! page, with neither id nor timestamp). Losing an event is worse than storing
//! it twice, so exactly-once is what producers opt into by setting
//! `message_id` — every Switchboard producer does.

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use serde::Deserialize;
use switchboard_wire::{InvalidLogEntry, LogEntry, LogLimits};

/// Bodies larger than this are refused before parsing. The entry itself is
/// then checked against the log entry rules (`switchboard_wire::entry`, with
/// the listener's `limits.*`, the logger's by default); this bound only keeps
/// a runaway producer from making the listener parse megabytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The AMQP header that carries a request id from producer to logger.
pub use switchboard_wire::REQUEST_ID_HEADER;

/// A delivery that can be forwarded: the entry and the request id to pass on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub entry: LogEntry,
    pub request_id: Option<String>,
}

/// Why a message can never be stored; logged with the dead-lettering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("body is {len} bytes; the limit is {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("body is not a JSON object {{\"name\": string, \"data\": string}}: {0}")]
    NotAnEvent(String),
    /// An event, but not a log entry the logger would store (the shared
    /// rules: empty name, over the limits, an unusable `message_id`…).
    #[error("{}", .0.message())]
    Invalid(#[from] InvalidLogEntry),
}

/// The body as the original system's producers send it. Unknown fields are
/// ignored, as the original Go listener did.
#[derive(Debug, Deserialize)]
struct Body {
    name: String,
    data: String,
}

impl Event {
    /// Reads a delivery's body and properties.
    pub fn from_delivery(delivery: &Delivery, limits: &LogLimits) -> Result<Self, Malformed> {
        let properties = &delivery.properties;
        let message_id = properties.message_id().as_ref().map(|id| id.as_str());
        let request_id = properties
            .headers()
            .as_ref()
            .and_then(|headers| header_text(headers, REQUEST_ID_HEADER));
        Self::parse(&delivery.data, message_id, request_id, limits)
    }

    /// [`Event::from_delivery`] on the parts that matter.
    pub fn parse(
        body: &[u8],
        message_id: Option<&str>,
        request_id: Option<String>,
        limits: &LogLimits,
    ) -> Result<Self, Malformed> {
        if body.len() > MAX_BODY_BYTES {
            return Err(Malformed::TooLarge {
                len: body.len(),
                max: MAX_BODY_BYTES,
            });
        }
        // Through `Value` first: serde would also read a struct from a JSON
        // array (`["name","data"]`), which is not what producers send.
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|err| Malformed::NotAnEvent(err.to_string()))?;
        if !value.is_object() {
            return Err(Malformed::NotAnEvent(format!(
                "found {}",
                json_kind(&value)
            )));
        }
        let Body { name, data } =
            serde_json::from_value(value).map_err(|err| Malformed::NotAnEvent(err.to_string()))?;
        let id = message_id
            .filter(|id| !id.is_empty())
            .map(ToOwned::to_owned);
        // The logger would refuse it with the same words; refusing here
        // spares the round trip and puts the reason on the dead letter.
        let entry = limits.parse(name, data, id)?.into_entry();
        Ok(Self { entry, request_id })
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A header's value as text, whichever string type the producer used.
pub fn header_text(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
    .filter(|text| !text.is_empty())
}

/// How often a quorum queue has delivered this message before
/// (`x-delivery-count`; absent on the first delivery).
pub fn delivery_count(delivery: &Delivery) -> u64 {
    let Some(headers) = delivery.properties.headers() else {
        return 0;
    };
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongUInt(n)) => u64::from(*n),
        Some(AMQPValue::ShortInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::ShortUInt(n)) => u64::from(*n),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LogLimits = LogLimits {
        max_name_bytes: 256,
        max_data_bytes: 65536,
    };

    #[test]
    fn a_well_formed_event_keeps_its_message_id() {
        let event = Event::parse(
            br#"{"name":"authentication","data":"a@b.c logged in","extra":1}"#,
            Some("0196a5e2-7a7c-7d2b-9c3e-5f4a3b2c1d0e"),
            Some("req-1".into()),
            &LIMITS,
        )
        .expect("valid");
        assert_eq!(event.entry.name, "authentication");
        assert_eq!(event.entry.data, "a@b.c logged in");
        assert_eq!(
            event.entry.id.as_deref(),
            Some("0196a5e2-7a7c-7d2b-9c3e-5f4a3b2c1d0e")
        );
        assert_eq!(event.request_id.as_deref(), Some("req-1"));
    }

    #[test]
    fn without_a_message_id_no_id_is_invented() {
        let body = br#"{"name":"event","data":"Some kind of data"}"#;
        let first = Event::parse(body, None, None, &LIMITS).expect("valid");
        let empty = Event::parse(body, Some(""), None, &LIMITS).expect("valid");
        assert_eq!(first.entry.id, None);
        assert_eq!(empty.entry.id, None);
    }

    #[test]
    fn malformed_bodies_say_why() {
        let parse = |body: &[u8]| Event::parse(body, None, None, &LIMITS);
        let array = parse(br#"["name","data"]"#).expect_err("array");
        assert!(array.to_string().contains("found an array"), "{array}");
        let not_json = parse(b"hello").expect_err("not JSON");
        assert!(matches!(not_json, Malformed::NotAnEvent(_)), "{not_json}");
        let missing = parse(br#"{"name":"x"}"#).expect_err("no data");
        assert!(missing.to_string().contains("data"), "{missing}");
        let wrong_type = parse(br#"{"name":"x","data":{"a":1}}"#).expect_err("object data");
        assert!(wrong_type.to_string().contains("string"), "{wrong_type}");
        assert_eq!(
            parse(br#"{"name":" ","data":"d"}"#),
            Err(Malformed::Invalid(InvalidLogEntry::EmptyName))
        );
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            parse(&huge),
            Err(Malformed::TooLarge {
                len: MAX_BODY_BYTES + 1,
                max: MAX_BODY_BYTES
            })
        );
    }

    #[test]
    fn entries_the_logger_would_refuse_are_refused_with_its_words() {
        let long_name = format!(r#"{{"name":"{}","data":"d"}}"#, "n".repeat(10_000));
        let err = Event::parse(long_name.as_bytes(), None, None, &LIMITS).expect_err("too long");
        assert_eq!(
            err.to_string(),
            "invalid log entry: name is 10000 bytes long; the limit is 256 bytes"
        );
        let body = br#"{"name":"n","data":"d"}"#;
        let err = Event::parse(body, Some("has space"), None, &LIMITS).expect_err("bad id");
        assert_eq!(err, Malformed::Invalid(InvalidLogEntry::IdNotVisibleAscii));
    }

    #[test]
    fn headers_are_read_whatever_their_string_type() {
        let mut headers = FieldTable::default();
        headers.insert(
            REQUEST_ID_HEADER.into(),
            AMQPValue::LongString("abc".into()),
        );
        headers.insert("short".into(), AMQPValue::ShortString("def".into()));
        headers.insert("number".into(), AMQPValue::LongInt(3));
        assert_eq!(
            header_text(&headers, REQUEST_ID_HEADER).as_deref(),
            Some("abc")
        );
        assert_eq!(header_text(&headers, "short").as_deref(), Some("def"));
        assert_eq!(header_text(&headers, "number"), None);
        assert_eq!(header_text(&headers, "missing"), None);
    }
}
