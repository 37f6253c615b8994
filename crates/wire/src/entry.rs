//! The one set of rules for a log entry, applied by every service that
//! handles one: the broker before it forwards or publishes, the listener
//! before it forwards an event, and each of the logger's doors before it
//! stores. Because they all call [`LogLimits::parse`], an entry the logger
//! would refuse is refused at the edge with the same message, over every
//! transport — in particular before an AMQP publish, after which a refusal
//! could only be a dead letter nobody sees.
//!
//! The rules:
//!
//! - `name`: not empty and not only whitespace, no control characters, at
//!   most [`LogLimits::max_name_bytes`] bytes;
//! - `data`: at most [`LogLimits::max_data_bytes`] bytes; may be empty;
//! - `id` (optional idempotency id): 1 to [`MAX_ID_BYTES`] bytes of visible
//!   ASCII (`!` to `~`), which is also what a gRPC metadata value and an AMQP
//!   `message_id` can carry unchanged.
//!
//! Values are stored exactly as sent: nothing is trimmed, because two entries
//! that differ only in whitespace are different entries (and an idempotency
//! check compares them byte for byte). Only the emptiness check of `name`
//! looks at the trimmed text. Limits count bytes of UTF-8, not characters;
//! the strings are UTF-8 by construction (JSON, MessagePack and protobuf
//! decoders refuse anything else before these rules run).

use serde::{Deserialize, Serialize};

use crate::LogEntry;

/// Longest accepted idempotency id. Ids are message ids or UUIDs; anything
/// much longer is a client bug, and `_id` values are indexed.
pub const MAX_ID_BYTES: usize = 256;

/// The configurable limits. Every service that validates entries has them as
/// settings with these defaults; keep them equal across services (or the
/// edge's at most the logger's), so the edge refuses what the logger would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    /// Longest accepted `name`, in bytes of UTF-8.
    pub max_name_bytes: usize,
    /// Longest accepted `data`, in bytes of UTF-8.
    pub max_data_bytes: usize,
}

impl LogLimits {
    /// The default `max_name_bytes`.
    pub const DEFAULT_MAX_NAME_BYTES: usize = 256;
    /// The default `max_data_bytes` (64 KiB).
    pub const DEFAULT_MAX_DATA_BYTES: usize = 64 * 1024;
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            max_name_bytes: Self::DEFAULT_MAX_NAME_BYTES,
            max_data_bytes: Self::DEFAULT_MAX_DATA_BYTES,
        }
    }
}

/// Why an entry was refused. The text is what clients see, after the prefix
/// `invalid log entry: ` (see [`InvalidLogEntry::message`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLogEntry {
    #[error("name must not be empty")]
    EmptyName,
    #[error("name must not contain control characters")]
    ControlInName,
    #[error("name is {len} bytes long; the limit is {max} bytes")]
    NameTooLong { len: usize, max: usize },
    #[error("data is {len} bytes long; the limit is {max} bytes")]
    DataTooLarge { len: usize, max: usize },
    #[error("id must not be empty when given")]
    EmptyId,
    #[error("id is {len} bytes long; the limit is {max} bytes")]
    IdTooLong { len: usize, max: usize },
    #[error("id must be visible ASCII (no spaces or control characters)")]
    IdNotVisibleAscii,
}

impl InvalidLogEntry {
    /// The message every service answers with: the same text over HTTP,
    /// gRPC, RPC and from the broker, whichever of them refused the entry.
    pub fn message(&self) -> String {
        format!("invalid log entry: {self}")
    }
}

/// An entry that passed [`LogLimits::parse`]. Only that function makes one,
/// so holding a `ValidLogEntry` means the rules were applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidLogEntry(LogEntry);

impl ValidLogEntry {
    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn data(&self) -> &str {
        &self.0.data
    }

    /// The idempotency id, stored as the document's `_id`.
    pub fn id(&self) -> Option<&str> {
        self.0.id.as_deref()
    }

    pub fn as_entry(&self) -> &LogEntry {
        &self.0
    }

    pub fn into_entry(self) -> LogEntry {
        self.0
    }

    /// The same entry with `id` when it has none (the broker gives every
    /// entry one). `id` must itself pass [`check_id`].
    pub fn with_id_if_missing(
        mut self,
        id: impl FnOnce() -> String,
    ) -> Result<Self, InvalidLogEntry> {
        if self.0.id.is_none() {
            let id = id();
            check_id(&id)?;
            self.0.id = Some(id);
        }
        Ok(self)
    }
}

