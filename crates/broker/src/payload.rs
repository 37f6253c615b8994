//! The JSON bodies of the broker's API (wire-compatible with the original Go
//! broker) and their OpenAPI schemas.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of `POST /handle`.
///
/// Like the original, unknown keys are ignored and only the sub-object named by
/// `action` is used.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct RequestPayload {
    /// `auth`, `log` or `mail`.
    #[serde(default)]
    #[schema(example = "log")]
    pub action: String,
    /// Required when `action` is `auth`.
    #[serde(default)]
    pub auth: Option<AuthPayload>,
    /// Required when `action` is `log`.
    #[serde(default)]
    pub log: Option<LogPayload>,
    /// Required when `action` is `mail`.
    #[serde(default)]
    pub mail: Option<MailPayload>,
}

/// Credentials forwarded to the auth service.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct AuthPayload {
    #[schema(example = "admin@example.com")]
    pub email: String,
    #[schema(example = "verysecret")]
    pub password: String,
}

/// A log entry forwarded to the logger.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct LogPayload {
    #[schema(example = "event")]
    pub name: String,
    #[schema(example = "something happened")]
    pub data: String,
    /// The transport to the logger; the broker's `downstream.default_log_via` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<LogVia>,
    /// Idempotency id chosen by the client (1 to 256 bytes): the entry is
    /// stored under it, so a request repeated with the same id (a retry after
    /// a lost reply) is stored once, over every transport. When absent the
    /// broker picks a fresh UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "0192f3c4-5b6a-7c8d-9e0f-1a2b3c4d5e6f")]
    pub id: Option<String>,
}

/// A mail forwarded to the mail service.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct MailPayload {
    /// Sender; empty or absent uses the mail service's default sender.
    #[serde(default)]
    #[schema(example = "me@example.com")]
    pub from: String,
    #[schema(example = "you@example.com")]
    pub to: String,
    #[schema(example = "Test mail")]
    pub subject: String,
    #[schema(example = "Hello world!")]
    pub message: String,
}

/// How a log entry travels to the logger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogVia {
    /// The Rust-native RPC door (one multiplexed TCP connection).
    Rpc,
    /// The gRPC door (`logs.LogService/WriteLog`).
    Grpc,
    /// The HTTP door (`POST /log`).
    Http,
    /// RabbitMQ: published to the `logs_topic` exchange as `log.INFO`; the
    /// listener stores it. Answered after RabbitMQ confirmed the message.
    Amqp,
}

impl LogVia {
    pub const ALL: [LogVia; 4] = [LogVia::Rpc, LogVia::Grpc, LogVia::Http, LogVia::Amqp];

    pub fn as_str(self) -> &'static str {
        match self {
            LogVia::Rpc => "rpc",
            LogVia::Grpc => "grpc",
            LogVia::Http => "http",
            LogVia::Amqp => "amqp",
        }
    }
}

impl std::fmt::Display for LogVia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of `POST /log-grpc`: the original front-end sends the whole
/// `/handle` body (`{"action":"log","log":{...}}`); a bare `{"name","data"}`
/// is accepted too.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = LogGrpcBody)]
pub enum LogGrpcBodySchema {
    Wrapped(RequestPayload),
    Bare(LogPayload),
}

/// The reply envelope of every endpoint (`data` only where documented).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Reply {
    pub error: bool,
    #[schema(example = "logged")]
    pub message: String,
}

/// The reply to a successful `auth` action.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuthReply {
    pub error: bool,
    #[schema(example = "Authenticated!")]
    pub message: String,
    pub data: User,
}

/// What `POST /handle` answers with 202: the user for `auth`, just the
/// envelope for `log` and `mail`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = HandleReply)]
pub enum HandleReplySchema {
    Auth(AuthReply),
    Done(Reply),
}

/// The authenticated user, as the auth service returns it (never the hash).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub active: i64,
    /// RFC 3339 timestamp.
    pub created_at: String,
    /// RFC 3339 timestamp.
    pub updated_at: String,
}

/// Reachability of every downstream, as `GET /downstreams` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DownstreamsReply {
    pub error: bool,
    #[schema(example = "5 of 6 downstreams reachable")]
    pub message: String,
    pub data: Vec<DownstreamStatus>,
}

/// One downstream's reachability.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct DownstreamStatus {
    /// `auth`, `mail`, `logger (rpc)`, `logger (grpc)`, `logger (http)` or `rabbitmq (amqp)`.
    pub name: String,
    /// Where the broker reaches it.
    pub address: String,
    pub reachable: bool,
    /// `ok`, or why it is not reachable.
    pub detail: String,
}
