//! Wire types shared by the logger and its clients (broker, listener, bench).
//!
//! - [`proto`]: the original system's `logs.proto`, unchanged, so an old gRPC
//!   client keeps working;
//! - [`rpc`]: the Rust-native RPC (the analogue of Go's `net/rpc`): a `tarpc`
//!   service over length-delimited MessagePack frames on one long-lived TCP connection;
//! - [`entry`]: the validation rules of a log entry, shared by every service
//!   that handles one;
//! - the wire's names: [`REQUEST_ID_HEADER`], [`LOG_ID_METADATA`], [`events`].

pub mod proto {
    //! Generated from `proto/logs.proto` (package `logs`).
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("logs");
}

pub mod entry;
pub mod rpc;

use serde::{Deserialize, Serialize};

pub use entry::{InvalidLogEntry, LogLimits, MAX_ID_BYTES, ValidLogEntry};

/// The header that carries a request's id across every hop: HTTP header,
/// gRPC metadata key and AMQP message header alike.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The events on RabbitMQ (ARCHITECTURE.md, "Events").
pub mod events {
    /// The topic exchange's default name (`logs_topic`; configurable per service).
    pub const DEFAULT_EXCHANGE: &str = "logs_topic";
    /// The routing key producers publish log entries with (the original's).
    pub const ROUTING_KEY_INFO: &str = "log.INFO";
    /// Every routing key of the contract; the listener binds its queue to each.
    pub const ROUTING_KEYS: [&str; 3] = [ROUTING_KEY_INFO, "log.WARNING", "log.ERROR"];
}

/// gRPC metadata key carrying a log entry's idempotency id: the original
/// `logs.proto` has no field for it, and stays unchanged.
pub const LOG_ID_METADATA: &str = "x-log-id";

/// One log entry as producers send it. `id` is an optional idempotency key
/// (e.g. an AMQP message id): a repeated write with the same id is stored once.
/// Not validated: [`LogLimits::parse_entry`] turns it into a [`ValidLogEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub name: String,
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}
