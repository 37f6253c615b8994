//! The connection to the SMTP relay: one pooled lettre transport, the SMTP
//! password from a file or a systemd credential, a bound on concurrent
//! sessions, and a timeout on every send and connection test.
//!
//! lettre parks a connection back in its pool when the future using it is
//! dropped, even in the middle of an SMTP exchange (a send timeout, a client
//! that hung up). The next user would then read the previous command's late
//! reply as the answer to its own and the dialogue would be out of step. So a
//! dialogue cut off part-way retires the whole pool: the transport is replaced
//! by a fresh one built from the same settings and the old one is shut down,
//! which closes its connections instead of reusing them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::settings::{Encryption, Smtp};

/// The systemd credential that holds the SMTP password (`LoadCredential=`).
pub const PASSWORD_CREDENTIAL: &str = "smtp-password";

/// The SMTP settings cannot be turned into a transport.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read the SMTP password from {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the SMTP password file {path} is empty")]
    EmptyPassword { path: PathBuf },
    #[error(
        "smtp.username is set but there is no password: set smtp.password_file or provide the credential `{PASSWORD_CREDENTIAL}`"
    )]
    UsernameWithoutPassword,
    #[error("an SMTP password was found in {path} but smtp.username is unset")]
    PasswordWithoutUsername { path: PathBuf },
    #[error("smtp.pool_max_size must be at least 1")]
    EmptyPool,
    #[error("smtp.host is empty")]
    NoHost,
    #[error("cannot set up TLS for SMTP server {server}: {source}")]
    Tls {
        server: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
}

/// Sending one message failed. The messages name the SMTP server, because the
/// person reading them has to know which machine to look at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error(
        "all {connections} connections to SMTP server {server} stayed busy for {waited_ms} ms; nothing was sent"
    )]
    Busy {
        server: String,
        connections: u32,
        waited_ms: u64,
    },
    #[error("SMTP server {server} did not answer within {waited_ms} ms")]
    Timeout { server: String, waited_ms: u64 },
    #[error("SMTP server {server} failed: {detail}")]
    Failed { server: String, detail: String },
}

/// The SMTP password and where it came from (for error messages, never the value).
#[derive(Debug)]
pub struct Password {
    pub secret: SecretString,
    pub source: PathBuf,
}

/// The password from `password_file`, else from `credentials_dir/smtp-password`
/// if that file exists, else none. `credentials_dir` is `$CREDENTIALS_DIRECTORY`.
pub fn load_password(
    password_file: Option<&Path>,
    credentials_dir: Option<&Path>,
) -> Result<Option<Password>, SetupError> {
    let path = match (password_file, credentials_dir) {
        (Some(file), _) => file.to_owned(),
        (None, Some(dir)) if dir.join(PASSWORD_CREDENTIAL).is_file() => {
            dir.join(PASSWORD_CREDENTIAL)
        }
        (None, _) => return Ok(None),
    };
    let contents = std::fs::read_to_string(&path).map_err(|source| SetupError::PasswordFile {
        path: path.clone(),
        source,
    })?;
    // Files written by `echo` or an editor end in a newline that is not part of
    // the password; anything else (spaces included) is kept as written.
    let password = contents
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&contents);
    if password.is_empty() {
        return Err(SetupError::EmptyPassword { path });
    }
    Ok(Some(Password {
        secret: SecretString::from(password.to_owned()),
        source: path,
    }))
}

/// Sends messages through one pooled SMTP transport.
pub struct Mailer {
    builder: AsyncSmtpTransportBuilder,
    current: Mutex<Generation>,
    sessions: Arc<Semaphore>,
    max_sessions: u32,
    server: String,
    send_timeout: Duration,
}

