//! The one error type of the testkit: every message says what failed and, where
//! the fix is known (a missing binary, a missing OS user), what to run.

use std::path::PathBuf;
use std::time::Duration;

/// Result with the testkit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong when starting, using or stopping a dependency server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A server or client binary is not installed.
    #[error("{name} not found on PATH or in {searched}: run scripts/setup")]
    MissingBinary {
        /// The binary looked for, e.g. `mailhog`.
        name: String,
        /// The folders searched besides `PATH`, comma-separated.
        searched: String,
    },

    /// Running as root, a server that refuses root (PostgreSQL) needs its OS user.
    #[error(
        "OS user `{user}` does not exist; as root, {server} runs as that user: run scripts/setup (the Debian package creates it)"
    )]
    MissingUser {
        /// The user looked for.
        user: String,
        /// The server that needs it.
        server: String,
    },

    /// A file-system or process operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done, e.g. `creating /tmp/x/sock`.
        action: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The server process kept running but never answered.
    #[error("{server} did not become ready within {waited:?}; last lines of {}:\n{tail}", log.display())]
    NotReady {
        /// Which server.
        server: String,
        /// How long we waited.
        waited: Duration,
        /// Its log file.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },

    /// The server process exited before it was ready.
    #[error("{server} exited during start-up ({status}); last lines of {}:\n{tail}", log.display())]
    Exited {
        /// Which server.
        server: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },

    /// A setting (an environment variable, a builder value) is not valid.
    #[error("{0}")]
    Config(String),

    /// A fixed port (persistent mode) is already taken.
    #[error("{server}: port {port} on 127.0.0.1 is already in use (is another instance running?)")]
    PortInUse {
        /// Which server wanted it.
        server: String,
        /// The port.
        port: u16,
    },

    /// A helper command (initdb, psql, rabbitmqctl) failed.
    #[error("`{command}` failed ({status}): {output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stderr and stdout.
        output: String,
    },

    /// The server answered, but not as expected (HTTP status, JSON).
    #[error("{server}: {detail}")]
    Protocol {
        /// Which server.
        server: String,
        /// What was wrong.
        detail: String,
    },

    /// The operation needs a running server, and this one is stopped.
    #[error("{server} is stopped: call start_again() first")]
    Stopped {
        /// Which server.
        server: String,
    },

    /// A condition polled for did not come true in time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },
}

impl Error {
    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source,
        }
    }
}
