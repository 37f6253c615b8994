//! What a valid log entry is, checked the same way whichever door it came in by.
//!
//! The rules themselves live in `switchboard_wire::entry`, so that the broker
//! and the listener refuse exactly what the logger refuses, with the same
//! messages. Every door turns its request into a [`ValidEntry`] with
//! [`EntryRules::parse`] before anything reaches the store.

use crate::settings::Limits;

pub use switchboard_wire::MAX_ID_BYTES;
/// Why an entry was refused; the message is what the client sees.
pub use switchboard_wire::entry::InvalidLogEntry as EntryError;
/// The configured limits (`limits.max_name_bytes`, `limits.max_data_bytes`).
pub use switchboard_wire::entry::LogLimits as EntryRules;
/// An entry that passed validation, ready to be stored.
pub use switchboard_wire::entry::ValidLogEntry as ValidEntry;

impl From<&Limits> for EntryRules {
    fn from(limits: &Limits) -> Self {
        Self {
            max_name_bytes: limits.max_name_bytes,
            max_data_bytes: limits.max_data_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_are_the_shared_defaults() {
        assert_eq!(EntryRules::from(&Limits::default()), EntryRules::default());
    }
}
