//! What a valid log entry is, checked the same way whichever door it came in by.
//!
//! Every door turns its request into a [`ValidEntry`] with
//! [`EntryRules::parse`] before anything reaches the store, so the three doors
//! accept and refuse exactly the same entries with the same messages.

use crate::settings::Limits;

pub use switchboard_wire::MAX_ID_BYTES;

/// Why an entry was refused; the message is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("name must not be empty")]
    EmptyName,
    #[error("name is {len} bytes long; the limit is {max} bytes")]
    NameTooLong { len: usize, max: usize },
    #[error("data is {len} bytes long; the limit is {max} bytes")]
    DataTooLarge { len: usize, max: usize },
    #[error("id must not be empty when given")]
    EmptyId,
    #[error("id is {len} bytes long; the limit is {max} bytes")]
    IdTooLong { len: usize, max: usize },
}

/// An entry that passed validation, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidEntry {
    name: String,
    data: String,
    id: Option<String>,
}

impl ValidEntry {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn data(&self) -> &str {
        &self.data
    }
    /// The client's idempotency id, stored as the document's `_id`.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// The configured limits, applied by [`EntryRules::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRules {
    pub max_name_bytes: usize,
    pub max_data_bytes: usize,
}

impl From<&Limits> for EntryRules {
    fn from(limits: &Limits) -> Self {
        Self {
            max_name_bytes: limits.max_name_bytes,
            max_data_bytes: limits.max_data_bytes,
        }
    }
}

impl EntryRules {
    /// Checks an entry. Strings are UTF-8 by construction: JSON and protobuf
    /// decoders (and tarpc's MessagePack) refuse anything else before this.
    pub fn parse(
        &self,
        name: String,
        data: String,
        id: Option<String>,
    ) -> Result<ValidEntry, EntryError> {
        if name.is_empty() {
            return Err(EntryError::EmptyName);
        }
        if name.len() > self.max_name_bytes {
            return Err(EntryError::NameTooLong {
                len: name.len(),
                max: self.max_name_bytes,
            });
        }
        if data.len() > self.max_data_bytes {
            return Err(EntryError::DataTooLarge {
                len: data.len(),
                max: self.max_data_bytes,
            });
        }
        if let Some(id) = &id {
            if id.is_empty() {
                return Err(EntryError::EmptyId);
            }
            if id.len() > MAX_ID_BYTES {
                return Err(EntryError::IdTooLong {
                    len: id.len(),
                    max: MAX_ID_BYTES,
                });
            }
        }
        Ok(ValidEntry { name, data, id })
    }

    /// [`Self::parse`] for the shared wire type.
    pub fn parse_entry(&self, entry: switchboard_wire::LogEntry) -> Result<ValidEntry, EntryError> {
        self.parse(entry.name, entry.data, entry.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: EntryRules = EntryRules {
        max_name_bytes: 8,
        max_data_bytes: 16,
    };

    fn parse(name: &str, data: &str, id: Option<&str>) -> Result<ValidEntry, EntryError> {
        RULES.parse(name.into(), data.into(), id.map(Into::into))
    }

    #[test]
    fn accepts_entries_within_the_limits() {
        let entry = parse("event", "some data", Some("abc")).expect("valid");
        assert_eq!(entry.name(), "event");
        assert_eq!(entry.data(), "some data");
        assert_eq!(entry.id(), Some("abc"));
        assert!(parse("12345678", "", None).is_ok(), "empty data is fine");
        assert!(parse("n", &"x".repeat(16), None).is_ok());
    }

    #[test]
    fn refuses_with_a_reason() {
        assert_eq!(parse("", "d", None), Err(EntryError::EmptyName));
        assert_eq!(
            parse("123456789", "d", None),
            Err(EntryError::NameTooLong { len: 9, max: 8 })
        );
        assert_eq!(
            parse("n", &"x".repeat(17), None),
            Err(EntryError::DataTooLarge { len: 17, max: 16 })
        );
        assert_eq!(parse("n", "d", Some("")), Err(EntryError::EmptyId));
        let long_id = "i".repeat(MAX_ID_BYTES + 1);
        assert!(matches!(
            parse("n", "d", Some(&long_id)),
            Err(EntryError::IdTooLong { .. })
        ));
        assert_eq!(
            EntryError::DataTooLarge { len: 17, max: 16 }.to_string(),
            "data is 17 bytes long; the limit is 16 bytes"
        );
    }

    #[test]
    fn limits_count_bytes_not_characters() {
        // Four characters, eight bytes.
        assert!(parse("ÄÖÜß", "d", None).is_ok());
        assert!(matches!(
            parse("ÄÖÜßx", "d", None),
            Err(EntryError::NameTooLong { len: 9, .. })
        ));
    }
}
