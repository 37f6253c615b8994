//! Shared test helpers: real RabbitMQ and FerretDB from switchboard-testkit, the
//! real logger served in-process on loopback listeners, the listener run
//! in-process (or as its real binary), and AMQP/MongoDB probes.

#![allow(dead_code)] // each test file uses a different subset

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use mongodb::bson::{Document, doc};
use switchboard_listener::settings::LoggerVia;
use switchboard_runtime::Shutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Upper bound for anything a test waits for; generous because the machine
/// has two cores and other test binaries may run at the same time.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `probe` every 100 ms until it returns `Some`, or panics after `within`
/// saying what was awaited.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------- RabbitMQ

/// A fresh vhost on the node shared by this test binary: its URL and name.
pub fn fresh_vhost() -> (String, String) {
    let rabbit = switchboard_testkit::RabbitMq::shared().expect("RabbitMQ starts");
    let url = rabbit.create_vhost().expect("vhost");
    let vhost = url.rsplit('/').next().expect("vhost in URL").to_owned();
    (url, vhost)
}

/// A publisher with confirms on `url`.
pub struct Publisher {
    connection: Connection,
    channel: Channel,
    exchange: String,
}

impl Publisher {
    pub async fn connect(url: &str, exchange: &str) -> Publisher {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("publisher connects");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        // Producers declare the exchange too (as auth and the broker do), so
        // events published before the listener first ran are not lost.
        channel
            .exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("exchange");
        Publisher {
            connection,
            channel,
            exchange: exchange.to_owned(),
        }
    }

    /// Publishes one persistent message and waits for the broker's confirm.
    pub async fn publish(&self, routing_key: &str, body: &[u8], message_id: Option<&str>) {
        self.try_publish(routing_key, body, message_id)
            .await
            .expect("publish confirmed");
    }

    pub async fn try_publish(
        &self,
        routing_key: &str,
        body: &[u8],
        message_id: Option<&str>,
    ) -> Result<(), String> {
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        if let Some(id) = message_id {
            properties = properties.with_message_id(ShortString::from(id));
        }
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        match confirm {
            Confirmation::Ack(_) => Ok(()),
            other => Err(format!("not confirmed: {other:?}")),
        }
    }

    /// An event body as producers send it.
    pub async fn event(&self, routing_key: &str, name: &str, data: &str, message_id: &str) {
        let body = serde_json::json!({ "name": name, "data": data }).to_string();
        self.publish(routing_key, body.as_bytes(), Some(message_id))
            .await;
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// Ready messages in `queue` (a passive declare), `None` if it does not exist
/// or RabbitMQ is not reachable.
pub async fn ready_messages(url: &str, queue: &str) -> Option<u32> {
    passive_declare(url, queue).await.map(|(ready, _)| ready)
}

/// Waits until a consumer is attached to `logs` (bindings are declared before
/// consuming starts, so events published from now on reach the queue).
pub async fn wait_until_consuming(url: &str) {
    wait_for("a consumer on the logs queue", PATIENCE, || async {
        let (_, consumers) = passive_declare(url, "logs").await?;
        (consumers > 0).then_some(())
    })
    .await;
}

/// Ready messages and consumers of `queue`.
pub async fn passive_declare(url: &str, queue: &str) -> Option<(u32, u32)> {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .ok()?;
    let channel = connection.create_channel().await.ok()?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .ok();
    let _ = connection.close(200, "done".into()).await;
    declared.map(|queue| (queue.message_count(), queue.consumer_count()))
}

/// Takes one message off `queue` (acknowledged), for inspecting dead letters.
pub async fn take_one(url: &str, queue: &str) -> Option<(Vec<u8>, FieldTable)> {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let message = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get");
    let _ = connection.close(200, "done".into()).await;
    message.map(|message| {
        let headers = message
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        (message.delivery.data.clone(), headers)
    })
}

/// The `reason` and `count` of the first `x-death` entry of a dead letter.
pub fn death(headers: &FieldTable) -> (String, i64) {
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("no x-death header in {headers:?}");
    };
    let Some(AMQPValue::FieldTable(first)) = deaths.as_slice().first() else {
        panic!("empty x-death header");
    };
    let reason = match first.inner().get("reason") {
        Some(AMQPValue::LongString(text)) => String::from_utf8_lossy(text.as_bytes()).into_owned(),
        other => panic!("x-death reason: {other:?}"),
    };
    let count = match first.inner().get("count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        other => panic!("x-death count: {other:?}"),
    };
    (reason, count)
}

/// The `x-switchboard-reason-code` and `x-switchboard-reason` of a dead
/// letter the listener published itself.
pub fn dead_letter_reason(headers: &FieldTable) -> (String, String) {
    let text = |key: &str| match headers.inner().get(key) {
        Some(AMQPValue::LongString(text)) => String::from_utf8_lossy(text.as_bytes()).into_owned(),
        other => panic!("{key}: {other:?} in {headers:?}"),
    };
    (
        text(switchboard_listener::dead_letter::CODE_HEADER),
        text(switchboard_listener::dead_letter::REASON_HEADER),
    )
}

// ---------------------------------------------------------------- MongoDB

/// The FerretDB (or mongod) shared by this test binary.
pub fn shared_mongo_url() -> String {
    switchboard_testkit::MongoDb::shared()
        .expect("MongoDB-compatible server starts")
        .url()
}

/// Reads the logger's collection directly.
#[derive(Clone)]
pub struct Store {
    collection: mongodb::Collection<Document>,
}

impl Store {
    pub async fn open(url: &str, database: &str) -> Store {
        let client = mongodb::Client::with_uri_str(url)
            .await
            .expect("mongodb client");
        Store {
            collection: client.database(database).collection("logs"),
        }
    }

