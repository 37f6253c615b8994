//! Shared test support: real PostgreSQL and RabbitMQ from the testkit (a fresh
//! database and vhost per test), the service run in-process on 127.0.0.1:0,
//! users seeded directly, and an AMQP consumer for login events.

#![allow(dead_code)]

use std::time::Duration;

use switchboard_auth::domain::{Email, Name, Password};
use switchboard_auth::hashing::PasswordHasher;
use switchboard_auth::settings::Settings;
use switchboard_auth::store::{Added, NewUser, UserStore};
use switchboard_auth::{Listeners, run};
use switchboard_runtime::Shutdown;
use switchboard_testkit::{Postgres, RabbitMq};

/// Low bcrypt cost: tests check behaviour, not strength.
pub const TEST_COST: u32 = 4;

/// Settings for a fresh database and (unless `amqp_url` is given) a fresh vhost.
pub fn settings(amqp_url: Option<String>) -> Settings {
    let postgres = Postgres::shared().expect("postgres");
    let database = postgres.create_database().expect("create database");
    let amqp_url = amqp_url.unwrap_or_else(fresh_vhost);
    let mut settings = Settings::default();
    settings.database.url = database;
    settings.database.acquire_timeout_ms = 3_000;
    settings.events.amqp_url = amqp_url;
    settings.events.publish_timeout_ms = 3_000;
    settings.security.bcrypt_cost = TEST_COST;
    settings
}

pub fn fresh_vhost() -> String {
    RabbitMq::shared()
        .expect("rabbitmq")
        .create_vhost()
        .expect("create vhost")
}

/// The service running in this process.
pub struct TestService {
    pub base: String,
    /// The metrics door (`GET /metrics`).
    pub metrics: String,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<Result<(), switchboard_auth::Error>>,
    pub settings: Settings,
}

impl TestService {
    pub async fn start(settings: Settings) -> Self {
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", http.local_addr().expect("addr"));
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let metrics_base = format!("http://{}", metrics.local_addr().expect("addr"));
        let shutdown = Shutdown::new();
        let listeners = Listeners {
            http,
            metrics: Some(metrics),
        };
        let task = tokio::spawn(run(settings.clone(), listeners, shutdown.clone()));
        let service = Self {
            base,
            metrics: metrics_base,
            shutdown,
            task,
            settings,
        };
        service.wait_ready().await;
        service
    }

    /// Polls `/readyz` until 200 (run() migrates before serving, so the
    /// schema exists afterwards).
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(response) = client.get(format!("{}/readyz", self.base)).send().await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("service at {} never became ready", self.base);
    }

    pub fn store(&self) -> UserStore {
        UserStore::connect_lazy(&self.settings.database).expect("store")
    }

    /// The metrics door's exposition, as Prometheus would scrape it.
    pub async fn scrape(&self) -> String {
        reqwest::get(format!("{}/metrics", self.metrics))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("exposition")
    }

    pub async fn login(&self, body: &str) -> (u16, serde_json::Value) {
        login(&self.base, body, None).await
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("service stops in time")
            .expect("service task")
            .expect("service returns Ok");
    }
}

/// POST /authenticate; returns status and parsed JSON body.
pub async fn login(base: &str, body: &str, request_id: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/authenticate"))
        .body(body.to_owned());
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("reply is not JSON ({err}): {text}"));
    (status, json)
}

pub fn credentials(email: &str, password: &str) -> String {
    serde_json::json!({"email": email, "password": password}).to_string()
}

/// Adds a user straight through the store (hash at [`TEST_COST`]).
pub async fn seed_user(store: &UserStore, email: &str, password: &str, active: bool) {
    let hasher = PasswordHasher::new(TEST_COST).await.expect("hasher");
    let password = Password::parse(password.to_owned()).expect("password");
    let user = NewUser {
        email: Email::parse(email).expect("email"),
        first_name: Name::parse("first", "Ada").expect("name"),
        last_name: Name::parse("last", "Lovelace").expect("name"),
        password_hash: hasher.hash(&password).await.expect("hash"),
        active,
    };
    assert!(matches!(
        store.add(&user).await.expect("add"),
        Added::Created(_)
    ));
}
