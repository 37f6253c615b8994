//! The Rust-native RPC door: tarpc `LogRpc` (the analogue of the original's
//! Go `net/rpc` `RPCServer.LogInfo`) over the shared MessagePack transport.
//!
//! A connection carries many concurrent calls: each request runs in its own
//! task, so a slow store write never holds up the calls behind it, and the
//! group-commit writer sees them all at once. What one client can hold is
//! bounded (`[rpc]`): connections, calls running per connection, and how
//! long a connection may stay without calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::{Sink, SinkExt, Stream, StreamExt};
use tarpc::Response;
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel, InFlightRequest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::PollSemaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use switchboard_runtime::Shutdown;
use switchboard_runtime::limits::ConnectionLimit;
use switchboard_runtime::telemetry::{self, SpanKind};
use switchboard_wire::LogEntry;
use switchboard_wire::rpc::{
    BatchedEntry, LogRpc, LogRpcRequest, LogRpcResponse, MAX_BATCH_ENTRIES, RpcError,
    processed_reply, transport,
};

use crate::ingest::{Ingest, IngestError};
use crate::metrics::Door;
use crate::settings;

/// The `LogRpc` implementation.
#[derive(Debug, Clone)]
pub struct RpcDoor {
    ingest: Ingest,
}

impl RpcDoor {
    pub fn new(ingest: Ingest) -> Self {
        Self { ingest }
    }

    /// Stores one entry. `request_id` and `traceparent` are the entry's own
    /// in a batch; a lone entry's trace is the call's (tarpc's span is the
    /// current one) and it has no request id (the `log_info` of the Go
    /// original has no place for one).
    async fn store(
        self,
        method: &'static str,
        request_id: Option<String>,
        traceparent: Option<String>,
        entry: LogEntry,
    ) -> Result<String, RpcError> {
        let LogEntry { name, data, id } = entry;
        let traced = telemetry::entry_from_traceparent(traceparent.as_deref()).span(
            SpanKind::Internal,
            format_args!("LogRpc.{method} entry"),
            || {
                tracing::info_span!(
                    "rpc",
                    method,
                    request_id = request_id.as_deref().unwrap_or("-"),
                    trace_id = tracing::field::Empty,
                    otel.kind = tracing::field::Empty,
                    otel.name = tracing::field::Empty,
                )
            },
        );
        traced
            .instrument(async move {
                match self.ingest.log(Door::rpc, name, data, id).await {
                    Ok(entry) => {
                        tracing::debug!(name = entry.name(), "logged");
                        Ok(processed_reply(entry.name()))
                    }
                    Err(IngestError::Invalid(err)) => {
                        tracing::info!(error = %err, "refused");
                        Err(RpcError::Invalid(err.to_string()))
                    }
                    Err(err @ IngestError::Conflict { .. }) => {
                        tracing::info!(error = %err, "refused a conflicting repeat of an id");
                        Err(RpcError::Conflict(err.to_string()))
                    }
                    Err(IngestError::Store(err)) => {
                        tracing::warn!(error = %err, "write failed");
                        telemetry::failed(&tracing::Span::current(), &err);
                        Err(RpcError::Unavailable(err.to_string()))
                    }
                }
            })
            .await
    }
}

impl LogRpc for RpcDoor {
    async fn log_info(self, _: Context, name: String, data: String) -> Result<String, RpcError> {
        let entry = LogEntry {
            name,
            data,
            id: None,
        };
        self.store("log_info", None, None, entry).await
    }

    async fn log_entry(self, _: Context, entry: LogEntry) -> Result<String, RpcError> {
        self.store("log_entry", None, None, entry).await
    }

