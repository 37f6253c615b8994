//! The logger's Rust-native RPC door: one tarpc client over one TCP connection,
//! shared by every request and rebuilt only after that connection died.
//!
//! A request that finds the connection dead reconnects once (concurrent
//! requests share that one reconnect) and retries; if that fails too it is a
//! 502. Retrying is safe because every entry carries an idempotency id the
//! logger stores once.

use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use switchboard_wire::LogEntry;
use switchboard_wire::rpc::{self, LogRpcClient, RpcError as LoggerError};
use tarpc::client::RpcError;
use tokio::time::Instant;

use crate::error::{Downstream, DownstreamError, error_chain};

const DOWNSTREAM: Downstream = Downstream::LoggerRpc;

#[derive(Clone)]
struct Connected {
    generation: u64,
    client: LogRpcClient,
}

/// The long-lived RPC client to the logger.
pub struct RpcLogger {
    addr: String,
    timeout: Duration,
    current: RwLock<Option<Connected>>,
    /// Serializes reconnects so a burst of failing requests opens one connection.
    reconnect: tokio::sync::Mutex<u64>,
}

impl std::fmt::Debug for RpcLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcLogger")
            .field("addr", &self.addr)
            .field("connected", &self.snapshot().is_some())
            .finish()
    }
}

/// What one attempt of a call came to.
enum Attempt {
    Done(Result<(), DownstreamError>),
    /// The connection is gone; the request may be retried on a new one.
    Disconnected(String),
}

impl RpcLogger {
    /// Creates the client without connecting: the logger may start later
    /// (socket activation), the first request (or [`Self::connect_in_background`]) connects.
    pub fn new(addr: String, timeout: Duration) -> Self {
        Self {
            addr,
            timeout,
            current: RwLock::new(None),
            reconnect: tokio::sync::Mutex::new(0),
        }
    }

    pub fn address(&self) -> &str {
        &self.addr
    }

    /// Opens the connection now if possible, so the first request finds it ready.
    pub async fn warm_up(&self) {
        if self.snapshot().is_none()
            && let Err(err) = self.reconnect_after(None).await
        {
            tracing::info!(error = %err, "logger RPC not reachable yet; will connect on first use");
        }
    }

    fn snapshot(&self) -> Option<Connected> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stores `entry` through the logger's RPC door.
    pub async fn log(
        &self,
        entry: LogEntry,
        request_id: Option<&str>,
    ) -> Result<(), DownstreamError> {
        let deadline = Instant::now() + self.timeout;
        let work = async {
            let mut connected = match self.snapshot() {
                Some(connected) => connected,
                None => self.reconnect_after(None).await?,
            };
            for attempt in 0..2 {
                match self
                    .call(&connected.client, &entry, request_id, deadline)
                    .await
                {
                    Attempt::Done(result) => return result,
                    Attempt::Disconnected(why) if attempt == 0 => {
                        tracing::info!(reason = %why, "logger RPC connection lost; reconnecting");
                        connected = self.reconnect_after(Some(connected.generation)).await?;
                    }
                    Attempt::Disconnected(why) => {
                        return Err(DownstreamError::unreachable(
                            DOWNSTREAM,
                            format!("connection lost again after reconnecting: {why}"),
                        ));
                    }
                }
            }
            Err(DownstreamError::unreachable(DOWNSTREAM, "connection lost"))
        };
        tokio::time::timeout_at(deadline, work)
            .await
            .unwrap_or_else(|_| Err(DownstreamError::timed_out(DOWNSTREAM, self.timeout)))
    }

    async fn call(
        &self,
        client: &LogRpcClient,
        entry: &LogEntry,
        request_id: Option<&str>,
        deadline: Instant,
    ) -> Attempt {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let ctx = rpc::context(request_id, remaining);
        match client.log_entry(ctx, entry.clone()).await {
            Ok(Ok(_reply)) => Attempt::Done(Ok(())),
            Ok(Err(LoggerError::Invalid(message))) => {
                Attempt::Done(Err(DownstreamError::Rejected {
                    downstream: DOWNSTREAM,
                    message,
                }))
            }
            Ok(Err(LoggerError::Conflict(message))) => {
                Attempt::Done(Err(DownstreamError::Conflict {
                    downstream: DOWNSTREAM,
                    message,
                }))
            }
            Ok(Err(err @ LoggerError::Unavailable(_))) => {
                Attempt::Done(Err(DownstreamError::failed(DOWNSTREAM, err.to_string())))
            }
            Err(RpcError::DeadlineExceeded) => {
                Attempt::Done(Err(DownstreamError::timed_out(DOWNSTREAM, self.timeout)))
            }
            Err(err @ (RpcError::Shutdown | RpcError::Send(_) | RpcError::Channel(_))) => {
                Attempt::Disconnected(error_chain(&err))
            }
            Err(err @ RpcError::Server(_)) => {
                Attempt::Done(Err(DownstreamError::failed(DOWNSTREAM, error_chain(&err))))
            }
        }
    }

    /// Replaces the connection of generation `failed` (or the missing one) with
    /// a new connection, unless another request already did.
    async fn reconnect_after(&self, failed: Option<u64>) -> Result<Connected, DownstreamError> {
        let mut generation = self.reconnect.lock().await;
        if let Some(current) = self.snapshot()
            && Some(current.generation) != failed
        {
            return Ok(current);
        }
        let client = self.connect().await?;
        *generation += 1;
        let connected = Connected {
            generation: *generation,
            client,
        };
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(connected.clone());
        tracing::info!(addr = %self.addr, generation = *generation, "connected to the logger's RPC door");
        Ok(connected)
    }

    async fn connect(&self) -> Result<LogRpcClient, DownstreamError> {
        let addrs: Vec<_> = tokio::net::lookup_host(&self.addr)
            .await
            .map_err(|err| {
                DownstreamError::unreachable(
                    DOWNSTREAM,
                    format!("cannot resolve {}: {err}", self.addr),
                )
            })?
            .collect();
        let mut last_error = format!("{} resolves to no address", self.addr);
        for addr in addrs {
            match rpc::connect(addr).await {
                Ok(client) => return Ok(client),
                Err(err) => last_error = format!("cannot connect to {addr}: {err}"),
            }
        }
        Err(DownstreamError::unreachable(DOWNSTREAM, last_error))
    }

    /// Whether the logger's RPC door answers a TCP connect within `within`
    /// (without disturbing the shared connection).
    pub async fn probe(&self, within: Duration) -> Result<(), String> {
        super::probe_tcp(&self.addr, within).await
    }
}
