//! The broker's configuration: the sections and keys of the README's broker
//! table, loaded by `switchboard_runtime::config` (defaults < TOML < environment).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_runtime::{HttpLimits, RuntimeSettings, TelemetrySettings};
use switchboard_wire::LogLimits;

use crate::payload::LogVia;

/// Everything `switchboard-broker` can be configured with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Addresses bound when no socket of that name is passed in.
    pub listen: Listen,
    /// Where the downstream services are and how long to wait for them.
    pub downstream: Downstream,
    /// RabbitMQ, for logs sent with `"via": "amqp"`.
    pub events: Events,
    /// Request size and rate limits, and the log entry limits.
    pub limits: Limits,
    /// Operator endpoints.
    pub admin: Admin,
    /// Bounds of the HTTP door: connections, timeouts, header sizes.
    pub http: HttpLimits,
    /// Settings every service has (shutdown drain, logging).
    pub runtime: RuntimeSettings,
    /// Where traces go (none by default).
    pub telemetry: TelemetrySettings,
}

impl switchboard_runtime::service::ServiceSettings for Settings {
    fn runtime(&self) -> &RuntimeSettings {
        &self.runtime
    }

    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}

/// `[listen]`: fallback addresses for the sockets systemd would pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// The HTTP door (socket name `http`).
    pub http: SocketAddr,
    /// The metrics door (socket name `metrics`): none unless set or passed.
    pub metrics: Option<SocketAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics: None,
        }
    }
}

/// `[downstream]`: the services the broker forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Downstream {
    /// Base URL of the auth service (`POST /authenticate`).
    pub auth_url: String,
    /// Base URL of the logger's HTTP door (`POST /log`).
    pub logger_http_url: String,
    /// The HTTP doors of further logger instances (same store), base URLs
    /// separated by commas or spaces; empty for one logger. Requests go to
    /// `logger_http_url` and these in turn.
    pub logger_http_urls: String,
    /// `host:port` of the logger's Rust-native RPC door.
    pub logger_rpc_addr: String,
    /// The RPC doors of further logger instances, `host:port` separated by
    /// commas or spaces; empty for one logger.
    pub logger_rpc_addrs: String,
    /// URL of the logger's gRPC door.
    pub logger_grpc_url: String,
    /// The gRPC doors of further logger instances, URLs separated by commas
    /// or spaces; empty for one logger. tonic balances over all of them.
    pub logger_grpc_urls: String,
    /// Base URL of the mail service (`POST /send`).
    pub mail_url: String,
    /// Deadline of every outbound call (connect included), in milliseconds.
    pub timeout_ms: u64,
    /// The log transport used when a request does not name one.
    pub default_log_via: LogVia,
}

impl Default for Downstream {
    fn default() -> Self {
        Self {
            auth_url: "http://127.0.0.1:8081".to_owned(),
            logger_http_url: "http://127.0.0.1:8082".to_owned(),
            logger_http_urls: String::new(),
            logger_rpc_addr: "127.0.0.1:5001".to_owned(),
            logger_rpc_addrs: String::new(),
            logger_grpc_url: "http://127.0.0.1:50001".to_owned(),
            logger_grpc_urls: String::new(),
            mail_url: "http://127.0.0.1:8083".to_owned(),
            timeout_ms: 5000,
            default_log_via: LogVia::Rpc,
        }
    }
}

impl Downstream {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// `[events]`: where `"via": "amqp"` publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Events {
    /// RabbitMQ URI (vhost as the path, `%2f` for `/`).
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
    /// The durable topic exchange the listener consumes from.
    pub exchange: String,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            amqp_password_file: None,
            amqp_nodes: String::new(),
            exchange: switchboard_wire::events::DEFAULT_EXCHANGE.to_owned(),
        }
    }
}

