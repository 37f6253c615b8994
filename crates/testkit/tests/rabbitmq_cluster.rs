//! The 3-node RabbitMQ cluster of the test kit against a real client: the
//! nodes form one cluster, a quorum queue gets a member on each, the killed
//! leader's queue elects another leader and keeps its messages, and the
//! restarted node rejoins. Then everything is gone on drop.

use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use switchboard_testkit::{RabbitMqCluster, process_alive, servers_disabled};

const QUEUE: &str = "replicated";

fn quorum_arguments(group_size: Option<i64>) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(size) = group_size {
        arguments.insert(
            "x-quorum-initial-group-size".into(),
            AMQPValue::LongLongInt(size),
        );
    }
    arguments
}

async fn connect(port: u16, vhost: &str) -> Connection {
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/{vhost}");
    Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|err| panic!("connecting to {url}: {err}"))
}

async fn declare(connection: &Connection, group_size: Option<i64>) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            quorum_arguments(group_size),
        )
        .await?;
    Ok(())
}

fn members(cluster: &RabbitMqCluster, vhost: &str) -> Vec<String> {
    let text = cluster
        .rabbitmqctl(&[
            "list_queues",
            "-p",
            vhost,
            "name",
            "members",
            "--formatter",
            "json",
        ])
        .expect("list_queues");
    let queues: serde_json::Value = serde_json::from_str(text.trim()).expect("JSON");
    let mut members: Vec<String> = queues
        .as_array()
        .into_iter()
        .flatten()
        .find(|queue| queue["name"] == QUEUE)
        .and_then(|queue| queue["members"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|member| member.as_str().map(str::to_owned))
        .collect();
    members.sort();
    members
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_replicate_a_quorum_queue_through_a_killed_leader() {
    if servers_disabled() {
        return;
    }
    let started = Instant::now();
    let mut cluster = tokio::task::spawn_blocking(|| RabbitMqCluster::start(3))
        .await
        .expect("start thread")
        .expect("the cluster starts");
    eprintln!("3-node cluster up in {:?}", started.elapsed());
    assert_eq!(cluster.len(), 3);
    let mut names: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|node| node.node_name().to_owned())
        .collect();
    names.sort();
    let mut running = cluster.running_members().expect("cluster_status");
    running.sort();
    assert_eq!(running, names, "every node is a running member");

    let vhost = cluster.create_vhost().expect("vhost");
    let ports = cluster.amqp_ports();
    // Declared through node 1: a quorum queue's leader starts on the
    // declaring client's node.
    let connection = connect(ports[1], &vhost).await;
    declare(&connection, Some(3)).await.expect("quorum declare");
    assert_eq!(members(&cluster, &vhost), names, "a member on every node");
    let leader = cluster
        .wait_for_leader(&vhost, QUEUE, Duration::from_secs(10))
        .expect("a leader");
    assert_eq!(leader, 1, "the declaring client's node leads");

    // RabbitMQ refuses a redeclare whose initial group size differs, also
    // one without it (what the listener's topology works around).
    let without = connect(ports[0], &vhost).await;
    for other in [None, Some(5)] {
        let refused = declare(&without, other).await.expect_err("inequivalent");
        assert!(
            refused
                .to_string()
                .contains("inequivalent arg 'x-quorum-initial-group-size'"),
            "{refused}"
        );
    }

    // A persistent, confirmed message survives its leader's SIGKILL.
    let publisher = connect(ports[2], &vhost).await;
    let channel = publisher.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let confirm = channel
        .basic_publish(
            "".into(),
            QUEUE.into(),
            BasicPublishOptions::default(),
            b"kept",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "{confirm:?}");
    connection.close(200, "bye".into()).await.ok();

    let pid = cluster.node(1).pid().expect("running");
    let killed = Instant::now();
    cluster.kill(1).expect("kill");
    assert!(!process_alive(pid), "the node's wrapper is gone");
    let new_leader = tokio::task::block_in_place(|| {
        cluster.wait_for_leader(&vhost, QUEUE, Duration::from_secs(60))
    });
    let new_leader = new_leader.expect("a new leader");
    eprintln!(
        "node 1 killed; node {new_leader} leads after {:?}",
        killed.elapsed()
    );
    assert_ne!(new_leader, 1);
    let got = channel
        .basic_get(QUEUE.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("the message is still there");
    assert_eq!(got.delivery.data, b"kept");

    let restarted = Instant::now();
    tokio::task::block_in_place(|| cluster.restart(1)).expect("node 1 rejoins");
    eprintln!("node 1 rejoined in {:?}", restarted.elapsed());
    let mut running = cluster.running_members().expect("cluster_status");
    running.sort();
    assert_eq!(
        running, names,
        "the restarted node is a running member again"
    );
    publisher.close(200, "bye".into()).await.ok();
    without.close(200, "bye".into()).await.ok();

    let dirs: Vec<_> = cluster
        .nodes()
        .iter()
        .map(|node| node.dir().to_owned())
        .collect();
    let pids: Vec<u32> = cluster
        .nodes()
        .iter()
        .filter_map(|node| node.pid())
        .collect();
    drop(cluster);
    for pid in pids {
        assert!(!process_alive(pid), "node {pid} outlived the cluster");
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} outlived the cluster", dir.display());
    }
}
