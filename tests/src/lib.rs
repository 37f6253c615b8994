//! Helpers for the cross-service tests in `tests/`: stacks of the real
//! service binaries (built on demand) on real dependency servers, and small
//! HTTP helpers for the broker and the logger.
//!
//! Test support code: it panics with a clear message instead of returning
//! errors, as a failed assertion would.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
pub use switchboard_stack::{
    DEV_USER_EMAIL, DEV_USER_PASSWORD, Dependency, ServiceName, Signal, Stack, StackOptions,
};

/// Temporary-mode options with the service binaries of this build (built
/// first if needed, see [`switchboard_stack::build_service_binaries`]).
pub fn stack_options() -> StackOptions {
    let bin_dir = switchboard_stack::build_service_binaries()
        .unwrap_or_else(|err| panic!("cannot build the service binaries: {err}"));
    StackOptions::temporary().bin_dir(bin_dir)
}

/// Starts a stack, panicking with the stack's explanation if it cannot.
pub fn start_stack(options: StackOptions) -> Stack {
    Stack::start(options).unwrap_or_else(|err| panic!("the stack did not start: {err}"))
}

/// Runs `make` on a blocking thread: [`Stack`] calls block (they wait for
/// processes), which must not stall an async test's runtime.
pub async fn blocking<T: Send + 'static>(make: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(make)
        .await
        .unwrap_or_else(|err| panic!("blocking task failed: {err}"))
}

/// Runs a blocking [`Stack`] call on a blocking thread.
pub async fn on<T: Send + 'static>(
    stack: &Arc<Stack>,
    call: impl FnOnce(&Stack) -> T + Send + 'static,
) -> T {
    let stack = Arc::clone(stack);
    blocking(move || call(&stack)).await
}

/// Stops a stack on a blocking thread (dropping it stops every process).
pub async fn stop(stack: Arc<Stack>) {
    blocking(move || drop(stack)).await;
}

/// A client with a timeout longer than any broker timeout under test.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|err| panic!("cannot build an HTTP client: {err}"))
}

/// A reply: status and body (parsed JSON, or the text as a JSON string).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, body }
}

/// `POST {url}` with a raw body (`application/json`).
pub async fn post_raw(client: &reqwest::Client, url: &str, body: impl Into<String>) -> Reply {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.into())
        .send()
        .await
        .unwrap_or_else(|err| panic!("POST {url} failed: {err}"));
    reply(response).await
}

/// `POST {url}` with a JSON body.
pub async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> Reply {
    post_raw(client, url, body.to_string()).await
}

/// `GET {url}`.
pub async fn get(client: &reqwest::Client, url: &str) -> Reply {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|err| panic!("GET {url} failed: {err}"));
    reply(response).await
}

/// The broker's `log` action; `via` `None` uses the broker's default transport.
pub fn log_action(name: &str, data: &str, via: Option<&str>) -> Value {
    let mut log = json!({"name": name, "data": data});
    if let Some(via) = via {
        log["via"] = json!(via);
    }
    json!({"action": "log", "log": log})
}

/// The documents the logger stores under `name` (`GET /logs?name=`), up to `limit`.
pub async fn logs_named(
    client: &reqwest::Client,
    stack: &Stack,
    name: &str,
    limit: u32,
) -> Vec<Value> {
    let url = format!("{}/logs?name={name}&limit={limit}", stack.logger_http_url());
    let reply = get(client, &url).await;
    assert_eq!(reply.status, 200, "GET {url}: {:?}", reply.body);
    match reply.body {
        Value::Array(entries) => entries,
        other => panic!("GET {url} did not return a JSON array: {other}"),
    }
}

/// Polls the logger until at least `count` documents named `name` exist
/// (or `timeout` passes) and returns how many there are.
pub async fn wait_for_logs(
    client: &reqwest::Client,
    stack: &Stack,
    name: &str,
    count: usize,
    limit: u32,
    timeout: Duration,
) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let found = logs_named(client, stack, name, limit).await.len();
        if found >= count || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Repeats `attempt` until it returns `Some` or `timeout` passes; the last
/// `None` becomes a panic naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: still failing after {timeout:?}: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A test's view of a stack failure: the assertion message plus the logs of
/// the services involved.
pub fn with_logs(stack: &Stack, services: &[ServiceName], message: &str) -> String {
    let mut text = message.to_owned();
    for service in services {
        text.push_str(&format!(
            "\n--- last lines of {service} ---\n{}",
            tail(&stack.service_log(*service), 30)
        ));
    }
    text
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
