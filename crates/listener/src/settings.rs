//! The listener's configuration: the sections and keys of the README's listener
//! table (`SWITCHBOARD_LISTENER__<SECTION>__<KEY>` overrides any of them). The
//! listener's only socket is its metrics door (`[listen] metrics`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_runtime::service::ServiceSettings;
use switchboard_runtime::{RuntimeSettings, TelemetrySettings};
use switchboard_wire::LogLimits;

/// Everything `switchboard-listener` can be configured with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the metrics door listens when no `metrics` socket is passed.
    pub listen: Listen,
    /// The RabbitMQ server and the topology the listener declares and consumes.
    pub amqp: Amqp,
    /// Where stored events go: the logger, and how to reach it.
    pub logger: Logger,
    /// The log entry limits, the logger's own (`switchboard_wire::LogLimits`).
    pub limits: Limits,
    /// Shutdown and logging, shared by every service.
    pub runtime: RuntimeSettings,
    /// Where traces go (none by default).
    pub telemetry: TelemetrySettings,
}

/// `[listen]`: the fallback address of the socket systemd would pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// The metrics door (socket name `metrics`): none unless set or passed.
    pub metrics: Option<std::net::SocketAddr>,
}

impl ServiceSettings for Settings {
    fn runtime(&self) -> &RuntimeSettings {
        &self.runtime
    }

    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}

/// `[amqp]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Amqp {
    /// AMQP URI of the RabbitMQ server, vhost included (`%2f` is `/`).
    pub url: String,
    /// The other nodes of a RabbitMQ cluster, `host:port` separated by
    /// commas or spaces (`host` alone: the URL's port); empty for a single
    /// RabbitMQ. User, password, vhost and options are the URL's. The
    /// listener connects to the URL's node first and, when its node goes,
    /// to the next one that answers.
    pub nodes: String,
    /// A file holding the RabbitMQ password (one trailing newline ignored),
    /// which replaces the URL's; the user stays the URL's. When unset, the
    /// systemd credential `amqp-password` is used if present.
    pub password_file: Option<PathBuf>,
    /// The durable topic exchange producers publish events to.
    pub exchange: String,
    /// The durable queue the listener consumes, bound to `log.INFO`,
    /// `log.WARNING` and `log.ERROR`; a quorum queue where the server has them.
    pub queue: String,
    /// How many delivered but unacknowledged messages the listener may hold at
    /// once; they are forwarded to the logger concurrently.
    pub prefetch: u16,
    /// Deliveries of one message before RabbitMQ dead-letters it (quorum
    /// queues only; `x-delivery-limit`). Changing it for an existing queue
    /// needs a policy or a new queue: RabbitMQ refuses a redeclare with other
    /// arguments.
    pub delivery_limit: u32,
    /// On how many nodes of a cluster the quorum queues (`queue` and
    /// `dead_letter_queue`) start (`x-quorum-initial-group-size`; RabbitMQ
    /// caps it at the cluster's size). Applies only when a queue is created;
    /// 0 leaves it to the server (`quorum_cluster_size`).
    pub quorum_group_size: u32,
    /// Fanout exchange that receives malformed messages and those over the
    /// delivery limit.
    pub dead_letter_exchange: String,
    /// Durable queue bound to the dead-letter exchange, where those messages
    /// wait for an operator.
    pub dead_letter_queue: String,
}

impl Default for Amqp {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            nodes: String::new(),
            password_file: None,
            exchange: switchboard_wire::events::DEFAULT_EXCHANGE.to_owned(),
            queue: "logs".to_owned(),
            prefetch: 256,
            delivery_limit: 10,
            quorum_group_size: 3,
            dead_letter_exchange: "logs_topic.dlx".to_owned(),
            dead_letter_queue: "logs.dead".to_owned(),
        }
    }
}

/// `[logger]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Logger {
    /// Which of the logger's doors events are forwarded through.
    pub via: LoggerVia,
    /// `host:port` of the logger's Rust-native RPC door (used when `via = "rpc"`).
    pub rpc_addr: String,
    /// Base URL of the logger's HTTP door, `POST /log` (used when `via = "http"`).
    pub http_url: String,
    /// Bound on every call to the logger, connecting included.
    pub timeout_ms: u64,
    /// Over RPC, events in flight are forwarded many per call
    /// (`log_entries`): at most this many in one call, and each still gets
    /// its own outcome. 1 sends one `log_entry` call per event.
    pub batch_max: usize,
    /// Over RPC, how many `log_entries` calls may run at once; a batch forms
    /// from the events that arrive while they run, so a lone event still
    /// goes out at once.
    pub batch_calls: usize,
}

