//! The gRPC door: `logs.LogService/WriteLog` from the original `logs.proto`,
//! so an old gRPC client works unchanged. Bad input is `INVALID_ARGUMENT`,
//! an idempotency id already stored with other content `ALREADY_EXISTS`, a
//! store failure `UNAVAILABLE`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Code, Request, Response, Status};

use switchboard_runtime::Shutdown;
use switchboard_runtime::http::REQUEST_ID_HEADER;
use switchboard_runtime::limits::{ConnectionLimit, ConnectionPermit, ReadTimeout, millis};
use switchboard_runtime::telemetry::{self, HeaderExtractor, SpanKind};
use switchboard_wire::LOG_ID_METADATA;
use switchboard_wire::proto::log_service_server::{LogService, LogServiceServer};
use switchboard_wire::proto::{LogRequest, LogResponse};

use crate::entry::{EntryError, MAX_ID_BYTES};
use crate::ingest::{Ingest, IngestError};
use crate::metrics::Door;
use crate::settings;

/// What `WriteLog` answers on success (the original's reply).
pub const LOGGED: &str = "logged!";

/// The `LogService` implementation.
#[derive(Debug, Clone)]
pub struct GrpcDoor {
    ingest: Ingest,
}

impl GrpcDoor {
    pub fn new(ingest: Ingest) -> Self {
        Self { ingest }
    }
}

#[tonic::async_trait]
impl LogService for GrpcDoor {
    async fn write_log(
        &self,
        request: Request<LogRequest>,
    ) -> Result<Response<LogResponse>, Status> {
        let request_id = request
            .metadata()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        // Not in the message (the original proto has no field for it), so an
        // old client simply sends none.
        let id =
            match request.metadata().get(LOG_ID_METADATA) {
                None => None,
                // The same message as an id in the other doors' bodies: the
                // rules are switchboard_wire's.
                Some(value) => Some(value.to_str().map(str::to_owned).map_err(|_| {
                    Status::invalid_argument(EntryError::IdNotVisibleAscii.message())
                })?),
            };
        let traced = telemetry::entry(&HeaderExtractor(request.metadata().as_ref())).span(
            SpanKind::Server,
            format_args!("LogService/WriteLog"),
            || {
                tracing::info_span!(
                    "grpc",
                    method = "WriteLog",
                    request_id = %request_id,
                    trace_id = tracing::field::Empty,
                    otel.kind = tracing::field::Empty,
                    otel.name = tracing::field::Empty,
                )
            },
        );
        traced
            .instrument(async move {
                let Some(log) = request.into_inner().log_entry else {
                    return Err(Status::invalid_argument(
                        "invalid log entry: logEntry is missing",
                    ));
                };
                match self.ingest.log(Door::grpc, log.name, log.data, id).await {
                    Ok(entry) => {
                        tracing::debug!(name = entry.name(), "logged");
                        Ok(Response::new(LogResponse {
                            result: LOGGED.to_owned(),
                        }))
                    }
                    Err(err @ IngestError::Invalid(_)) => {
                        tracing::info!(error = %err, "refused");
                        Err(Status::invalid_argument(err.to_string()))
                    }
                    Err(err @ IngestError::Conflict { .. }) => {
                        tracing::info!(error = %err, "refused a conflicting repeat of an id");
                        Err(Status::already_exists(err.to_string()))
                    }
                    Err(err @ IngestError::Store(_)) => {
                        tracing::warn!(error = %err, "write failed");
                        telemetry::failed(&tracing::Span::current(), &err);
                        Err(Status::unavailable(err.to_string()))
                    }
                }
            })
            .await
    }
}

/// Serves the gRPC door on `listener` within `limits` until `shutdown`, then
/// lets in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    door: GrpcDoor,
    limits: &settings::Grpc,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let rules = door.ingest.rules();
    // Decoding stops at this size; validation then explains the limits. The
    // 4 MiB default stays unless limits were raised beyond it.
    let max_message =
        (rules.max_name_bytes + rules.max_data_bytes + MAX_ID_BYTES + 1024).max(4 * 1024 * 1024);
    let service = LogServiceServer::new(door).max_decoding_message_size(max_message);
    let mut server = tonic::transport::Server::builder()
        .max_concurrent_streams(
            (limits.max_concurrent_streams > 0).then_some(limits.max_concurrent_streams),
        )
        .http2_max_header_list_size(
            (limits.max_header_bytes > 0).then_some(limits.max_header_bytes),
        )
        .http2_keepalive_interval(millis(limits.keepalive_interval_ms))
        .http2_keepalive_timeout(millis(limits.keepalive_timeout_ms));
    if let Some(timeout) = millis(limits.request_timeout_ms) {
        server = server.timeout(timeout);
    }
    if limits.concurrency_limit_per_connection > 0 {
        server = server.concurrency_limit_per_connection(limits.concurrency_limit_per_connection);
    }
    server
        .layer(tower::util::MapResponseLayer::new(
            decode_errors_are_invalid_arguments,
        ))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming(listener, limits), shutdown.requested())
        .await
}

/// The accepted connections, at most `max_connections` at once (the next
/// one waits in the backlog), each closed once it falls silent.
fn incoming(
    listener: TcpListener,
    limits: &settings::Grpc,
) -> impl Stream<Item = Result<GrpcConnection, std::io::Error>> {
    let connections = ConnectionLimit::new("grpc", limits.max_connections);
    let silence = millis(limits.silence_timeout_ms);
    futures::stream::unfold(
        (listener, connections),
        move |(listener, connections)| async move {
            let slot = connections.admit().await;
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        if let Err(err) = stream.set_nodelay(true) {
                            tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
                        }
                        let connection = GrpcConnection {
                            io: ReadTimeout::new(stream, silence),
                            _slot: slot,
                        };
                        return Some((Ok(connection), (listener, connections)));
                    }
                    Err(err) => {
                        // Usually out of file descriptors; retrying at once would spin.
                        tracing::warn!(error = %err, "cannot accept a gRPC connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        },
    )
}

/// One accepted connection: its stream, cut when silent, and its slot.
#[derive(Debug)]
pub struct GrpcConnection {
    io: ReadTimeout<TcpStream>,
    _slot: ConnectionPermit,
}

impl Connected for GrpcConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.get_ref().connect_info()
    }
}

impl AsyncRead for GrpcConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// prost refuses a message it cannot decode (e.g. a string that is not
/// UTF-8) before our handler runs, and tonic reports that as `INTERNAL`. It is
/// the client's bad input, so it becomes `INVALID_ARGUMENT`, as the rest of
/// the validation does.
fn decode_errors_are_invalid_arguments(
    response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let Some(status) = response.extensions().get::<Status>() else {
        return response;
    };
    if status.code() == Code::Internal
        && status
            .message()
            .starts_with("failed to decode Protobuf message")
    {
        let message = format!(
            "invalid log entry: {} (strings must be valid UTF-8)",
            status.message()
        );
        return Status::invalid_argument(message).into_http();
    }
    response
}
