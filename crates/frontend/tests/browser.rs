//! The page in a real browser (headless Chromium through chromedriver), against
//! a stand-in broker that speaks the broker's HTTP contract (ARCHITECTURE.md)
//! with open CORS and records what it receives. It checks what each button
//! sends, that Sent and Received show pretty-printed JSON, and that Output
//! shows successes in the normal colour and every failure (an error status, an
//! unreachable broker) in red.
//!
//! The whole-stack browser test (real broker and services) lives in `tests/`
//! at the workspace root.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::post;
use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use switchboard_testkit::browser::Browser;

/// What the stand-in broker received: path and parsed body (`null` if empty).
type Recorded = Arc<Mutex<Vec<(String, Value)>>>;

async fn broker_reply(
    State(recorded): State<Recorded>,
    uri: Uri,
    body: Bytes,
) -> impl IntoResponse {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    recorded
        .lock()
        .expect("lock")
        .push((uri.path().to_owned(), parsed.clone()));
    let (status, reply) = match (uri.path(), parsed["action"].as_str()) {
        ("/", _) => (
            StatusCode::OK,
            json!({"error": false, "message": "Hit the broker"}),
        ),
        ("/log-grpc", _) => (
            StatusCode::ACCEPTED,
            json!({"error": false, "message": "logged"}),
        ),
        ("/handle", Some("auth")) => (
            StatusCode::UNAUTHORIZED,
            json!({"error": true, "message": "invalid credentials"}),
        ),
        ("/handle", Some("log")) => (
            StatusCode::ACCEPTED,
            json!({"error": false, "message": format!("logged via {}", parsed["log"]["via"].as_str().unwrap_or("default"))}),
        ),
        ("/handle", Some("mail")) => (
            StatusCode::BAD_GATEWAY,
            json!({"error": true, "message": "mail service failed: SMTP server 127.0.0.1:1025 failed"}),
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            json!({"error": true, "message": "unknown action"}),
        ),
    };
    (status, axum::Json(reply))
}

async fn start_broker() -> (String, Recorded) {
    let recorded: Recorded = Arc::default();
    let router = Router::new()
        .route("/", post(broker_reply))
        .route("/handle", post(broker_reply))
        .route("/log-grpc", post(broker_reply))
        .layer(tower_http::cors::CorsLayer::permissive())
        .with_state(recorded.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind broker");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}"), recorded)
}

/// chromedriver and a session on it; the driver lives as long as the pair.
async fn browser() -> (Browser, Client) {
    let driver = Browser::start().await;
    let client = driver.session().await;
    (driver, client)
}

/// Evaluates `expression` in the page until it is truthy.
async fn wait_until(client: &Client, expression: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = client
            .execute(&format!("return Boolean({expression});"), vec![])
            .await
            .expect("execute");
        if value == Value::Bool(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {expression}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|err| panic!("no {css}: {err}"))
        .text()
        .await
        .expect("text")
}

/// What the newest Output entry says and how it is marked.
struct Entry {
    state: String,
    text: String,
    colour: String,
}

async fn click_and_wait(client: &Client, button: &str) -> Entry {
    let entries_before = client
        .execute(
            "return document.querySelectorAll('#output .entry').length;",
            vec![],
        )
        .await
        .expect("count");
    client
        .find(Locator::Id(button))
        .await
        .unwrap_or_else(|err| panic!("no #{button}: {err}"))
        .click()
        .await
        .expect("click");
    wait_until(
        client,
        &format!(
            "document.querySelectorAll('#output .entry').length > {entries_before} && \
             document.body.dataset.pending === '0'"
        ),
    )
    .await;
    let entry = client
        .execute(
            "const e = [...document.querySelectorAll('#output .entry')].pop(); \
             return [e.dataset.state, e.textContent, getComputedStyle(e).color];",
            vec![],
        )
        .await
        .expect("entry");
    let field = |i: usize| entry[i].as_str().unwrap_or_default().to_owned();
    Entry {
        state: field(0),
        text: field(1),
        colour: field(2),
    }
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
}