    pub async fn count(&self, filter: Document) -> u64 {
        self.collection
            .count_documents(filter)
            .await
            .expect("count_documents")
    }

    pub async fn count_named(&self, name: &str) -> u64 {
        self.count(doc! { "name": name }).await
    }

    pub async fn documents(&self, filter: Document) -> Vec<Document> {
        use futures::TryStreamExt;
        self.collection
            .find(filter)
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("cursor")
    }

    /// Waits until exactly `expected` documents are named `name` (more is a
    /// failure at once: something was stored twice).
    pub async fn wait_for_count(&self, name: &str, expected: u64) {
        wait_for(
            &format!("{expected} documents named {name:?}"),
            PATIENCE,
            || async {
                let count = self.count_named(name).await;
                assert!(
                    count <= expected,
                    "{count} documents named {name:?}, expected {expected}"
                );
                (count == expected).then_some(())
            },
        )
        .await;
    }
}

// ---------------------------------------------------------------- logger

/// The real logger, served in this process on loopback listeners. Stopping
/// and starting it again keeps its addresses, as a restarted unit would.
pub struct Logger {
    pub http: SocketAddr,
    pub rpc: SocketAddr,
    pub grpc: SocketAddr,
    pub settings: switchboard_logger::Settings,
    running: Option<(Shutdown, JoinHandle<Result<(), switchboard_logger::Error>>)>,
}

/// Logger settings for a test: `mongo_url`, a database of its own.
pub fn logger_settings(mongo_url: &str) -> switchboard_logger::Settings {
    let mut settings = switchboard_logger::Settings::default();
    settings.mongodb.url = mongo_url.to_owned();
    settings.mongodb.database = switchboard_testkit::unique_name("logs");
    settings.mongodb.timeout_ms = 1_000;
    settings
}

impl Logger {
    /// Starts on fresh loopback ports and waits until it serves.
    pub async fn start(settings: switchboard_logger::Settings) -> Logger {
        let free = || SocketAddr::from(([127, 0, 0, 1], switchboard_testkit::free_port()));
        let mut logger = Logger {
            http: free(),
            rpc: free(),
            grpc: free(),
            settings,
            running: None,
        };
        logger.start_again().await;
        logger
    }

    /// Reserves addresses but does not start: the logger is "down".
    pub fn not_started(settings: switchboard_logger::Settings) -> Logger {
        let free = || SocketAddr::from(([127, 0, 0, 1], switchboard_testkit::free_port()));
        Logger {
            http: free(),
            rpc: free(),
            grpc: free(),
            settings,
            running: None,
        }
    }

