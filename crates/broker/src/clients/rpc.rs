//! The logger's Rust-native RPC door: one tarpc client over one TCP connection,
//! shared by every request and rebuilt only after that connection died.
//!
//! A request that finds the connection dead reconnects once (concurrent
//! requests share that one reconnect) and retries; if that fails too it is a
//! 502. Retrying is safe because every entry carries an idempotency id the
//! logger stores once.

use std::time::Duration;

use switchboard_wire::LogEntry;
use switchboard_wire::rpc::{
    self, Connected, LogRpcClient, RpcConnection, RpcError as LoggerError,
};
use tarpc::client::RpcError;
use tokio::time::Instant;

use crate::error::{Downstream, DownstreamError, error_chain};

const DOWNSTREAM: Downstream = Downstream::LoggerRpc;

/// The long-lived RPC client to the logger.
#[derive(Debug)]
pub struct RpcLogger {
    connection: RpcConnection,
    timeout: Duration,
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
            connection: RpcConnection::new(addr),
            timeout,
        }
    }

    pub fn address(&self) -> &str {
        self.connection.addr()
    }

    /// Opens the connection now if possible, so the first request finds it ready.
    pub async fn warm_up(&self) {
        if self.connection.current().is_none()
            && let Err(err) = self.connection.get(self.timeout).await
        {
            tracing::info!(error = %err, "logger RPC not reachable yet; will connect on first use");
        }
    }

    /// Stores `entry` through the logger's RPC door.
    pub async fn log(
        &self,
        entry: LogEntry,
        request_id: Option<&str>,
    ) -> Result<(), DownstreamError> {
        let deadline = Instant::now() + self.timeout;
        let work = async {
            let mut connected = self.connect().await?;
            for attempt in 0..2 {
                match self
                    .call(&connected.client, &entry, request_id, deadline)
                    .await
                {
                    Attempt::Done(result) => return result,
                    Attempt::Disconnected(why) if attempt == 0 => {
                        tracing::info!(reason = %why, "logger RPC connection lost; reconnecting");
                        self.connection.discard(connected.generation);
                        connected = self.connect().await?;
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
        let ctx = rpc::context(remaining);
        let answer = rpc::log_one(client, ctx, entry.clone(), request_id).await;
        match answer {
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

    /// The shared connection, dialled if there is none (a dead one was
    /// discarded first): concurrent requests share one dial.
    async fn connect(&self) -> Result<Connected, DownstreamError> {
        self.connection
            .get(self.timeout)
            .await
            .map_err(|err| DownstreamError::unreachable(DOWNSTREAM, err.to_string()))
    }

    /// Whether the logger's RPC door answers a TCP connect within `within`
    /// (without disturbing the shared connection).
    pub async fn probe(&self, within: Duration) -> Result<(), String> {
        super::probe_tcp(self.connection.addr(), within).await
    }
}