/// `[limits]`: protection against oversized and overly frequent requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body; larger bodies get a 400 that states the limit.
    pub max_body_bytes: usize,
    /// Sustained requests per second per client IP on `/handle`; `0` disables the limit.
    pub rate_per_second: u32,
    /// Requests a client IP may send at once before the rate applies; `0` disables the limit.
    pub rate_burst: u32,
    /// Longest accepted `log.name`, in bytes: the logger's `limits.max_name_bytes`.
    pub max_log_name_bytes: usize,
    /// Longest accepted `log.data`, in bytes: the logger's `limits.max_data_bytes`.
    pub max_log_data_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let log = LogLimits::default();
        Self {
            max_body_bytes: 1_048_576,
            rate_per_second: 100,
            rate_burst: 200,
            max_log_name_bytes: log.max_name_bytes,
            max_log_data_bytes: log.max_data_bytes,
        }
    }
}

impl Limits {
    /// The rules every log entry is checked with before it is forwarded or
    /// published (the logger's, `switchboard_wire::entry`).
    pub fn log_limits(&self) -> LogLimits {
        LogLimits {
            max_name_bytes: self.max_log_name_bytes,
            max_data_bytes: self.max_log_data_bytes,
        }
    }
}

/// `[admin]`: endpoints for operators, off unless switched on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// Serve `GET /downstreams` (each downstream's address, reachability and
    /// error). Off by default: the broker faces clients, and that list is a
    /// map of the internal network. When off, the route answers 404 like any
    /// unknown path.
    pub expose_downstreams: bool,
    /// Serve `GET /logs?limit=` (the logger's newest entries, for the test
    /// page). Off by default for the same reason: entries are whatever the
    /// services logged (e-mail addresses of logins among them), not for
    /// every client of the broker. When off, the route answers 404.
    pub expose_logs: bool,
}

