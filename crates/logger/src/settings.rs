//! The logger's configuration: sections and keys as in the README's table
//! (`SWITCHBOARD_LOGGER__<SECTION>__<KEY>` overrides any of them), plus
//! `batching.writers`, which tunes how many group-commit batches may be in
//! flight at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_runtime::limits::millis;
use switchboard_runtime::service::ServiceSettings;
use switchboard_runtime::{HttpLimits, RuntimeSettings, TelemetrySettings};

/// Everything `switchboard-logger` can be configured with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Addresses to bind when no socket of that name is passed in.
    pub listen: Listen,
    /// The MongoDB (or FerretDB) server and where documents go.
    pub mongodb: MongoDb,
    /// Size limits on entries and reads.
    pub limits: Limits,
    /// Group commit of concurrent writes.
    pub batching: Batching,
    /// Bounds of the HTTP door (connections, timeouts, header sizes).
    pub http: HttpLimits,
    /// Bounds of the RPC door.
    pub rpc: Rpc,
    /// Bounds of the gRPC door.
    pub grpc: Grpc,
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

/// `[listen]`: the three doors into the one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// HTTP JSON API (`POST /log`, `GET /logs`, health); socket name `http`.
    pub http: SocketAddr,
    /// Rust-native RPC (tarpc `LogRpc`); socket name `rpc`.
    pub rpc: SocketAddr,
    /// gRPC `logs.LogService`; socket name `grpc`.
    pub grpc: SocketAddr,
    /// The metrics door (socket name `metrics`): none unless set or passed.
    pub metrics: Option<SocketAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8082)),
            rpc: SocketAddr::from(([127, 0, 0, 1], 5001)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 50001)),
            metrics: None,
        }
    }
}

/// `[mongodb]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MongoDb {
    /// Connection string of MongoDB or of any server speaking its wire protocol
    /// (FerretDB).
    pub url: String,
    /// A file holding the MongoDB password (one trailing newline ignored),
    /// which replaces the URL's; the user is the URL's
    /// (`mongodb://USER@host/?authSource=admin`). When unset, the systemd
    /// credential `mongodb-password` is used if present.
    pub password_file: Option<PathBuf>,
    /// Database holding the log collection.
    pub database: String,
    /// Collection the entries are stored in.
    pub collection: String,
    /// Server selection timeout and the bound on every store operation; when
    /// the server is gone, writes fail after at most about this long.
    pub timeout_ms: u64,
    /// The bound on a read (`GET /logs`, `GET /logs/{id}`), apart from the
    /// writes' so that a slow read fails alone instead of marking the store down.
    pub read_timeout_ms: u64,
    /// Connections to the store that reads may use, in a pool of their own:
    /// reads that take long (FerretDB sorts a name's entries in memory) wait
    /// for one of these, never for the writes' connections. 0 counts as 1.
    pub read_connections: u32,
    /// Entries older than this many days are deleted by a TTL index; `0` keeps
    /// everything. Servers without TTL indexes (FerretDB v1) skip it with a warning.
    pub retention_days: u32,
}

impl Default for MongoDb {
    fn default() -> Self {
        Self {
            url: "mongodb://127.0.0.1:27017".to_owned(),
            password_file: None,
            database: "logs".to_owned(),
            collection: "logs".to_owned(),
            timeout_ms: 2_000,
            read_timeout_ms: 5_000,
            read_connections: 4,
            retention_days: 0,
        }
    }
}

impl MongoDb {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest accepted `name`, in bytes of UTF-8.
    pub max_name_bytes: usize,
    /// Longest accepted `data`, in bytes of UTF-8.
    pub max_data_bytes: usize,
    /// Cap for `GET /logs?limit=`; larger requests are cut to this.
    pub max_read_limit: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_name_bytes: switchboard_wire::LogLimits::DEFAULT_MAX_NAME_BYTES,
            max_data_bytes: switchboard_wire::LogLimits::DEFAULT_MAX_DATA_BYTES,
            max_read_limit: 1_000,
        }
    }
}

/// `[batching]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Batching {
    /// Most entries grouped into one `insert_many`. A lone entry is written at
    /// once; batches only form from writes that queued up meanwhile.
    pub max_batch: usize,
    /// Batches written in parallel, so that one batch is assembled while
    /// another is on its way to the server.
    pub writers: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_batch: 256,
            writers: 4,
        }
    }
}

