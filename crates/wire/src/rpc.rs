//! The Rust-native RPC between the logger and its clients.
//!
//! One TCP connection carries many concurrent calls (tarpc multiplexes them),
//! which is what the Go original's one-connection-per-call `net/rpc` lacked.
//! Both ends build their transport with [`transport`], so framing and encoding
//! can only change in one place.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_serde::formats::MessagePack;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::LogEntry;

/// Frames larger than this are refused by both ends: a log entry is at most
/// tens of KiB, so anything near this is a bug or an attack.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

#[tarpc::service]
pub trait LogRpc {
    /// The original `RPCServer.LogInfo`: stores the entry and answers
    /// `Processed payload via RPC:<name>`.
    async fn log_info(name: String, data: String) -> Result<String, RpcError>;
    /// Stores an entry that may carry an idempotency id; same answer as `log_info`.
    async fn log_entry(entry: LogEntry) -> Result<String, RpcError>;
    /// Stores many entries in one call, each with its own outcome (in the
    /// order given), so that one refused entry fails alone. The call itself
    /// is refused as `Invalid` only when it holds more than
    /// [`MAX_BATCH_ENTRIES`].
    async fn log_entries(
        entries: Vec<BatchedEntry>,
    ) -> Result<Vec<Result<String, RpcError>>, RpcError>;
}

/// The most entries one `log_entries` call may carry: a batch is one
/// group-commit's worth, and the bound keeps a call's work small. The frame
/// still has to fit [`MAX_FRAME_BYTES`] (1,000 entries of 64 KiB would not):
/// a caller cuts its batches by size too, as the listener does.
pub const MAX_BATCH_ENTRIES: usize = 1_000;

/// One entry of a `log_entries` call with the request it belongs to: a
/// batch holds many requests, and tarpc's context carries one trace per call.
///
/// MessagePack carries a struct as an array, by position: fields are only
/// ever added at the end, and none is skipped when empty (a skipped field
/// would shift the ones after it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchedEntry {
    pub entry: LogEntry,
    #[serde(default)]
    pub request_id: Option<String>,
    /// The W3C `traceparent` of the work that produced the entry, when it is
    /// not the call's own (an event the listener batched); the logger's span
    /// for the entry continues that trace.
    #[serde(default)]
    pub traceparent: Option<String>,
}

impl BatchedEntry {
    /// An entry of the caller's own request: its trace travels in the call.
    pub fn new(entry: LogEntry, request_id: Option<&str>) -> Self {
        Self {
            entry,
            request_id: request_id.map(str::to_owned),
            traceparent: None,
        }
    }
}

/// Why the logger refused or failed a write; mirrors the HTTP 400/409/503 and
/// the gRPC INVALID_ARGUMENT/ALREADY_EXISTS/UNAVAILABLE of the other doors.
///
/// MessagePack carries a variant by its name, so variants may be added
/// (never renamed): a peer built before `Conflict` existed cannot decode that
/// one reply (its call fails as a transport error) and handles the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RpcError {
    #[error("invalid log entry: {0}")]
    Invalid(String),
    #[error("log store unavailable: {0}")]
    Unavailable(String),
    /// The entry's idempotency id is already stored with a different name or
    /// data; the text says so (and names the id). Retrying cannot help.
    #[error("{0}")]
    Conflict(String),
}

/// The reply of a successful write, identical on every client path.
pub fn processed_reply(name: &str) -> String {
    format!("Processed payload via RPC:{name}")
}

/// The length-delimited MessagePack transport both ends use over a TCP stream.
pub fn transport<Item, SinkItem>(
    stream: TcpStream,
) -> tarpc::serde_transport::Transport<TcpStream, Item, SinkItem, MessagePack<Item, SinkItem>>
where
    Item: for<'de> Deserialize<'de>,
    SinkItem: Serialize,
{
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec();
    tarpc::serde_transport::new(Framed::new(stream, codec), MessagePack::default())
}

/// Opens a client connection to the logger's RPC door. Callers keep the client
/// for the life of the process and reconnect only after it fails.
pub async fn connect(addr: SocketAddr) -> std::io::Result<LogRpcClient> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(LogRpcClient::new(tarpc::client::Config::default(), transport(stream)).spawn())
}