    pub async fn start_again(&mut self) {
        assert!(self.running.is_none(), "logger already running");
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .unwrap_or_else(|e| panic!("bind {addr}: {e}"))
        };
        let listeners = switchboard_logger::DoorListeners {
            http: bind(self.http).await,
            rpc: bind(self.rpc).await,
            grpc: bind(self.grpc).await,
            metrics: None,
        };
        let shutdown = Shutdown::new();
        let task = tokio::spawn(switchboard_logger::run(
            self.settings.clone(),
            listeners,
            shutdown.clone(),
        ));
        self.running = Some((shutdown, task));
        let client = reqwest::Client::new();
        let url = format!("http://{}/readyz", self.http);
        wait_for("the logger to be ready", PATIENCE, || async {
            let response = client
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
    }

    /// Stops the logger (its doors close; the port refuses connections).
    pub async fn stop(&mut self) {
        let (shutdown, task) = self.running.take().expect("logger running");
        shutdown.trigger();
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("logger drains")
            .expect("logger task")
            .expect("logger ran without error");
    }

    pub async fn store(&self) -> Store {
        Store::open(&self.settings.mongodb.url, &self.settings.mongodb.database).await
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        if let Some((shutdown, _)) = &self.running {
            shutdown.trigger();
        }
    }
}

// ---------------------------------------------------------------- listener

/// A logger on the shared store, and a listener on `amqp_url` forwarding to
/// it over rpc, consuming by the time this returns.
pub async fn start_logger_and_listener(amqp_url: &str) -> (Logger, Listener) {
    let logger = Logger::start(logger_settings(&shared_mongo_url())).await;
    let listener = Listener::spawn(listener_settings(
        amqp_url,
        logger.rpc,
        logger.http,
        LoggerVia::Rpc,
    ));
    wait_until_consuming(amqp_url).await;
    (logger, listener)
}

/// Listener settings for `amqp_url` forwarding to `logger` through `via`.
pub fn listener_settings(
    amqp_url: &str,
    logger_rpc: SocketAddr,
    logger_http: SocketAddr,
    via: LoggerVia,
) -> switchboard_listener::Settings {
    let mut settings = switchboard_listener::Settings::default();
    settings.amqp.url = amqp_url.to_owned();
    settings.logger.via = via;
    settings.logger.rpc_addr = logger_rpc.to_string();
    settings.logger.http_url = format!("http://{logger_http}");
    settings.logger.timeout_ms = 3_000;
    settings
}

/// The listener running in this process.
pub struct Listener {
    /// The metrics door (`GET /metrics`).
    pub metrics: String,
    shutdown: Shutdown,
    task: Option<JoinHandle<Result<(), switchboard_listener::Error>>>,
}

impl Listener {
    pub fn spawn(settings: switchboard_listener::Settings) -> Listener {
        let shutdown = Shutdown::new();
        let door = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        door.set_nonblocking(true).expect("non-blocking");
        let metrics = format!("http://{}", door.local_addr().expect("addr"));
        let listeners = switchboard_listener::ListenerListeners {
            metrics: Some(TcpListener::from_std(door).expect("adopt")),
        };
        let task = tokio::spawn(switchboard_listener::run(
            settings,
            listeners,
            shutdown.clone(),
        ));
        Listener {
            metrics,
            shutdown,
            task: Some(task),
        }
    }

    /// Requests shutdown and returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), switchboard_listener::Error> {
        self.shutdown.trigger();
        let task = self.task.take().expect("running");
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("listener stops in time")
            .expect("listener task")
    }

    /// The listener's metrics, as Prometheus would scrape them.
    pub async fn scrape(&self) -> String {
        let response = reqwest::get(format!("{}/metrics", self.metrics))
            .await
            .expect("scrape");
        assert_eq!(response.status(), 200);
        response.text().await.expect("exposition")
    }

    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// A name unique to one test, for the events it publishes.
pub fn event_name(prefix: &str) -> String {
    switchboard_testkit::unique_name(prefix)
}

/// Logs of the code under test, visible with `--nocapture`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,lapin=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// What most tests start with: a fresh vhost, the logger on the shared
/// MongoDB, the listener forwarding `via` and consuming, and a publisher on
/// `logs_topic`.
pub struct Rig {
    pub amqp_url: String,
    pub vhost: String,
    pub logger: Logger,
    pub listener: Listener,
    pub publisher: Publisher,
}

impl Rig {
    pub async fn start(via: LoggerVia) -> Rig {
        init_tracing();
        let (amqp_url, vhost) = fresh_vhost();
        let logger = Logger::start(logger_settings(&shared_mongo_url())).await;
        let listener = Listener::spawn(listener_settings(&amqp_url, logger.rpc, logger.http, via));
        wait_until_consuming(&amqp_url).await;
        let publisher = Publisher::connect(&amqp_url, "logs_topic").await;
        Rig {
            amqp_url,
            vhost,
            logger,
            listener,
            publisher,
        }
    }
}
