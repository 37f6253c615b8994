//! The listener survives RabbitMQ going away — stopped gracefully or killed —
//! and resumes consuming by itself, without losing what was in the queue.
//! Uses a RabbitMQ node of its own, since it stops it.

mod common;

use std::time::Duration;

use common::*;
use switchboard_testkit::RabbitMq;

async fn publish_events(url: &str, name: &str, count: usize) {
    let publisher = Publisher::connect(url, "logs_topic").await;
    for i in 0..count {
        publisher
            .event(
                "log.INFO",
                name,
                &format!("event {i}"),
                &format!("{name}-{i}"),
            )
            .await;
    }
    publisher.close().await;
}

/// SIGKILL of the node's whole process group (the wrapper leads it; beam.smp
/// is in it), as an OOM kill or a power cut would do.
fn kill_node(rabbit: &RabbitMq) {
    let pid = rabbit.pid().expect("node running");
    let group = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid");
    rustix::process::kill_process_group(group, rustix::process::Signal::KILL).expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_resumes_by_itself_after_rabbitmq_restarts() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    init_tracing();
    let mut rabbit = tokio::task::block_in_place(RabbitMq::start).expect("RabbitMQ starts");
    let amqp_url = rabbit.amqp_url();
    let (mut logger, listener) = start_logger_and_listener(&amqp_url).await;
    let store = logger.store().await;

    let before = event_name("before");
    publish_events(&amqp_url, &before, 10).await;
    store.wait_for_count(&before, 10).await;

    // 1. A graceful stop and start of the node.
    tokio::task::block_in_place(|| {
        rabbit.stop();
        std::thread::sleep(Duration::from_secs(1));
        rabbit.start_again()
    })
    .expect("RabbitMQ starts again");
    wait_until_consuming(&amqp_url).await;
    let after_restart = event_name("restart");
    publish_events(&amqp_url, &after_restart, 10).await;
    store.wait_for_count(&after_restart, 10).await;

    // 2. The node is killed while events wait in the queue (the logger is
    // down, so the listener holds some of them unacknowledged).
    logger.stop().await;
    let across_kill = event_name("kill");
    publish_events(&amqp_url, &across_kill, 100).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| {
        kill_node(&rabbit);
        rabbit.stop(); // reaps the dead group and stops epmd
        std::thread::sleep(Duration::from_secs(1));
        rabbit.start_again()
    })
    .expect("RabbitMQ starts again after SIGKILL");
    logger.start_again().await;
    wait_until_consuming(&amqp_url).await;
    store.wait_for_count(&across_kill, 100).await;
    let after_kill = event_name("afterkill");
    publish_events(&amqp_url, &after_kill, 10).await;
    store.wait_for_count(&after_kill, 10).await;

    // Nothing stored twice, nothing left behind, nothing dead-lettered.
    assert_eq!(store.count_named(&before).await, 10);
    assert_eq!(store.count_named(&after_restart).await, 10);
    wait_for("an empty queue", PATIENCE, || async {
        (ready_messages(&amqp_url, "logs").await == Some(0)).then_some(())
    })
    .await;
    assert_eq!(ready_messages(&amqp_url, "logs.dead").await, Some(0));
    assert!(!listener.is_finished());
    listener.stop().await.expect("clean stop");
    logger.stop().await;
}
