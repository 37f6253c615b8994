//! The one long-lived client the listener forwards events through: the
//! logger's RPC door (tarpc, one multiplexed TCP connection, rebuilt after it
//! dies) or its HTTP door (a pooled reqwest client).
//!
//! Over RPC, the events of concurrent deliveries are coalesced: a batcher
//! task takes whatever has queued up (at most `logger.batch_max`) into one
//! `log_entries` call, with at most `logger.batch_calls` calls running. A
//! lone event goes out at once; batches only form from events that arrive
//! while calls run, so latency at low load is that of a single call while a
//! busy listener pays one call per batch instead of one per event. Each
//! event still gets its own outcome, so the consumer acks, requeues or
//! dead-letters every message on its own.
//!
//! Every outcome is sorted into what the consumer must do with the message:
//! stored (ack), refused for good (dead-letter), or not stored this time
//! (requeue and back off).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use switchboard_runtime::metrics::{CallOutcome, Metrics, Outbound, Transport};
use switchboard_runtime::telemetry::{self, SpanKind};
use switchboard_wire::LogEntry;
use switchboard_wire::rpc::{BatchedEntry, RpcConnection, RpcError, log_one};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument as _;

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
    outbound: Outbound,
}

enum Door {
    /// The shared connection (`switchboard_wire::rpc`), dialled on the first
    /// event and replaced after it failed or timed out.
    Rpc(Arc<RpcConnection>),
    /// The same connection behind the batcher task (`logger.batch_max` > 1).
    BatchedRpc(mpsc::Sender<Queued>),
    Http {
        client: reqwest::Client,
        log_url: String,
    },
}

/// An event waiting for the batcher, and where its outcome goes.
struct Queued {
    entry: BatchedEntry,
    outcome: oneshot::Sender<Result<(), ForwardError>>,
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
    /// Builds the client; nothing is dialled until the first event. Over
    /// RPC with batching, this spawns the batcher, which ends once every
    /// clone of the client is dropped.
    pub fn new(settings: &Logger, metrics: &Metrics) -> Result<Self, reqwest::Error> {
        let timeout = settings.timeout();
        let door = match settings.via {
            LoggerVia::Rpc if settings.batch_max > 1 => {
                let connection = Arc::new(RpcConnection::new(settings.rpc_addr.clone()));
                // Every delivery in flight holds at most one queued event,
                // so the prefetch already bounds this queue; the capacity
                // only keeps a burst from allocating one slot at a time.
                let (queue, events) = mpsc::channel(settings.batch_max * settings.batch_calls);
                tokio::spawn(run_batches(
                    connection,
                    events,
                    settings.batch_max,
                    settings.batch_calls,
                    timeout,
                ));
                Door::BatchedRpc(queue)
            }
            LoggerVia::Rpc => Door::Rpc(Arc::new(RpcConnection::new(settings.rpc_addr.clone()))),
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
            outbound: metrics.outbound(),
        })
    }

    /// Stores `entry`; `Ok` means the logger has it (or had it already).
    pub async fn forward(
        &self,
        entry: &LogEntry,
        request_id: Option<&str>,
    ) -> Result<(), ForwardError> {
        let started = Instant::now();
        let (transport, kind) = match &*self.door {
            // tarpc's client span is the call itself.
            Door::Rpc(_) | Door::BatchedRpc(_) => (Transport::rpc, SpanKind::Internal),
            Door::Http { .. } => (Transport::http, SpanKind::Client),
        };
        let span = telemetry::call_span("logger", transport.as_str(), kind);
        let forwarded = async {
            match &*self.door {
                Door::Rpc(connection) => {
                    forward_rpc(connection, entry, request_id, self.timeout).await
                }
                Door::BatchedRpc(queue) => forward_batched(queue, entry, request_id).await,
                Door::Http { client, log_url } => {
                    forward_http(client, log_url, entry, request_id).await
                }
            }
        }
        .instrument(span.clone())
        .await;
        if let Err(err) = &forwarded {
            telemetry::failed(&span, err);
        }
        let outcome = match &forwarded {
            Ok(()) => CallOutcome::ok,
            Err(ForwardError::Refused(_) | ForwardError::Conflict(_)) => CallOutcome::refused,
            Err(ForwardError::Unavailable(_)) => CallOutcome::failed,
        };
        self.outbound
            .record("logger", transport, outcome, started.elapsed());
        forwarded
    }
}

