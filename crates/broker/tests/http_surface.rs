//! The broker's own HTTP behaviour, no downstream needed: the original's
//! fixed routes, CORS exactly as go-chi/cors answered, the per-IP rate limit
//! on `/handle`, the body limit, and the OpenAPI document kept in sync.

mod common;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use switchboard_broker::Settings;

use common::{LoneBroker, client, settings_with_nothing_behind};

#[tokio::test]
async fn the_originals_fixed_routes() {
    let broker = LoneBroker::start(settings_with_nothing_behind()).await;
    let (status, body) = common::post(&broker.base, "/", json!({}), None).await;
    assert_eq!(
        (status, body),
        (200, json!({"error": false, "message": "Hit the broker"}))
    );
    // The original's front-end posts an empty body to `/`.
    let response = client()
        .post(format!("{}/", broker.base))
        .send()
        .await
        .expect("POST /");
    assert_eq!(response.status(), 200);

    let response = client()
        .get(format!("{}/ping", broker.base))
        .send()
        .await
        .expect("ping");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("text"), ".");

    let response = client()
        .get(format!("{}/handle", broker.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 405);
    let response = client()
        .get(format!("{}/nowhere", broker.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 404);
    broker.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_400_naming_the_limit() {
    let mut settings = settings_with_nothing_behind();
    settings.limits.max_body_bytes = 1024;
    let broker = LoneBroker::start(settings).await;
    let body = common::log_action("big", &"x".repeat(2048), None);
    let (status, reply) = common::post(&broker.base, "/handle", body, None).await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap_or_default()
            .contains("limit of 1024 bytes"),
        "{reply}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn downstreams_is_an_unknown_path_unless_exposed() {
    let broker = LoneBroker::start(settings_with_nothing_behind()).await;
    let response = common::client()
        .get(format!("{}/downstreams", broker.base))
        .send()
        .await
        .expect("GET /downstreams");
    assert_eq!(response.status(), 404);
    let body = response.text().await.expect("body");
    assert!(!body.contains("127.0.0.1"), "{body}");
    broker.stop().await;

    let mut settings = settings_with_nothing_behind();
    settings.admin.expose_downstreams = true;
    let broker = LoneBroker::start(settings).await;
    let response = common::client()
        .get(format!("{}/downstreams", broker.base))
        .send()
        .await
        .expect("GET /downstreams");
    assert_eq!(response.status(), 200);
    broker.stop().await;
}

#[tokio::test]
async fn logs_is_an_unknown_path_unless_exposed_and_checks_its_limit() {
    let broker = LoneBroker::start(settings_with_nothing_behind()).await;
    let response = common::client()
        .get(format!("{}/logs", broker.base))
        .send()
        .await
        .expect("GET /logs");
    assert_eq!(response.status(), 404);
    broker.stop().await;

    let mut settings = settings_with_nothing_behind();
    settings.admin.expose_logs = true;
    let broker = LoneBroker::start(settings).await;
    for (query, expected) in [
        ("?limit=0", "limit must be a whole number from 1 to 50"),
        ("?limit=51", "limit must be a whole number from 1 to 50"),
        ("?limit=ten", "limit must be a whole number from 1 to 50"),
        ("?name=secret", "bad query string"),
    ] {
        let response = common::client()
            .get(format!("{}/logs{query}", broker.base))
            .send()
            .await
            .expect("GET /logs");
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.expect("envelope");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(expected),
            "{query}: {body}"
        );
    }
    // Nothing behind: the logger's HTTP door is named, its address is not.
    let response = common::client()
        .get(format!("{}/logs?limit=5", broker.base))
        .send()
        .await
        .expect("GET /logs");
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.expect("envelope");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("logger (http) is unreachable"),
        "{message}"
    );
    assert!(!message.contains("127.0.0.1"), "{message}");
    broker.stop().await;
}

#[tokio::test]
async fn an_unreachable_downstream_is_a_502_naming_it() {
    let broker = LoneBroker::start(settings_with_nothing_behind()).await;
    for (body, name) in [
        (common::log_action("n", "d", Some("rpc")), "logger (rpc)"),
        (common::log_action("n", "d", Some("grpc")), "logger (grpc)"),
        (common::log_action("n", "d", Some("http")), "logger (http)"),
        (
            common::log_action("n", "d", Some("amqp")),
            "rabbitmq (amqp)",
        ),
        (
            json!({"action": "auth", "auth": {"email": "a@b.c", "password": "p"}}),
            "auth",
        ),
        (
            json!({"action": "mail", "mail": {"to": "a@b.c", "subject": "s", "message": "m"}}),
            "mail",
        ),
    ] {
        let (status, reply) = common::post(&broker.base, "/handle", body, None).await;
        assert_eq!(status, 502, "{name}: {reply}");
        assert_eq!(reply["error"], json!(true));
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!("{name} is unreachable")),
            "{message}"
        );
    }
    broker.stop().await;
}