/// A client connection that failed to open: the text names the address and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(pub String);

/// Why [`RpcConnection::call`] got no answer: the logger may not have seen
/// the call, or may have stored it without the answer arriving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    #[error("{0}")]
    Connect(ConnectError),
    #[error("no answer from {addr} within {timeout:?}")]
    NoAnswer {
        addr: String,
        timeout: std::time::Duration,
    },
    #[error("RPC connection to {addr} failed: {error}")]
    Transport { addr: String, error: String },
}

/// A live client and the generation of its connection (see [`RpcConnection`]).
#[derive(Clone)]
pub struct Connected {
    pub generation: u64,
    pub client: LogRpcClient,
}

/// The one long-lived connection a client keeps to the logger's RPC door:
/// opened on first use (the logger may start later: socket activation),
/// shared by every call, and replaced only after a caller found it dead.
///
/// Generations make "replace it" safe under concurrency: many calls failing
/// on one dead connection [`discard`](Self::discard) that generation, and
/// the next [`get`](Self::get) dials once for all of them (callers queue on
/// one lock). A dial that failed after a caller started waiting fails that
/// caller too, instead of every queued caller dialling an unreachable host
/// in turn, each for the full connect timeout.
pub struct RpcConnection {
    addr: String,
    current: std::sync::RwLock<Option<Connected>>,
    dialling: tokio::sync::Mutex<Option<(std::time::Instant, ConnectError)>>,
    generations: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for RpcConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcConnection")
            .field("addr", &self.addr)
            .field("connected", &self.current().is_some())
            .finish()
    }
}

