//! The AMQP path end to end: events published through the broker (`"via":
//! "amqp"`, each acknowledged with 202 only after RabbitMQ confirmed it) go
//! through `logs_topic`, the listener's durable queue and the logger into the
//! database — every one exactly once, also when the listener is SIGKILLed and
//! restarted in the middle, and when the logger is down for a while.
//!
//! One stack; the scenarios take turns (they stop and kill services). The
//! broker's rate limit is off and the logger's read cap raised, so that 1,000
//! events can be sent quickly and counted in one `GET /logs`.

use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use switchboard_testkit::{servers_disabled, unique_name};
use switchboard_tests::{
    ServiceName, Signal, Stack, blocking, client, log_action, logs_named, post_json, stack_options,
    start_stack, with_logs,
};

const EVENTS: usize = 1000;
const READ_LIMIT: u32 = 5000;
const CONCURRENCY: usize = 16;
const DELIVERY: Duration = Duration::from_secs(120);

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        start_stack(
            stack_options()
                .setting(ServiceName::Broker, "limits.rate_per_second", 0)
                .setting(ServiceName::Logger, "limits.max_read_limit", READ_LIMIT)
                // The listener gives up on a hung logger call sooner, so the
                // logger-outage scenario does not wait out 5 s timeouts.
                .setting(ServiceName::Listener, "logger.timeout_ms", 1000),
        )
    })
}

/// The scenarios stop and kill services: one at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Publishes events `from..to` named `name` through the broker; every one must
/// be accepted with 202.
async fn publish(
    client: &reqwest::Client,
    stack: &'static Stack,
    name: &str,
    from: usize,
    to: usize,
) {
    let url = format!("{}/handle", stack.broker_url());
    let statuses: Vec<(usize, u16, String)> = futures::stream::iter(from..to)
        .map(|index| {
            let client = client.clone();
            let url = url.clone();
            let body = log_action(name, &format!("event {index}"), Some("amqp"));
            async move {
                let reply = post_json(&client, &url, &body).await;
                (index, reply.status, reply.body.to_string())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let refused: Vec<_> = statuses
        .iter()
        .filter(|(_, status, _)| *status != 202)
        .collect();
    assert!(
        refused.is_empty(),
        "{}",
        with_logs(
            stack,
            &[ServiceName::Broker],
            &format!(
                "{} of {} publishes were not accepted, e.g. {:?}",
                refused.len(),
                to - from,
                refused.first()
            )
        )
    );
}

/// Waits until `EVENTS` documents named `name` are stored, then a little
/// longer, and checks there are exactly `EVENTS`, each event once.
async fn assert_stored_exactly_once(client: &reqwest::Client, stack: &'static Stack, name: &str) {
    let deadline = std::time::Instant::now() + DELIVERY;
    let mut stored = 0;
    while std::time::Instant::now() < deadline {
        stored = logs_named(client, stack, name, READ_LIMIT).await.len();
        if stored >= EVENTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        stored >= EVENTS,
        "{}",
        with_logs(
            stack,
            &[ServiceName::Listener, ServiceName::Logger],
            &format!("only {stored} of {EVENTS} events named {name} stored after {DELIVERY:?}")
        )
    );
    // Redeliveries (of messages whose ack was lost) would show up late.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let entries = logs_named(client, stack, name, READ_LIMIT).await;
    let mut data: Vec<String> = entries
        .iter()
        .map(|entry| entry["data"].as_str().unwrap_or_default().to_owned())
        .collect();
    data.sort();
    let total = data.len();
    data.dedup();
    assert_eq!(
        (total, data.len()),
        (EVENTS, EVENTS),
        "{}",
        with_logs(
            stack,
            &[ServiceName::Listener, ServiceName::Logger],
            "every event stored exactly once (total, distinct)"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_events_are_stored_exactly_once() {
    if servers_disabled() {
        return;
    }
    let _turn = TURN.lock().await;
    let stack = blocking(stack).await;
    let client = client();
    let name = unique_name("amqp_plain");
    publish(&client, stack, &name, 0, EVENTS).await;
    assert_stored_exactly_once(&client, stack, &name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_killed_mid_stream_loses_and_duplicates_nothing() {
    if servers_disabled() {
        return;
    }
    let _turn = TURN.lock().await;
    let stack = blocking(stack).await;
    let client = client();
    let name = unique_name("amqp_kill");

    publish(&client, stack, &name, 0, EVENTS * 3 / 10).await;
    // Kill while events keep coming and the listener is busy with them: some
    // deliveries are in flight, some stored but not yet acknowledged.
    let rest = tokio::spawn({
        let client = client.clone();
        let name = name.clone();
        async move { publish(&client, stack, &name, EVENTS * 3 / 10, EVENTS).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed = blocking(|| stack.kill(ServiceName::Listener, Signal::KILL))
        .await
        .expect("kill the listener");
    assert!(killed, "the listener was not running");
    rest.await.expect("publishing the rest");
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocking(|| stack.start_service(ServiceName::Listener))
        .await
        .unwrap_or_else(|err| panic!("restarting the listener: {err}"));
    assert_stored_exactly_once(&client, stack, &name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_wait_while_the_logger_is_down() {
    if servers_disabled() {
        return;
    }
    let _turn = TURN.lock().await;
    let stack = blocking(stack).await;
    let client = client();
    let name = unique_name("amqp_logger_down");

    publish(&client, stack, &name, 0, EVENTS / 4).await;
    blocking(|| stack.stop_service(ServiceName::Logger))
        .await
        .expect("stop the logger");
    // Accepted while nobody can store them: they must wait in the queue.
    publish(&client, stack, &name, EVENTS / 4, EVENTS).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    blocking(|| stack.start_service(ServiceName::Logger))
        .await
        .unwrap_or_else(|err| panic!("restarting the logger: {err}"));
    assert_stored_exactly_once(&client, stack, &name).await;
}
