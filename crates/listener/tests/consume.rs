//! The listener against a real RabbitMQ node (a vhost per test), a real
//! FerretDB and the real logger served in-process: what reaches the logger,
//! what is acknowledged when, and what is dead-lettered.

mod common;

use std::time::Duration;

use common::*;
use mongodb::bson::doc;
use switchboard_listener::settings::LoggerVia;
use switchboard_testkit::metrics;

async fn events_with_each_routing_key_are_stored(via: LoggerVia) {
    let Rig {
        amqp_url,
        vhost,
        mut logger,
        listener,
        publisher,
    } = Rig::start(via).await;
    let name = event_name("routed");
    let keys = ["log.INFO", "log.WARNING", "log.ERROR"];
    for key in keys {
        publisher
            .event(key, &name, &format!("via {key}"), &format!("{name}-{key}"))
            .await;
    }
    // An unbound routing key is not the listener's business.
    publisher
        .event("log.DEBUG", &name, "not bound", &format!("{name}-debug"))
        .await;

    let store = logger.store().await;
    store.wait_for_count(&name, 3).await;
    let mut stored: Vec<String> = store
        .documents(doc! { "name": &name })
        .await
        .iter()
        .map(|document| document.get_str("data").expect("data").to_owned())
        .collect();
    stored.sort();
    assert_eq!(stored, ["via log.ERROR", "via log.INFO", "via log.WARNING"]);
    // The AMQP message id became the document's idempotency id.
    let first = store
        .documents(doc! { "_id": format!("{name}-log.INFO") })
        .await;
    assert_eq!(first.len(), 1);

    // All acknowledged: nothing ready, nothing dead.
    wait_for("an empty queue", PATIENCE, || async {
        (ready_messages(&amqp_url, "logs").await == Some(0)).then_some(())
    })
    .await;
    assert_eq!(ready_messages(&amqp_url, "logs.dead").await, Some(0));

    // The metrics door: three stored, none in flight, the breaker closed,
    // and three calls to the logger over the configured transport. A
    // delivery is counted once the logger answered, which may be after its
    // document is readable: wait for the count.
    let exposition = wait_for("three stored deliveries counted", PATIENCE, || async {
        let exposition = listener.scrape().await;
        (metrics::sample(
            &exposition,
            r#"switchboard_listener_deliveries_total{outcome="stored"}"#,
        ) == Some(3.0)
            && metrics::sample(&exposition, "switchboard_listener_deliveries_in_flight")
                == Some(0.0))
        .then_some(exposition)
    })
    .await;
    let count = |series: &str| metrics::sample(&exposition, series);
    assert_eq!(
        count(r#"switchboard_listener_deliveries_total{outcome="stored"}"#),
        Some(3.0),
        "{exposition}"
    );
    assert_eq!(
        count(r#"switchboard_listener_deliveries_total{outcome="dead_lettered"}"#),
        Some(0.0),
        "{exposition}"
    );
    assert_eq!(
        count("switchboard_listener_deliveries_in_flight"),
        Some(0.0)
    );
    assert_eq!(count("switchboard_listener_breaker_open"), Some(0.0));
    let transport = match via {
        LoggerVia::Rpc => "rpc",
        LoggerVia::Http => "http",
    };
    assert_eq!(
        metrics::sum(
            &exposition,
            "switchboard_outbound_calls_total",
            &[
                ("downstream", "logger"),
                ("transport", transport),
                ("outcome", "ok")
            ]
        ),
        Some(3.0),
        "{exposition}"
    );

    // The queue is a durable quorum queue with the delivery limit.
    let rabbit = switchboard_testkit::RabbitMq::shared().expect("node");
    let queues = rabbit
        .rabbitmqctl(&[
            "list_queues",
            "-p",
            &vhost,
            "name",
            "type",
            "durable",
            "arguments",
        ])
        .expect("list_queues");
    let logs = queues
        .lines()
        .find(|line| line.starts_with("logs\t"))
        .unwrap_or_else(|| panic!("no logs queue in {queues}"));
    assert!(logs.contains("quorum"), "{logs}");
    assert!(logs.contains("true"), "{logs}");
    assert!(logs.contains("x-delivery-limit"), "{logs}");
    assert!(logs.contains("logs_topic.dlx"), "{logs}");

    publisher.close().await;
    listener.stop().await.expect("clean stop");
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_each_routing_key_are_stored_via_rpc() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    events_with_each_routing_key_are_stored(LoggerVia::Rpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_each_routing_key_are_stored_via_http() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    events_with_each_routing_key_are_stored(LoggerVia::Http).await;
}

/// Ack only after store: while the logger is down nothing leaves the queue
/// (and nothing is dead-lettered, even with a delivery limit of 2); once it is
/// back every event is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_while_the_logger_is_down() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    init_tracing();
    const EVENTS: u64 = 150;
    let (amqp_url, vhost) = fresh_vhost();
    let mut logger = Logger::not_started(logger_settings(&shared_mongo_url()));
    let mut settings = listener_settings(&amqp_url, logger.rpc, logger.http, LoggerVia::Rpc);
    settings.amqp.delivery_limit = 2;
    settings.amqp.prefetch = 16;
    let listener = Listener::spawn(settings.clone());
    // The listener declares the queue once it is consuming.
    wait_until_consuming(&amqp_url).await;

    let publisher = Publisher::connect(&amqp_url, "logs_topic").await;
    let name = event_name("outage");
    for i in 0..EVENTS {
        publisher
            .event(
                "log.INFO",
                &name,
                &format!("event {i}"),
                &format!("{name}-{i}"),
            )
            .await;
    }
    // Several probe rounds of the breaker go by.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Queue statistics lag by a few seconds; nothing acknowledged means the
    // total (ready + held by the listener) settles at every event published.
    let rabbit = switchboard_testkit::RabbitMq::shared().expect("node");
    let expected = format!("logs\t{EVENTS}");
    wait_for(
        "all events to be in the queue, ready or held",
        PATIENCE,
        || async {
            let depth = rabbit
                .rabbitmqctl(&["list_queues", "-p", &vhost, "name", "messages"])
                .expect("list_queues");
            depth.lines().any(|line| line == expected).then_some(())
        },
    )
    .await;
    // Stopped, the listener hands back what it held: all are ready again.
    listener.stop().await.expect("clean stop");
    assert_eq!(ready_messages(&amqp_url, "logs").await, Some(EVENTS as u32));
    assert_eq!(ready_messages(&amqp_url, "logs.dead").await, Some(0));

    // The logger comes back, then the listener: every event, exactly once.
    logger.start_again().await;
    let listener = Listener::spawn(settings.clone());
    let store = logger.store().await;
    store.wait_for_count(&name, EVENTS).await;

    // And with the listener running through an outage of the logger itself.
    logger.stop().await;
    let second = event_name("outage");
    for i in 0..EVENTS {
        publisher
            .event(
                "log.INFO",
                &second,
                &format!("event {i}"),
                &format!("{second}-{i}"),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(store.count_named(&second).await, 0);
    logger.start_again().await;
    store.wait_for_count(&second, EVENTS).await;
    wait_for("an empty queue", PATIENCE, || async {
        (ready_messages(&amqp_url, "logs").await == Some(0)).then_some(())
    })
    .await;
    assert_eq!(ready_messages(&amqp_url, "logs.dead").await, Some(0));
    assert_eq!(store.count_named(&name).await, EVENTS);
    publisher.close().await;
    listener.stop().await.expect("clean stop");
    logger.stop().await;
}

/// Bodies that can never be stored go to the dead-letter queue at once (one
/// delivery, no retries) with the reason in their headers, and the events
/// around them are still stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_dead_lettered_at_once() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let Rig {
        amqp_url,
        vhost: _,
        mut logger,
        listener,
        publisher,
    } = Rig::start(LoggerVia::Rpc).await;
    let name = event_name("good");
    let too_large = format!(
        r#"{{"name":"big","data":"{}"}}"#,
        "x".repeat(switchboard_listener::event::MAX_BODY_BYTES)
    );
    // Each with the (code, words in the reason) it must be dead-lettered with.
    let malformed: Vec<(&[u8], (&str, &str))> = vec![
        (b"this is not JSON", ("malformed", "not a JSON object")),
        (
            br#"{"name":"","data":"empty name"}"#,
            ("invalid", "invalid log entry: name must not be empty"),
        ),
        (
            br#"{"name":"no data"}"#,
            ("malformed", "missing field `data`"),
        ),
        (br#"["name","data"]"#, ("malformed", "found an array")),
        (
            too_large.as_bytes(),
            ("malformed", "the limit is 1048576 bytes"),
        ),
    ];
    publisher
        .event("log.INFO", &name, "before", &format!("{name}-1"))
        .await;
    for (body, _) in &malformed {
        publisher.publish("log.ERROR", body, None).await;
    }
    publisher
        .event("log.INFO", &name, "after", &format!("{name}-2"))
        .await;

    let store = logger.store().await;
    store.wait_for_count(&name, 2).await;
    let dead = wait_for("the dead letters", PATIENCE, || async {
        let dead = ready_messages(&amqp_url, "logs.dead").await?;
        (dead >= malformed.len() as u32).then_some(dead)
    })
    .await;
    assert_eq!(dead, malformed.len() as u32);
    let mut dead_letters = Vec::new();
    while let Some((body, headers)) = take_one(&amqp_url, "logs.dead").await {
        dead_letters.push((body, dead_letter_reason(&headers)));
    }
    for (body, (code, words)) in &malformed {
        let Some((_, (dead_code, reason))) = dead_letters.iter().find(|(dead, _)| dead == body)
        else {
            panic!("not dead-lettered: {:.60}", String::from_utf8_lossy(body));
        };
        assert_eq!(dead_code, code, "{reason}");
        assert!(reason.contains(words), "{reason:?} lacks {words:?}");
    }
    assert_eq!(store.count(doc! { "name": "big" }).await, 0);
    assert_eq!(store.count(doc! { "data": "empty name" }).await, 0);
    // Dead-lettered is counted after the dead letter's confirm.
    let dead_lettered = wait_for("the dead letters counted", PATIENCE, || async {
        let exposition = listener.scrape().await;
        let count = metrics::sample(
            &exposition,
            r#"switchboard_listener_deliveries_total{outcome="dead_lettered"}"#,
        );
        (count == Some(malformed.len() as f64)).then_some(count)
    })
    .await;
    assert_eq!(dead_lettered, Some(malformed.len() as f64));
    publisher.close().await;
    listener.stop().await.expect("clean stop");
    logger.stop().await;
}

/// An entry the logger refuses (over its data limit) is dead-lettered at
/// once: retrying cannot change the logger's verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_the_logger_refuses_is_dead_lettered_at_once() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    init_tracing();
    let (amqp_url, _) = fresh_vhost();
    let mut logger_settings = logger_settings(&shared_mongo_url());
    logger_settings.limits.max_data_bytes = 100;
    let mut logger = Logger::start(logger_settings).await;
    for via in [LoggerVia::Rpc, LoggerVia::Http] {
        let listener = Listener::spawn(listener_settings(&amqp_url, logger.rpc, logger.http, via));
        wait_until_consuming(&amqp_url).await;
        let publisher = Publisher::connect(&amqp_url, "logs_topic").await;
        let name = event_name("refused");
        publisher
            .event(
                "log.WARNING",
                &name,
                &"x".repeat(101),
                &format!("{name}-big"),
            )
            .await;
        publisher
            .event("log.WARNING", &name, "small", &format!("{name}-small"))
            .await;
        let store = logger.store().await;
        store.wait_for_count(&name, 1).await;
        let (body, headers) = wait_for("the refused entry in logs.dead", PATIENCE, || {
            take_one(&amqp_url, "logs.dead")
        })
        .await;
        assert!(String::from_utf8_lossy(&body).contains(&name), "{via:?}");
        assert_eq!(
            dead_letter_reason(&headers),
            (
                "invalid".to_owned(),
                "invalid log entry: data is 101 bytes long; the limit is 100 bytes".to_owned()
            ),
            "{via:?}"
        );
        publisher.close().await;
        listener.stop().await.expect("clean stop");
    }
    logger.stop().await;
}

/// Events without a `message_id` carry no idempotency id: two identical ones
/// are both stored (a content hash would have merged them into one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_events_without_message_id_are_all_stored() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let Rig {
        amqp_url: _,
        vhost: _,
        mut logger,
        listener,
        publisher,
    } = Rig::start(LoggerVia::Rpc).await;
    let name = event_name("click");
    let body = serde_json::json!({ "name": name, "data": "Some kind of data" }).to_string();
    publisher.publish("log.INFO", body.as_bytes(), None).await;
    publisher.publish("log.INFO", body.as_bytes(), None).await;
    logger.store().await.wait_for_count(&name, 2).await;
    publisher.close().await;
    listener.stop().await.expect("clean stop");
    logger.stop().await;
}

