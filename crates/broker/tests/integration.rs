//! The broker against the real services (logger, auth, mail, listener run
//! in-process) and real servers (FerretDB/MongoDB, PostgreSQL, RabbitMQ,
//! MailHog): every action lands where it should, failures map to the
//! documented statuses, request ids travel on, and connections are reused.

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_broker::payload::LogVia;
use switchboard_testkit::{MailHog, metrics, servers_disabled, unique_name};

use common::proxy::Mode;
use common::{Options, Stack, capture, log_action};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_transport_lands_a_document() {
    if servers_disabled() {
        return;
    }
    let stack = Stack::start(Options {
        listener: true,
        default_via: LogVia::Http,
        ..Options::default()
    })
    .await;
    stack.wait_for_rabbitmq().await;

    let mut sent = Vec::new();
    for via in ["rpc", "grpc", "http", "amqp"] {
        let name = unique_name(&format!("via_{via}"));
        let data = format!("sent via {via}");
        let (status, body) =
            post_until_queue_exists(&stack, log_action(&name, &data, Some(via))).await;
        assert_eq!(status, 202, "via {via}: {body}");
        assert_eq!(
            body,
            json!({"error": false, "message": "logged"}),
            "via {via}"
        );
        sent.push((name, data));
    }
    // No `via`: the configured default (http here).
    let name = unique_name("via_default");
    let (status, body) = stack.handle(log_action(&name, "default", None)).await;
    assert_eq!(
        (status, &body["message"]),
        (202, &json!("logged")),
        "{body}"
    );
    sent.push((name, "default".to_owned()));
    // `/log-grpc` with the original front-end's body and with a bare entry.
    let wrapped = unique_name("log_grpc_wrapped");
    let (status, body) = stack
        .post("/log-grpc", log_action(&wrapped, "wrapped", None), None)
        .await;
    assert_eq!(
        (status, body),
        (202, json!({"error": false, "message": "logged"}))
    );
    sent.push((wrapped.clone(), "wrapped".to_owned()));
    let bare = unique_name("log_grpc_bare");
    let (status, _) = stack
        .post("/log-grpc", json!({"name": bare, "data": "bare"}), None)
        .await;
    assert_eq!(status, 202);
    sent.push((bare, "bare".to_owned()));

    for (name, data) in sent {
        let entries = stack.wait_for_log(&name).await;
        assert_eq!(entries.len(), 1, "{name} stored once: {entries:?}");
        assert_eq!(entries[0]["data"], json!(data), "{name}");
    }

    // The newest entries, read through the broker (the test page's panel).
    let newest: Value = common::client()
        .get(format!("{}/logs?limit=50", stack.broker))
        .send()
        .await
        .expect("GET /logs")
        .json()
        .await
        .expect("envelope");
    assert_eq!(newest["error"], json!(false), "{newest}");
    let names: Vec<&str> = newest["data"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|entry| entry["name"].as_str())
        .collect();
    assert!(names.contains(&wrapped.as_str()), "{names:?}");

    // Every hop above is counted on the broker's metrics door.
    let response = reqwest::get(format!("{}/metrics", stack.broker_metrics))
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        response.headers()
    );
    let exposition = response.text().await.expect("exposition");
    for (downstream, transport) in [
        ("logger", "rpc"),
        ("logger", "grpc"),
        ("logger", "http"),
        ("rabbitmq", "amqp"),
    ] {
        let ok = metrics::sum(
            &exposition,
            "switchboard_outbound_calls_total",
            &[
                ("downstream", downstream),
                ("transport", transport),
                ("outcome", "ok"),
            ],
        );
        assert!(
            ok.is_some_and(|calls| calls >= 1.0),
            "{downstream} over {transport}: {ok:?} in\n{exposition}"
        );
    }
    // Seven log requests answered 202: four transports, the default, two `/log-grpc`.
    assert_eq!(
        metrics::sum(
            &exposition,
            "switchboard_http_requests_total",
            &[("method", "POST"), ("status", "202")]
        ),
        Some(7.0),
        "{exposition}"
    );
    assert!(
        metrics::sample(&exposition, "process_resident_memory_bytes").is_some_and(|rss| rss > 0.0),
        "{exposition}"
    );
    stack.stop().await;
}