    /// Every entry goes to the group-commit writer at once, so a batch
    /// becomes one `insert_many` (or a few, around `batching.max_batch`) and
    /// each entry still gets the outcome a lone `log_entry` would have had.
    async fn log_entries(
        self,
        _: Context,
        entries: Vec<BatchedEntry>,
    ) -> Result<Vec<Result<String, RpcError>>, RpcError> {
        if entries.len() > MAX_BATCH_ENTRIES {
            return Err(RpcError::Invalid(format!(
                "a log_entries call holds at most {MAX_BATCH_ENTRIES} entries; this one held {}",
                entries.len()
            )));
        }
        let writes = entries.into_iter().map(|batched| {
            self.clone().store(
                "log_entries",
                batched.request_id,
                batched.traceparent,
                batched.entry,
            )
        });
        Ok(futures::future::join_all(writes).await)
    }
}

/// A call read from a connection, ready to run.
pub type Call = InFlightRequest<LogRpcRequest, LogRpcResponse>;

/// Serves the RPC door on `listener` within `limits` until `shutdown`; then
/// stops accepting, answers the calls in flight and closes the connections.
pub async fn serve(
    listener: TcpListener,
    door: RpcDoor,
    limits: &settings::Rpc,
    shutdown: Shutdown,
) {
    serve_calls(listener, limits, shutdown, move |call: Call| {
        call.execute(door.clone().serve())
    })
    .await;
}

/// The door's connection handling with `execute` running each call: the
/// logger's runs [`RpcDoor`]; tests run calls they can hold up, which a real
/// store cannot do on demand.
///
/// `limits`: at most `max_connections` connections (the next one waits in
/// the backlog), at most `max_in_flight_per_connection` calls running per
/// connection (the next call is not read before one finishes), and a
/// connection without calls for `idle_timeout` is closed.
pub async fn serve_calls<E, F>(
    listener: TcpListener,
    limits: &settings::Rpc,
    shutdown: Shutdown,
    execute: E,
) where
    E: Fn(Call) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let connections = ConnectionLimit::new("rpc", limits.max_connections);
    let tasks = TaskTracker::new();
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = connections.admit() => slot,
            () = &mut stop => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
                    }
                    let span = tracing::debug_span!("rpc connection", %peer);
                    let connection = serve_connection(
                        stream,
                        limits.clone(),
                        execute.clone(),
                        shutdown.clone(),
                        tasks.clone(),
                    );
                    tasks.spawn(
                        async move {
                            let _slot = slot;
                            connection.await;
                        }
                        .instrument(span),
                    );
                }
                Err(err) => {
                    // Usually out of file descriptors; retrying at once would spin.
                    tracing::warn!(error = %err, "cannot accept an RPC connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut stop => break,
        }
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

async fn serve_connection<E, F>(
    stream: TcpStream,
    limits: settings::Rpc,
    execute: E,
    shutdown: Shutdown,
    tasks: TaskTracker,
) where
    E: Fn(Call) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let channel = Capped::new(
        BaseChannel::with_defaults(transport(stream)),
        limits.max_in_flight_per_connection,
    );
    let calls = Arc::new(Calls::default());
    let idle_timeout = limits.idle_timeout();
    let mut requests = std::pin::pin!(channel.requests());
    let mut draining = false;
    // While draining, how often to check whether the last answer went out.
    let mut drain_check = tokio::time::interval(Duration::from_millis(10));
    loop {
        let idle_at = idle_timeout.map(|timeout| calls.last_change() + timeout);
        tokio::select! {
            // Polling the stream also writes the answers of finished calls.
            next = requests.next() => match next {
                Some(Ok(call)) => {
                    let slot = requests.channel_pin_mut().get_mut().take_admitted();
                    let running = Calls::start(&calls, slot);
                    let call = execute(call);
                    tasks.spawn(async move {
                        call.await;
                        drop(running);
                    });
                }
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "RPC connection failed");
                    return;
                }
                None => return, // the client closed the connection
            },
            () = sleep_until(idle_at), if !draining => {
                // The deadline read above may have moved since.
                if idle_timeout.is_some_and(|timeout| calls.idle_for() >= timeout) {
                    tracing::debug!("closing an idle RPC connection");
                    break;
                }
            }
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

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The calls running on one connection, for its idle timeout.
#[derive(Debug)]
struct Calls {
    state: Mutex<(usize, Instant)>,
}

impl Default for Calls {
    fn default() -> Self {
        Self {
            state: Mutex::new((0, Instant::now())),
        }
    }
}

impl Calls {
    fn start(this: &Arc<Self>, slot: Option<OwnedSemaphorePermit>) -> Running {
        let mut state = this.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state = (state.0 + 1, Instant::now());
        Running {
            calls: Arc::clone(this),
            _slot: slot,
        }
    }

    /// When a call last started or finished (or the connection opened).
    fn last_change(&self) -> Instant {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1
    }

    /// How long no call has been running; zero while one is.
    fn idle_for(&self) -> Duration {
        let (running, since) = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if running > 0 {
            Duration::ZERO
        } else {
            since.elapsed()
        }
    }
}

/// A running call: holds its slot of the connection's in-flight cap and
/// marks the call finished when dropped.
struct Running {
    calls: Arc<Calls>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut state = self
            .calls
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *state = (state.0.saturating_sub(1), Instant::now());
    }
}

