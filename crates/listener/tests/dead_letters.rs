//! Dead letters that say why, against a real RabbitMQ node, a real FerretDB
//! and the real logger in-process: an event reusing an idempotency id for
//! other content, and an event over the shared log entry limits.

mod common;

use common::*;
use mongodb::bson::doc;
use switchboard_listener::settings::LoggerVia;

/// An event whose `message_id` is already stored with other content is a
/// different event that reused an id: storing it would lose it, acking it as
/// a duplicate would too. It is dead-lettered with the reason; a true
/// redelivery (same content) is still acknowledged as stored.
async fn a_reused_id_is_dead_lettered_as_a_conflict(via: LoggerVia) {
    let Rig {
        amqp_url,
        vhost: _,
        mut logger,
        listener,
        publisher,
    } = Rig::start(via).await;
    let name = event_name("reused");
    let id = format!("{name}-order-42-shipped");
    publisher.event("log.INFO", &name, "first", &id).await;
    let store = logger.store().await;
    store.wait_for_count(&name, 1).await;

    publisher.event("log.INFO", &name, "first", &id).await;
    publisher.event("log.INFO", &name, "second", &id).await;
    let (body, headers) = wait_for("the conflicting event in logs.dead", PATIENCE, || {
        take_one(&amqp_url, "logs.dead")
    })
    .await;
    assert!(String::from_utf8_lossy(&body).contains("second"), "{via:?}");
    let (code, reason) = dead_letter_reason(&headers);
    assert_eq!(code, "conflict", "{via:?}: {reason}");
    assert!(
        reason.contains(&id) && reason.contains("different name or data"),
        "{via:?}: {reason}"
    );
    // The first one stays, stored once; the repeat was acknowledged.
    let documents = store.documents(doc! {"name": &name}).await;
    assert_eq!(documents.len(), 1, "{documents:?}");
    assert_eq!(documents[0].get_str("data").ok(), Some("first"));
    wait_for("the queue drained", PATIENCE, || async {
        (ready_messages(&amqp_url, "logs").await == Some(0)).then_some(())
    })
    .await;
    assert_eq!(ready_messages(&amqp_url, "logs.dead").await, Some(0));
    publisher.close().await;
    listener.stop().await.expect("clean stop");
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_id_is_dead_lettered_as_a_conflict_via_rpc() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    a_reused_id_is_dead_lettered_as_a_conflict(LoggerVia::Rpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_id_is_dead_lettered_as_a_conflict_via_http() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    a_reused_id_is_dead_lettered_as_a_conflict(LoggerVia::Http).await;
}

/// The listener applies the log entry rules itself: an event the logger
/// would refuse is dead-lettered with the logger's words, without a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_limits_is_dead_lettered_with_the_rules_words() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    init_tracing();
    let (amqp_url, _) = fresh_vhost();
    // No logger at all: the verdict cannot have come from it.
    let logger = Logger::not_started(logger_settings(&shared_mongo_url()));
    let listener = Listener::spawn(listener_settings(
        &amqp_url,
        logger.rpc,
        logger.http,
        LoggerVia::Rpc,
    ));
    wait_until_consuming(&amqp_url).await;
    let publisher = Publisher::connect(&amqp_url, "logs_topic").await;
    let long_name = "n".repeat(10_000);
    publisher
        .event("log.INFO", &long_name, "x", "long-name-1")
        .await;
    let (_, headers) = wait_for("the oversized event in logs.dead", PATIENCE, || {
        take_one(&amqp_url, "logs.dead")
    })
    .await;
    assert_eq!(
        dead_letter_reason(&headers),
        (
            "invalid".to_owned(),
            "invalid log entry: name is 10000 bytes long; the limit is 256 bytes".to_owned()
        )
    );
    // Published by the listener, not by RabbitMQ's rejection: no x-death.
    assert!(headers.inner().get("x-death").is_none(), "{headers:?}");
    publisher.close().await;
    listener.stop().await.expect("clean stop");
}
