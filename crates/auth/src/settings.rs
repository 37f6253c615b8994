//! The auth service's configuration: sections and keys as in the README's table
//! (`SWITCHBOARD_AUTH__<SECTION>__<KEY>` overrides any of them), plus
//! `events.max_pending`, the bound of the in-memory queue of login events that
//! wait for RabbitMQ, and `[throttle]`, the limits on failed logins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_runtime::service::ServiceSettings;
use switchboard_runtime::{HttpLimits, RuntimeSettings, TelemetrySettings};

/// The bcrypt costs the `bcrypt` crate accepts.
pub const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=31;

/// Everything `switchboard-auth` can be configured with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to bind when no socket of that name is passed in.
    pub listen: Listen,
    /// The PostgreSQL database holding the users.
    pub database: Database,
    /// Where login events are published.
    pub events: Events,
    /// Password hashing and request limits.
    pub security: Security,
    /// Limits on failed logins per account and per client address.
    pub throttle: Throttle,
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

/// A value that deserializes but cannot work; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key} {problem}")]
pub struct InvalidSetting {
    pub key: &'static str,
    pub problem: String,
}

impl Settings {
    /// Checks what serde cannot: ranges and non-empty values. Called before the
    /// service touches any dependency, so a bad value stops it at once.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |key, problem: String| Err(InvalidSetting { key, problem });
        if !BCRYPT_COSTS.contains(&self.security.bcrypt_cost) {
            return invalid(
                "security.bcrypt_cost",
                format!(
                    "is {}; it must be between {} and {}",
                    self.security.bcrypt_cost,
                    BCRYPT_COSTS.start(),
                    BCRYPT_COSTS.end()
                ),
            );
        }
        if self.security.max_body_bytes == 0 {
            return invalid("security.max_body_bytes", "must be at least 1".into());
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1".into());
        }
        if self.database.acquire_timeout_ms == 0 {
            return invalid("database.acquire_timeout_ms", "must be at least 1".into());
        }
        if self.database.url.trim().is_empty() {
            return invalid("database.url", "must not be empty".into());
        }
        if self.events.amqp_url.trim().is_empty() {
            return invalid("events.amqp_url", "must not be empty".into());
        }
        if self.events.exchange.trim().is_empty() {
            return invalid("events.exchange", "must not be empty".into());
        }
        if self.events.publish_timeout_ms == 0 {
            return invalid("events.publish_timeout_ms", "must be at least 1".into());
        }
        if self.events.max_pending == 0 {
            return invalid("events.max_pending", "must be at least 1".into());
        }
        if self.throttle.window_ms == 0 {
            return invalid("throttle.window_ms", "must be at least 1".into());
        }
        // A window beyond what PostgreSQL's interval arithmetic and the
        // Retry-After header carry sensibly is a typo, not a policy.
        if self.throttle.window_ms > MAX_THROTTLE_WINDOW_MS {
            return invalid(
                "throttle.window_ms",
                format!(
                    "is {}; at most {MAX_THROTTLE_WINDOW_MS} (one year) is accepted",
                    self.throttle.window_ms
                ),
            );
        }
        if let Err(problem) = self.throttle.trusted_proxy_networks() {
            return invalid("throttle.trusted_proxies", problem);
        }
        Ok(())
    }
}

/// `[listen]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// HTTP JSON API (`POST /authenticate`, health); socket name `http`.
    pub http: SocketAddr,
    /// The metrics door (socket name `metrics`): none unless set or passed.
    pub metrics: Option<SocketAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8081)),
            metrics: None,
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    /// PostgreSQL DSN. Unix-socket peer authentication:
    /// `postgres:///users?host=/run/postgresql`.
    pub url: String,
    /// A file holding the database password (trailing newline ignored). When
    /// unset, the systemd credential `db-password` is used if present.
    pub password_file: Option<PathBuf>,
    /// Pool size.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection (and a new connection
    /// for its handshake) before it fails.
    pub acquire_timeout_ms: u64,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/users".to_owned(),
            password_file: None,
            max_connections: 10,
            acquire_timeout_ms: 5_000,
        }
    }
}

impl Database {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
}

/// `[events]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Events {
    /// RabbitMQ for login events.
    pub amqp_url: String,
    /// A file holding the RabbitMQ password (one trailing newline ignored),
    /// which replaces the URL's; the user stays the URL's. When unset, the
    /// systemd credential `amqp-password` is used if present.
    pub amqp_password_file: Option<PathBuf>,
    /// The other nodes of a RabbitMQ cluster, `host:port` separated by
    /// commas or spaces (`host` alone: the URL's port); empty for a single
    /// RabbitMQ. User, password, vhost and options are the URL's; the
    /// connection goes to the URL's node first and, when its node goes, to
    /// the next one that answers.
    pub amqp_nodes: String,
    /// The topic exchange login events are published on.
    pub exchange: String,
    /// How long to wait for RabbitMQ's publisher confirm (and for a connection
    /// attempt) before the event is retried.
    pub publish_timeout_ms: u64,
    /// Login events kept in memory while RabbitMQ is unreachable; beyond this
    /// the newest event is dropped with an error log line naming it.
    pub max_pending: usize,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            amqp_password_file: None,
            amqp_nodes: String::new(),
            exchange: switchboard_wire::events::DEFAULT_EXCHANGE.to_owned(),
            publish_timeout_ms: 5_000,
            max_pending: 10_000,
        }
    }
}

impl Events {
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }
}