/// A channel that reads the next call only when a slot of its cap is free.
///
/// Unlike tarpc's `max_concurrent_requests`, which reads the call and answers
/// it with an error, the call stays unread in the socket until a running call
/// finishes: the broker's many concurrent calls over its one connection wait
/// a moment instead of failing, and a hostile client is slowed down by TCP
/// flow control instead of costing the logger memory and work. The slot is a
/// semaphore permit held by the call's task, so a call ends its slot however
/// it ends (answered, aborted at its deadline, or its task panicking).
struct Capped<C> {
    inner: C,
    slots: PollSemaphore,
    /// A free slot, taken before reading, for the next call.
    reserved: Option<OwnedSemaphorePermit>,
    /// The slot of the call just read, for the connection loop to take.
    admitted: Option<OwnedSemaphorePermit>,
}

impl<C> Capped<C> {
    /// `max == 0`: no cap.
    fn new(inner: C, max: usize) -> Self {
        let permits = if max == 0 {
            Semaphore::MAX_PERMITS
        } else {
            max.min(Semaphore::MAX_PERMITS)
        };
        Self {
            inner,
            slots: PollSemaphore::new(Arc::new(Semaphore::new(permits))),
            reserved: None,
            admitted: None,
        }
    }

    fn take_admitted(&mut self) -> Option<OwnedSemaphorePermit> {
        self.admitted.take()
    }
}

impl<C: Channel + Unpin> Stream for Capped<C> {
    type Item = <C as Stream>::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.reserved.is_none() {
            match this.slots.poll_acquire(cx) {
                Poll::Ready(Some(permit)) => this.reserved = Some(permit),
                // Never closed: the semaphore is this channel's alone.
                Poll::Ready(None) => return Poll::Ready(None),
                // Woken when a running call frees its slot; tarpc's
                // `Requests` keeps writing finished calls' answers meanwhile.
                Poll::Pending => return Poll::Pending,
            }
        }
        let next = Pin::new(&mut this.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(_))) = &next {
            this.admitted = this.reserved.take();
        }
        next
    }
}

impl<C: Channel + Unpin> Sink<Response<C::Resp>> for Capped<C> {
    type Error = <C as Sink<Response<C::Resp>>>::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Response<C::Resp>) -> Result<(), Self::Error> {
        Pin::new(&mut self.get_mut().inner).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

impl<C: Channel + Unpin> Channel for Capped<C> {
    type Req = C::Req;
    type Resp = C::Resp;
    type Transport = C::Transport;

    fn config(&self) -> &tarpc::server::Config {
        self.inner.config()
    }

    fn in_flight_requests(&self) -> usize {
        self.inner.in_flight_requests()
    }

    fn transport(&self) -> &Self::Transport {
        self.inner.transport()
    }
}