struct Generation {
    number: u64,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("max_sessions", &self.max_sessions)
            .field("send_timeout", &self.send_timeout)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Builds the transport; connects lazily (see [`Mailer::test_connection`]).
    /// Must be called inside the tokio runtime (the pool spawns its janitor).
    pub fn new(settings: &Smtp, password: Option<Password>) -> Result<Self, SetupError> {
        if settings.host.trim().is_empty() {
            return Err(SetupError::NoHost);
        }
        if settings.pool_max_size == 0 {
            return Err(SetupError::EmptyPool);
        }
        let server = settings.server();
        let tls_parameters = || {
            TlsParameters::new(settings.host.clone()).map_err(|source| SetupError::Tls {
                server: server.clone(),
                source,
            })
        };
        let tls = match settings.encryption {
            Encryption::None => Tls::None,
            Encryption::Starttls => Tls::Required(tls_parameters()?),
            Encryption::Tls => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(settings.connect_timeout()))
            .pool_config(PoolConfig::new().max_size(settings.pool_max_size));
        match (&settings.username, password) {
            (Some(username), Some(password)) => {
                if settings.encryption == Encryption::None && !is_loopback(&settings.host) {
                    tracing::warn!(
                        server = %server,
                        "the SMTP password goes over an unencrypted connection; set smtp.encryption"
                    );
                }
                builder = builder.credentials(Credentials::new(
                    username.clone(),
                    password.secret.expose_secret().to_owned(),
                ));
            }
            (Some(_), None) => return Err(SetupError::UsernameWithoutPassword),
            (None, Some(password)) => {
                return Err(SetupError::PasswordWithoutUsername {
                    path: password.source,
                });
            }
            (None, None) => {}
        }
        let transport = builder.clone().build();
        Ok(Self {
            builder,
            current: Mutex::new(Generation {
                number: 0,
                transport,
            }),
            sessions: Arc::new(Semaphore::new(settings.pool_max_size as usize)),
            max_sessions: settings.pool_max_size,
            server,
            send_timeout: settings.send_timeout(),
        })
    }

    /// Closes the pooled connections politely (`QUIT`); later sends fail.
    pub async fn shutdown(&self) {
        let transport = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .transport
            .clone();
        transport.shutdown().await;
    }

    /// `host:port` of the SMTP server.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Sends `message`, all of it (waiting for a free session included) within
    /// `smtp.send_timeout_ms`.
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        let started = Instant::now();
        let deadline = started + self.send_timeout;
        let _session = match tokio::time::timeout_at(deadline, self.sessions.acquire()).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; treat it like a timeout all the same.
            Ok(Err(_)) | Err(_) => {
                return Err(SendError::Busy {
                    server: self.server.clone(),
                    connections: self.max_sessions,
                    waited_ms: millis(started.elapsed()),
                });
            }
        };
        let outcome = self
            .guarded(deadline, |transport| async move {
                transport.send(message).await.map(drop)
            })
            .await;
        self.outcome(outcome, started)
    }

    /// Checks that the server answers (connect, greeting, `NOOP`) within the
    /// send timeout. Uses the pool, so a working idle connection is reused.
    pub async fn test_connection(&self) -> Result<(), SendError> {
        let started = Instant::now();
        let outcome = self
            .guarded(started + self.send_timeout, |transport| async move {
                transport.test_connection().await
            })
            .await;
        match self.outcome(outcome, started)? {
            true => Ok(()),
            false => Err(SendError::Failed {
                server: self.server.clone(),
                detail: "the server did not answer NOOP".to_owned(),
            }),
        }
    }

    fn outcome<T>(
        &self,
        outcome: Option<Result<T, lettre::transport::smtp::Error>>,
        started: Instant,
    ) -> Result<T, SendError> {
        match outcome {
            Some(Ok(value)) => Ok(value),
            Some(Err(err)) if err.is_timeout() => Err(SendError::Timeout {
                server: self.server.clone(),
                waited_ms: millis(started.elapsed()),
            }),
            Some(Err(err)) => Err(SendError::Failed {
                server: self.server.clone(),
                detail: describe(&err),
            }),
            None => Err(SendError::Timeout {
                server: self.server.clone(),
                waited_ms: millis(started.elapsed()),
            }),
        }
    }

    /// Runs one SMTP exchange on the current transport until `deadline`
    /// (`None` when it ran out). If the exchange does not run to completion
    /// (deadline, or the caller's future dropped), the transport is retired.
    async fn guarded<T, F, Fut>(
        &self,
        deadline: Instant,
        exchange: F,
    ) -> Option<Result<T, lettre::transport::smtp::Error>>
    where
        F: FnOnce(AsyncSmtpTransport<Tokio1Executor>) -> Fut,
        Fut: std::future::Future<Output = Result<T, lettre::transport::smtp::Error>>,
    {
        let (generation, transport) = {
            let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            (current.number, current.transport.clone())
        };
        let mut guard = RetireUnlessFinished {
            mailer: self,
            generation,
            finished: false,
        };
        let outcome = tokio::time::timeout_at(deadline, exchange(transport))
            .await
            .ok();
        if outcome.is_some() {
            guard.finished = true;
        }
        outcome
    }

    /// Replaces transport `generation` (if still current) by a fresh one.
    fn retire(&self, generation: u64) {
        let retired = {
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            if current.number != generation {
                return;
            }
            let fresh = Generation {
                number: generation + 1,
                transport: self.builder.clone().build(),
            };
            std::mem::replace(&mut *current, fresh).transport
        };
        tracing::warn!(
            server = %self.server,
            "an SMTP exchange was cut off; closing the pooled connections and starting a new pool"
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { retired.shutdown().await });
        }
    }
}