impl Default for Logger {
    fn default() -> Self {
        Self {
            via: LoggerVia::Rpc,
            rpc_addr: "127.0.0.1:5001".to_owned(),
            http_url: "http://127.0.0.1:8082".to_owned(),
            timeout_ms: 5_000,
            batch_max: 64,
            batch_calls: 4,
        }
    }
}

impl Logger {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// `[limits]`: what a log entry may be. An event over them is dead-lettered
/// at once with the reason, without a round trip to the logger; keep them
/// equal to the logger's `limits.*` (the defaults are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest accepted `name`, in bytes of UTF-8.
    pub max_name_bytes: usize,
    /// Longest accepted `data`, in bytes of UTF-8.
    pub max_data_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let shared = LogLimits::default();
        Self {
            max_name_bytes: shared.max_name_bytes,
            max_data_bytes: shared.max_data_bytes,
        }
    }
}

impl Limits {
    pub fn log_limits(&self) -> LogLimits {
        LogLimits {
            max_name_bytes: self.max_name_bytes,
            max_data_bytes: self.max_data_bytes,
        }
    }
}

/// The logger door the listener uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoggerVia {
    /// tarpc `LogRpc::log_entry` over one long-lived, multiplexed connection.
    Rpc,
    /// `POST /log` over a pooled HTTP client.
    Http,
}