/// A client's `id` makes a repeated request a no-op on every transport, and
/// the entry is stored under it (over AMQP it is the message id the listener
/// hands on; over gRPC it travels in metadata, the proto being the original's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_stores_a_repeated_log_once_on_every_transport() {
    if servers_disabled() {
        return;
    }
    let stack = Stack::start(Options {
        listener: true,
        ..Options::default()
    })
    .await;
    stack.wait_for_rabbitmq().await;
    let mut sent = Vec::new();
    for via in ["rpc", "grpc", "http", "amqp"] {
        let name = unique_name(&format!("client_id_{via}"));
        let id = unique_name(&format!("id-{via}"));
        let body =
            json!({"action": "log", "log": {"name": name, "data": via, "via": via, "id": id}});
        for attempt in 0..3 {
            let (status, reply) = post_until_queue_exists(&stack, body.clone()).await;
            assert_eq!(status, 202, "via {via}, attempt {attempt}: {reply}");
        }
        // The same id with other content is refused, not silently dropped
        // (over AMQP the broker cannot know; the listener dead-letters it).
        if via != "amqp" {
            let other = json!({"action": "log", "log": {"name": name, "data": "other", "via": via, "id": id}});
            let (status, reply) = stack.handle(other).await;
            assert_eq!(status, 409, "via {via}: {reply}");
            assert!(
                reply["message"].as_str().unwrap_or_default().contains(&id),
                "via {via}: {reply}"
            );
        }
        sent.push((name, id));
    }
    for (name, id) in sent {
        let entries = stack.wait_for_log(&name).await;
        // Give a second copy time to arrive (the AMQP path is asynchronous).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let entries_later = stack.wait_for_log(&name).await;
        assert_eq!(entries.len(), 1, "{name}: {entries:?}");
        assert_eq!(entries_later.len(), 1, "{name}: {entries_later:?}");
        assert_eq!(
            entries[0]["id"],
            json!(id),
            "{name}: stored under the client's id"
        );
    }
    stack.stop().await;
}

