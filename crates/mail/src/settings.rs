//! The mail service's configuration: sections and keys exactly as in the
//! README's table (`SWITCHBOARD_MAIL__<SECTION>__<KEY>` overrides any of them).
//!
//! The SMTP password is deliberately not a key: it comes from the file named by
//! `smtp.password_file` or from the systemd credential `smtp-password`, so it
//! never sits in the environment or in a world-readable configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_runtime::service::ServiceSettings;
use switchboard_runtime::{HttpLimits, RuntimeSettings, TelemetrySettings};

/// Everything `switchboard-mail` can be configured with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Addresses to bind when no socket is passed in.
    pub listen: Listen,
    /// The SMTP relay every message goes through.
    pub smtp: Smtp,
    /// The sender used when a request leaves `from` empty.
    pub sender: Sender,
    /// Size limits on requests.
    pub limits: Limits,
    /// Bounds of the HTTP door: connections, timeouts, header sizes.
    pub http: HttpLimits,
    /// Shutdown and logging, shared by every service.
    pub runtime: RuntimeSettings,
    /// Where traces go (none by default).
    pub telemetry: TelemetrySettings,
}

impl ServiceSettings for Settings {
    fn runtime(&self) -> &RuntimeSettings {
        &self.runtime
    }

    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}

/// `[listen]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// The HTTP API (`POST /send`, `/healthz`, `/readyz`); socket name `http`.
    pub http: SocketAddr,
    /// The metrics door (socket name `metrics`): none unless set or passed.
    pub metrics: Option<SocketAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8083)),
            metrics: None,
        }
    }
}

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// Plain SMTP (MailHog, or a relay on the same host).
    None,
    /// Plain connection upgraded with `STARTTLS`; refuses to send if the server
    /// does not offer it (usually port 587).
    Starttls,
    /// TLS from the first byte ("implicit TLS", usually port 465).
    Tls,
}

/// `[smtp]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Smtp {
    /// Host name or IP address of the SMTP server; also the name its TLS
    /// certificate must carry when encryption is on.
    pub host: String,
    /// TCP port of the SMTP server.
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub encryption: Encryption,
    /// User name for SMTP authentication; unset means no authentication.
    pub username: Option<String>,
    /// File holding the SMTP password (one line). Unset: the systemd credential
    /// `smtp-password` (`$CREDENTIALS_DIRECTORY/smtp-password`) if present.
    pub password_file: Option<PathBuf>,
    /// How long opening a TCP connection to the server may take.
    pub connect_timeout_ms: u64,
    /// How long sending one message may take in all: waiting for a free
    /// connection, connecting, and the SMTP dialogue.
    pub send_timeout_ms: u64,
    /// SMTP connections kept open for reuse, and the most messages in flight
    /// at once.
    pub pool_max_size: u32,
}

impl Default for Smtp {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 1025,
            encryption: Encryption::None,
            username: None,
            password_file: None,
            connect_timeout_ms: 5_000,
            send_timeout_ms: 10_000,
            pool_max_size: 8,
        }
    }
}

impl Smtp {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }

    /// `host:port`, the way error messages name the server.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `[sender]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sender {
    /// Display name of the default sender.
    pub name: String,
    /// Address of the default sender.
    pub address: String,
}

impl Default for Sender {
    fn default() -> Self {
        Self {
            name: "Switchboard".to_owned(),
            address: "switchboard@example.com".to_owned(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted `message`, in bytes (UTF-8).
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 262_144,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use switchboard_runtime::config::{Sources, load};

    #[test]
    fn defaults_match_the_readme() {
        let settings: Settings = load("mail", &Sources::default()).expect("defaults load");
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.listen.http.to_string(), "127.0.0.1:8083");
        assert_eq!(settings.smtp.server(), "127.0.0.1:1025");
        assert_eq!(settings.smtp.encryption, Encryption::None);
        assert_eq!(settings.smtp.username, None);
        assert_eq!(settings.smtp.password_file, None);
        assert_eq!(settings.smtp.pool_max_size, 8);
        assert_eq!(settings.limits.max_message_bytes, 262_144);
    }

    #[test]
    fn the_example_file_spells_out_the_defaults() {
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/mail.toml");
        let settings: Settings = load(
            "mail",
            &Sources {
                file: Some(example),
                env: HashMap::new(),
            },
        )
        .expect("config/mail.toml loads");
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn environment_sets_optional_keys_and_encryption() {
        let env: HashMap<String, String> = [
            ("SWITCHBOARD_MAIL__SMTP__USERNAME", "relay-user"),
            ("SWITCHBOARD_MAIL__SMTP__PASSWORD_FILE", "/run/secret"),
            ("SWITCHBOARD_MAIL__SMTP__ENCRYPTION", "starttls"),
            ("SWITCHBOARD_MAIL__SMTP__PORT", "587"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings: Settings = load("mail", &Sources { file: None, env }).expect("load");
        assert_eq!(settings.smtp.username.as_deref(), Some("relay-user"));
        assert_eq!(
            settings.smtp.password_file,
            Some(PathBuf::from("/run/secret"))
        );
        assert_eq!(settings.smtp.encryption, Encryption::Starttls);
        assert_eq!(settings.smtp.port, 587);
    }

    #[test]
    fn a_password_key_is_refused() {
        let env: HashMap<String, String> = [("SWITCHBOARD_MAIL__SMTP__PASSWORD", "hunter2")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let err =
            load::<Settings>("mail", &Sources { file: None, env }).expect_err("no password key");
        assert!(err.to_string().contains("password"), "{err}");
    }
}
