//! Validated inputs: an [`Email`] that is one, a [`Password`] bcrypt can hash
//! without silently ignoring part of it, and the [`Name`]s of a user. Parsing
//! happens once at the edge (HTTP body, CLI flags); the rest of the service only
//! sees values that are known to be well-formed.

use std::fmt;

use email_address::{EmailAddress, Options};

/// bcrypt only looks at the first 72 bytes; longer passwords are refused
/// instead of being truncated behind the user's back.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// RFC 5321 limits a forward path to 256 octets including the angle brackets.
pub const MAX_EMAIL_BYTES: usize = 254;

/// Longest first or last name accepted by the CLI.
pub const MAX_NAME_BYTES: usize = 255;

/// Why an input was refused; the message is shown to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("email is empty")]
    EmptyEmail,
    #[error("email is longer than {MAX_EMAIL_BYTES} bytes")]
    LongEmail,
    #[error("email {email:?} is not a valid address: {reason}")]
    BadEmail { email: String, reason: String },
    #[error("password is empty")]
    EmptyPassword,
    #[error(
        "password is {0} bytes long; at most {MAX_PASSWORD_BYTES} bytes are accepted (bcrypt ignores the rest)"
    )]
    LongPassword(usize),
    #[error("{field} is longer than {MAX_NAME_BYTES} bytes")]
    LongName { field: &'static str },
}

/// An e-mail address: trimmed, lower-cased (logins must not depend on how the
/// user capitalised it), a bare `local@domain` without display name, with a
/// domain name rather than an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InvalidInput::EmptyEmail);
        }
        if trimmed.len() > MAX_EMAIL_BYTES {
            return Err(InvalidInput::LongEmail);
        }
        let options = Options::default()
            .without_display_text()
            .without_domain_literal();
        EmailAddress::parse_with_options(trimmed, options).map_err(|err| {
            InvalidInput::BadEmail {
                email: trimmed.to_owned(),
                reason: err.to_string(),
            }
        })?;
        Ok(Self(trimmed.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password of 1 to 72 bytes. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn parse(raw: String) -> Result<Self, InvalidInput> {
        if raw.is_empty() {
            return Err(InvalidInput::EmptyPassword);
        }
        if raw.len() > MAX_PASSWORD_BYTES {
            return Err(InvalidInput::LongPassword(raw.len()));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A first or last name: trimmed, at most [`MAX_NAME_BYTES`]; empty is allowed
/// (the original schema has no constraint either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidInput> {
        let trimmed = raw.trim();
        if trimmed.len() > MAX_NAME_BYTES {
            return Err(InvalidInput::LongName { field });
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        let email = Email::parse("  Admin@Example.COM \n").expect("valid");
        assert_eq!(email.as_str(), "admin@example.com");
    }

    #[test]
    fn things_that_are_not_emails_are_refused_with_a_reason() {
        for raw in [
            "",
            "   ",
            "plainaddress",
            "@example.com",
            "user@",
            "a b@example.com",
            "Admin <admin@example.com>",
            "user@[127.0.0.1]",
        ] {
            let err = Email::parse(raw).expect_err(raw);
            assert!(!err.to_string().is_empty());
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(InvalidInput::LongEmail));
    }

    #[test]
    fn passwords_up_to_72_bytes_are_accepted() {
        assert!(Password::parse("x".repeat(72)).is_ok());
        assert_eq!(
            Password::parse("x".repeat(73)),
            Err(InvalidInput::LongPassword(73))
        );
        // Bytes, not characters: 37 two-byte characters are 74 bytes.
        assert_eq!(
            Password::parse("é".repeat(37)),
            Err(InvalidInput::LongPassword(74))
        );
        assert_eq!(
            Password::parse(String::new()),
            Err(InvalidInput::EmptyPassword)
        );
    }

    #[test]
    fn password_debug_is_redacted() {
        let password = Password::parse("verysecret".into()).expect("valid");
        assert!(!format!("{password:?}").contains("verysecret"));
    }

    #[test]
    fn long_names_are_refused() {
        assert!(Name::parse("first_name", &"n".repeat(255)).is_ok());
        assert_eq!(
            Name::parse("first_name", &"n".repeat(256)),
            Err(InvalidInput::LongName {
                field: "first_name"
            })
        );
    }
}
