//! The whole system in one test process: the real logger, auth, mail and
//! listener services run in-process (their `run` on 127.0.0.1:0 listeners)
//! against real FerretDB/MongoDB, PostgreSQL, RabbitMQ and MailHog from
//! switchboard-testkit, and the broker in front of them. Every downstream
//! the broker calls sits behind a [`proxy::Proxy`], so a test can count its
//! connections, cut it off or make it go silent.

#![allow(dead_code)] // each test file uses a different subset

pub mod capture;
pub mod proxy;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_broker::payload::LogVia;
use switchboard_broker::{BrokerListeners, Settings};
use switchboard_runtime::Shutdown;
use switchboard_testkit::{MailHog, MongoDb, Postgres, RabbitMq, unique_name};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use self::proxy::Proxy;

/// Generous: a test that waits this long has failed anyway.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .expect("HTTP client")
}

async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

/// What a test needs from its stack.
#[derive(Debug, Clone)]
pub struct Options {
    pub timeout_ms: u64,
    pub default_via: LogVia,
    /// Run the listener (needed for `via: amqp` to reach the database).
    pub listener: bool,
    /// RabbitMQ URL for the broker (and auth, listener); a fresh vhost on the
    /// shared node when `None`.
    pub amqp_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout_ms: 5_000,
            default_via: LogVia::Rpc,
            listener: false,
            amqp_url: None,
        }
    }
}

/// A service task and its shutdown switch.
struct Task {
    name: &'static str,
    shutdown: Shutdown,
    handle: JoinHandle<Result<(), String>>,
}

/// The broker and the real services behind it.
pub struct Stack {
    pub broker: String,
    /// The broker's metrics door (`GET /metrics`).
    pub broker_metrics: String,
    /// The logger's HTTP door, directly (for reading `/logs`).
    pub logger_http: String,
    pub logger_rpc: Proxy,
    pub logger_grpc: Proxy,
    pub logger_http_proxy: Proxy,
    pub auth: Proxy,
    pub mail: Proxy,
    pub amqp_url: String,
    pub auth_settings: switchboard_auth::settings::Settings,
    pub broker_settings: Settings,
    tasks: Vec<Task>,
}