/// A queue that already exists with other arguments is an operator's
/// problem no retry can fix: the listener stops with an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_existing_queue_stops_the_listener_with_a_clear_error() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    init_tracing();
    let (amqp_url, _) = fresh_vhost();
    // An old deployment's queue: classic, no dead-letter exchange.
    let connection = lapin::Connection::connect(&amqp_url, Default::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_declare(
            "logs".into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("declare");
    let _ = connection.close(200, "done".into()).await;

    let logger = Logger::not_started(logger_settings(&shared_mongo_url()));
    let listener = Listener::spawn(listener_settings(
        &amqp_url,
        logger.rpc,
        logger.http,
        LoggerVia::Rpc,
    ));
    wait_for("the listener to give up", PATIENCE, || async {
        listener.is_finished().then_some(())
    })
    .await;
    let err = listener.stop().await.expect_err("conflict is fatal");
    let message = err.to_string();
    assert!(message.contains("\"logs\""), "{message}");
    assert!(message.contains("inequivalent arg"), "{message}");
}

/// The logger's store going down is an outage, not the messages' fault: with
/// a delivery limit of 2 and several probe rounds, nothing is dead-lettered,
/// and everything is stored once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_spends_no_deliveries() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    init_tracing();
    let (amqp_url, _) = fresh_vhost();
    let mut mongo = tokio::task::block_in_place(switchboard_testkit::MongoDb::start)
        .expect("a MongoDB-compatible server of its own");
    let mut logger = Logger::start(logger_settings(&mongo.url())).await;
    let mut settings = listener_settings(&amqp_url, logger.rpc, logger.http, LoggerVia::Rpc);
    settings.amqp.delivery_limit = 2;
    let listener = Listener::spawn(settings);
    wait_until_consuming(&amqp_url).await;
    let publisher = Publisher::connect(&amqp_url, "logs_topic").await;
    let store = logger.store().await;
    let name = event_name("storedown");
    publisher
        .event("log.INFO", &name, "before", &format!("{name}-0"))
        .await;
    store.wait_for_count(&name, 1).await;

    tokio::task::block_in_place(|| mongo.stop());
    for i in 1..=5 {
        publisher
            .event("log.ERROR", &name, "during", &format!("{name}-{i}"))
            .await;
    }
    // Probe rounds at about 0.1, 0.3, 0.7, 1.5, 3.1 s: more than the limit.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(ready_messages(&amqp_url, "logs.dead").await, Some(0));
    tokio::task::block_in_place(|| mongo.start_again()).expect("store starts again");
    store.wait_for_count(&name, 6).await;
    assert_eq!(ready_messages(&amqp_url, "logs.dead").await, Some(0));
    publisher.close().await;
    listener.stop().await.expect("clean stop");
    logger.stop().await;
}

