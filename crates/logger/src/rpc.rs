//! The Rust-native RPC door: tarpc `LogRpc` (the analogue of the original's
//! Go `net/rpc` `RPCServer.LogInfo`) over the shared MessagePack transport.
//!
//! A connection carries many concurrent calls: each request runs in its own
//! task, so a slow store write never holds up the calls behind it, and the
//! group-commit writer sees them all at once.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use switchboard_runtime::Shutdown;
use switchboard_wire::LogEntry;
use switchboard_wire::rpc::{LogRpc, RpcError, processed_reply, request_id, transport};

use crate::ingest::{Ingest, IngestError};

/// The `LogRpc` implementation.
#[derive(Debug, Clone)]
pub struct RpcDoor {
    ingest: Ingest,
}

impl RpcDoor {
    pub fn new(ingest: Ingest) -> Self {
        Self { ingest }
    }

    async fn handle(
        self,
        ctx: Context,
        method: &'static str,
        name: String,
        data: String,
        id: Option<String>,
    ) -> Result<String, RpcError> {
        let request_id = request_id(&ctx).unwrap_or_else(|| "-".to_owned());
        let span = tracing::info_span!("rpc", method, request_id = %request_id);
        async move {
            match self.ingest.log(name, data, id).await {
                Ok(entry) => {
                    tracing::debug!(name = entry.name(), "logged");
                    Ok(processed_reply(entry.name()))
                }
                Err(IngestError::Invalid(err)) => {
                    tracing::info!(error = %err, "refused");
                    Err(RpcError::Invalid(err.to_string()))
                }
                Err(IngestError::Store(err)) => {
                    tracing::warn!(error = %err, "write failed");
                    Err(RpcError::Unavailable(err.to_string()))
                }
            }
        }
        .instrument(span)
        .await
    }
}

impl LogRpc for RpcDoor {
    async fn log_info(self, ctx: Context, name: String, data: String) -> Result<String, RpcError> {
        self.handle(ctx, "log_info", name, data, None).await
    }

    async fn log_entry(self, ctx: Context, entry: LogEntry) -> Result<String, RpcError> {
        self.handle(ctx, "log_entry", entry.name, entry.data, entry.id)
            .await
    }
}

/// Serves the RPC door on `listener` until `shutdown`; then stops accepting,
/// answers the calls in flight and closes the connections.
pub async fn serve(listener: TcpListener, door: RpcDoor, shutdown: Shutdown) {
    let tasks = TaskTracker::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
                    }
                    let span = tracing::debug_span!("rpc connection", %peer);
                    tasks.spawn(
                        serve_connection(stream, door.clone(), shutdown.clone(), tasks.clone())
                            .instrument(span),
                    );
                }
                Err(err) => {
                    // Usually out of file descriptors; retrying at once would spin.
                    tracing::warn!(error = %err, "cannot accept an RPC connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = shutdown.requested() => break,
        }
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

async fn serve_connection(
    stream: TcpStream,
    door: RpcDoor,
    shutdown: Shutdown,
    tasks: TaskTracker,
) {
    let channel = BaseChannel::with_defaults(transport(stream));
    let mut requests = std::pin::pin!(channel.requests());
    let mut draining = false;
    // While draining, how often to check whether the last answer went out.
    let mut drain_check = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            // Polling the stream also writes the answers of finished calls.
            next = requests.next() => match next {
                Some(Ok(request)) => {
                    tasks.spawn(request.execute(door.clone().serve()));
                }
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "RPC connection failed");
                    return;
                }
                None => return, // the client closed the connection
            },
            () = shutdown.requested(), if !draining => draining = true,
            _ = drain_check.tick(), if draining => {}
        }
        if draining && requests.channel().in_flight_requests() == 0 {
            break;
        }
    }
    // Every answer is handed to the transport; make sure it reached the socket.
    let flushed =
        tokio::time::timeout(Duration::from_secs(1), requests.channel_pin_mut().flush()).await;
    if !matches!(flushed, Ok(Ok(()))) {
        tracing::debug!("could not flush the last RPC answers before closing");
    }
}
