//! Shared test helpers: a logger served in-process on loopback listeners
//! against a real MongoDB-compatible server from switchboard-testkit.

#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;
use std::time::Duration;

use mongodb::bson::Document;
use switchboard_logger::{DoorListeners, Settings};
use switchboard_runtime::Shutdown;
use switchboard_wire::proto::log_service_client::LogServiceClient;
use switchboard_wire::rpc::LogRpcClient;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A logger running in this test process.
pub struct Logger {
    pub http: String,
    /// The metrics door (`GET /metrics`).
    pub metrics: String,
    pub rpc: SocketAddr,
    pub grpc: SocketAddr,
    pub mongo_url: String,
    pub database: String,
    pub settings: Settings,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), switchboard_logger::Error>>,
}

/// Settings for a test: the given server, a database of its own, and a
/// short store timeout so outage tests do not wait long.
pub fn settings(mongo_url: &str) -> Settings {
    let mut settings = Settings::default();
    settings.mongodb.url = mongo_url.to_owned();
    settings.mongodb.database = switchboard_testkit::unique_name("logs");
    settings.mongodb.timeout_ms = 1_000;
    settings
}

async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

impl Logger {
    /// Starts a logger and waits until it serves (READY).
    pub async fn start(settings: Settings) -> Logger {
        let listeners = DoorListeners {
            http: loopback().await,
            rpc: loopback().await,
            grpc: loopback().await,
            metrics: Some(loopback().await),
        };
        let addr = |listener: &TcpListener| listener.local_addr().expect("local addr");
        let (http, rpc, grpc) = (
            addr(&listeners.http),
            addr(&listeners.rpc),
            addr(&listeners.grpc),
        );
        let metrics = listeners
            .metrics
            .as_ref()
            .map(addr)
            .expect("a metrics door");
        let shutdown = Shutdown::new();
        let task = tokio::spawn(switchboard_logger::run(
            settings.clone(),
            listeners,
            shutdown.clone(),
        ));
        let logger = Logger {
            http: format!("http://{http}"),
            metrics: format!("http://{metrics}"),
            rpc,
            grpc,
            mongo_url: settings.mongodb.url.clone(),
            database: settings.mongodb.database.clone(),
            settings,
            shutdown,
            task,
        };
        // The HTTP door is served only once the store answered; the request
        // waits in the listen backlog until then.
        let ready = http_client()
            .get(format!("{}/readyz", logger.http))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("logger answers /readyz");
        assert_eq!(ready.status(), 200, "logger not ready");
        logger
    }

    /// Stops the logger and returns what `run` returned.
    pub async fn stop(self) -> Result<(), switchboard_logger::Error> {
        self.shutdown.trigger();
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("logger drains in time")
            .expect("logger task")
    }

    pub async fn grpc_client(&self) -> LogServiceClient<tonic::transport::Channel> {
        LogServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("gRPC connect")
    }

    pub async fn rpc_client(&self) -> LogRpcClient {
        switchboard_wire::rpc::connect(self.rpc)
            .await
            .expect("RPC connect")
    }

    /// `POST /log` with a raw JSON body.
    pub async fn post_log(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = http_client()
            .post(format!("{}/log", self.http))
            .json(&body)
            .send()
            .await
            .expect("POST /log");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON reply"))
    }

    /// `GET path` (e.g. `/logs?name=x`), status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = http_client()
            .get(format!("{}{path}", self.http))
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON reply"))
    }

    /// The log collection, read directly with the MongoDB driver.
    pub async fn collection(&self) -> mongodb::Collection<Document> {
        let client = mongodb::Client::with_uri_str(&self.mongo_url)
            .await
            .expect("mongodb client");
        client
            .database(&self.database)
            .collection(&self.settings.mongodb.collection)
    }

    /// Documents in the collection matching `filter`.
    pub async fn documents(&self, filter: Document) -> Vec<Document> {
        use futures::TryStreamExt;
        self.collection()
            .await
            .find(filter)
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("cursor")
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .expect("HTTP client")
}

pub fn rpc_context() -> tarpc::context::Context {
    switchboard_wire::rpc::context(TIMEOUT)
}

pub fn grpc_request(name: &str, data: &str) -> switchboard_wire::proto::LogRequest {
    switchboard_wire::proto::LogRequest {
        log_entry: Some(switchboard_wire::proto::Log {
            name: name.to_owned(),
            data: data.to_owned(),
        }),
    }
}
