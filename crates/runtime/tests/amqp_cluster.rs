//! The runtime's AMQP connection on a real 3-node RabbitMQ cluster: a
//! publisher's [`ConfirmChannel`] connected to one node keeps publishing with
//! confirms after that node is SIGKILLed (lapin's recovery, through the
//! connector, goes to another node), and a connector without recovery opens
//! its next connection on a node that answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use switchboard_runtime::Shutdown;
use switchboard_runtime::amqp::link::Message;
use switchboard_runtime::amqp::{AmqpEndpoint, ConfirmChannel, Connector, LinkState, Outcome};
use switchboard_testkit::{RabbitMqCluster, servers_disabled};

const EXCHANGE: &str = "events";
const QUEUE: &str = "replicated";

/// Declares the exchange and a quorum queue bound to it through node 0, so
/// node 0 leads the queue.
async fn declare(url: &str) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect to node 0");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments.insert(
        "x-quorum-initial-group-size".into(),
        AMQPValue::LongLongInt(3),
    );
    channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .expect("queue");
    channel
        .queue_bind(
            QUEUE.into(),
            EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    connection.close(200, "bye".into()).await.ok();
}

fn message(body: &[u8]) -> Message<'_> {
    Message {
        routing_key: "log.INFO",
        body,
        properties: BasicProperties::default().with_delivery_mode(2),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confirm_channel_moves_to_another_node_when_its_node_is_killed() {
    if servers_disabled() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_test_writer()
        .try_init();
    let mut cluster = tokio::task::spawn_blocking(|| RabbitMqCluster::start(3))
        .await
        .expect("start thread")
        .expect("the cluster starts");
    let vhost = cluster.create_vhost().expect("vhost");
    let url = format!(
        "amqp://guest:guest@127.0.0.1:{}/{vhost}",
        cluster.node(0).amqp_port()
    );
    declare(&url).await;
    let endpoint = AmqpEndpoint::parse("amqp.url", &url, None)
        .expect("valid URL")
        .with_nodes("amqp.nodes", &cluster.addresses().join(","))
        .expect("valid nodes");
    assert_eq!(endpoint.nodes().len(), 3);
    let connector = Connector::new(endpoint, "cluster-test", Duration::from_secs(5));
    let channel = Arc::new(ConfirmChannel::new(connector.clone(), EXCHANGE));
    let stop = Shutdown::new();
    let supervisor = tokio::spawn(channel.clone().supervise(stop.clone()));
    let mut states = channel.watch_state();
    tokio::time::timeout(
        Duration::from_secs(20),
        states.wait_for(|state| *state == LinkState::Connected),
    )
    .await
    .expect("connected in time")
    .expect("state");
    assert_eq!(
        connector.node().map(ToString::to_string),
        Some(format!("127.0.0.1:{}", cluster.node(0).amqp_port()))
    );
    assert_eq!(
        channel.publish(&message(b"before")).await.expect("publish"),
        Outcome::Confirmed
    );

    let killed = Instant::now();
    tokio::task::block_in_place(|| cluster.kill(0)).expect("kill node 0");
    let mut outcomes = Vec::new();
    let confirmed_again = loop {
        let attempt = Instant::now();
        let outcome =
            tokio::time::timeout(Duration::from_secs(5), channel.publish(&message(b"after"))).await;
        eprintln!(
            "{:>6} ms after the kill: {outcome:?} (took {} ms)",
            killed.elapsed().as_millis(),
            attempt.elapsed().as_millis(),
        );
        if matches!(outcome, Ok(Ok(Outcome::Confirmed))) {
            break killed.elapsed();
        }
        outcomes.push(format!("{outcome:?}"));
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "no confirm within 10 s of the kill: {} refusals, the last {:?}",
            outcomes.len(),
            outcomes.last()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let node = connector.node().map(ToString::to_string);
    eprintln!("confirmed again {confirmed_again:?} after the kill, on {node:?}");
    assert_ne!(
        node,
        Some(format!("127.0.0.1:{}", cluster.node(0).amqp_port())),
        "the connection moved"
    );

    // A connector without recovery: its next connection skips the dead node.
    let endpoint = AmqpEndpoint::parse("amqp.url", &url, None)
        .expect("valid URL")
        .with_nodes("amqp.nodes", &cluster.addresses().join(","))
        .expect("valid nodes");
    let plain =
        Connector::new(endpoint, "cluster-test-plain", Duration::from_secs(5)).without_recovery();
    let connection = plain.connect().await.expect("a live node");
    assert!(connection.status().connected());
    assert_ne!(
        plain.node().map(|node| node.port),
        Some(cluster.node(0).amqp_port())
    );
    connection.close(200, "bye".into()).await.ok();

    stop.trigger();
    supervisor.await.expect("supervisor");
    tokio::task::block_in_place(|| drop(cluster));
}