/// A logger that stores everything except entries named `poison`, for which it
/// keeps answering "unavailable". The real logger has no way to fail one entry
/// while storing the others — which is the point: the delivery limit guards
/// against such a bug — so this one test talks to a stand-in that speaks the
/// real RPC protocol.
#[derive(Clone, Default)]
struct PoisonedLogger {
    stored: std::sync::Arc<std::sync::Mutex<Vec<switchboard_wire::LogEntry>>>,
    poison_attempts: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// Entries per `log_entries` call, in the order the calls arrived.
    batches: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    /// When set, every `log_entries` call takes a permit before it answers.
    gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

impl switchboard_wire::rpc::LogRpc for PoisonedLogger {
    async fn log_info(
        self,
        _: tarpc::context::Context,
        name: String,
        _data: String,
    ) -> Result<String, switchboard_wire::rpc::RpcError> {
        Ok(switchboard_wire::rpc::processed_reply(&name))
    }

    async fn log_entry(
        self,
        _: tarpc::context::Context,
        entry: switchboard_wire::LogEntry,
    ) -> Result<String, switchboard_wire::rpc::RpcError> {
        if entry.name == "refused" {
            return Err(switchboard_wire::rpc::RpcError::Invalid(
                "the stand-in refuses this one".into(),
            ));
        }
        if entry.name == "poison" {
            self.poison_attempts
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(switchboard_wire::rpc::RpcError::Unavailable(
                "cannot store this one".into(),
            ));
        }
        let reply = switchboard_wire::rpc::processed_reply(&entry.name);
        self.stored.lock().expect("lock").push(entry);
        Ok(reply)
    }

