//! The one long-lived client the listener forwards events through: the
//! logger's RPC door (tarpc, one multiplexed TCP connection, rebuilt after it
//! dies) or its HTTP door (a pooled reqwest client).
//!
//! Every outcome is sorted into what the consumer must do with the message:
//! stored (ack), refused for good (dead-letter), or not stored this time
//! (requeue and back off).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_wire::LogEntry;
use switchboard_wire::rpc::{RpcConnection, RpcError};

use crate::settings::{Logger, LoggerVia};

/// Why an entry was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The logger looked at the entry and will never store it (too large,
    /// empty name…): retrying cannot help.
    #[error("the logger refused the entry: {0}")]
    Refused(String),
    /// The entry's id is stored already with another name or data: this
    /// event is a different one that reused an id. Retrying cannot help.
    #[error("{0}")]
    Conflict(String),
    /// The logger could not be reached, timed out, or could not store the
    /// entry right now: the entry may succeed later.
    #[error("the logger is unavailable: {0}")]
    Unavailable(String),
}

/// A cheap-to-clone handle on the logger.
#[derive(Clone)]
pub struct LoggerClient {
    door: Arc<Door>,
    timeout: Duration,
}

enum Door {
    /// The shared connection (`switchboard_wire::rpc`), dialled on the first
    /// event and replaced after it failed or timed out.
    Rpc(RpcConnection),
    Http {
        client: reqwest::Client,
        log_url: String,
    },
}

/// The body of `POST /log`.
#[derive(Serialize)]
struct HttpEntry<'a> {
    name: &'a str,
    data: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

/// Enough of the reply envelope to quote the logger's message.
#[derive(Deserialize)]
struct Envelope {
    message: String,
}

impl LoggerClient {
    /// Builds the client; nothing is dialled until the first event.
    pub fn new(settings: &Logger) -> Result<Self, reqwest::Error> {
        let timeout = settings.timeout();
        let door = match settings.via {
            LoggerVia::Rpc => Door::Rpc(RpcConnection::new(settings.rpc_addr.clone())),
            LoggerVia::Http => Door::Http {
                client: reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .build()?,
                log_url: format!("{}/log", settings.http_url.trim_end_matches('/')),
            },
        };
        Ok(Self {
            door: Arc::new(door),
            timeout,
        })
    }

    /// Stores `entry`; `Ok` means the logger has it (or had it already).
    pub async fn forward(
        &self,
        entry: &LogEntry,
        request_id: Option<&str>,
    ) -> Result<(), ForwardError> {
        match &*self.door {
            Door::Rpc(connection) => forward_rpc(connection, entry, request_id, self.timeout).await,
            Door::Http { client, log_url } => {
                forward_http(client, log_url, entry, request_id).await
            }
        }
    }
}

async fn forward_rpc(
    connection: &RpcConnection,
    entry: &LogEntry,
    request_id: Option<&str>,
    timeout: Duration,
) -> Result<(), ForwardError> {
    let connected = connection
        .get(timeout)
        .await
        .map_err(|err| ForwardError::Unavailable(err.to_string()))?;
    let context = switchboard_wire::rpc::context(request_id, timeout);
    // tarpc enforces the deadline itself; the outer bound only guards
    // against a dispatch task that never answers at all.
    let call = connected.client.log_entry(context, entry.clone());
    let outcome = tokio::time::timeout(timeout + Duration::from_millis(500), call).await;
    match outcome {
        Ok(Ok(Ok(_reply))) => Ok(()),
        Ok(Ok(Err(err @ RpcError::Invalid(_)))) => Err(ForwardError::Refused(err.to_string())),
        Ok(Ok(Err(RpcError::Conflict(message)))) => Err(ForwardError::Conflict(message)),
        Ok(Ok(Err(RpcError::Unavailable(message)))) => Err(ForwardError::Unavailable(message)),
        Ok(Err(tarpc::client::RpcError::DeadlineExceeded)) | Err(_) => {
            // A connection that times out may be half-open; a fresh one
            // costs one connect and rules that out.
            connection.discard(connected.generation);
            Err(ForwardError::Unavailable(format!(
                "no answer from {} within {timeout:?}",
                connection.addr()
            )))
        }
        Ok(Err(err)) => {
            connection.discard(connected.generation);
            Err(ForwardError::Unavailable(format!(
                "RPC connection to {} failed: {err}",
                connection.addr()
            )))
        }
    }
}

async fn forward_http(
    client: &reqwest::Client,
    log_url: &str,
    entry: &LogEntry,
    request_id: Option<&str>,
) -> Result<(), ForwardError> {
    let mut request = client.post(log_url).json(&HttpEntry {
        name: &entry.name,
        data: &entry.data,
        id: entry.id.as_deref(),
    });
    if let Some(request_id) = request_id {
        request = request.header(switchboard_runtime::http::REQUEST_ID_HEADER, request_id);
    }
    let response = request
        .send()
        .await
        .map_err(|err| ForwardError::Unavailable(format!("POST {log_url}: {err}")))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let message = match response.json::<Envelope>().await {
        Ok(envelope) => envelope.message,
        Err(_) => status.to_string(),
    };
    // 400, 409, 413 and 422 are verdicts on the entry; anything else (a 404
    // from a wrong URL, 429, 5xx) is about the logger and may pass later.
    match status.as_u16() {
        400 | 413 | 422 => Err(ForwardError::Refused(message)),
        409 => Err(ForwardError::Conflict(message)),
        _ => Err(ForwardError::Unavailable(format!(
            "POST {log_url}: {status}: {message}"
        ))),
    }
}
