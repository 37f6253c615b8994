//! The logger's gRPC door (the original `logs.LogService/WriteLog`): one tonic
//! `Channel`, created lazily at start (the loggers may start later),
//! multiplexing every request over one HTTP/2 connection per logger that
//! tonic re-opens when it breaks.
//!
//! With several loggers the channel is tonic's own load balancer
//! (`Channel::balance_channel`: power of two choices over the endpoints).
//! tonic keeps an endpoint whose connect fails in its set and lets every
//! call it picks fail, so a health watcher ([`GrpcLogger::watch_health`])
//! takes out of the set an endpoint whose door does not speak HTTP/2 (no
//! connection, or no SETTINGS frame in answer to the client preface: a hung
//! process, or a socket whose process is gone while systemd holds it), and
//! puts it back once it does. It probes every second, and at once when a
//! call failed in transport or timed out; a call that failed in transport
//! waits for that probe and is sent once more, to whatever the set then
//! holds. The last endpoint is never taken out: with every logger gone a
//! call fails at once (502) instead of waiting for an empty set until its
//! deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use switchboard_runtime::Shutdown;
use switchboard_runtime::http::REQUEST_ID_HEADER;
use switchboard_wire::proto::log_service_client::LogServiceClient;
use switchboard_wire::proto::{Log, LogRequest};
use switchboard_wire::{LOG_ID_METADATA, LogEntry};
use tokio::sync::{Notify, mpsc, watch};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Downstream, DownstreamError, error_chain};

const DOWNSTREAM: Downstream = Downstream::LoggerGrpc;

/// How often the health watcher probes every logger's gRPC door.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long one probe may take: a loopback or LAN connect takes milliseconds.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct GrpcLogger {
    urls: Vec<String>,
    /// Every URL, for `/downstreams` (operators only).
    addresses: String,
    client: LogServiceClient<Channel>,
    timeout: Duration,
    /// With several loggers: the balancer's set and its watcher.
    balance: Option<Arc<Balance>>,
}

/// What the health watcher shares with the calls.
#[derive(Debug)]
struct Balance {
    endpoints: Vec<(String, Endpoint)>,
    changes: mpsc::Sender<Change<String, Endpoint>>,
    /// A call failed in transport: probe now.
    poke: Notify,
    /// Probe rounds begun: a call waits for one that begins after its failure.
    begun: AtomicU64,
    /// Probe rounds finished.
    finished: watch::Sender<u64>,
}

impl GrpcLogger {
    /// Builds the lazy channel over `urls`; fails only on a malformed (or
    /// no) URL.
    pub fn new(urls: Vec<String>, timeout: Duration) -> Result<Self, tonic::transport::Error> {
        let endpoints = urls
            .iter()
            .map(|url| {
                Ok((
                    url.clone(),
                    Endpoint::from_shared(url.clone())?
                        .tcp_nodelay(true)
                        // HTTP/2 pings notice a dead peer between requests.
                        .http2_keep_alive_interval(Duration::from_secs(30))
                        .keep_alive_timeout(Duration::from_secs(10)),
                ))
            })
            .collect::<Result<Vec<_>, tonic::transport::Error>>()?;
        let addresses = urls.join(", ");
        let (channel, balance) = match endpoints.as_slice() {
            [] | [_] => {
                let endpoint = match endpoints.first() {
                    Some((_, endpoint)) => endpoint.clone(),
                    // No URL at all: tonic's own error for an empty one.
                    None => Endpoint::from_shared(String::new())?,
                };
                (endpoint.connect_lazy(), None)
            }
            _ => {
                // Room for every endpoint's insert and a removal each.
                let (channel, changes) =
                    Channel::balance_channel::<String>(endpoints.len().saturating_mul(2));
                for (url, endpoint) in &endpoints {
                    // A fresh channel with room for all of them: cannot be full.
                    let _ = changes.try_send(Change::Insert(url.clone(), endpoint.clone()));
                }
                let balance = Balance {
                    endpoints,
                    changes,
                    poke: Notify::new(),
                    begun: AtomicU64::new(0),
                    finished: watch::channel(0).0,
                };
                (channel, Some(Arc::new(balance)))
            }
        };
        Ok(Self {
            urls,
            addresses,
            client: LogServiceClient::new(channel),
            timeout,
            balance,
        })
    }

