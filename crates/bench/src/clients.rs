//! Workers for each door: raw HTTP/1.1 over one kept-alive connection per worker
//! (hyper's connection API, no pool or client-side middleware, so the generator
//! costs as little CPU as possible on a machine it shares with the servers),
//! gRPC over one shared HTTP/2 channel, and the tarpc client over one shared
//! connection — the same connection shapes the broker uses downstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use switchboard_wire::proto::log_service_client::LogServiceClient;
use switchboard_wire::proto::{Log, LogRequest};
use switchboard_wire::rpc::LogRpcClient;
use tokio::net::TcpStream;

use crate::load::Worker;

/// Builds the JSON body of request `seq`.
pub type BodyFn = Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>;

/// Builds the path (with its query) of GET request `seq`.
pub type PathFn = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// One HTTP/1.1 connection sending `POST path` with a body per request (or a
/// `GET` of a path per request) and expecting `expect_status`.
pub struct HttpWorker {
    addr: SocketAddr,
    path: String,
    body: BodyFn,
    get: Option<PathFn>,
    expect_status: u16,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl HttpWorker {
    pub fn new(addr: SocketAddr, path: &str, body: BodyFn, expect_status: u16) -> Self {
        Self {
            addr,
            path: path.to_owned(),
            body,
            get: None,
            expect_status,
            sender: None,
        }
    }

    /// `GET` of `path(seq)` per request.
    pub fn getter(addr: SocketAddr, path: PathFn, expect_status: u16) -> Self {
        Self {
            get: Some(path),
            ..Self::new(addr, "/", Arc::new(|_| Vec::new()), expect_status)
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|err| format!("connect {}: {err}", self.addr))?;
        stream.set_nodelay(true).map_err(|err| err.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| format!("handshake: {err}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

impl Worker for HttpWorker {
    async fn call(&mut self, seq: u64) -> Result<(), String> {
        let mut sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        sender
            .ready()
            .await
            .map_err(|err| format!("connection not ready: {err}"))?;
        let request = match &self.get {
            Some(path) => hyper::Request::get(path(seq))
                .header("host", "bench")
                .body(Full::new(Bytes::new())),
            None => hyper::Request::post(&self.path)
                .header("host", "bench")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from((self.body)(seq)))),
        }
        .map_err(|err| err.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| format!("request: {err}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| format!("body: {err}"))?
            .to_bytes();
        self.sender = Some(sender);
        if status == self.expect_status {
            Ok(())
        } else {
            Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))
        }
    }
}

/// gRPC `WriteLog` calls multiplexed over one shared channel.
pub struct GrpcWorker {
    client: LogServiceClient<tonic::transport::Channel>,
    prefix: Arc<str>,
}

impl GrpcWorker {
    pub async fn connect_shared(
        url: &str,
        workers: usize,
        prefix: &str,
    ) -> anyhow::Result<Vec<Self>> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(10))
            .connect()
            .await?;
        let prefix: Arc<str> = Arc::from(prefix);
        Ok((0..workers)
            .map(|_| Self {
                client: LogServiceClient::new(channel.clone()),
                prefix: prefix.clone(),
            })
            .collect())
    }
}

impl Worker for GrpcWorker {
    async fn call(&mut self, seq: u64) -> Result<(), String> {
        let request = LogRequest {
            log_entry: Some(Log {
                name: self.prefix.to_string(),
                data: format!("bench grpc {seq}"),
            }),
        };
        self.client
            .write_log(request)
            .await
            .map(|_| ())
            .map_err(|status| status.to_string())
    }
}

/// tarpc `log_info` calls multiplexed over one shared connection.
pub struct RpcWorker {
    client: LogRpcClient,
    prefix: Arc<str>,
}

impl RpcWorker {
    pub async fn connect_shared(
        addr: SocketAddr,
        workers: usize,
        prefix: &str,
    ) -> anyhow::Result<Vec<Self>> {
        let client = switchboard_wire::rpc::connect(addr).await?;
        let prefix: Arc<str> = Arc::from(prefix);
        Ok((0..workers)
            .map(|_| Self {
                client: client.clone(),
                prefix: prefix.clone(),
            })
            .collect())
    }
}

impl Worker for RpcWorker {
    async fn call(&mut self, seq: u64) -> Result<(), String> {
        let ctx = switchboard_wire::rpc::context(Duration::from_secs(10));
        match self
            .client
            .log_info(ctx, self.prefix.to_string(), format!("bench rpc {seq}"))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(err) => Err(format!("rpc transport: {err}")),
        }
    }
}