async fn forward_rpc(
    connection: &RpcConnection,
    entry: &LogEntry,
    request_id: Option<&str>,
    timeout: Duration,
) -> Result<(), ForwardError> {
    let entry = entry.clone();
    let request_id = request_id.map(str::to_owned);
    let reply = connection
        .call(timeout, |client, ctx| async move {
            log_one(&client, ctx, entry, request_id.as_deref()).await
        })
        .await
        .map_err(|failure| ForwardError::Unavailable(failure.to_string()))?;
    verdict(reply)
}

async fn forward_batched(
    queue: &mpsc::Sender<Queued>,
    entry: &LogEntry,
    request_id: Option<&str>,
) -> Result<(), ForwardError> {
    let (outcome, answer) = oneshot::channel();
    let queued = Queued {
        // The event's trace goes with its entry: the batch's call is one
        // call for many events.
        entry: BatchedEntry {
            traceparent: telemetry::traceparent(),
            ..BatchedEntry::new(entry.clone(), request_id)
        },
        outcome,
    };
    let gone = || ForwardError::Unavailable("the listener is stopping".to_owned());
    queue.send(queued).await.map_err(|_| gone())?;
    answer.await.unwrap_or_else(|_| Err(gone()))
}

/// The batcher: one call per batch of whatever queued up, at most `calls`
/// calls at once. A permit is taken before the next batch is collected, so
/// while every call is busy, events pile up into the next batch.
async fn run_batches(
    connection: Arc<RpcConnection>,
    mut events: mpsc::Receiver<Queued>,
    batch_max: usize,
    calls: usize,
    timeout: Duration,
) {
    let running = Arc::new(Semaphore::new(calls));
    loop {
        let Ok(permit) = running.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(batch_max);
        if events.recv_many(&mut batch, batch_max).await == 0 {
            return;
        }
        let connection = connection.clone();
        tokio::spawn(async move {
            forward_batch(&connection, batch, timeout).await;
            drop(permit);
        });
    }
}

/// The most bytes of entries one `log_entries` call carries: half the
/// frame limit leaves room for MessagePack's framing, so a batch never fails
/// as a frame too large (which would look like a dead connection and requeue
/// every event in it), whatever `batch_max` and the entry limits are.
const BATCH_BYTES: usize = switchboard_wire::rpc::MAX_FRAME_BYTES / 2;

/// What an entry adds to a call's frame, generously: its strings and a
/// fixed allowance for their MessagePack headers.
fn frame_bytes(queued: &Queued) -> usize {
    let entry = &queued.entry;
    entry.entry.name.len()
        + entry.entry.data.len()
        + entry.entry.id.as_ref().map_or(0, String::len)
        + entry.request_id.as_ref().map_or(0, String::len)
        + entry.traceparent.as_ref().map_or(0, String::len)
        + 64
}

/// Sends one batch, in as many calls as [`BATCH_BYTES`] needs, one after
/// another, and hands every event its own outcome.
async fn forward_batch(connection: &RpcConnection, batch: Vec<Queued>, timeout: Duration) {
    for chunk in split_by_bytes(batch, BATCH_BYTES) {
        forward_chunk(connection, chunk, timeout).await;
    }
}

