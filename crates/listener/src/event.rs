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
use switchboard_wire::LogEntry;

/// Bodies larger than this are refused before parsing. The logger's own
/// limits (`limits.max_name_bytes`, `limits.max_data_bytes`, default 64 KiB
/// of data) are checked by the logger, which refuses an entry over them; this
/// bound only keeps a runaway producer from making the listener parse and
/// forward megabytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The AMQP header that carries a request id from producer to logger.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

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
    #[error("name is empty")]
    EmptyName,
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
    pub fn from_delivery(delivery: &Delivery) -> Result<Self, Malformed> {
        let properties = &delivery.properties;
        let message_id = properties.message_id().as_ref().map(|id| id.as_str());
        let request_id = properties
            .headers()
            .as_ref()
            .and_then(|headers| header_text(headers, REQUEST_ID_HEADER));
        Self::parse(&delivery.data, message_id, request_id)
    }

    /// [`Event::from_delivery`] on the parts that matter.
    pub fn parse(
        body: &[u8],
        message_id: Option<&str>,
        request_id: Option<String>,
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
        if name.trim().is_empty() {
            return Err(Malformed::EmptyName);
        }
        let id = message_id
            .filter(|id| !id.is_empty())
            .map(ToOwned::to_owned);
        Ok(Self {
            entry: LogEntry { name, data, id },
            request_id,
        })
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

    #[test]
    fn a_well_formed_event_keeps_its_message_id() {
        let event = Event::parse(
            br#"{"name":"authentication","data":"a@b.c logged in","extra":1}"#,
            Some("0196a5e2-7a7c-7d2b-9c3e-5f4a3b2c1d0e"),
            Some("req-1".into()),
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
        let first = Event::parse(body, None, None).expect("valid");
        let empty = Event::parse(body, Some(""), None).expect("valid");
        assert_eq!(first.entry.id, None);
        assert_eq!(empty.entry.id, None);
    }

    #[test]
    fn malformed_bodies_say_why() {
        let array = Event::parse(br#"["name","data"]"#, None, None).expect_err("array");
        assert!(array.to_string().contains("found an array"), "{array}");
        let not_json = Event::parse(b"hello", None, None).expect_err("not JSON");
        assert!(matches!(not_json, Malformed::NotAnEvent(_)), "{not_json}");
        let missing = Event::parse(br#"{"name":"x"}"#, None, None).expect_err("no data");
        assert!(missing.to_string().contains("data"), "{missing}");
        let wrong_type =
            Event::parse(br#"{"name":"x","data":{"a":1}}"#, None, None).expect_err("object data");
        assert!(wrong_type.to_string().contains("string"), "{wrong_type}");
        assert_eq!(
            Event::parse(br#"{"name":" ","data":"d"}"#, None, None),
            Err(Malformed::EmptyName)
        );
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            Event::parse(&huge, None, None),
            Err(Malformed::TooLarge {
                len: MAX_BODY_BYTES + 1,
                max: MAX_BODY_BYTES
            })
        );
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
