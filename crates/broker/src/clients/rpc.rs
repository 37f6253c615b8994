//! The logger's Rust-native RPC door: one tarpc client per logger instance,
//! each over one TCP connection shared by every request and rebuilt only
//! after that connection died.
//!
//! With several loggers the requests go round them in turn, skipping for a
//! short back-off one whose connect or call just failed ([`Rotation`]). A
//! request whose connection is lost, or whose connect fails, is sent once
//! more, to the next logger (with one logger: on a fresh connection to it),
//! within the same deadline; if that fails too it is a 502. Retrying is safe
//! because every entry carries an idempotency id the loggers (one store)
//! store once.

use std::time::Duration;

use switchboard_wire::LogEntry;
use switchboard_wire::rpc::{self, LogRpcClient, RpcConnection, RpcError as LoggerError};
use tarpc::client::RpcError;
use tokio::time::Instant;

use super::rotation::Rotation;
use crate::error::{Downstream, DownstreamError, error_chain};

const DOWNSTREAM: Downstream = Downstream::LoggerRpc;

/// The long-lived RPC clients to the loggers.
#[derive(Debug)]
pub struct RpcLogger {
    loggers: Rotation<RpcConnection>,
    /// Every address, for `/downstreams` (operators only).
    addresses: String,
    timeout: Duration,
}

/// What one attempt of a call came to.
enum Attempt {
    Done(Result<(), DownstreamError>),
    /// No connection, or it is gone: nothing was answered, so the request
    /// may be sent again (to another logger).
    Disconnected(String),
}

impl RpcLogger {
    /// Creates the clients without connecting: the loggers may start later
    /// (socket activation), the first request (or [`Self::warm_up`])
    /// connects. `addrs` is not empty (else `None`).
    pub fn new(addrs: Vec<String>, timeout: Duration) -> Option<Self> {
        let addresses = addrs.join(", ");
        Some(Self {
            loggers: Rotation::new(addrs.into_iter().map(RpcConnection::new).collect(), timeout)?,
            addresses,
            timeout,
        })
    }

    /// The loggers' addresses, comma-separated.
    pub fn address(&self) -> &str {
        &self.addresses
    }

    /// Opens the connections now if possible, so the first requests find them ready.
    pub async fn warm_up(&self) {
        for connection in self.loggers.iter() {
            if connection.current().is_none()
                && let Err(err) = connection.get(self.timeout).await
            {
                tracing::info!(error = %err, "logger RPC not reachable yet; will connect on first use");
            }
        }
    }

    /// Stores `entry` through a logger's RPC door.
    pub async fn log(
        &self,
        entry: LogEntry,
        request_id: Option<&str>,
    ) -> Result<(), DownstreamError> {
        let deadline = Instant::now() + self.timeout;
        let mut failed_on = None;
        for attempt in 0..2 {
            let index = self.loggers.pick(failed_on);
            let connection = self.loggers.get(index);
            // A first connect may take only half the deadline when another
            // logger could take the retry: an unreachable host (no refusal,
            // just silence) must leave time for it.
            let connect_within = if attempt == 0 && self.loggers.members() > 1 {
                self.timeout / 2
            } else {
                self.timeout
            };
            let tried = tokio::time::timeout_at(
                deadline,
                self.attempt(connection, connect_within, &entry, request_id, deadline),
            )
            .await
            .unwrap_or_else(|_| {
                Attempt::Done(Err(DownstreamError::timed_out(DOWNSTREAM, self.timeout)))
            });
            match tried {
                Attempt::Done(result) => {
                    match &result {
                        // No answer in time: this logger may hang; the
                        // others get the next requests.
                        Err(DownstreamError::TimedOut { .. }) => self.loggers.failed(index),
                        // The logger's own refusal or its store's failure
                        // (the store is every logger's): it answered.
                        _ => self.loggers.succeeded(index),
                    }
                    return result;
                }
                Attempt::Disconnected(why) => {
                    self.loggers.failed(index);
                    if attempt == 0 {
                        tracing::info!(logger = %connection.addr(), reason = %why, "logger RPC connection failed; sending to the next logger");
                        failed_on = Some(index);
                    } else {
                        return Err(DownstreamError::unreachable(
                            DOWNSTREAM,
                            format!("{} failed after a retry: {why}", connection.addr()),
                        ));
                    }
                }
            }
        }
        Err(DownstreamError::unreachable(DOWNSTREAM, "connection lost"))
    }

    async fn attempt(
        &self,
        connection: &RpcConnection,
        connect_within: Duration,
        entry: &LogEntry,
        request_id: Option<&str>,
        deadline: Instant,
    ) -> Attempt {
        let connected = match connection.get(connect_within).await {
            Ok(connected) => connected,
            Err(err) => return Attempt::Disconnected(err.to_string()),
        };
        let attempt = tokio::time::timeout_at(
            deadline,
            self.call(&connected.client, entry, request_id, deadline),
        )
        .await
        .unwrap_or_else(|_| {
            Attempt::Done(Err(DownstreamError::timed_out(DOWNSTREAM, self.timeout)))
        });
        // A connection that broke, or that got no answer in time (it may
        // be half-open: a host that went without a reset), is not used
        // again; calls still on it finish or time out on their own.
        if matches!(
            &attempt,
            Attempt::Disconnected(_) | Attempt::Done(Err(DownstreamError::TimedOut { .. }))
        ) {
            connection.discard(connected.generation);
        }
        attempt
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

    /// Whether the loggers' RPC doors answer a TCP connect within `within`
    /// (without disturbing the shared connections): reachable while one
    /// does, with the others named.
    pub async fn probe(&self, within: Duration) -> Result<String, String> {
        let probes = self.loggers.iter().map(|connection| async move {
            (
                connection.addr().to_owned(),
                super::probe_tcp(connection.addr(), within).await,
            )
        });
        super::summarise(futures::future::join_all(probes).await)
    }
}