impl LogLimits {
    /// Applies every rule of this module.
    pub fn parse(
        &self,
        name: String,
        data: String,
        id: Option<String>,
    ) -> Result<ValidLogEntry, InvalidLogEntry> {
        if name.trim().is_empty() {
            return Err(InvalidLogEntry::EmptyName);
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidLogEntry::ControlInName);
        }
        if name.len() > self.max_name_bytes {
            return Err(InvalidLogEntry::NameTooLong {
                len: name.len(),
                max: self.max_name_bytes,
            });
        }
        if data.len() > self.max_data_bytes {
            return Err(InvalidLogEntry::DataTooLarge {
                len: data.len(),
                max: self.max_data_bytes,
            });
        }
        if let Some(id) = &id {
            check_id(id)?;
        }
        Ok(ValidLogEntry(LogEntry { name, data, id }))
    }

    /// [`Self::parse`] for a whole [`LogEntry`].
    pub fn parse_entry(&self, entry: LogEntry) -> Result<ValidLogEntry, InvalidLogEntry> {
        self.parse(entry.name, entry.data, entry.id)
    }
}

/// The rules for an idempotency id alone (1 to [`MAX_ID_BYTES`] bytes of
/// visible ASCII).
pub fn check_id(id: &str) -> Result<(), InvalidLogEntry> {
    if id.is_empty() {
        return Err(InvalidLogEntry::EmptyId);
    }
    if id.len() > MAX_ID_BYTES {
        return Err(InvalidLogEntry::IdTooLong {
            len: id.len(),
            max: MAX_ID_BYTES,
        });
    }
    if !id.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(InvalidLogEntry::IdNotVisibleAscii);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LogLimits = LogLimits {
        max_name_bytes: 8,
        max_data_bytes: 16,
    };

    fn parse(name: &str, data: &str, id: Option<&str>) -> Result<ValidLogEntry, InvalidLogEntry> {
        LIMITS.parse(name.into(), data.into(), id.map(Into::into))
    }

    #[test]
    fn accepts_entries_within_the_limits_unchanged() {
        let entry = parse(" event ", "some data", Some("abc")).expect("valid");
        assert_eq!(entry.name(), " event ", "stored as sent, not trimmed");
        assert_eq!(entry.data(), "some data");
        assert_eq!(entry.id(), Some("abc"));
        assert!(parse("12345678", "", None).is_ok(), "empty data is fine");
        assert!(parse("n", &"x".repeat(16), None).is_ok());
        assert!(parse("n", "a\nb\tc\0", None).is_ok(), "data is free text");
    }

    #[test]
    fn refuses_with_a_reason() {
        assert_eq!(parse("", "d", None), Err(InvalidLogEntry::EmptyName));
        assert_eq!(parse(" \t ", "d", None), Err(InvalidLogEntry::EmptyName));
        assert_eq!(
            parse("a\nb", "d", None),
            Err(InvalidLogEntry::ControlInName)
        );
        assert_eq!(
            parse("123456789", "d", None),
            Err(InvalidLogEntry::NameTooLong { len: 9, max: 8 })
        );
        assert_eq!(
            parse("n", &"x".repeat(17), None),
            Err(InvalidLogEntry::DataTooLarge { len: 17, max: 16 })
        );
        assert_eq!(parse("n", "d", Some("")), Err(InvalidLogEntry::EmptyId));
        assert_eq!(
            parse("n", "d", Some("a b")),
            Err(InvalidLogEntry::IdNotVisibleAscii)
        );
        assert_eq!(
            parse("n", "d", Some("ä")),
            Err(InvalidLogEntry::IdNotVisibleAscii)
        );
        let long_id = "i".repeat(MAX_ID_BYTES + 1);
        assert_eq!(
            parse("n", "d", Some(&long_id)),
            Err(InvalidLogEntry::IdTooLong { len: 257, max: 256 })
        );
        assert_eq!(
            InvalidLogEntry::NameTooLong {
                len: 10_000,
                max: 256
            }
            .message(),
            "invalid log entry: name is 10000 bytes long; the limit is 256 bytes"
        );
    }

    #[test]
    fn limits_count_bytes_not_characters() {
        // Four characters, eight bytes.
        assert!(parse("ÄÖÜß", "d", None).is_ok());
        assert_eq!(
            parse("ÄÖÜßx", "d", None),
            Err(InvalidLogEntry::NameTooLong { len: 9, max: 8 })
        );
    }

    #[test]
    fn a_missing_id_is_filled_in_once() {
        let entry = parse("n", "d", None)
            .and_then(|entry| entry.with_id_if_missing(|| "fresh".into()))
            .expect("valid");
        assert_eq!(entry.id(), Some("fresh"));
        let kept = parse("n", "d", Some("client"))
            .and_then(|entry| entry.with_id_if_missing(|| "fresh".into()))
            .expect("valid");
        assert_eq!(kept.id(), Some("client"));
    }
}