/// `batch` in order, cut so that each piece holds at most `budget` bytes
/// ([`frame_bytes`]), or one entry when that entry alone is larger.
fn split_by_bytes(batch: Vec<Queued>, budget: usize) -> Vec<Vec<Queued>> {
    let mut pieces = Vec::new();
    let mut piece = Vec::new();
    let mut bytes = 0;
    for queued in batch {
        let size = frame_bytes(&queued);
        if !piece.is_empty() && bytes + size > budget {
            pieces.push(std::mem::take(&mut piece));
            bytes = 0;
        }
        bytes += size;
        piece.push(queued);
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    pieces
}

/// One `log_entries` call.
async fn forward_chunk(connection: &RpcConnection, batch: Vec<Queued>, timeout: Duration) {
    let (entries, outcomes): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|queued| (queued.entry, queued.outcome))
        .unzip();
    let count = entries.len();
    // The call's own spans (tarpc's) join the first event's trace; each
    // entry's span at the logger joins its own event's.
    let traced = telemetry::entry_from_traceparent(
        entries
            .first()
            .and_then(|first| first.traceparent.as_deref()),
    )
    .call_span("logger", "rpc batch", SpanKind::Internal);
    let settle = |outcome: Result<(), ForwardError>, senders: Vec<oneshot::Sender<_>>| {
        for sender in senders {
            // The delivery's task is gone (shutdown): nothing to tell it.
            let _ = sender.send(outcome.clone());
        }
    };
    let answer = traced
        .instrument(connection.call(timeout, |client, ctx| async move {
            client.log_entries(ctx, entries).await
        }))
        .await;
    let replies = match answer {
        Ok(Ok(replies)) => replies,
        Ok(Err(refused)) => {
            // The call itself was refused (more entries than the logger
            // takes): a misconfiguration, not a verdict on the events.
            tracing::error!(error = %refused, count, "the logger refused a whole batch");
            return settle(
                Err(ForwardError::Unavailable(refused.to_string())),
                outcomes,
            );
        }
        Err(failure) => {
            return settle(
                Err(ForwardError::Unavailable(failure.to_string())),
                outcomes,
            );
        }
    };
    if replies.len() != count {
        tracing::error!(
            sent = count,
            answered = replies.len(),
            "the logger answered a batch with another number of outcomes"
        );
    }
    let mut replies = replies.into_iter();
    for sender in outcomes {
        let outcome = match replies.next() {
            Some(reply) => verdict(reply),
            None => Err(ForwardError::Unavailable(
                "the logger gave this event no outcome".to_owned(),
            )),
        };
        let _ = sender.send(outcome);
    }
}

/// What the logger's answer for one entry means for its message.
fn verdict(reply: Result<String, RpcError>) -> Result<(), ForwardError> {
    match reply {
        Ok(_) => Ok(()),
        Err(err @ RpcError::Invalid(_)) => Err(ForwardError::Refused(err.to_string())),
        Err(RpcError::Conflict(message)) => Err(ForwardError::Conflict(message)),
        Err(RpcError::Unavailable(message)) => Err(ForwardError::Unavailable(message)),
    }
}

async fn forward_http(
    client: &reqwest::Client,
    log_url: &str,
    entry: &LogEntry,
    request_id: Option<&str>,
) -> Result<(), ForwardError> {
    let mut request = client
        .post(log_url)
        .headers(telemetry::trace_headers())
        .json(&HttpEntry {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(name: &str, data_bytes: usize) -> Queued {
        let (outcome, _answer) = oneshot::channel();
        Queued {
            entry: BatchedEntry::new(
                LogEntry {
                    name: name.to_owned(),
                    data: "x".repeat(data_bytes),
                    id: None,
                },
                None,
            ),
            outcome,
        }
    }

    fn names(pieces: &[Vec<Queued>]) -> Vec<Vec<String>> {
        pieces
            .iter()
            .map(|piece| piece.iter().map(|q| q.entry.entry.name.clone()).collect())
            .collect()
    }

    #[test]
    fn a_batch_is_cut_by_bytes_in_order_and_an_oversized_entry_goes_alone() {
        // 1,000 bytes of data plus the allowance for each.
        let batch = vec![
            queued("a", 1_000),
            queued("b", 1_000),
            queued("c", 1_000),
            queued("big", 5_000),
            queued("d", 1_000),
        ];
        let pieces = split_by_bytes(batch, 2_200);
        assert_eq!(
            names(&pieces),
            vec![vec!["a", "b"], vec!["c"], vec!["big"], vec!["d"]]
        );
    }

    #[test]
    fn the_largest_batch_of_the_largest_entries_fits_the_frame() {
        // What validation allows at most: batch_max 1,000 entries of the
        // default 64 KiB of data each, far over one frame.
        let batch: Vec<_> = (0..switchboard_wire::rpc::MAX_BATCH_ENTRIES)
            .map(|at| queued(&format!("n{at}"), 64 * 1024))
            .collect();
        let pieces = split_by_bytes(batch, BATCH_BYTES);
        assert!(pieces.len() > 1);
        assert_eq!(pieces.iter().map(Vec::len).sum::<usize>(), 1_000);
        for piece in &pieces {
            let bytes: usize = piece.iter().map(frame_bytes).sum();
            assert!(
                bytes <= switchboard_wire::rpc::MAX_FRAME_BYTES / 2,
                "{bytes}"
            );
        }
    }
}