    /// Each entry as `log_entry` would answer it: the poison fails alone,
    /// its batch-mates are stored.
    async fn log_entries(
        self,
        ctx: tarpc::context::Context,
        entries: Vec<switchboard_wire::rpc::BatchedEntry>,
    ) -> Result<Vec<Result<String, switchboard_wire::rpc::RpcError>>, switchboard_wire::rpc::RpcError>
    {
        self.batches.lock().expect("lock").push(entries.len());
        if let Some(gate) = &self.gate {
            gate.acquire()
                .await
                .expect("the gate is never closed")
                .forget();
        }
        let mut outcomes = Vec::with_capacity(entries.len());
        for batched in entries {
            outcomes.push(self.clone().log_entry(ctx, batched.entry).await);
        }
        Ok(outcomes)
    }
}

async fn serve_poisoned_logger(logger: PoisonedLogger) -> std::net::SocketAddr {
    use futures::StreamExt;
    use switchboard_wire::rpc::LogRpc;
    use tarpc::server::{BaseChannel, Channel};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let logger = logger.clone();
            tokio::spawn(
                BaseChannel::with_defaults(switchboard_wire::rpc::transport(stream))
                    .execute(logger.serve())
                    .for_each(|call| async move {
                        tokio::spawn(call);
                    }),
            );
        }
    });
    addr
}