impl RpcConnection {
    /// Dials nothing yet: `addr` is `host:port`, resolved at each dial.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            current: std::sync::RwLock::new(None),
            dialling: tokio::sync::Mutex::new(None),
            generations: std::sync::atomic::AtomicU64::new(1),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The open connection, if there is one (never dials).
    pub fn current(&self) -> Option<Connected> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The open connection, or a new one dialled within `connect_timeout`.
    pub async fn get(
        &self,
        connect_timeout: std::time::Duration,
    ) -> Result<Connected, ConnectError> {
        if let Some(connected) = self.current() {
            return Ok(connected);
        }
        let asked_at = std::time::Instant::now();
        let mut last_failure = self.dialling.lock().await;
        if let Some(connected) = self.current() {
            return Ok(connected);
        }
        if let Some((failed_at, error)) = last_failure.as_ref()
            && *failed_at >= asked_at
        {
            return Err(error.clone());
        }
        let dialled = tokio::time::timeout(connect_timeout, self.dial())
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError(format!(
                    "connecting to {} took longer than {connect_timeout:?}",
                    self.addr
                )))
            });
        match dialled {
            Ok(client) => {
                let generation = self
                    .generations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let connected = Connected { generation, client };
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(connected.clone());
                *last_failure = None;
                tracing::info!(addr = %self.addr, generation, "connected to the logger's RPC door");
                Ok(connected)
            }
            Err(error) => {
                *last_failure = Some((std::time::Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// Forgets the connection of `generation` (a call found it dead, or it
    /// timed out and may be half-open), unless another caller already
    /// replaced it.
    pub fn discard(&self, generation: u64) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current
            .as_ref()
            .is_some_and(|connected| connected.generation == generation)
        {
            *current = None;
        }
    }

    /// One call on the shared connection (dialled first if there is none),
    /// with `timeout` as its deadline. A call
    /// that gets no answer, or fails in transport, discards the connection
    /// (it may be half-open or dead), so the next call dials afresh.
    ///
    /// `call` gets its own handle on the client and the context, e.g.
    /// `|client, ctx| async move { client.log_entry(ctx, entry).await }`.
    pub async fn call<T, F, Fut>(
        &self,
        timeout: std::time::Duration,
        call: F,
    ) -> Result<T, CallFailure>
    where
        F: FnOnce(LogRpcClient, tarpc::context::Context) -> Fut,
        Fut: std::future::Future<Output = Result<T, tarpc::client::RpcError>>,
    {
        let connected = self.get(timeout).await.map_err(CallFailure::Connect)?;
        let answer = call(connected.client, context(timeout));
        // tarpc enforces the deadline itself; the outer bound only guards
        // against a dispatch task that never answers at all.
        let grace = std::time::Duration::from_millis(500);
        match tokio::time::timeout(timeout + grace, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(tarpc::client::RpcError::DeadlineExceeded)) | Err(_) => {
                self.discard(connected.generation);
                Err(CallFailure::NoAnswer {
                    addr: self.addr.clone(),
                    timeout,
                })
            }
            Ok(Err(err)) => {
                self.discard(connected.generation);
                Err(CallFailure::Transport {
                    addr: self.addr.clone(),
                    error: err.to_string(),
                })
            }
        }
    }

    async fn dial(&self) -> Result<LogRpcClient, ConnectError> {
        let addrs = tokio::net::lookup_host(self.addr.as_str())
            .await
            .map_err(|err| ConnectError(format!("cannot resolve {}: {err}", self.addr)))?;
        let mut last_error = format!("{} resolves to no address", self.addr);
        for addr in addrs {
            match connect(addr).await {
                Ok(client) => return Ok(client),
                Err(err) => last_error = format!("cannot connect to {addr}: {err}"),
            }
        }
        Err(ConnectError(last_error))
    }
}

/// Stores one entry of the caller's own request as a batch of one, which
/// carries its request id (tarpc's context carries the trace, not the
/// request id): the entry's outcome, or the call's transport failure.
pub async fn log_one(
    client: &LogRpcClient,
    ctx: tarpc::context::Context,
    entry: LogEntry,
    request_id: Option<&str>,
) -> Result<Result<String, RpcError>, tarpc::client::RpcError> {
    let outcomes = client
        .log_entries(ctx, vec![BatchedEntry::new(entry, request_id)])
        .await?;
    Ok(outcomes.and_then(|mut outcomes| match outcomes.len() {
        1 => outcomes.remove(0),
        n => Err(RpcError::Unavailable(format!(
            "the logger answered a call of one entry with {n} outcomes"
        ))),
    }))
}

/// A call context whose deadline is `timeout` from now. Its trace context
/// is the current span's: tarpc fills it from the span when traces are on,
/// so the logger's spans join the caller's trace.
pub fn context(timeout: std::time::Duration) -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = std::time::Instant::now() + timeout;
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tarpc::server::{BaseChannel, Channel};

    #[derive(Clone)]
    struct Echo;

    impl LogRpc for Echo {
        async fn log_info(
            self,
            _: tarpc::context::Context,
            name: String,
            _data: String,
        ) -> Result<String, RpcError> {
            Ok(processed_reply(&name))
        }
        async fn log_entry(
            self,
            _: tarpc::context::Context,
            entry: LogEntry,
        ) -> Result<String, RpcError> {
            Err(RpcError::Invalid(format!("refused {}", entry.name)))
        }
        async fn log_entries(
            self,
            _: tarpc::context::Context,
            entries: Vec<BatchedEntry>,
        ) -> Result<Vec<Result<String, RpcError>>, RpcError> {
            Ok(entries
                .into_iter()
                .map(|batched| match (batched.request_id, batched.traceparent) {
                    (Some(id), traceparent) => Ok(format!(
                        "{}|{id}|{}",
                        processed_reply(&batched.entry.name),
                        traceparent.unwrap_or_default()
                    )),
                    (None, _) => Err(RpcError::Invalid(format!("refused {}", batched.entry.name))),
                })
                .collect())
        }
    }

    #[tokio::test]
    async fn calls_travel_over_tcp_with_each_entry_s_request() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            BaseChannel::with_defaults(transport(stream))
                .execute(Echo.serve())
                .for_each(|call| async move {
                    tokio::spawn(call);
                })
                .await;
        });
        let client = connect(addr).await.expect("connect");
        let id = "0196a5e2-7a7c-7d2b-9c3e-5f4a3b2c1d0e";
        let timeout = std::time::Duration::from_secs(5);
        let reply = client
            .log_info(context(timeout), "event".into(), "data".into())
            .await
            .expect("transport");
        assert_eq!(reply, Ok("Processed payload via RPC:event".to_owned()));
        let refused = client
            .log_entry(
                context(timeout),
                LogEntry {
                    name: "x".into(),
                    data: String::new(),
                    id: None,
                },
            )
            .await
            .expect("transport");
        assert_eq!(refused, Err(RpcError::Invalid("refused x".into())));
        let entry = |name: &str| LogEntry {
            name: name.into(),
            data: String::new(),
            id: None,
        };
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let batch = vec![
            BatchedEntry::new(entry("a"), Some(id)),
            BatchedEntry::new(entry("b"), None),
            BatchedEntry {
                traceparent: Some(traceparent.into()),
                ..BatchedEntry::new(entry("c"), Some(id))
            },
        ];
        let outcomes = client
            .log_entries(context(timeout), batch)
            .await
            .expect("transport");
        assert_eq!(
            outcomes,
            Ok(vec![
                Ok(format!("Processed payload via RPC:a|{id}|")),
                Err(RpcError::Invalid("refused b".into())),
                Ok(format!("Processed payload via RPC:c|{id}|{traceparent}")),
            ])
        );
        let lone = log_one(&client, context(timeout), entry("d"), Some(id))
            .await
            .expect("transport");
        assert_eq!(lone, Ok(format!("Processed payload via RPC:d|{id}|")));
        let refused = log_one(&client, context(timeout), entry("e"), None)
            .await
            .expect("transport");
        assert_eq!(refused, Err(RpcError::Invalid("refused e".into())));
    }

    /// What a caller built before `traceparent` existed sends (a struct is
    /// an array by position): it decodes, with the new field empty.
    #[test]
    fn a_batched_entry_without_its_later_fields_decodes() {
        use std::pin::Pin;
        use tokio_serde::{Deserializer as _, Serializer as _};

        #[derive(Serialize)]
        struct Before {
            entry: LogEntry,
            request_id: Option<String>,
        }
        #[derive(Serialize)]
        struct First {
            entry: LogEntry,
        }
        let entry = LogEntry {
            name: "event".into(),
            data: "data".into(),
            id: Some("id-1".into()),
        };
        let mut codec = MessagePack::<BatchedEntry, Before>::default();
        let bytes = Pin::new(&mut codec)
            .serialize(&Before {
                entry: entry.clone(),
                request_id: Some("req-1".into()),
            })
            .expect("encodes");
        let decoded = Pin::new(&mut codec)
            .deserialize(&bytes::BytesMut::from(&bytes[..]))
            .expect("decodes");
        assert_eq!(decoded, BatchedEntry::new(entry.clone(), Some("req-1")));

        let mut codec = MessagePack::<BatchedEntry, First>::default();
        let bytes = Pin::new(&mut codec)
            .serialize(&First {
                entry: entry.clone(),
            })
            .expect("encodes");
        let decoded = Pin::new(&mut codec)
            .deserialize(&bytes::BytesMut::from(&bytes[..]))
            .expect("decodes");
        assert_eq!(decoded, BatchedEntry::new(entry, None));
    }

    /// A door that accepts and never answers: the call fails as no answer,
    /// and the connection, possibly half-open, is dropped for the next call.
    #[tokio::test]
    async fn a_call_without_an_answer_fails_and_discards_the_connection() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = silent.local_addr().expect("addr").to_string();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        let connection = RpcConnection::new(addr.clone());
        let timeout = std::time::Duration::from_millis(200);
        let failure = connection
            .call(timeout, |client, ctx| async move {
                client.log_info(ctx, "a".into(), "b".into()).await
            })
            .await
            .expect_err("no answer");
        assert_eq!(failure, CallFailure::NoAnswer { addr, timeout });
        assert!(connection.current().is_none(), "the connection was kept");
        held.abort();
    }

    #[tokio::test]
    async fn a_call_to_a_closed_port_fails_to_connect() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr").to_string();
        drop(closed);
        let failure = RpcConnection::new(addr)
            .call(
                std::time::Duration::from_millis(500),
                |client, ctx| async move { client.log_info(ctx, "a".into(), "b".into()).await },
            )
            .await
            .expect_err("nothing listens");
        assert!(matches!(failure, CallFailure::Connect(_)), "{failure:?}");
    }
}