/// A setting that loads but cannot work; named so the operator can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSetting {
    #[error("amqp.{key} must not be empty")]
    EmptyName { key: &'static str },
    #[error("amqp.{key} is {len} bytes long; AMQP names are at most 255 bytes")]
    NameTooLong { key: &'static str, len: usize },
    /// The parser's reason only: the URL may hold a password.
    #[error("amqp.url is not an AMQP URI: {0}")]
    AmqpUrl(String),
    #[error("amqp.prefetch must be at least 1")]
    ZeroPrefetch,
    #[error("amqp.delivery_limit must be between 1 and {max}", max = i32::MAX)]
    DeliveryLimitOutOfRange,
    #[error("logger.timeout_ms must be at least 1")]
    ZeroTimeout,
    #[error("logger.batch_max must be between 1 and {max}", max = switchboard_wire::rpc::MAX_BATCH_ENTRIES)]
    BatchMaxOutOfRange,
    #[error("logger.batch_calls must be at least 1")]
    ZeroBatchCalls,
    #[error("logger.rpc_addr {0:?} is not host:port")]
    RpcAddr(String),
    #[error("logger.http_url {0:?} is not an http:// or https:// URL")]
    HttpUrl(String),
}

impl Settings {
    /// Checks what serde cannot: names RabbitMQ would refuse, limits that make
    /// no sense, addresses that cannot be dialled.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let amqp = &self.amqp;
        if amqp.url.starts_with("amqps://") {
            return Err(InvalidSetting::AmqpUrl(
                "amqps:// needs TLS, which this build does not include; \
                 reach RabbitMQ over loopback or a tunnel"
                    .to_owned(),
            ));
        }
        if !amqp.url.starts_with("amqp://") {
            return Err(InvalidSetting::AmqpUrl(
                "it must start with amqp://".to_owned(),
            ));
        }
        if let Err(reason) = amqp.url.parse::<lapin::uri::AMQPUri>() {
            return Err(InvalidSetting::AmqpUrl(reason));
        }
        for (key, name) in [
            ("exchange", &amqp.exchange),
            ("queue", &amqp.queue),
            ("dead_letter_exchange", &amqp.dead_letter_exchange),
            ("dead_letter_queue", &amqp.dead_letter_queue),
        ] {
            if name.is_empty() {
                return Err(InvalidSetting::EmptyName { key });
            }
            if name.len() > 255 {
                return Err(InvalidSetting::NameTooLong {
                    key,
                    len: name.len(),
                });
            }
        }
        if amqp.prefetch == 0 {
            return Err(InvalidSetting::ZeroPrefetch);
        }
        if amqp.delivery_limit == 0 || i32::try_from(amqp.delivery_limit).is_err() {
            return Err(InvalidSetting::DeliveryLimitOutOfRange);
        }
        let logger = &self.logger;
        if logger.timeout_ms == 0 {
            return Err(InvalidSetting::ZeroTimeout);
        }
        if !(1..=switchboard_wire::rpc::MAX_BATCH_ENTRIES).contains(&logger.batch_max) {
            return Err(InvalidSetting::BatchMaxOutOfRange);
        }
        if logger.batch_calls == 0 {
            return Err(InvalidSetting::ZeroBatchCalls);
        }
        let port_ok = logger
            .rpc_addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(InvalidSetting::RpcAddr(logger.rpc_addr.clone()));
        }
        let url = &logger.http_url;
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || reqwest::Url::parse(url).is_err()
        {
            return Err(InvalidSetting::HttpUrl(url.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_runtime::config::{Sources, load};

    #[test]
    fn defaults_match_the_readme_and_are_valid() {
        let settings = Settings::default();
        assert_eq!(settings.amqp.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(settings.amqp.exchange, "logs_topic");
        assert_eq!(settings.amqp.queue, "logs");
        assert_eq!(settings.amqp.prefetch, 256);
        assert_eq!(settings.amqp.delivery_limit, 10);
        assert_eq!(settings.amqp.dead_letter_exchange, "logs_topic.dlx");
        assert_eq!(settings.amqp.dead_letter_queue, "logs.dead");
        assert_eq!(settings.logger.via, LoggerVia::Rpc);
        assert_eq!(settings.logger.rpc_addr, "127.0.0.1:5001");
        assert_eq!(settings.logger.http_url, "http://127.0.0.1:8082");
        assert_eq!(settings.logger.timeout_ms, 5_000);
        assert_eq!(settings.logger.batch_max, 64);
        assert_eq!(settings.logger.batch_calls, 4);
        assert_eq!(settings.validate(), Ok(()));
    }

    #[test]
    fn environment_overrides_use_the_documented_names() {
        let sources = Sources {
            file: None,
            env: [
                ("SWITCHBOARD_LISTENER__AMQP__PREFETCH", "8"),
                ("SWITCHBOARD_LISTENER__LOGGER__VIA", "http"),
                ("SWITCHBOARD_LISTENER__AMQP__DEAD_LETTER_QUEUE", "dead"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        };
        let settings: Settings = load("listener", &sources).expect("loads");
        assert_eq!(settings.amqp.prefetch, 8);
        assert_eq!(settings.logger.via, LoggerVia::Http);
        assert_eq!(settings.amqp.dead_letter_queue, "dead");
    }

    #[test]
    fn a_listen_section_is_refused() {
        let sources = Sources {
            file: None,
            env: [("SWITCHBOARD_LISTENER__LISTEN__HTTP", "127.0.0.1:1")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        let err = load::<Settings>("listener", &sources).expect_err("no listen section");
        assert!(err.to_string().contains("listen"), "{err}");
    }

    #[test]
    fn the_example_file_lists_every_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/listener.toml");
        let sources = Sources {
            file: Some(path.into()),
            env: Default::default(),
        };
        let settings: Settings = load("listener", &sources).expect("example loads");
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn validation_names_the_bad_key() {
        let mut settings = Settings::default();
        settings.amqp.queue.clear();
        assert_eq!(
            settings.validate(),
            Err(InvalidSetting::EmptyName { key: "queue" })
        );
        let mut settings = Settings::default();
        settings.amqp.prefetch = 0;
        assert_eq!(settings.validate(), Err(InvalidSetting::ZeroPrefetch));
        let mut settings = Settings::default();
        settings.logger.batch_max = 0;
        assert_eq!(settings.validate(), Err(InvalidSetting::BatchMaxOutOfRange));
        settings.logger.batch_max = switchboard_wire::rpc::MAX_BATCH_ENTRIES + 1;
        assert_eq!(settings.validate(), Err(InvalidSetting::BatchMaxOutOfRange));
        let mut settings = Settings::default();
        settings.logger.batch_calls = 0;
        assert_eq!(settings.validate(), Err(InvalidSetting::ZeroBatchCalls));
        let mut settings = Settings::default();
        settings.logger.rpc_addr = "localhost".into();
        assert!(
            settings
                .validate()
                .is_err_and(|e| e.to_string().contains("logger.rpc_addr"))
        );
        let mut settings = Settings::default();
        settings.logger.http_url = "127.0.0.1:8082".into();
        assert!(
            settings
                .validate()
                .is_err_and(|e| e.to_string().contains("logger.http_url"))
        );
        let mut settings = Settings::default();
        settings.amqp.url = "guest:secret@nowhere".into();
        assert!(settings.validate().is_err_and(
            |e| e.to_string().contains("amqp.url") && !e.to_string().contains("secret")
        ));
        let mut settings = Settings::default();
        settings.amqp.delivery_limit = 0;
        assert_eq!(
            settings.validate(),
            Err(InvalidSetting::DeliveryLimitOutOfRange)
        );
    }
}
