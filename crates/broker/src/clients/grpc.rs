//! The logger's gRPC door (the original `logs.LogService/WriteLog`): one tonic
//! `Channel`, created lazily at start (the logger may start later) and
//! multiplexing every request over one HTTP/2 connection that tonic re-opens
//! when it breaks.

use std::time::Duration;

use switchboard_runtime::http::REQUEST_ID_HEADER;
use switchboard_wire::proto::log_service_client::LogServiceClient;
use switchboard_wire::proto::{Log, LogRequest};
use switchboard_wire::{LOG_ID_METADATA, LogEntry};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Downstream, DownstreamError, error_chain};

const DOWNSTREAM: Downstream = Downstream::LoggerGrpc;

#[derive(Debug, Clone)]
pub struct GrpcLogger {
    url: String,
    client: LogServiceClient<Channel>,
    timeout: Duration,
}

impl GrpcLogger {
    /// Builds the lazy channel; fails only on a malformed URL.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .tcp_nodelay(true)
            // HTTP/2 pings notice a dead peer between requests.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect_lazy();
        Ok(Self {
            url: url.to_owned(),
            client: LogServiceClient::new(channel),
            timeout,
        })
    }

    pub fn address(&self) -> &str {
        &self.url
    }

    /// Stores a log entry through `WriteLog`.
    ///
    /// A call that meets a connection the logger (or anything between) has
    /// just reset is sent once more on the connection tonic re-opens: the
    /// broker gives every entry an idempotency id, so the logger stores it
    /// once even if the first attempt reached it. Both attempts share one
    /// deadline.
    pub async fn log(
        &self,
        entry: LogEntry,
        request_id: Option<&str>,
    ) -> Result<(), DownstreamError> {
        let attempts = async {
            match self.write_log(&entry, request_id).await {
                Err(status) if is_transport_failure(&status) && entry.id.is_some() => {
                    tracing::info!(error = %error_chain(&status), "logger gRPC connection lost; sending again");
                    self.write_log(&entry, request_id).await
                }
                result => result,
            }
        };
        match tokio::time::timeout(self.timeout, attempts).await {
            Err(_) => Err(DownstreamError::timed_out(DOWNSTREAM, self.timeout)),
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(self.map_status(&status)),
        }
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

    /// Whether the gRPC door accepts a TCP connection within `within`.
    pub async fn probe(&self, within: Duration) -> Result<(), String> {
        let authority = self
            .url
            .parse::<http::Uri>()
            .ok()
            .and_then(|uri| {
                let host = uri.host()?.to_owned();
                let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                    Some("https") => 443,
                    _ => 80,
                });
                Some(format!("{host}:{port}"))
            })
            .ok_or_else(|| format!("cannot read host and port from {}", self.url))?;
        super::probe_tcp(&authority, within).await
    }
}

/// A failure of the connection (it carries its transport cause as the
/// source), as opposed to the logger's own UNAVAILABLE (its store is down).
fn is_transport_failure(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown)
        && std::error::Error::source(status).is_some()
}