/// Retires the transport when dropped before the exchange finished.
struct RetireUnlessFinished<'a> {
    mailer: &'a Mailer,
    generation: u64,
    finished: bool,
}

impl Drop for RetireUnlessFinished<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.mailer.retire(self.generation);
        }
    }
}

/// The error and its causes on one line (lettre's Display stops at one level).
fn describe(err: &lettre::transport::smtp::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
        let path = dir.join(name);
        let mut file = std::fs::File::create(&path).expect("create");
        file.write_all(contents.as_bytes()).expect("write");
        path
    }

    #[test]
    fn password_comes_from_the_file_then_the_credential() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "pw", "from-file\n");
        let credentials = tempfile::tempdir().expect("tempdir");
        write(
            credentials.path(),
            PASSWORD_CREDENTIAL,
            "from-credential\r\n",
        );

        let password = load_password(Some(&file), Some(credentials.path()))
            .expect("load")
            .expect("some");
        assert_eq!(password.secret.expose_secret(), "from-file");

        let password = load_password(None, Some(credentials.path()))
            .expect("load")
            .expect("some");
        assert_eq!(password.secret.expose_secret(), "from-credential");

        let empty = tempfile::tempdir().expect("tempdir");
        assert!(
            load_password(None, Some(empty.path()))
                .expect("load")
                .is_none()
        );
        assert!(load_password(None, None).expect("load").is_none());
    }

    #[test]
    fn a_named_password_file_must_exist_and_not_be_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        let err = load_password(Some(&missing), None).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
        let empty = write(dir.path(), "empty", "\n");
        assert!(matches!(
            load_password(Some(&empty), None),
            Err(SetupError::EmptyPassword { .. })
        ));
    }

    #[tokio::test]
    async fn username_and_password_go_together() {
        let mut settings = Smtp {
            username: Some("user".into()),
            ..Smtp::default()
        };
        assert!(matches!(
            Mailer::new(&settings, None),
            Err(SetupError::UsernameWithoutPassword)
        ));
        settings.username = None;
        let password = Password {
            secret: SecretString::from("pw".to_owned()),
            source: "/run/credentials/x/smtp-password".into(),
        };
        let err = Mailer::new(&settings, Some(password)).expect_err("no username");
        assert!(err.to_string().contains("smtp-password"), "{err}");
        settings.pool_max_size = 0;
        assert!(matches!(
            Mailer::new(&settings, None),
            Err(SetupError::EmptyPool)
        ));
    }

    /// A server that accepts and then says nothing: the send must end at the
    /// timeout with a 504-kind error, and the pool must be replaced.
    #[tokio::test]
    async fn a_silent_server_times_out_and_retires_the_pool() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let settings = Smtp {
            port,
            send_timeout_ms: 200,
            ..Smtp::default()
        };
        let mailer = Mailer::new(&settings, None).expect("mailer");
        let err = mailer.test_connection().await.expect_err("silent server");
        assert!(matches!(err, SendError::Timeout { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
        let generation = mailer
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .number;
        assert_eq!(generation, 1, "the pool was not replaced");
        silent.abort();
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_failure_naming_the_server() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let settings = Smtp {
            port,
            ..Smtp::default()
        };
        let mailer = Mailer::new(&settings, None).expect("mailer");
        let err = mailer.test_connection().await.expect_err("nothing listens");
        assert!(matches!(err, SendError::Failed { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
        assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    }
}