/// `[rpc]`: what one client of the RPC door can hold. `0` disables a bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rpc {
    /// Connections served at once; beyond it new ones wait in the listen
    /// backlog until one closes.
    pub max_connections: usize,
    /// Calls one connection may have running at once. The next call of a
    /// pipelining client is not read until one finishes: it waits in the
    /// socket, and TCP flow control slows the client down.
    pub max_in_flight_per_connection: usize,
    /// A connection with no call running and none arriving for this long is
    /// closed. The broker and the listener reconnect on their next call.
    pub idle_timeout_ms: u64,
}

impl Default for Rpc {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_in_flight_per_connection: 256,
            idle_timeout_ms: 300_000,
        }
    }
}

impl Rpc {
    pub fn idle_timeout(&self) -> Option<Duration> {
        millis(self.idle_timeout_ms)
    }
}

/// `[grpc]`: what one client of the gRPC door can hold. `0` disables a bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grpc {
    /// Connections served at once; beyond it new ones wait in the listen
    /// backlog until one closes.
    pub max_connections: usize,
    /// A call not answered within this fails with `CANCELLED` (a client's
    /// shorter `grpc-timeout` wins).
    pub request_timeout_ms: u64,
    /// Calls one connection may have running at once; further ones wait.
    pub concurrency_limit_per_connection: usize,
    /// HTTP/2 streams a connection may have open (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// Largest header list of a call (`SETTINGS_MAX_HEADER_LIST_SIZE`).
    pub max_header_bytes: u32,
    /// The server pings a connection that has been quiet this long...
    pub keepalive_interval_ms: u64,
    /// ...and closes it when the ping is not answered within this.
    pub keepalive_timeout_ms: u64,
    /// A connection from which nothing at all arrives for this long is
    /// closed. Live HTTP/2 clients answer the keep-alive pings, so this only
    /// cuts peers that connected and never spoke HTTP/2 (the pings start
    /// after the handshake) or went silent; keep it above the keep-alive
    /// interval plus timeout.
    pub silence_timeout_ms: u64,
}

impl Default for Grpc {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            request_timeout_ms: 30_000,
            concurrency_limit_per_connection: 256,
            max_concurrent_streams: 256,
            max_header_bytes: 64 * 1024,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            silence_timeout_ms: 60_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_runtime::config::{Sources, load};

    #[test]
    fn defaults_match_the_readme() {
        let settings: Settings = load("logger", &Sources::default()).expect("defaults");
        assert_eq!(settings.listen.http.port(), 8082);
        assert_eq!(settings.listen.rpc.port(), 5001);
        assert_eq!(settings.listen.grpc.port(), 50001);
        assert_eq!(settings.mongodb.database, "logs");
        assert_eq!(settings.mongodb.collection, "logs");
        assert_eq!(settings.mongodb.timeout_ms, 2000);
        assert_eq!(settings.mongodb.read_timeout_ms, 5000);
        assert_eq!(settings.mongodb.read_connections, 4);
        assert_eq!(settings.limits.max_data_bytes, 65536);
        assert_eq!(settings.batching.max_batch, 256);
    }

    #[test]
    fn environment_overrides_use_the_documented_names() {
        let sources = Sources {
            file: None,
            env: [
                ("SWITCHBOARD_LOGGER__MONGODB__DATABASE", "other"),
                ("SWITCHBOARD_LOGGER__LIMITS__MAX_DATA_BYTES", "10"),
                ("SWITCHBOARD_LOGGER__BATCHING__WRITERS", "2"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        };
        let settings: Settings = load("logger", &sources).expect("overrides");
        assert_eq!(settings.mongodb.database, "other");
        assert_eq!(settings.limits.max_data_bytes, 10);
        assert_eq!(settings.batching.writers, 2);
    }

    #[test]
    fn every_door_has_its_bounds_under_its_own_section() {
        let sources = Sources {
            file: None,
            env: [
                ("SWITCHBOARD_LOGGER__HTTP__HEADER_READ_TIMEOUT_MS", "500"),
                ("SWITCHBOARD_LOGGER__RPC__MAX_IN_FLIGHT_PER_CONNECTION", "3"),
                ("SWITCHBOARD_LOGGER__GRPC__SILENCE_TIMEOUT_MS", "0"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        };
        let settings: Settings = load("logger", &sources).expect("overrides");
        assert_eq!(settings.http.header_read_timeout_ms, 500);
        assert_eq!(settings.rpc.max_in_flight_per_connection, 3);
        assert_eq!(settings.grpc.silence_timeout_ms, 0);
        assert_eq!(settings.rpc.idle_timeout(), Some(Duration::from_secs(300)));
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/logger.toml");
        let sources = Sources {
            file: Some(path.into()),
            env: Default::default(),
        };
        let settings: Settings = load("logger", &sources).expect("example file loads");
        assert_eq!(settings, Settings::default());
    }
}