/// `[security]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Security {
    /// bcrypt cost for new hashes and for the dummy hash that unknown users
    /// are checked against (so they take as long as a wrong password).
    pub bcrypt_cost: u32,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for Security {
    fn default() -> Self {
        Self {
            bcrypt_cost: 12,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// The longest `throttle.window_ms` accepted: one year.
pub const MAX_THROTTLE_WINDOW_MS: u64 = 366 * 24 * 60 * 60 * 1000;

/// `[throttle]`: failed logins counted in PostgreSQL (shared by every auth
/// instance on the database, kept across restarts). Beyond a limit a login
/// is answered 429 without checking the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Throttle {
    /// Failed logins for one e-mail address (as normalised for the lookup,
    /// known or not) within the window; `0` disables this limit.
    pub max_failures_per_account: u32,
    /// Failed logins from one client address (IPv6: its /64) within the
    /// window, whatever the accounts; `0` disables this limit.
    pub max_failures_per_address: u32,
    /// How long a failure counts.
    pub window_ms: u64,
    /// Peers whose `X-Forwarded-For` names the client (the broker): addresses
    /// or networks (`10.0.0.0/8`), separated by commas or spaces. From any
    /// other peer the header is ignored and the peer is the client.
    pub trusted_proxies: String,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            max_failures_per_account: 5,
            max_failures_per_address: 20,
            window_ms: 15 * 60 * 1000,
            trusted_proxies: "127.0.0.0/8, ::1".to_owned(),
        }
    }
}

impl Throttle {
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    /// `trusted_proxies` parsed; the error says which entry is wrong.
    pub fn trusted_proxy_networks(&self) -> Result<Vec<crate::throttle::Network>, String> {
        self.trusted_proxies
            .split([',', ' ', '\t', '\n'])
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry.parse().map_err(|_| {
                    format!("has {entry:?}, which is neither an IP address nor a network like 10.0.0.0/8")
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_readme() {
        let settings = Settings::default();
        settings.validate().expect("defaults validate");
        assert_eq!(settings.listen.http.to_string(), "127.0.0.1:8081");
        assert_eq!(
            settings.database.url,
            "postgres://postgres@127.0.0.1:5432/users"
        );
        assert_eq!(settings.database.max_connections, 10);
        assert_eq!(settings.database.acquire_timeout_ms, 5_000);
        assert_eq!(settings.events.exchange, "logs_topic");
        assert_eq!(settings.events.publish_timeout_ms, 5_000);
        assert_eq!(settings.security.bcrypt_cost, 12);
        assert_eq!(settings.security.max_body_bytes, 1_048_576);
        assert_eq!(settings.throttle.max_failures_per_account, 5);
        assert_eq!(settings.throttle.max_failures_per_address, 20);
        assert_eq!(settings.throttle.window_ms, 900_000);
        assert_eq!(settings.throttle.trusted_proxies, "127.0.0.0/8, ::1");
    }

    #[test]
    fn a_bad_trusted_proxy_or_window_names_the_key() {
        let mut settings = Settings::default();
        settings.throttle.trusted_proxies = "127.0.0.1, broker.example".into();
        let err = settings.validate().expect_err("a host name");
        assert!(
            err.to_string().contains("throttle.trusted_proxies"),
            "{err}"
        );
        assert!(err.to_string().contains("broker.example"), "{err}");
        let mut settings = Settings::default();
        settings.throttle.window_ms = 0;
        let err = settings.validate().expect_err("empty window");
        assert!(err.to_string().contains("throttle.window_ms"), "{err}");
    }

    #[test]
    fn out_of_range_cost_names_the_key() {
        let mut settings = Settings::default();
        settings.security.bcrypt_cost = 3;
        let err = settings.validate().expect_err("cost 3 is too low");
        assert!(err.to_string().contains("security.bcrypt_cost"), "{err}");
    }

    #[test]
    fn zero_pool_size_names_the_key() {
        let mut settings = Settings::default();
        settings.database.max_connections = 0;
        let err = settings.validate().expect_err("empty pool");
        assert!(
            err.to_string().contains("database.max_connections"),
            "{err}"
        );
    }

    /// `config/auth.toml` documents every key with its default value.
    #[test]
    fn example_file_has_every_key_with_its_default() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/auth.toml");
        let text = std::fs::read_to_string(&path).expect("config/auth.toml");
        let file: toml::Table = toml::from_str(&text).expect("valid TOML");
        let defaults = serde_json::to_value(Settings::default()).expect("serialize");
        let sections = defaults.as_object().expect("sections");
        for (section, keys) in sections {
            let keys = keys.as_object().expect("keys");
            let in_file = file
                .get(section)
                .and_then(toml::Value::as_table)
                .unwrap_or_else(|| panic!("section [{section}] missing"));
            for (key, value) in keys {
                // Optional keys without a default are documented commented out.
                if value.is_null() {
                    assert!(
                        text.contains(&format!("# {key} = ")),
                        "{section}.{key} not documented"
                    );
                    continue;
                }
                let documented = in_file
                    .get(key)
                    .unwrap_or_else(|| panic!("{section}.{key} missing"));
                let documented = serde_json::to_value(documented).expect("to json");
                assert_eq!(&documented, value, "{section}.{key}");
            }
            assert_eq!(
                in_file.len(),
                keys.values().filter(|v| !v.is_null()).count(),
                "[{section}] has unknown keys"
            );
        }
        assert_eq!(file.len(), sections.len(), "unknown sections");
    }
}