const RED: &str = "rgb(179, 38, 30)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_button_sends_the_contract_request_and_shows_the_outcome() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let (broker, recorded) = start_broker().await;
    let frontend = common::start(&broker).await;
    let (_driver, client) = browser().await;
    client
        .goto(&format!("{}/", frontend.base))
        .await
        .expect("open the page");
    wait_until(&client, "document.body.dataset.ready === 'true'").await;
    assert_eq!(text(&client, "h1").await, "Test microservices");

    let log = |via: &str| json!({"action": "log", "log": {"name": "event", "data": "Some kind of data", "via": via}});
    let cases = [
        ("brokerBtn", "/", Value::Null, "ok", "Hit the broker"),
        (
            "authBrokerBtn",
            "/handle",
            json!({"action": "auth", "auth": {"email": "admin@example.com", "password": "verysecret"}}),
            "error",
            "HTTP 401 Unauthorized: invalid credentials",
        ),
        ("logBtn", "/handle", log("rpc"), "ok", "logged via rpc"),
        (
            "logGBtn",
            "/log-grpc",
            json!({"action": "log", "log": {"name": "event", "data": "Some kind of gRPC data"}}),
            "ok",
            "logged",
        ),
        (
            "logAmqpBtn",
            "/handle",
            log("amqp"),
            "ok",
            "logged via amqp",
        ),
        (
            "logHttpBtn",
            "/handle",
            log("http"),
            "ok",
            "logged via http",
        ),
        (
            "mailBtn",
            "/handle",
            json!({"action": "mail", "mail": {"from": "me@example.com", "to": "you@there.com", "subject": "Test email", "message": "Hello world!"}}),
            "error",
            "HTTP 502 Bad Gateway: mail service failed",
        ),
    ];
    for (button, path, body, state, message) in &cases {
        let entry = click_and_wait(&client, button).await;
        assert_eq!(&entry.state, state, "{button}: {}", entry.text);
        assert!(entry.text.contains(message), "{button}: {}", entry.text);
        if *state == "error" {
            assert_eq!(entry.colour, RED, "{button} failure must show in red");
        } else {
            assert_ne!(entry.colour, RED, "{button} success must not be red");
        }

        let (seen_path, seen_body) = recorded.lock().expect("lock").pop().expect("a request");
        assert_eq!(&seen_path, path, "{button}");
        assert_eq!(&seen_body, body, "{button}");

        let sent = text(&client, "#payload").await;
        if body.is_null() {
            assert_eq!(sent, "(empty POST request)");
        } else {
            assert_eq!(&json_of(&sent), body, "{button}: Sent pane");
            assert!(
                sent.contains("\n  \""),
                "{button}: Sent is not pretty-printed: {sent}"
            );
        }
        let shown = text(&client, "#received").await;
        let reply = json_of(&shown);
        assert!(reply["message"].is_string(), "{button}: {shown}");
        assert!(
            shown.contains("\n  \""),
            "{button}: Received is not pretty-printed: {shown}"
        );
        assert_eq!(
            text(&client, "#sent-request").await,
            format!("POST {broker}{path}")
        );
    }
    // This stand-in broker serves neither /downstreams nor /logs (a 404, as
    // a broker whose [admin] section exposes nothing): the panels say so.
    wait_until(
        &client,
        "document.getElementById('logs-status').textContent.includes('expose_logs = false')",
    )
    .await;
    wait_until(
        &client,
        "document.getElementById('downstreams-status').textContent.includes('expose_downstreams = false')",
    )
    .await;
    client.close().await.expect("close the session");
    frontend.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_shows_in_red() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let closed = format!("http://127.0.0.1:{}", switchboard_testkit::free_port());
    let frontend = common::start(&closed).await;
    let (_driver, client) = browser().await;
    client
        .goto(&format!("{}/", frontend.base))
        .await
        .expect("open the page");
    wait_until(&client, "document.body.dataset.ready === 'true'").await;
    let entry = click_and_wait(&client, "brokerBtn").await;
    assert_eq!(entry.state, "error", "{}", entry.text);
    assert!(
        entry
            .text
            .contains(&format!("could not reach the broker at {closed}/")),
        "{}",
        entry.text
    );
    assert_eq!(entry.colour, RED);
    assert_eq!(text(&client, "#received").await, "(no response)");
    client.close().await.expect("close the session");
    frontend.stop().await;
}