/// A message that fails while the logger stores the others is requeued until
/// the quorum queue's delivery limit dead-letters it; the rest flows on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_is_dead_lettered_after_the_delivery_limit() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    init_tracing();
    const LIMIT: u32 = 3;
    let (amqp_url, _) = fresh_vhost();
    let logger = PoisonedLogger::default();
    let rpc = serve_poisoned_logger(logger.clone()).await;
    let unused_http = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let mut settings = listener_settings(&amqp_url, rpc, unused_http, LoggerVia::Rpc);
    settings.amqp.delivery_limit = LIMIT;
    let listener = Listener::spawn(settings);
    wait_until_consuming(&amqp_url).await;
    let publisher = Publisher::connect(&amqp_url, "logs_topic").await;
    publisher
        .event("log.ERROR", "poison", "bad", "poison-1")
        .await;

    // Other events keep flowing while the poison message is retried.
    let name = event_name("flowing");
    let mut published = 0u32;
    let (_, headers) = wait_for("the poison message in logs.dead", PATIENCE, || {
        published += 1;
        let event = (name.clone(), format!("{name}-{published}"));
        let (publisher, amqp_url) = (&publisher, &amqp_url);
        async move {
            publisher
                .event("log.INFO", &event.0, "good", &event.1)
                .await;
            take_one(amqp_url, "logs.dead").await
        }
    })
    .await;
    assert_eq!(death(&headers), ("delivery_limit".to_owned(), 1));
    let attempts = logger
        .poison_attempts
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        attempts > LIMIT,
        "{attempts} attempts for a limit of {LIMIT}"
    );
    wait_for("every good event stored", PATIENCE, || async {
        let stored = logger.stored.lock().expect("lock");
        let good = stored.iter().filter(|entry| entry.name == name).count();
        (good == published as usize).then_some(())
    })
    .await;
    // Stored once each: the ids are distinct.
    let stored = logger.stored.lock().expect("lock").clone();
    let mut ids: Vec<_> = stored.iter().filter_map(|entry| entry.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), published as usize);
    publisher.close().await;
    listener.stop().await.expect("clean stop");
}

