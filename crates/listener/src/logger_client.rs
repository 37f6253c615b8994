//! The one long-lived client the listener forwards events through: the
//! logger's RPC door (tarpc, one multiplexed TCP connection, rebuilt after it
//! dies) or its HTTP door (a pooled reqwest client).
//!
//! Every outcome is sorted into what the consumer must do with the message:
//! stored (ack), refused for good (dead-letter), or not stored this time
//! (requeue and back off).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use switchboard_wire::LogEntry;
use switchboard_wire::rpc::{LogRpcClient, RpcError};
use tokio::sync::Mutex;

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
    Rpc(RpcDoor),
    Http {
        client: reqwest::Client,
        log_url: String,
    },
}

/// The RPC connection is made lazily and replaced after it failed; the
/// generation makes sure that many calls failing on one dead connection
/// replace it once, not once each.
struct RpcDoor {
    addr: String,
    current: Mutex<Connection>,
    generation: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Connection {
    client: Option<(u64, LogRpcClient)>,
    /// The last failed dial: callers that queued behind it fail with it
    /// instead of dialling again one after another (with an unreachable
    /// host, each dial would take the full timeout).
    last_failure: Option<(Instant, ForwardError)>,
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
            LoggerVia::Rpc => Door::Rpc(RpcDoor {
                addr: settings.rpc_addr.clone(),
                current: Mutex::new(Connection::default()),
                generation: std::sync::atomic::AtomicU64::new(0),
            }),
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
            Door::Rpc(door) => door.forward(entry, request_id, self.timeout).await,
            Door::Http { client, log_url } => {
                forward_http(client, log_url, entry, request_id).await
            }
        }
    }
}

impl RpcDoor {
    async fn forward(
        &self,
        entry: &LogEntry,
        request_id: Option<&str>,
        timeout: Duration,
    ) -> Result<(), ForwardError> {
        let (generation, client) = self.client(timeout).await?;
        let context = switchboard_wire::rpc::context(request_id, timeout);
        // tarpc enforces the deadline itself; the outer bound only guards
        // against a dispatch task that never answers at all.
        let call = client.log_entry(context, entry.clone());
        let outcome = tokio::time::timeout(timeout + Duration::from_millis(500), call).await;
        match outcome {
            Ok(Ok(Ok(_reply))) => Ok(()),
            Ok(Ok(Err(err @ RpcError::Invalid(_)))) => Err(ForwardError::Refused(err.to_string())),
            Ok(Ok(Err(RpcError::Conflict(message)))) => Err(ForwardError::Conflict(message)),
            Ok(Ok(Err(RpcError::Unavailable(message)))) => Err(ForwardError::Unavailable(message)),
            Ok(Err(tarpc::client::RpcError::DeadlineExceeded)) | Err(_) => {
                // A connection that times out may be half-open; a fresh one
                // costs one connect and rules that out.
                self.discard(generation).await;
                Err(ForwardError::Unavailable(format!(
                    "no answer from {} within {timeout:?}",
                    self.addr
                )))
            }
            Ok(Err(err)) => {
                self.discard(generation).await;
                Err(ForwardError::Unavailable(format!(
                    "RPC connection to {} failed: {err}",
                    self.addr
                )))
            }
        }
    }

    /// The current connection, dialling one if there is none. Callers queue
    /// on the lock, so a burst of events dials once.
    async fn client(&self, timeout: Duration) -> Result<(u64, LogRpcClient), ForwardError> {
        let asked_at = Instant::now();
        let mut current = self.current.lock().await;
        if let Some((generation, client)) = current.client.as_ref() {
            return Ok((*generation, client.clone()));
        }
        if let Some((failed_at, error)) = &current.last_failure
            && *failed_at >= asked_at
        {
            return Err(error.clone());
        }
        let dialled = match tokio::time::timeout(timeout, self.dial()).await {
            Ok(dialled) => dialled,
            Err(_) => Err(ForwardError::Unavailable(format!(
                "connecting to {} took longer than {timeout:?}",
                self.addr
            ))),
        };
        let client = match dialled {
            Ok(client) => client,
            Err(error) => {
                current.last_failure = Some((Instant::now(), error.clone()));
                return Err(error);
            }
        };
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(addr = %self.addr, "connected to the logger's RPC door");
        current.client = Some((generation, client.clone()));
        current.last_failure = None;
        Ok((generation, client))
    }

    async fn dial(&self) -> Result<LogRpcClient, ForwardError> {
        let unavailable =
            |err: std::io::Error| ForwardError::Unavailable(format!("{}: {err}", self.addr));
        let mut last_error = None;
        for addr in tokio::net::lookup_host(self.addr.as_str())
            .await
            .map_err(unavailable)?
        {
            match switchboard_wire::rpc::connect(addr).await {
                Ok(client) => return Ok(client),
                Err(err) => last_error = Some(err),
            }
        }
        Err(unavailable(last_error.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
        })))
    }

    async fn discard(&self, failed_generation: u64) {
        let mut current = self.current.lock().await;
        if current
            .client
            .as_ref()
            .is_some_and(|(generation, _)| *generation == failed_generation)
        {
            current.client = None;
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