impl Stack {
    pub async fn start(options: Options) -> Stack {
        capture::install();
        let mongo = MongoDb::shared().expect("MongoDB/FerretDB");
        let postgres = Postgres::shared().expect("PostgreSQL");
        let rabbit = RabbitMq::shared().expect("RabbitMQ");
        let mailhog = MailHog::shared().expect("MailHog");
        let amqp_url = match options.amqp_url.clone() {
            Some(url) => url,
            None => rabbit.create_vhost().expect("vhost"),
        };
        let mut tasks = Vec::new();

        // Logger: three doors on loopback.
        let mut logger_settings = switchboard_logger::Settings::default();
        logger_settings.mongodb.url = mongo.url();
        logger_settings.mongodb.database = unique_name("logs");
        let (http, rpc, grpc) = (loopback().await, loopback().await, loopback().await);
        let addr = |listener: &TcpListener| listener.local_addr().expect("addr");
        let (logger_http_addr, logger_rpc_addr, logger_grpc_addr) =
            (addr(&http), addr(&rpc), addr(&grpc));
        let shutdown = Shutdown::new();
        tasks.push(Task {
            name: "logger",
            shutdown: shutdown.clone(),
            handle: tokio::spawn({
                let listeners = switchboard_logger::DoorListeners {
                    http,
                    rpc,
                    grpc,
                    metrics: None,
                };
                let run = switchboard_logger::run(logger_settings, listeners, shutdown);
                async move { run.await.map_err(|err| err.to_string()) }
            }),
        });

        // Auth: a fresh database.
        let mut auth_settings = switchboard_auth::settings::Settings::default();
        auth_settings.database.url = postgres.create_database().expect("database");
        auth_settings.events.amqp_url = amqp_url.clone();
        auth_settings.security.bcrypt_cost = 4;
        let auth_listener = loopback().await;
        let auth_addr = addr(&auth_listener);
        let shutdown = Shutdown::new();
        tasks.push(Task {
            name: "auth",
            shutdown: shutdown.clone(),
            handle: tokio::spawn({
                let run = switchboard_auth::run(
                    auth_settings.clone(),
                    switchboard_auth::Listeners {
                        http: auth_listener,
                        metrics: None,
                    },
                    shutdown,
                );
                async move { run.await.map_err(|err| err.to_string()) }
            }),
        });

        // Mail: MailHog's SMTP port.
        let mut mail_settings = switchboard_mail::settings::Settings::default();
        mail_settings.smtp.port = mailhog.smtp_port();
        let mail_listener = loopback().await;
        let mail_addr = addr(&mail_listener);
        let shutdown = Shutdown::new();
        tasks.push(Task {
            name: "mail",
            shutdown: shutdown.clone(),
            handle: tokio::spawn({
                let run = switchboard_mail::run(
                    mail_settings,
                    switchboard_mail::MailListeners {
                        http: mail_listener,
                        metrics: None,
                    },
                    shutdown,
                );
                async move { run.await.map_err(|err| err.to_string()) }
            }),
        });

        // Listener: RabbitMQ to the logger's RPC door, directly.
        if options.listener {
            let mut listener_settings = switchboard_listener::Settings::default();
            listener_settings.amqp.url = amqp_url.clone();
            listener_settings.logger.rpc_addr = logger_rpc_addr.to_string();
            let shutdown = Shutdown::new();
            tasks.push(Task {
                name: "listener",
                shutdown: shutdown.clone(),
                handle: tokio::spawn({
                    let run = switchboard_listener::run(
                        listener_settings,
                        switchboard_listener::ListenerListeners::default(),
                        shutdown,
                    );
                    async move { run.await.map_err(|err| err.to_string()) }
                }),
            });
        }

        let logger_rpc = Proxy::start(logger_rpc_addr).await;
        let logger_grpc = Proxy::start(logger_grpc_addr).await;
        let logger_http_proxy = Proxy::start(logger_http_addr).await;
        let auth = Proxy::start(auth_addr).await;
        let mail = Proxy::start(mail_addr).await;

        let mut broker_settings = Settings::default();
        broker_settings.downstream.auth_url = auth.url();
        broker_settings.downstream.mail_url = mail.url();
        broker_settings.downstream.logger_http_url = logger_http_proxy.url();
        broker_settings.downstream.logger_rpc_addr = logger_rpc.addr.to_string();
        broker_settings.downstream.logger_grpc_url = logger_grpc.url();
        broker_settings.downstream.timeout_ms = options.timeout_ms;
        broker_settings.downstream.default_log_via = options.default_via;
        broker_settings.events.amqp_url = amqp_url.clone();
        broker_settings.admin.expose_downstreams = true;
        broker_settings.admin.expose_logs = true;
        let (broker, broker_metrics, task) = start_broker(broker_settings.clone()).await;
        tasks.push(task);

        let stack = Stack {
            broker,
            broker_metrics,
            logger_http: format!("http://{logger_http_addr}"),
            logger_rpc,
            logger_grpc,
            logger_http_proxy,
            auth,
            mail,
            amqp_url,
            auth_settings,
            broker_settings,
            tasks,
        };
        // Services answer their health endpoints once serving; readiness of
        // auth and the logger means their stores answer.
        for (name, base) in [
            ("logger", stack.logger_http.clone()),
            ("auth", format!("http://{auth_addr}")),
            ("mail", format!("http://{mail_addr}")),
        ] {
            wait_until_ready(name, &base).await;
        }
        stack
    }

    /// `POST /handle` with `body`; status and JSON reply.
    pub async fn handle(&self, body: Value) -> (u16, Value) {
        self.post("/handle", body, None).await
    }

    pub async fn post(&self, path: &str, body: Value, request_id: Option<&str>) -> (u16, Value) {
        post(&self.broker, path, body, request_id).await
    }

    /// The logger's entries named `name` (its read API).
    pub async fn logs_named(&self, name: &str) -> Vec<Value> {
        let response = client()
            .get(format!("{}/logs?name={name}", self.logger_http))
            .send()
            .await
            .expect("GET /logs");
        assert_eq!(response.status(), 200, "GET /logs?name={name}");
        response.json().await.expect("JSON array")
    }