/// Deliveries that arrive while a call to the logger runs go out together in
/// the next `log_entries` call, and each is settled on its own: the stored
/// ones acked, the one the logger refuses dead-lettered alone, with its own
/// reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_flight_are_forwarded_in_batches_and_settled_one_by_one() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    init_tracing();
    const EVENTS: usize = 100;
    let (amqp_url, _) = fresh_vhost();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let logger = PoisonedLogger {
        gate: Some(gate.clone()),
        ..PoisonedLogger::default()
    };
    let rpc = serve_poisoned_logger(logger.clone()).await;
    let unused_http = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let mut settings = listener_settings(&amqp_url, rpc, unused_http, LoggerVia::Rpc);
    settings.logger.batch_max = 64;
    settings.logger.batch_calls = 1;
    let listener = Listener::spawn(settings);
    wait_until_consuming(&amqp_url).await;
    let publisher = Publisher::connect(&amqp_url, "logs_topic").await;
    let name = event_name("batched");
    publisher
        .event("log.INFO", &name, "first", &format!("{name}-first"))
        .await;
    // The first event's call is held at the gate; everything published now
    // is delivered (prefetch 256) and waits for the next call.
    wait_for("the first call at the logger", PATIENCE, || async {
        (!logger.batches.lock().expect("lock").is_empty()).then_some(())
    })
    .await;
    for at in 1..EVENTS {
        publisher
            .event("log.INFO", &name, "good", &format!("{name}-{at}"))
            .await;
    }
    publisher
        .event("log.INFO", "refused", "bad", &format!("{name}-refused"))
        .await;
    wait_for(
        "every event delivered to the listener",
        PATIENCE,
        || async { (ready_messages(&amqp_url, "logs").await? == 0).then_some(()) },
    )
    .await;
    gate.add_permits(1_000);

    wait_for("every good event stored", PATIENCE, || async {
        let stored = logger.stored.lock().expect("lock");
        (stored.iter().filter(|entry| entry.name == name).count() == EVENTS).then_some(())
    })
    .await;
    let batches = logger.batches.lock().expect("lock").clone();
    assert_eq!(batches[0], 1, "a lone event goes out at once: {batches:?}");
    assert!(
        batches.iter().any(|&size| size > 1) && batches.len() < EVENTS / 4,
        "{EVENTS} events in {} calls: {batches:?}",
        batches.len()
    );
    assert!(batches.iter().all(|&size| size <= 64), "{batches:?}");
    let (body, headers) = wait_for("the refused event in logs.dead", PATIENCE, || {
        take_one(&amqp_url, "logs.dead")
    })
    .await;
    assert!(String::from_utf8_lossy(&body).contains("refused"));
    assert_eq!(
        dead_letter_reason(&headers),
        (
            "invalid".to_owned(),
            "invalid log entry: the stand-in refuses this one".to_owned()
        )
    );
    publisher.close().await;
    listener.stop().await.expect("clean stop");
    assert_eq!(passive_declare(&amqp_url, "logs").await, Some((0, 0)));
}

/// A classic queue left by an older deployment, with the dead-letter exchange
/// the listener wants, is used as it is (with a warning): events are stored
/// and malformed ones still reach the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_classic_queue_is_used_as_a_fallback() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    init_tracing();
    let (amqp_url, vhost) = fresh_vhost();
    let connection = lapin::Connection::connect(&amqp_url, Default::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let mut arguments = lapin::types::FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        lapin::types::AMQPValue::LongString("logs_topic.dlx".into()),
    );
    channel
        .queue_declare(
            "logs".into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .expect("declare");
    let _ = connection.close(200, "done".into()).await;

    let queues = one_event_and_one_dead_letter(&amqp_url, &vhost, "classic").await;
    assert!(
        queues.lines().any(|line| line == "logs\tclassic"),
        "{queues}"
    );
}