/// A setting that parses but cannot work; found at start, named in the error.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key} = {value:?}: {reason}")]
pub struct InvalidSetting {
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

impl Settings {
    /// Checks what serde cannot: URLs that parse, a non-zero timeout.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let d = &self.downstream;
        for (key, value) in [
            ("downstream.auth_url", &d.auth_url),
            ("downstream.logger_http_url", &d.logger_http_url),
            ("downstream.logger_grpc_url", &d.logger_grpc_url),
            ("downstream.mail_url", &d.mail_url),
        ] {
            check_http_url(key, value)?;
        }
        for (key, list) in [
            ("downstream.logger_http_urls", &d.logger_http_urls),
            ("downstream.logger_grpc_urls", &d.logger_grpc_urls),
        ] {
            for url in crate::clients::rotation::list_items(list) {
                check_http_url(key, &url).map_err(|err| InvalidSetting {
                    value: list.clone(),
                    reason: format!("{url:?}: {}", err.reason),
                    ..err
                })?;
            }
        }
        check_host_port(
            "downstream.logger_rpc_addr",
            &d.logger_rpc_addr,
            &d.logger_rpc_addr,
        )?;
        for addr in crate::clients::rotation::list_items(&d.logger_rpc_addrs) {
            check_host_port("downstream.logger_rpc_addrs", &d.logger_rpc_addrs, &addr)?;
        }
        if d.timeout_ms == 0 {
            return Err(InvalidSetting {
                key: "downstream.timeout_ms",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        if !self.events.amqp_url.starts_with("amqp://")
            && !self.events.amqp_url.starts_with("amqps://")
        {
            return Err(InvalidSetting {
                key: "events.amqp_url",
                // The URL may hold a password.
                value: switchboard_runtime::amqp::redact(&self.events.amqp_url),
                reason: "expected an amqp:// URI".into(),
            });
        }
        Ok(())
    }
}

/// `addr`, an item of setting `key` (whose whole value is `value`), is `host:port`.
fn check_host_port(key: &'static str, value: &str, addr: &str) -> Result<(), InvalidSetting> {
    if addr
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        let reason = if addr == value {
            "expected host:port".to_owned()
        } else {
            format!("{addr:?}: expected host:port")
        };
        return Err(InvalidSetting {
            key,
            value: value.to_owned(),
            reason,
        });
    }
    Ok(())
}

fn check_http_url(key: &'static str, value: &str) -> Result<(), InvalidSetting> {
    let invalid = |reason: String| InvalidSetting {
        key,
        value: value.to_owned(),
        reason,
    };
    let uri: http::Uri = value
        .parse()
        .map_err(|err: http::uri::InvalidUri| invalid(err.to_string()))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.host().is_some() => Ok(()),
        _ => Err(invalid(
            "expected an http:// or https:// URL with a host".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_readme() {
        let settings = Settings::default();
        settings.validate().expect("defaults validate");
        assert_eq!(settings.listen.http.port(), 8080);
        assert_eq!(settings.downstream.timeout_ms, 5000);
        assert_eq!(settings.downstream.default_log_via, LogVia::Rpc);
        assert_eq!(settings.limits.rate_per_second, 100);
        assert_eq!(settings.limits.rate_burst, 200);
        assert_eq!(settings.events.exchange, "logs_topic");
        assert!(!settings.admin.expose_downstreams);
        assert_eq!(settings.limits.log_limits(), LogLimits::default());
    }

    #[test]
    fn bad_values_are_named() {
        let mut settings = Settings::default();
        settings.downstream.logger_rpc_addr = "localhost".into();
        let err = settings.validate().expect_err("no port");
        assert!(
            err.to_string().contains("downstream.logger_rpc_addr"),
            "{err}"
        );

        let mut settings = Settings::default();
        settings.downstream.mail_url = "127.0.0.1:8083".into();
        let err = settings.validate().expect_err("no scheme");
        assert!(err.to_string().contains("downstream.mail_url"), "{err}");
    }

    #[test]
    fn logger_lists_are_checked_item_by_item() {
        let mut settings = Settings::default();
        settings.downstream.logger_rpc_addrs = "10.0.0.2:5001, 10.0.0.3:5001".into();
        settings.downstream.logger_grpc_urls = "http://10.0.0.2:50001 http://10.0.0.3:50001".into();
        settings.downstream.logger_http_urls = "http://10.0.0.2:8082".into();
        settings.validate().expect("lists validate");

        settings.downstream.logger_rpc_addrs = "10.0.0.2:5001, 10.0.0.3".into();
        let err = settings.validate().expect_err("no port").to_string();
        assert!(err.contains("downstream.logger_rpc_addrs"), "{err}");
        assert!(err.contains("\"10.0.0.3\""), "{err}");

        let mut settings = Settings::default();
        settings.downstream.logger_grpc_urls = "http://10.0.0.2:50001, 10.0.0.3:50001".into();
        let err = settings.validate().expect_err("no scheme").to_string();
        assert!(err.contains("downstream.logger_grpc_urls"), "{err}");
    }

    #[test]
    fn environment_overrides_use_the_documented_names() {
        let sources = switchboard_runtime::config::Sources {
            file: None,
            env: [
                ("SWITCHBOARD_BROKER__DOWNSTREAM__DEFAULT_LOG_VIA", "amqp"),
                ("SWITCHBOARD_BROKER__LIMITS__RATE_PER_SECOND", "0"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        };
        let settings: Settings =
            switchboard_runtime::config::load("broker", &sources).expect("load");
        assert_eq!(settings.downstream.default_log_via, LogVia::Amqp);
        assert_eq!(settings.limits.rate_per_second, 0);
    }

    #[test]
    fn the_amqp_password_file_is_a_setting() {
        let sources = switchboard_runtime::config::Sources {
            file: None,
            env: [(
                "SWITCHBOARD_BROKER__EVENTS__AMQP_PASSWORD_FILE".to_owned(),
                "/etc/switchboard/credentials/amqp-password".to_owned(),
            )]
            .into_iter()
            .collect(),
        };
        let settings: Settings =
            switchboard_runtime::config::load("broker", &sources).expect("load");
        assert_eq!(
            settings.events.amqp_password_file.as_deref(),
            Some(std::path::Path::new(
                "/etc/switchboard/credentials/amqp-password"
            ))
        );
        assert_eq!(Settings::default().events.amqp_password_file, None);
    }

    #[test]
    fn a_bad_amqp_url_is_named_without_its_password() {
        let mut settings = Settings::default();
        settings.events.amqp_url = "guest:secret@rabbit".into();
        let err = settings.validate().expect_err("no scheme");
        let message = err.to_string();
        assert!(message.contains("events.amqp_url"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }
}
