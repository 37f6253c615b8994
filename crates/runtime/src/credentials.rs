//! Secrets from files, never from the configuration or the environment: a path
//! the settings name (`…password_file`), else a systemd credential
//! (`LoadCredential=NAME:…`, read from `$CREDENTIALS_DIRECTORY/NAME`).
//!
//! A configured file must be readable: a typo there is an error at start that
//! names the file. A credential that is absent is simply no secret, so a unit
//! with `LoadCredential=` in the relative credstore form (skipped by systemd
//! when the source does not exist) also runs where no password is needed.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

/// The variable systemd sets for units with `LoadCredential=`.
pub const DIRECTORY_VARIABLE: &str = "CREDENTIALS_DIRECTORY";

/// `$CREDENTIALS_DIRECTORY`, when set and not empty.
pub fn directory() -> Option<PathBuf> {
    std::env::var_os(DIRECTORY_VARIABLE)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
}

/// A secret and the file it came from (only the file ever shows in messages).
#[derive(Clone)]
pub struct Secret {
    value: SecretString,
    source: PathBuf,
}

impl Secret {
    /// A secret that did not come from a file (tests, callers with their own source).
    pub fn new(value: impl Into<String>, source: impl Into<PathBuf>) -> Self {
        Self {
            value: SecretString::from(value.into()),
            source: source.into(),
        }
    }

    /// The secret itself: hand it to the client library, never to a log line.
    pub fn expose(&self) -> &str {
        self.value.expose_secret()
    }

    /// The file the secret was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("value", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// A secret file that exists (or was configured) but gives no secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is empty", path.display())]
    Empty { path: PathBuf },
}

/// The secret in `file` when one is configured, else in the credential `name`
/// under `credentials` (`$CREDENTIALS_DIRECTORY`, see [`directory`]) when that
/// file exists, else none.
///
/// One trailing newline (`\n` or `\r\n`, as `echo` and editors write) is not
/// part of the secret; anything else, spaces included, is kept as written.
pub fn load(
    file: Option<&Path>,
    name: &str,
    credentials: Option<&Path>,
) -> Result<Option<Secret>, CredentialError> {
    let path = match (file, credentials) {
        (Some(file), _) => file.to_owned(),
        (None, Some(dir)) if dir.join(name).is_file() => dir.join(name),
        (None, _) => return Ok(None),
    };
    let contents =
        std::fs::read_to_string(&path).map_err(|source| CredentialError::Unreadable {
            path: path.clone(),
            source,
        })?;
    let value = contents
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&contents);
    if value.is_empty() {
        return Err(CredentialError::Empty { path });
    }
    Ok(Some(Secret {
        value: SecretString::from(value.to_owned()),
        source: path,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write");
        path
    }

    #[test]
    fn the_configured_file_wins_over_the_credential() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "amqp-password", "from-credential\n");
        let file = write(dir.path(), "configured", "from-file\n");

        let secret = load(Some(&file), "amqp-password", Some(dir.path()))
            .expect("readable")
            .expect("a secret");
        assert_eq!(secret.expose(), "from-file");
        assert_eq!(secret.source(), file);

        let secret = load(None, "amqp-password", Some(dir.path()))
            .expect("readable")
            .expect("a secret");
        assert_eq!(secret.expose(), "from-credential");
        assert_eq!(secret.source(), dir.path().join("amqp-password"));
    }

    #[test]
    fn no_file_and_no_credential_is_no_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            load(None, "amqp-password", Some(dir.path()))
                .expect("fine")
                .is_none()
        );
        assert!(load(None, "amqp-password", None).expect("fine").is_none());
        // A directory of that name is not a credential either.
        std::fs::create_dir(dir.path().join("amqp-password")).expect("mkdir");
        assert!(
            load(None, "amqp-password", Some(dir.path()))
                .expect("fine")
                .is_none()
        );
    }

    #[test]
    fn one_trailing_newline_is_dropped_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (contents, expected) in [
            ("secret\n", "secret"),
            ("secret\r\n", "secret"),
            ("secret", "secret"),
            ("secret\n\n", "secret\n"),
            (" spaced secret \n", " spaced secret "),
        ] {
            let file = write(dir.path(), "pw", contents);
            let secret = load(Some(&file), "unused", None)
                .expect("readable")
                .expect("a secret");
            assert_eq!(secret.expose(), expected, "{contents:?}");
        }
    }

    #[test]
    fn a_configured_file_that_cannot_be_read_is_named() {
        let err = load(
            Some(Path::new("/nonexistent/amqp-password")),
            "amqp-password",
            None,
        )
        .expect_err("missing file");
        assert!(matches!(err, CredentialError::Unreadable { .. }));
        assert!(
            err.to_string().contains("/nonexistent/amqp-password"),
            "{err}"
        );
    }

    #[test]
    fn a_credential_that_cannot_be_read_is_named() {
        // Running as root, permissions do not stop a read; bytes that are not
        // UTF-8 do.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("amqp-password"), [0xff, 0xfe, b'\n']).expect("write");
        let err = load(None, "amqp-password", Some(dir.path())).expect_err("not UTF-8");
        assert!(matches!(err, CredentialError::Unreadable { .. }));
        assert!(err.to_string().contains("amqp-password"), "{err}");
    }

    #[test]
    fn an_empty_file_is_an_error_not_an_empty_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "pw", "\n");
        let err = load(Some(&file), "unused", None).expect_err("empty");
        assert!(err.to_string().contains("is empty"), "{err}");
        write(dir.path(), "amqp-password", "");
        let err = load(None, "amqp-password", Some(dir.path())).expect_err("empty");
        assert!(err.to_string().contains("amqp-password"), "{err}");
    }

    #[test]
    fn debug_shows_the_source_but_not_the_value() {
        let secret = Secret::new("hunter2", "/run/credentials/x/amqp-password");
        let shown = format!("{secret:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("/run/credentials/x/amqp-password"),
            "{shown}"
        );
    }
}