/// The queues an earlier version declared (`logs` a quorum queue without
/// `x-quorum-initial-group-size`, `logs.dead` a classic queue) are used as
/// they are: RabbitMQ refuses a redeclare with another group size, so the
/// listener declares them again the old way instead of stopping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_of_an_earlier_version_are_used_as_they_are() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    init_tracing();
    let (amqp_url, vhost) = fresh_vhost();
    let connection = lapin::Connection::connect(&amqp_url, Default::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let durable = lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut arguments = lapin::types::FieldTable::default();
    for (key, value) in [
        ("x-dead-letter-exchange", "logs_topic.dlx"),
        ("x-queue-type", "quorum"),
    ] {
        arguments.insert(
            key.into(),
            lapin::types::AMQPValue::LongString(value.into()),
        );
    }
    arguments.insert(
        "x-delivery-limit".into(),
        lapin::types::AMQPValue::LongLongInt(10),
    );
    channel
        .queue_declare("logs".into(), durable, arguments)
        .await
        .expect("the old work queue");
    channel
        .queue_declare("logs.dead".into(), durable, Default::default())
        .await
        .expect("the old dead-letter queue");
    let _ = connection.close(200, "done".into()).await;

    let queues = one_event_and_one_dead_letter(&amqp_url, &vhost, "upgrade").await;
    assert!(
        queues.lines().any(|line| line == "logs\tquorum"),
        "{queues}"
    );
    assert!(
        queues.lines().any(|line| line == "logs.dead\tclassic"),
        "{queues}"
    );
}

/// Runs the logger and the listener on `amqp_url` until one event named
/// after `label` is stored and one malformed message is dead-lettered, and
/// returns the queues of `vhost` with their types (`rabbitmqctl list_queues
/// name type`).
async fn one_event_and_one_dead_letter(amqp_url: &str, vhost: &str, label: &str) -> String {
    let (mut logger, listener) = start_logger_and_listener(amqp_url).await;
    let publisher = Publisher::connect(amqp_url, "logs_topic").await;
    let name = event_name(label);
    publisher
        .event("log.INFO", &name, "one event", &format!("{name}-1"))
        .await;
    publisher.publish("log.INFO", b"not an event", None).await;
    logger.store().await.wait_for_count(&name, 1).await;
    wait_for("the dead letter", PATIENCE, || async {
        (ready_messages(amqp_url, "logs.dead").await == Some(1)).then_some(())
    })
    .await;
    let queues = switchboard_testkit::RabbitMq::shared()
        .expect("node")
        .rabbitmqctl(&["list_queues", "-p", vhost, "name", "type"])
        .expect("list_queues");
    publisher.close().await;
    listener.stop().await.expect("clean stop");
    logger.stop().await;
    queues
}

/// A fresh vhost gets both queues as quorum queues, the dead-letter queue
/// too, so that dead letters survive a node of a cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_vhost_gets_two_quorum_queues() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    init_tracing();
    let (amqp_url, vhost) = fresh_vhost();
    let (mut logger, listener) = start_logger_and_listener(&amqp_url).await;
    let rabbit = switchboard_testkit::RabbitMq::shared().expect("node");
    let queues = rabbit
        .rabbitmqctl(&["list_queues", "-p", &vhost, "name", "type", "arguments"])
        .expect("list_queues");
    for queue in ["logs", "logs.dead"] {
        let line = queues
            .lines()
            .find(|line| line.starts_with(&format!("{queue}\t")))
            .unwrap_or_else(|| panic!("no {queue} in {queues}"));
        assert!(line.contains("\tquorum\t"), "{line}");
        assert!(line.contains("x-quorum-initial-group-size"), "{line}");
    }
    listener.stop().await.expect("clean stop");
    logger.stop().await;
}