    pub fn address(&self) -> &str {
        &self.addresses
    }

    /// With several loggers, keeps the balancer's set to the loggers whose
    /// gRPC door answers an HTTP/2 handshake (never emptying it), until
    /// `stop`; returns at once with one logger.
    pub async fn watch_health(&self, stop: Shutdown) {
        let Some(balance) = self.balance.clone() else {
            return;
        };
        let mut in_set = vec![true; balance.endpoints.len()];
        let stopped = stop.requested();
        tokio::pin!(stopped);
        loop {
            let round = balance.begun.fetch_add(1, Ordering::SeqCst) + 1;
            let probes = balance
                .endpoints
                .iter()
                .map(|(url, _)| probe_http2(url, PROBE_TIMEOUT));
            let results = futures::future::join_all(probes).await;
            for (index, result) in results.iter().enumerate() {
                let (url, endpoint) = &balance.endpoints[index];
                let others_in_set = in_set
                    .iter()
                    .enumerate()
                    .any(|(other, &member)| other != index && member);
                let change = match result {
                    Ok(()) if !in_set[index] => {
                        tracing::info!(logger = %url, "logger gRPC door answers again; back in the balancer");
                        Change::Insert(url.clone(), endpoint.clone())
                    }
                    Err(err) if in_set[index] && others_in_set => {
                        tracing::warn!(logger = %url, error = %err, "logger gRPC door does not answer; out of the balancer until it does");
                        Change::Remove(url.clone())
                    }
                    _ => continue,
                };
                if balance.changes.send(change).await.is_err() {
                    // The channel (and with it every client) is gone.
                    return;
                }
                in_set[index] = !in_set[index];
            }
            balance.finished.send_replace(round);
            tokio::select! {
                () = &mut stopped => return,
                () = balance.poke.notified() => {}
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
    }

    /// Stores a log entry through `WriteLog`.
    ///
    /// A call that meets a connection the logger (or anything between) has
    /// just reset, or a logger that is gone, is sent once more: with several
    /// loggers after the health watcher has probed them (so the balancer no
    /// longer holds a logger that is gone), with one on the connection tonic
    /// re-opens. The broker gives every entry an idempotency id, so the
    /// loggers (one store) store it once even if the first attempt reached
    /// one. Both attempts share one deadline.
    pub async fn log(
        &self,
        entry: LogEntry,
        request_id: Option<&str>,
    ) -> Result<(), DownstreamError> {
        let attempts = async {
            match self.write_log(&entry, request_id).await {
                Err(status) if is_transport_failure(&status) && entry.id.is_some() => {
                    tracing::info!(error = %error_chain(&status), "logger gRPC connection failed; sending again");
                    if let Some(balance) = &self.balance {
                        // A round begun before the failure may have seen
                        // the logger still up: wait for the next one.
                        let next = balance.begun.load(Ordering::SeqCst) + 1;
                        let mut finished = balance.finished.subscribe();
                        balance.poke.notify_one();
                        // Bounded: a watcher that stopped (shutdown) leaves
                        // the set as it is. A round takes one probe timeout
                        // (its probes run at once), the one in progress too.
                        let _ = tokio::time::timeout(
                            PROBE_TIMEOUT * 2 + Duration::from_millis(100),
                            finished.wait_for(|round| *round >= next),
                        )
                        .await;
                    }
                    self.write_log(&entry, request_id).await
                }
                result => result,
            }
        };
        let result = match tokio::time::timeout(self.timeout, attempts).await {
            Err(_) => Err(DownstreamError::timed_out(DOWNSTREAM, self.timeout)),
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(self.map_status(&status)),
        };
        if let (Err(DownstreamError::TimedOut { .. }), Some(balance)) = (&result, &self.balance) {
            // A logger that hangs: the next probe finds it out.
            balance.poke.notify_one();
        }
        result
    }

    async fn write_log(
        &self,
        entry: &LogEntry,
        request_id: Option<&str>,
    ) -> Result<(), tonic::Status> {
        let mut request = tonic::Request::new(LogRequest {
            log_entry: Some(Log {
                name: entry.name.clone(),
                data: entry.data.clone(),
            }),
        });
        // Tells the logger our deadline (the `grpc-timeout` header).
        request.set_timeout(self.timeout);
        switchboard_runtime::telemetry::inject_headers(request.metadata_mut().as_mut());
        if let Some(id) = request_id.and_then(|id| MetadataValue::try_from(id).ok()) {
            request.metadata_mut().insert(REQUEST_ID_HEADER, id);
        }
        if let Some(id) = entry
            .id
            .as_deref()
            .and_then(|id| MetadataValue::try_from(id).ok())
        {
            request.metadata_mut().insert(LOG_ID_METADATA, id);
        }
        let mut client = self.client.clone();
        client.write_log(request).await.map(|_reply| ())
    }

    fn map_status(&self, status: &tonic::Status) -> DownstreamError {
        let timeout_expired = tonic::TimeoutExpired(()).to_string();
        match status.code() {
            Code::InvalidArgument => DownstreamError::Rejected {
                downstream: DOWNSTREAM,
                message: status.message().to_owned(),
            },
            // The entry's id is stored with another name or data.
            Code::AlreadyExists => DownstreamError::Conflict {
                downstream: DOWNSTREAM,
                message: status.message().to_owned(),
            },
            Code::DeadlineExceeded => DownstreamError::timed_out(DOWNSTREAM, self.timeout),
            // tonic enforces the request's `grpc-timeout` on the client side
            // too, and reports it as CANCELLED "Timeout expired".
            Code::Cancelled if status.message() == timeout_expired => {
                DownstreamError::timed_out(DOWNSTREAM, self.timeout)
            }
            // A transport failure carries its cause as the source; the
            // logger's own UNAVAILABLE (its store is down) does not.
            Code::Unavailable | Code::Unknown => match std::error::Error::source(status) {
                Some(cause) => DownstreamError::unreachable(DOWNSTREAM, error_chain(cause)),
                None => DownstreamError::failed(
                    DOWNSTREAM,
                    format!("answered {:?}: {}", status.code(), status.message()),
                ),
            },
            code => DownstreamError::failed(
                DOWNSTREAM,
                format!("answered {code:?}: {}", status.message()),
            ),
        }
    }

    /// Whether the loggers' gRPC doors accept a TCP connection within
    /// `within`: reachable while one does, with the others named.
    pub async fn probe(&self, within: Duration) -> Result<String, String> {
        let probes = self.urls.iter().map(|url| async move {
            let result = match authority(url) {
                Some(authority) => super::probe_tcp(&authority, within).await,
                None => Err(format!("cannot read host and port from {url}")),
            };
            (url.clone(), result)
        });
        super::summarise(futures::future::join_all(probes).await)
    }
}

/// Whether the gRPC door at `url` speaks HTTP/2 within `within`: a TCP
/// connect, the client preface and an empty SETTINGS frame, answered by the
/// server's SETTINGS frame (every HTTP/2 server's first frame). A door over
/// TLS (`https`) is only connected to: its handshake is the channel's.
async fn probe_http2(url: &str, within: Duration) -> Result<(), String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    /// Length 0, type SETTINGS (4), no flags, stream 0.
    const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    const SETTINGS: u8 = 4;
    let Some(authority) = authority(url) else {
        return Err(format!("cannot read host and port from {url}"));
    };
    if url.starts_with("https://") {
        return super::probe_tcp(&authority, within).await;
    }
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|err| err.to_string())?;
        stream
            .write_all(&[PREFACE, &EMPTY_SETTINGS].concat())
            .await
            .map_err(|err| format!("sending the HTTP/2 preface: {err}"))?;
        let mut header = [0u8; 9];
        stream
            .read_exact(&mut header)
            .await
            .map_err(|err| format!("reading the server's first HTTP/2 frame: {err}"))?;
        if header[3] == SETTINGS {
            Ok(())
        } else {
            Err(format!(
                "answered an HTTP/2 frame of type {} before SETTINGS",
                header[3]
            ))
        }
    };
    tokio::time::timeout(within, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no HTTP/2 SETTINGS within {} ms",
                within.as_millis()
            ))
        })
}

/// `host:port` of a gRPC URL (the scheme's port when it names none).
fn authority(url: &str) -> Option<String> {
    let uri = url.parse::<http::Uri>().ok()?;
    let host = uri.host()?.to_owned();
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    Some(format!("{host}:{port}"))
}

/// A failure of the connection (it carries its transport cause as the
/// source), as opposed to the logger's own UNAVAILABLE (its store is down).
fn is_transport_failure(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown)
        && std::error::Error::source(status).is_some()
}
