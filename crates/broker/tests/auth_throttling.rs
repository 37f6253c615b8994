//! Auth's login throttle seen through the broker, with the real auth and
//! PostgreSQL behind it: the 429 reaches the client with auth's
//! `Retry-After` and message, and auth counts the broker's client (the
//! broker passes its address in `X-Forwarded-For`), not the broker.

mod common;

use std::net::IpAddr;

use serde_json::{Value, json};
use switchboard_testkit::servers_disabled;

use common::{Options, Stack};

/// Auth's defaults.
const PER_ACCOUNT: usize = 5;
const PER_ADDRESS: usize = 20;
const WINDOW_SECS: u64 = 900;

#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

/// `POST /handle` with an `auth` action, sent from `from` (a loopback
/// address of 127.0.0.0/8, so that the broker sees distinct clients).
async fn login(stack: &Stack, from: &str, email: &str, password: &str) -> Reply {
    let local: IpAddr = from.parse().expect("address");
    let client = reqwest::Client::builder()
        .local_address(local)
        .timeout(common::PATIENCE)
        .build()
        .expect("client");
    let response = client
        .post(format!("{}/handle", stack.broker))
        .json(&json!({"action": "auth", "auth": {"email": email, "password": password}}))
        .send()
        .await
        .expect("POST /handle");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().expect("ASCII").to_owned());
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"));
    Reply {
        status,
        retry_after,
        body,
    }
}

/// Auth's 429 as the broker passed it on; returns the Retry-After seconds.
fn assert_throttled(reply: &Reply, scope: &str) -> u64 {
    assert_eq!(reply.status, 429, "{reply:?}");
    let seconds: u64 = reply
        .retry_after
        .as_deref()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in seconds: {reply:?}"));
    assert!(
        (WINDOW_SECS - 120..=WINDOW_SECS).contains(&seconds),
        "Retry-After {seconds}"
    );
    assert_eq!(
        reply.body,
        json!({
            "error": true,
            "message": format!("too many failed logins {scope}; retry in {seconds} s"),
        })
    );
    seconds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_429_and_retry_after_reach_the_client() {
    if servers_disabled() {
        return;
    }
    let stack = Stack::start(Options::default()).await;
    stack.seed_user("ada@example.com", "verysecret").await;
    for email in ["ada@example.com", "nobody@example.com"] {
        for i in 1..=PER_ACCOUNT {
            let reply = login(&stack, "127.0.0.1", email, "wrong password").await;
            assert_eq!(
                (reply.status, &reply.body),
                (
                    401,
                    &json!({"error": true, "message": "invalid credentials"})
                ),
                "{email} failure #{i}"
            );
            assert_eq!(reply.retry_after, None);
        }
        let sixth = login(&stack, "127.0.0.1", email, "wrong password").await;
        assert_throttled(&sixth, "for this account");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_counts_the_broker_s_client_not_the_broker() {
    if servers_disabled() {
        return;
    }
    let stack = Stack::start(Options::default()).await;
    stack.seed_user("ada@example.com", "verysecret").await;
    // One client tries one password on many accounts.
    for i in 0..PER_ADDRESS {
        let reply = login(
            &stack,
            "127.0.0.2",
            &format!("user{i}@example.com"),
            "guess",
        )
        .await;
        assert_eq!(reply.status, 401, "failure #{i}: {reply:?}");
    }
    let next = login(&stack, "127.0.0.2", "user99@example.com", "guess").await;
    assert_throttled(&next, "from this address");
    // Were the broker's own address counted, every client would be refused.
    let other = login(&stack, "127.0.0.3", "ada@example.com", "verysecret").await;
    assert_eq!(other.status, 202, "{other:?}");
    let other = login(&stack, "127.0.0.3", "user99@example.com", "guess").await;
    assert_eq!(other.status, 401, "{other:?}");
    stack.stop().await;
}