#[tokio::test]
async fn handle_is_rate_limited_per_client_and_nothing_else_is() {
    let mut settings = settings_with_nothing_behind();
    settings.limits.rate_per_second = 1;
    settings.limits.rate_burst = 3;
    let broker = LoneBroker::start(settings).await;
    let unknown = json!({"action": "nothing"});
    for attempt in 0..3 {
        let (status, _) = common::post(&broker.base, "/handle", unknown.clone(), None).await;
        assert_eq!(status, 400, "within the burst, attempt {attempt}");
    }
    let response = client()
        .post(format!("{}/handle", broker.base))
        .json(&unknown)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let reply: Value = response.json().await.expect("JSON envelope");
    assert_eq!(reply["error"], json!(true));
    assert!(
        reply["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("too many requests"),
        "{reply}"
    );
    // Other routes are not limited.
    for _ in 0..10 {
        let (status, _) = common::post(&broker.base, "/", json!({}), None).await;
        assert_eq!(status, 200);
    }
    // The bucket refills at the configured rate.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _) = common::post(&broker.base, "/handle", unknown, None).await;
    assert_eq!(status, 400, "a token came back after a second");
    broker.stop().await;
}

#[tokio::test]
async fn rate_limit_zero_disables_it() {
    let mut settings = settings_with_nothing_behind();
    settings.limits.rate_per_second = 0;
    settings.limits.rate_burst = 1;
    let broker = LoneBroker::start(settings).await;
    for _ in 0..20 {
        let (status, _) = common::post(&broker.base, "/handle", json!({"action": "x"}), None).await;
        assert_eq!(status, 400);
    }
    broker.stop().await;
}

#[tokio::test]
async fn cors_answers_as_the_original() {
    let broker = LoneBroker::start(settings_with_nothing_behind()).await;
    let preflight = client()
        .request(reqwest::Method::OPTIONS, format!("{}/handle", broker.base))
        .header("origin", "http://localhost:8084")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status(), 200);
    let header = |name: &str| {
        preflight
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    assert_eq!(
        header("access-control-allow-origin"),
        "http://localhost:8084"
    );
    assert_eq!(header("access-control-allow-credentials"), "true");
    assert_eq!(header("access-control-max-age"), "300");
    let methods: BTreeSet<String> = header("access-control-allow-methods")
        .split(',')
        .map(|method| method.trim().to_owned())
        .collect();
    assert_eq!(
        methods,
        ["delete", "get", "options", "post", "put"]
            .map(String::from)
            .into()
    );
    let headers: BTreeSet<String> = header("access-control-allow-headers")
        .split(',')
        .map(|name| name.trim().to_owned())
        .collect();
    assert_eq!(
        headers,
        ["accept", "authorization", "content-type", "x-csrf-token"]
            .map(String::from)
            .into()
    );
    assert!(
        header("vary").contains("origin"),
        "vary: {}",
        header("vary")
    );

    // A simple request from an https origin: mirrored, `Link` and the request id exposed.
    let response = client()
        .post(format!("{}/", broker.base))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let exposed = headers["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(
        exposed.contains("link") && exposed.contains("x-request-id"),
        "{exposed}"
    );
    assert!(headers.contains_key("x-request-id"));

    // Not an http(s) origin: no CORS headers.
    let response = client()
        .request(reqwest::Method::OPTIONS, format!("{}/handle", broker.base))
        .header("origin", "chrome-extension://abc")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    broker.stop().await;
}

/// The committed `crates/broker/openapi.json` is the generated document.
/// Regenerate with `SWITCHBOARD_UPDATE_OPENAPI=1 cargo test -p switchboard-broker --test http_surface`.
#[test]
fn committed_openapi_is_current() {
    let generated = switchboard_broker::api::openapi_document()
        .to_pretty_json()
        .expect("serialize")
        + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var_os("SWITCHBOARD_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write openapi.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale; regenerate it with SWITCHBOARD_UPDATE_OPENAPI=1 cargo test -p switchboard-broker --test http_surface",
        path.display()
    );
}

/// Every documented operation is served, every served route is documented,
/// and `/openapi.json` serves the document.
#[tokio::test]
async fn openapi_and_router_agree() {
    // The document lists every route the broker can serve, `/downstreams`
    // and `/logs` (off by default) included.
    let mut settings = settings_with_nothing_behind();
    settings.admin.expose_downstreams = true;
    settings.admin.expose_logs = true;
    let broker = LoneBroker::start(settings).await;
    let served: Value = client()
        .get(format!("{}/openapi.json", broker.base))
        .send()
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("JSON");
    let generated: Value =
        serde_json::to_value(switchboard_broker::api::openapi_document()).expect("to JSON");
    assert_eq!(served, generated);
    assert!(
        served["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.")
    );

    let mut documented = BTreeSet::new();
    for (path, item) in served["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    // Documented → served: not the router's 404/405 fallbacks. Bodies are
    // deliberately invalid so nothing is forwarded.
    for (method, path) in &documented {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = client()
            .request(method.clone(), format!("{}{path}", broker.base))
            .body("{")
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        assert!(
            status != 404 && status != 405,
            "{method} {path} is documented but answers {status}"
        );
    }
    // Served → documented: every route the broker answers (probed with every
    // method on every path the broker is known to serve) is in the document.
    let candidates = [
        "/",
        "/ping",
        "/handle",
        "/log-grpc",
        "/downstreams",
        "/openapi.json",
        "/healthz",
        "/readyz",
        "/log",
        "/logs",
        "/metrics",
        "/status",
    ];
    for path in candidates {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let response = client()
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                    format!("{}{path}", broker.base),
                )
                .body("{")
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            let routed = status != 404 && status != 405;
            assert_eq!(
                routed,
                documented.contains(&(method.to_owned(), path.to_owned())),
                "{method} {path} answers {status}"
            );
        }
    }
    // The request bodies have schemas.
    for schema in [
        "RequestPayload",
        "LogPayload",
        "AuthPayload",
        "MailPayload",
        "Reply",
        "AuthReply",
        "LogVia",
    ] {
        assert!(
            served["components"]["schemas"].get(schema).is_some(),
            "schema {schema} missing"
        );
    }
    broker.stop().await;
}

#[test]
fn the_example_config_is_the_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/broker.toml");
    let sources = switchboard_runtime::config::Sources {
        file: Some(path),
        env: Default::default(),
    };
    let loaded: Settings =
        switchboard_runtime::config::load("broker", &sources).expect("config/broker.toml loads");
    assert_eq!(loaded, Settings::default());
}
