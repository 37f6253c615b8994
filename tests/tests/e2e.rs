//! End to end through the broker, with the whole stack (every service as its
//! real binary, handed its sockets by the stack, on real PostgreSQL, RabbitMQ,
//! MongoDB/FerretDB and MailHog): every action and every log transport lands
//! where it should, and bad input is refused with the right status.
//!
//! These tests disturb nothing, so they share one stack.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;
use switchboard_testkit::{servers_disabled, unique_name};
use switchboard_tests::{
    DEV_USER_EMAIL, DEV_USER_PASSWORD, ServiceName, Stack, client, get, log_action, logs_named,
    post_json, post_raw, stack_options, start_stack, wait_for_logs, with_logs,
};

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| start_stack(stack_options()))
}

/// A bit longer than any broker→listener→logger hop takes on a busy machine.
const ARRIVAL: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn broker_answers_its_root_and_heartbeat() {
    if servers_disabled() {
        return;
    }
    let stack = tokio::task::spawn_blocking(stack).await.expect("stack");
    let client = client();
    let root = post_raw(&client, &stack.broker_url(), "").await;
    assert_eq!(root.status, 200, "{:?}", root.body);
    assert_eq!(
        root.body,
        json!({"error": false, "message": "Hit the broker"})
    );
    let ping = get(&client, &format!("{}/ping", stack.broker_url())).await;
    assert_eq!(ping.status, 200, "{:?}", ping.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_accepts_the_dev_user_and_refuses_a_wrong_password() {
    if servers_disabled() {
        return;
    }
    let stack = tokio::task::spawn_blocking(stack).await.expect("stack");
    let client = client();
    let url = format!("{}/handle", stack.broker_url());

    let ok = post_json(
        &client,
        &url,
        &json!({"action": "auth", "auth": {"email": DEV_USER_EMAIL, "password": DEV_USER_PASSWORD}}),
    )
    .await;
    assert_eq!(
        ok.status,
        202,
        "{}",
        with_logs(
            stack,
            &[ServiceName::Broker, ServiceName::Auth],
            &format!("{:?}", ok.body)
        )
    );
    assert_eq!(ok.body["error"], json!(false));
    assert_eq!(ok.body["message"], json!("Authenticated!"));
    assert_eq!(ok.body["data"]["email"], json!(DEV_USER_EMAIL));
    assert_eq!(ok.body["data"]["first_name"], json!("Admin"));
    assert!(ok.body["data"].get("password").is_none(), "{:?}", ok.body);

    let wrong = post_json(
        &client,
        &url,
        &json!({"action": "auth", "auth": {"email": DEV_USER_EMAIL, "password": "not the password"}}),
    )
    .await;
    assert_eq!(wrong.status, 401, "{:?}", wrong.body);
    assert_eq!(wrong.body["error"], json!(true));

    let unknown = post_json(
        &client,
        &url,
        &json!({"action": "auth", "auth": {"email": "nobody@example.com", "password": DEV_USER_PASSWORD}}),
    )
    .await;
    assert_eq!(unknown.status, 401, "{:?}", unknown.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_reaches_the_logger_through_rabbitmq_and_the_listener() {
    if servers_disabled() {
        return;
    }
    let stack = tokio::task::spawn_blocking(stack).await.expect("stack");
    let client = client();
    let before = logs_named(&client, stack, "authentication", 1000)
        .await
        .len();
    let login = post_json(
        &client,
        &format!("{}/handle", stack.broker_url()),
        &json!({"action": "auth", "auth": {"email": DEV_USER_EMAIL, "password": DEV_USER_PASSWORD}}),
    )
    .await;
    assert_eq!(login.status, 202, "{:?}", login.body);
    let after = wait_for_logs(&client, stack, "authentication", before + 1, 1000, ARRIVAL).await;
    assert!(
        after > before,
        "{}",
        with_logs(
            stack,
            &[
                ServiceName::Auth,
                ServiceName::Listener,
                ServiceName::Logger
            ],
            "no authentication event reached the logger"
        )
    );
    let entries = logs_named(&client, stack, "authentication", 1000).await;
    assert!(
        entries
            .iter()
            .any(|entry| entry["data"] == json!(format!("{DEV_USER_EMAIL} logged in"))),
        "{entries:?}"
    );
}

/// Every transport of the `log` action, and the default one, stores exactly
/// one document with the data sent.
#[tokio::test(flavor = "multi_thread")]
async fn every_log_transport_stores_one_document() {
    if servers_disabled() {
        return;
    }
    let stack = tokio::task::spawn_blocking(stack).await.expect("stack");
    let client = client();
    let url = format!("{}/handle", stack.broker_url());
    for via in [None, Some("rpc"), Some("grpc"), Some("http"), Some("amqp")] {
        let name = unique_name(&format!("e2e_{}", via.unwrap_or("default")));
        let data = format!("sent via {via:?}");
        let reply = post_json(&client, &url, &log_action(&name, &data, via)).await;
        assert_eq!(
            reply.status,
            202,
            "{}",
            with_logs(
                stack,
                &[ServiceName::Broker, ServiceName::Logger],
                &format!("log via {via:?}: {:?}", reply.body)
            )
        );
        assert_eq!(reply.body["error"], json!(false), "{:?}", reply.body);
        // amqp is asynchronous (listener); the others are stored before the 202.
        let found = wait_for_logs(&client, stack, &name, 1, 10, ARRIVAL).await;
        assert_eq!(
            found,
            1,
            "{}",
            with_logs(
                stack,
                &[
                    ServiceName::Broker,
                    ServiceName::Listener,
                    ServiceName::Logger
                ],
                &format!("documents named {name} (via {via:?})")
            )
        );
        let entries = logs_named(&client, stack, &name, 10).await;
        assert_eq!(entries[0]["data"], json!(data), "{entries:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn log_grpc_endpoint_stores_one_document() {
    if servers_disabled() {
        return;
    }
    let stack = tokio::task::spawn_blocking(stack).await.expect("stack");
    let client = client();
    let name = unique_name("e2e_log_grpc");
    let reply = post_json(
        &client,
        &format!("{}/log-grpc", stack.broker_url()),
        &json!({"action": "log", "log": {"name": name, "data": "through /log-grpc"}}),
    )
    .await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    assert_eq!(reply.body, json!({"error": false, "message": "logged"}));
    let entries = logs_named(&client, stack, &name, 10).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["data"], json!("through /log-grpc"));
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_lands_in_mailhog() {
    if servers_disabled() {
        return;
    }
    let stack = tokio::task::spawn_blocking(stack).await.expect("stack");
    let client = client();
    let to = format!("{}@example.com", unique_name("e2e"));
    let reply = post_json(
        &client,
        &format!("{}/handle", stack.broker_url()),
        &json!({"action": "mail", "mail": {
            "from": "sender@example.com", "to": to, "subject": "End to end", "message": "Hello through the broker"
        }}),
    )
    .await;
    assert_eq!(
        reply.status,
        202,
        "{}",
        with_logs(
            stack,
            &[ServiceName::Broker, ServiceName::Mail],
            &format!("{:?}", reply.body)
        )
    );
    assert_eq!(
        reply.body["message"],
        json!(format!("Message sent to {to}"))
    );
    let messages = tokio::task::spawn_blocking({
        let to = to.clone();
        move || {
            stack
                .mailhog()
                .expect("the stack runs MailHog")
                .wait_for_messages_to(&to, 1, ARRIVAL)
        }
    })
    .await
    .expect("join")
    .expect("the mail arrives in MailHog");
    assert_eq!(messages.len(), 1);
    let subject = &messages[0]["Content"]["Headers"]["Subject"][0];
    assert_eq!(subject, &json!("End to end"), "{:?}", messages[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_400_with_a_reason() {
    if servers_disabled() {
        return;
    }
    let stack = tokio::task::spawn_blocking(stack).await.expect("stack");
    let client = client();
    let url = format!("{}/handle", stack.broker_url());

    let unknown = post_json(&client, &url, &json!({"action": "dance"})).await;
    assert_eq!(unknown.status, 400, "{:?}", unknown.body);
    assert_eq!(unknown.body["error"], json!(true));
    assert!(
        unknown.message().contains("unknown action"),
        "{:?}",
        unknown.body
    );

    let malformed = post_raw(&client, &url, r#"{"action": "log", "log": "#).await;
    assert_eq!(malformed.status, 400, "{:?}", malformed.body);
    assert_eq!(malformed.body["error"], json!(true));
    assert!(!malformed.message().is_empty(), "{:?}", malformed.body);

    let bad_via = post_json(&client, &url, &log_action("x", "y", Some("pigeon"))).await;
    assert_eq!(bad_via.status, 400, "{:?}", bad_via.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_front_end_serves_its_page_pointing_at_the_broker() {
    if servers_disabled() {
        return;
    }
    let stack = tokio::task::spawn_blocking(stack).await.expect("stack");
    let client = client();
    let page = client
        .get(stack.frontend_url())
        .send()
        .await
        .expect("GET front-end");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("body");
    assert!(html.contains(&stack.broker_url()), "{html}");
    assert!(html.contains("brokerBtn"), "{html}");
}