    /// Waits until an entry named `name` is stored and returns the entries.
    /// The logger's entries named `name` once there are at least `count`
    /// (panics after the test's patience).
    pub async fn wait_for_logs(&self, name: &str, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let entries = self.logs_named(name).await;
            if entries.len() >= count {
                return entries;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} log entries named {name} within {PATIENCE:?}",
                entries.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_for_log(&self, name: &str) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let entries = self.logs_named(name).await;
            if !entries.is_empty() {
                return entries;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log entry named {name} within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the broker's AMQP connection is up (it connects in the background).
    pub async fn wait_for_rabbitmq(&self) {
        wait_for_rabbitmq(&self.broker).await;
    }

    /// Adds an active user through auth's own store.
    pub async fn seed_user(&self, email: &str, password: &str) {
        use switchboard_auth::domain::{Email, Name, Password};
        use switchboard_auth::hashing::PasswordHasher;
        use switchboard_auth::store::{Added, NewUser, UserStore};
        let store = UserStore::connect_lazy(&self.auth_settings.database).expect("store");
        let hasher = PasswordHasher::new(4).await.expect("hasher");
        let password = Password::parse(password.to_owned()).expect("password");
        let user = NewUser {
            email: Email::parse(email).expect("email"),
            first_name: Name::parse("first name", "Ada").expect("name"),
            last_name: Name::parse("last name", "Lovelace").expect("name"),
            password_hash: hasher.hash(&password).await.expect("hash"),
            active: true,
        };
        assert!(matches!(
            store.add(&user).await.expect("add"),
            Added::Created(_)
        ));
        store.close().await;
    }

    /// Stops every service and checks that none of them failed.
    pub async fn stop(self) {
        for task in self.tasks.iter().rev() {
            task.shutdown.trigger();
        }
        for task in self.tasks {
            let result = tokio::time::timeout(PATIENCE, task.handle)
                .await
                .unwrap_or_else(|_| panic!("{} did not stop in time", task.name))
                .unwrap_or_else(|err| panic!("{} panicked: {err}", task.name));
            assert!(result.is_ok(), "{} failed: {result:?}", task.name);
        }
    }
}

/// Starts a broker with `settings` on a fresh loopback port, its metrics
/// door on another; their base URLs.
async fn start_broker(settings: Settings) -> (String, String, Task) {
    let listener = loopback().await;
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let metrics = loopback().await;
    let metrics_base = format!("http://{}", metrics.local_addr().expect("addr"));
    let shutdown = Shutdown::new();
    let handle = tokio::spawn({
        let run = switchboard_broker::run(
            settings,
            BrokerListeners {
                http: listener,
                metrics: Some(metrics),
            },
            shutdown.clone(),
        );
        async move { run.await.map_err(|err| err.to_string()) }
    });
    (
        base,
        metrics_base,
        Task {
            name: "broker",
            shutdown,
            handle,
        },
    )
}

/// A broker alone, its downstreams wherever `settings` says.
pub struct LoneBroker {
    pub base: String,
    task: Task,
}

impl LoneBroker {
    pub async fn start(settings: Settings) -> LoneBroker {
        capture::install();
        let (base, _metrics, task) = start_broker(settings).await;
        LoneBroker { base, task }
    }

    pub async fn stop(self) {
        self.task.shutdown.trigger();
        let result = tokio::time::timeout(PATIENCE, self.task.handle)
            .await
            .expect("broker stops in time")
            .expect("broker task");
        assert!(result.is_ok(), "broker failed: {result:?}");
    }
}

/// Settings whose downstreams all point at a closed port.
pub fn settings_with_nothing_behind() -> Settings {
    let closed = closed_port();
    let mut settings = Settings::default();
    settings.downstream.auth_url = format!("http://127.0.0.1:{closed}");
    settings.downstream.mail_url = format!("http://127.0.0.1:{closed}");
    settings.downstream.logger_http_url = format!("http://127.0.0.1:{closed}");
    settings.downstream.logger_rpc_addr = format!("127.0.0.1:{closed}");
    settings.downstream.logger_grpc_url = format!("http://127.0.0.1:{closed}");
    settings.events.amqp_url = format!("amqp://guest:guest@127.0.0.1:{closed}/%2f");
    settings.downstream.timeout_ms = 1_000;
    settings
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    switchboard_testkit::free_port()
}

pub async fn post(base: &str, path: &str, body: Value, request_id: Option<&str>) -> (u16, Value) {
    let mut request = client().post(format!("{base}{path}")).json(&body);
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let response = request.send().await.expect("POST to the broker");
    let status = response.status().as_u16();
    let text = response.text().await.expect("reply body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{path} answered {status} with non-JSON ({err}): {text}"));
    (status, json)
}

pub async fn wait_until_ready(name: &str, base: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client().get(format!("{base}/readyz")).send().await
            && response.status() == 200
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} at {base} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_for_rabbitmq(broker: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let response = client()
            .get(format!("{broker}/downstreams"))
            .send()
            .await
            .expect("GET /downstreams");
        let body: Value = response.json().await.expect("JSON");
        let up = body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|status| status["name"] == "rabbitmq (amqp)" && status["reachable"] == true);
        if up {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker never connected to RabbitMQ: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A log action body.
pub fn log_action(name: &str, data: &str, via: Option<&str>) -> Value {
    let mut log = json!({ "name": name, "data": data });
    if let Some(via) = via {
        log["via"] = json!(via);
    }
    json!({ "action": "log", "log": log })
}

pub fn socket(addr: &str) -> SocketAddr {
    addr.parse().expect("socket address")
}