/// The listener declares its queue when it connects; until then a mandatory
/// publish comes back unroutable (502). Only that case is retried.
async fn post_until_queue_exists(stack: &Stack, body: Value) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let (status, reply) = stack.handle(body.clone()).await;
        // The reply does not say why (no internal detail); before the
        // listener has declared its queue the only failure is the unroutable
        // publish.
        let unroutable = status == 502
            && reply["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("rabbitmq (amqp) failed"));
        if !unroutable || tokio::time::Instant::now() > deadline {
            return (status, reply);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_answers_the_user_or_401() {
    if servers_disabled() {
        return;
    }
    let stack = Stack::start(Options::default()).await;
    let email = format!("{}@example.com", unique_name("ada"));
    stack.seed_user(&email, "correct horse battery").await;

    let (status, body) = stack
        .handle(json!({"action": "auth", "auth": {"email": email, "password": "correct horse battery"}}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["error"], json!(false));
    assert_eq!(body["message"], json!("Authenticated!"));
    assert_eq!(body["data"]["email"], json!(email));
    assert_eq!(body["data"]["first_name"], json!("Ada"));
    assert!(body["data"].get("password").is_none(), "{body}");

    for (email, password) in [
        (email.as_str(), "wrong password"),
        ("nobody@example.com", "correct horse battery"),
    ] {
        let (status, body) = stack
            .handle(json!({"action": "auth", "auth": {"email": email, "password": password}}))
            .await;
        assert_eq!(
            (status, body),
            (
                401,
                json!({"error": true, "message": "invalid credentials"})
            )
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_lands_in_mailhog() {
    if servers_disabled() {
        return;
    }
    let stack = Stack::start(Options::default()).await;
    let to = format!("{}@example.com", unique_name("mailto"));
    let subject = unique_name("subject");
    let (status, body) = stack
        .handle(json!({"action": "mail", "mail": {
            "from": "me@example.com", "to": to, "subject": subject, "message": "Hello from the broker"
        }}))
        .await;
    assert_eq!(
        (status, body),
        (
            202,
            json!({"error": false, "message": format!("Message sent to {to}")})
        )
    );
    let mailhog = MailHog::shared().expect("MailHog");
    let to_for_wait = to.clone();
    let messages = tokio::task::spawn_blocking(move || {
        mailhog.wait_for_messages_to(&to_for_wait, 1, common::PATIENCE)
    })
    .await
    .expect("join")
    .expect("the mail reaches MailHog");
    let text = serde_json::to_string(&messages).expect("JSON");
    assert!(text.contains(&subject), "{text}");
    assert!(text.contains("Hello from the broker"), "{text}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_400_with_a_reason() {
    if servers_disabled() {
        return;
    }
    let stack = Stack::start(Options::default()).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"action": "dance"}), "unknown action"),
        (json!({}), "unknown action"),
        (
            json!({"action": "log"}),
            "action \"log\" requires the \"log\" object",
        ),
        (json!({"action": "auth"}), "requires the \"auth\" object"),
        (json!({"action": "mail"}), "requires the \"mail\" object"),
        (
            json!({"action": "log", "log": {"name": "x"}}),
            "missing field `data`",
        ),
        (
            json!({"action": "log", "log": {"name": "x", "data": "y", "via": "pigeon"}}),
            "unknown variant `pigeon`",
        ),
        (
            log_action(" ", "y", None),
            "invalid log entry: name must not be empty",
        ),
        (
            json!({"action": "log", "log": {"name": "x", "data": "y", "id": ""}}),
            "invalid log entry: id must not be empty when given",
        ),
        (
            json!({"action": "log", "log": {"name": "x", "data": "y", "id": "i".repeat(257), "via": "amqp"}}),
            "invalid log entry: id is 257 bytes long; the limit is 256 bytes",
        ),
        (
            json!({"action": "log", "log": {"name": "x", "data": "y", "id": "a b"}}),
            "invalid log entry: id must be visible ASCII",
        ),
        // The logger's rules, refused by the broker before anything is sent:
        // the same reply whichever transport the entry would have taken,
        // AMQP included (no 202 for an entry that would be dead-lettered).
        (
            log_action(&"n".repeat(10_000), "y", Some("rpc")),
            "invalid log entry: name is 10000 bytes long; the limit is 256 bytes",
        ),
        (
            log_action(&"n".repeat(10_000), "y", Some("grpc")),
            "invalid log entry: name is 10000 bytes long; the limit is 256 bytes",
        ),
        (
            log_action(&"n".repeat(10_000), "y", Some("http")),
            "invalid log entry: name is 10000 bytes long; the limit is 256 bytes",
        ),
        (
            log_action(&"n".repeat(10_000), "y", Some("amqp")),
            "invalid log entry: name is 10000 bytes long; the limit is 256 bytes",
        ),
        // The downstreams' own validation passes through with their message.
        (
            log_action(&"n".repeat(300), "y", Some("rpc")),
            "name is 300 bytes long",
        ),
        (
            log_action(&"n".repeat(300), "y", Some("grpc")),
            "name is 300 bytes long",
        ),
        (
            log_action(&"n".repeat(300), "y", Some("http")),
            "name is 300 bytes long",
        ),
        (
            json!({"action": "mail", "mail": {"to": "not an address", "subject": "s", "message": "m"}}),
            "`to` is not a valid mailbox",
        ),
    ];
    for (body, expected) in cases {
        let (status, reply) = stack.handle(body.clone()).await;
        assert_eq!(status, 400, "{body} -> {reply}");
        assert_eq!(reply["error"], json!(true), "{reply}");
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "{body}: {message:?} lacks {expected:?}"
        );
    }
    // Malformed JSON, and a body that is not JSON at all.
    for raw in ["{\"action\": \"log\",", "action=log"] {
        let response = common::client()
            .post(format!("{}/handle", stack.broker))
            .body(raw)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 400, "{raw}");
        let reply: Value = response.json().await.expect("JSON");
        assert!(
            reply["message"]
                .as_str()
                .unwrap_or_default()
                .contains("invalid JSON"),
            "{reply}"
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_reaches_the_logger_on_every_transport() {
    if servers_disabled() {
        return;
    }
    let stack = Stack::start(Options::default()).await;
    stack.wait_for_rabbitmq().await;
    let mut tap = switchboard_testkit::amqp_tap::EventTap::open(&stack.amqp_url, None).await;
    for (via, span, path) in [
        ("rpc", "rpc", None),
        ("grpc", "grpc", None),
        ("http", "request", Some("/log")),
    ] {
        let request_id = uuid::Uuid::new_v4().to_string();
        let name = unique_name("traced");
        let (status, body) = stack
            .post(
                "/handle",
                log_action(&name, "d", Some(via)),
                Some(&request_id),
            )
            .await;
        assert_eq!(status, 202, "{via}: {body}");
        let spans = capture::spans_with(&request_id);
        assert!(
            spans
                .iter()
                .any(|record| record.name == span
                    && (path.is_none() || record.path.as_deref() == path)),
            "via {via}: the logger's {span} span did not carry {request_id}: {spans:?}"
        );
    }
    // AMQP: the header on the message (and the other properties promised).
    let request_id = uuid::Uuid::new_v4().to_string();
    let name = unique_name("traced_amqp");
    let (status, body) = stack
        .post(
            "/handle",
            log_action(&name, "via rabbit", Some("amqp")),
            Some(&request_id),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let delivery = tap
        .next(common::PATIENCE)
        .await
        .expect("a message within the patience");
    assert_eq!(delivery.routing_key.as_str(), "log.INFO");
    assert_eq!(
        serde_json::from_slice::<Value>(&delivery.data).expect("JSON body"),
        json!({"name": name, "data": "via rabbit"})
    );
    let properties = &delivery.properties;
    assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
    assert_eq!(
        properties.content_type().as_ref().map(|t| t.as_str()),
        Some("application/json")
    );
    let message_id = properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
        .expect("message id");
    assert!(uuid::Uuid::parse_str(&message_id).is_ok(), "{message_id}");
    let header = properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-request-id").cloned());
    assert_eq!(
        header,
        Some(lapin::types::AMQPValue::LongString(
            request_id.as_str().into()
        ))
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_per_downstream_however_many_requests() {
    if servers_disabled() {
        return;
    }
    let stack = Stack::start(Options::default()).await;
    const SEQUENTIAL: usize = 25;
    for via in ["rpc", "grpc", "http"] {
        for i in 0..SEQUENTIAL {
            let (status, body) = stack
                .handle(log_action(&unique_name("conn"), &i.to_string(), Some(via)))
                .await;
            assert_eq!(status, 202, "{via} #{i}: {body}");
        }
    }
    // Successful logins: as many failures would be throttled (429) after
    // auth's per-account limit.
    stack.seed_user("conn@example.com", "verysecret").await;
    for i in 0..SEQUENTIAL {
        let (status, reply) = stack
            .handle(
                json!({"action": "auth", "auth": {"email": "conn@example.com", "password": "verysecret"}}),
            )
            .await;
        assert_eq!(status, 202, "auth #{i}: {reply}");
    }
    assert_eq!(stack.logger_rpc.accepted(), 1, "RPC connections");
    assert_eq!(stack.logger_grpc.accepted(), 1, "gRPC connections");
    assert_eq!(
        stack.logger_http_proxy.accepted(),
        1,
        "logger HTTP connections"
    );
    assert_eq!(stack.auth.accepted(), 1, "auth HTTP connections");

    // A concurrent burst: RPC and gRPC multiplex over their one connection;
    // the HTTP pool opens at most one connection per request in flight.
    const CONCURRENT: usize = 16;
    for via in ["rpc", "grpc", "http"] {
        let burst = (0..CONCURRENT).map(|i| {
            let body = log_action(&unique_name("burst"), &i.to_string(), Some(via));
            let broker = stack.broker.clone();
            async move { common::post(&broker, "/handle", body, None).await }
        });
        for (status, body) in futures::future::join_all(burst).await {
            assert_eq!(status, 202, "{via}: {body}");
        }
    }
    assert_eq!(
        stack.logger_rpc.accepted(),
        1,
        "RPC connections after the burst"
    );
    assert_eq!(
        stack.logger_grpc.accepted(),
        1,
        "gRPC connections after the burst"
    );
    let http_connections = stack.logger_http_proxy.accepted();
    assert!(
        (1..=CONCURRENT).contains(&http_connections),
        "logger HTTP connections after the burst: {http_connections}"
    );
    eprintln!(
        "connections after {} sequential and {CONCURRENT} concurrent requests each: rpc 1, grpc 1, http {http_connections}",
        SEQUENTIAL
    );
    stack.stop().await;
}

/// Every downstream of `stack`, with a request that exercises it.
fn each_downstream(stack: &Stack) -> Vec<(&'static str, &common::proxy::Proxy, Value)> {
    vec![
        (
            "logger (rpc)",
            &stack.logger_rpc,
            log_action("outage", "rpc", Some("rpc")),
        ),
        (
            "logger (grpc)",
            &stack.logger_grpc,
            log_action("outage", "grpc", Some("grpc")),
        ),
        (
            "logger (http)",
            &stack.logger_http_proxy,
            log_action("outage", "http", Some("http")),
        ),
        (
            "auth",
            &stack.auth,
            json!({"action": "auth", "auth": {"email": "nobody@example.com", "password": "x"}}),
        ),
        (
            "mail",
            &stack.mail,
            json!({"action": "mail", "mail": {"to": "outage@example.com", "subject": "s", "message": "m"}}),
        ),
    ]
}

/// What the downstream answers when it is up (auth: 401 for the unknown user).
fn healthy_status(name: &str) -> u16 {
    if name == "auth" { 401 } else { 202 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_downstream_is_502_and_comes_back() {
    if servers_disabled() {
        return;
    }
    let stack = Stack::start(Options {
        timeout_ms: 2_000,
        ..Options::default()
    })
    .await;
    for (name, proxy, body) in each_downstream(&stack) {
        // Up, so that a long-lived connection exists before it breaks.
        let (status, reply) = stack.handle(body.clone()).await;
        assert_eq!(status, healthy_status(name), "{name} before: {reply}");

        proxy.stop().await;
        for attempt in 0..2 {
            let (status, reply) = stack.handle(body.clone()).await;
            assert_eq!(status, 502, "{name} stopped, attempt {attempt}: {reply}");
            assert_eq!(reply["error"], json!(true));
            let message = reply["message"].as_str().unwrap_or_default();
            // The first request may race the cut itself (sent on the pooled
            // connection just before the reset): a failure of that
            // connection. Once the cut is seen, the downstream is unreachable.
            let expected_first = message.starts_with(&format!("{name} failed"));
            assert!(
                message.starts_with(&format!("{name} is unreachable"))
                    || (attempt == 0 && expected_first),
                "{name}, attempt {attempt}: {message}"
            );
        }

        proxy.resume(Mode::Forward).await;
        let (status, reply) = stack.handle(body.clone()).await;
        assert_eq!(
            status,
            healthy_status(name),
            "{name} after it returned: {reply}"
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_downstream_is_504_and_comes_back() {
    if servers_disabled() {
        return;
    }
    let stack = Stack::start(Options {
        timeout_ms: 700,
        ..Options::default()
    })
    .await;
    for (name, proxy, body) in each_downstream(&stack) {
        let (status, reply) = stack.handle(body.clone()).await;
        assert_eq!(status, healthy_status(name), "{name} before: {reply}");

        proxy.resume(Mode::BlackHole).await;
        let started = std::time::Instant::now();
        let (status, reply) = stack.handle(body.clone()).await;
        let waited = started.elapsed();
        assert_eq!(status, 504, "{name}: {reply}");
        assert_eq!(reply["error"], json!(true), "{name}: {reply}");
        // The reply names the downstream and the request id the log has.
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!("{name} did not answer within 700 ms (request ")),
            "{name}: {reply}"
        );
        assert!(
            waited >= Duration::from_millis(650),
            "{name} answered 504 after {waited:?}"
        );

        proxy.resume(Mode::Forward).await;
        let (status, reply) = stack.handle(body.clone()).await;
        assert_eq!(
            status,
            healthy_status(name),
            "{name} after it returned: {reply}"
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_needs_one_reachable_downstream() {
    if servers_disabled() {
        return;
    }
    let stack = Stack::start(Options::default()).await;
    let response = common::client()
        .get(format!("{}/readyz", stack.broker))
        .send()
        .await
        .expect("readyz");
    assert_eq!(response.status(), 200);
    let response = common::client()
        .get(format!("{}/downstreams", stack.broker))
        .send()
        .await
        .expect("downstreams");
    let body: Value = response.json().await.expect("JSON");
    let statuses = body["data"].as_array().expect("data array");
    assert_eq!(statuses.len(), 6, "{body}");
    for status in statuses {
        if status["name"] != "rabbitmq (amqp)" {
            assert_eq!(status["reachable"], json!(true), "{status}");
        }
    }
    stack.stop().await;

    let alone = common::LoneBroker::start(common::settings_with_nothing_behind()).await;
    let response = common::client()
        .get(format!("{}/readyz", alone.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("JSON");
    let message = body["message"].as_str().unwrap_or_default();
    for name in [
        "auth",
        "mail",
        "logger (rpc)",
        "logger (grpc)",
        "logger (http)",
        "rabbitmq (amqp)",
    ] {
        assert!(message.contains(name), "{name} missing in {message:?}");
    }
    alone.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_outage_is_502_and_the_broker_reconnects() {
    if servers_disabled() {
        return;
    }
    use lapin::options::BasicGetOptions;
    // A node of its own: stopping the shared one would break other tests.
    let mut rabbit = tokio::task::spawn_blocking(switchboard_testkit::RabbitMq::start)
        .await
        .expect("join")
        .expect("RabbitMQ");
    let amqp_url = rabbit.amqp_url();
    let mut settings = common::settings_with_nothing_behind();
    settings.events.amqp_url = amqp_url.clone();
    settings.downstream.timeout_ms = 2_000;
    // The test watches the connection there.
    settings.admin.expose_downstreams = true;
    let broker = common::LoneBroker::start(settings).await;

    // A durable queue takes the messages (the listener's role).
    let queue = unique_name("outage");
    let declare = |url: String, queue: String| async move {
        let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
            .await
            .expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        switchboard_testkit::amqp_tap::bind_queue(&channel, Some(queue.as_str())).await;
        (connection, channel)
    };
    let (connection, _) = declare(amqp_url.clone(), queue.clone()).await;
    let _ = connection.close(200, "done".into()).await;
    common::wait_for_rabbitmq(&broker.base).await;
    let (status, body) = common::post(
        &broker.base,
        "/handle",
        log_action("before", "1", Some("amqp")),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");

    let stopped = std::time::Instant::now();
    let mut rabbit = tokio::task::spawn_blocking(move || {
        rabbit.stop();
        rabbit
    })
    .await
    .expect("join");
    let (status, body) = common::post(
        &broker.base,
        "/handle",
        log_action("during", "2", Some("amqp")),
        None,
    )
    .await;
    assert!(
        status == 502 || status == 504,
        "RabbitMQ is down: {status} {body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("rabbitmq (amqp)"),
        "{body}"
    );
    let response = common::client()
        .get(format!("{}/ping", broker.base))
        .send()
        .await
        .expect("ping");
    assert_eq!(response.status(), 200, "the broker keeps serving");

    let rabbit = tokio::task::spawn_blocking(move || {
        rabbit.start_again().expect("RabbitMQ starts again");
        rabbit
    })
    .await
    .expect("join");
    // Back within the patience, without restarting the broker.
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let (status, body) = common::post(
            &broker.base,
            "/handle",
            log_action("after", "3", Some("amqp")),
            None,
        )
        .await;
        if status == 202 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker did not reconnect to RabbitMQ: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "RabbitMQ outage to first confirmed publish: {:?}",
        stopped.elapsed()
    );

    // Both confirmed messages are in the durable queue; the refused one is not.
    let (connection, channel) = declare(amqp_url, queue.clone()).await;
    let mut names = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        let body: Value = serde_json::from_slice(&message.delivery.data).expect("JSON");
        names.push(body["name"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        names.first().map(String::as_str),
        Some("before"),
        "{names:?}"
    );
    assert!(names.contains(&"after".to_owned()), "{names:?}");
    assert!(!names.contains(&"during".to_owned()), "{names:?}");
    let _ = connection.close(200, "done".into()).await;
    broker.stop().await;
    drop(rabbit);
}

/// Several loggers: the broker's first logger is gone (its port refuses
/// connections), the second is the real one. Every request over rpc, grpc
/// and http is answered 202 and stored once (those that met the gone logger
/// were sent again to the other), and `/downstreams` names the gone one
/// while each transport stays reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logger_that_is_gone_is_skipped_and_its_requests_go_to_the_next() {
    if servers_disabled() {
        return;
    }
    let stack = Stack::start(Options::default()).await;
    let gone = common::closed_port();
    let mut settings = stack.broker_settings.clone();
    let d = &mut settings.downstream;
    // The gone logger first: the first request of each transport meets it.
    d.logger_rpc_addrs = std::mem::replace(&mut d.logger_rpc_addr, format!("127.0.0.1:{gone}"));
    d.logger_grpc_urls =
        std::mem::replace(&mut d.logger_grpc_url, format!("http://127.0.0.1:{gone}"));
    d.logger_http_urls =
        std::mem::replace(&mut d.logger_http_url, format!("http://127.0.0.1:{gone}"));
    let broker = common::LoneBroker::start(settings).await;

    const REQUESTS: usize = 12;
    for via in ["rpc", "grpc", "http"] {
        let name = unique_name(&format!("gone_{via}"));
        for index in 0..REQUESTS {
            let body = log_action(&name, &format!("entry {index}"), Some(via));
            let (status, body) = common::post(&broker.base, "/handle", body, None).await;
            assert_eq!(status, 202, "via {via}, request {index}: {body}");
        }
        let entries = stack.wait_for_logs(&name, REQUESTS).await;
        let mut data: Vec<&str> = entries
            .iter()
            .map(|entry| entry["data"].as_str().unwrap_or_default())
            .collect();
        data.sort_unstable();
        data.dedup();
        assert_eq!(
            (entries.len(), data.len()),
            (REQUESTS, REQUESTS),
            "via {via}: every request stored once: {entries:?}"
        );
    }

    let body: Value = common::client()
        .get(format!("{}/downstreams", broker.base))
        .send()
        .await
        .expect("downstreams")
        .json()
        .await
        .expect("JSON");
    for name in ["logger (rpc)", "logger (grpc)", "logger (http)"] {
        let status = body["data"]
            .as_array()
            .and_then(|statuses| statuses.iter().find(|status| status["name"] == name))
            .unwrap_or_else(|| panic!("{name} missing: {body}"));
        assert_eq!(status["reachable"], json!(true), "{status}");
        let detail = status["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("1 of 2 not answering") && detail.contains(&gone.to_string()),
            "{status}"
        );
    }
    broker.stop().await;
    stack.stop().await;
}

/// A logger that accepts connections but never answers (a hung process)
/// costs the requests that were sent to it their deadline (504), then is
/// skipped: of sequential requests over rpc, grpc and http only the first
/// few meet it (gRPC: until the health watcher's probe got no HTTP/2
/// SETTINGS from it), and every 202 is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_logger_is_skipped_after_its_first_timeout() {
    if servers_disabled() {
        return;
    }
    let stack = Stack::start(Options {
        timeout_ms: 1_000,
        ..Options::default()
    })
    .await;
    // Black holes in front of the real doors: they accept and hold.
    let hung_rpc = common::proxy::Proxy::start(stack.logger_rpc.addr).await;
    hung_rpc.resume(Mode::BlackHole).await;
    let hung_http = common::proxy::Proxy::start(stack.logger_http_proxy.addr).await;
    hung_http.resume(Mode::BlackHole).await;
    let hung_grpc = common::proxy::Proxy::start(stack.logger_grpc.addr).await;
    hung_grpc.resume(Mode::BlackHole).await;
    let mut settings = stack.broker_settings.clone();
    let d = &mut settings.downstream;
    d.logger_rpc_addrs = std::mem::replace(&mut d.logger_rpc_addr, hung_rpc.addr.to_string());
    d.logger_http_urls = std::mem::replace(&mut d.logger_http_url, hung_http.url());
    d.logger_grpc_urls = std::mem::replace(&mut d.logger_grpc_url, hung_grpc.url());
    let broker = common::LoneBroker::start(settings).await;

    const REQUESTS: usize = 20;
    for via in ["rpc", "grpc", "http"] {
        let name = unique_name(&format!("hung_{via}"));
        let mut accepted = 0;
        let mut timed_out = 0;
        for index in 0..REQUESTS {
            let body = log_action(&name, &format!("entry {index}"), Some(via));
            match common::post(&broker.base, "/handle", body, None).await {
                (202, _) => accepted += 1,
                (504, _) => timed_out += 1,
                (status, body) => panic!("via {via}, request {index}: {status} {body}"),
            }
        }
        // One timeout ejects it for 250 ms, then one trial (another
        // timeout) for 500 ms: the hung logger takes a few requests, not
        // every second one.
        eprintln!("via {via}: {accepted} accepted, {timed_out} timed out");
        assert!(
            timed_out <= 3,
            "via {via}: {timed_out} of {REQUESTS} timed out"
        );
        let entries = stack.wait_for_logs(&name, accepted).await;
        assert_eq!(entries.len(), accepted, "via {via}: {entries:?}");
    }
    broker.stop().await;
    stack.stop().await;
}
