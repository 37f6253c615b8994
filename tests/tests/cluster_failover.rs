//! The AMQP path on a 3-node RabbitMQ cluster while the node that leads the
//! `logs` quorum queue is SIGKILLed under load and later restarted.
//!
//! Broker, auth and listener get the cluster as their URL's node plus
//! `…nodes`; all three start on node 0, where the listener's declare puts the
//! queue's leader, so the kill takes every client's connection and the
//! queue's leader at once. 5,000 events go through the broker (`via: amqp`,
//! 16 at a time, no client ids, so the broker picks each message id and any
//! duplicate the pipeline made would be stored twice); a request that is not
//! accepted is not repeated (a client's retry would be a new event). Then:
//! every event accepted with 202 is stored exactly once, one that was not is
//! stored at most once, a login after the kill still reaches the store
//! through auth's events, and no service process was restarted. The longest
//! gap between two accepted publishes is printed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use switchboard_testkit::{RabbitMqCluster, servers_disabled, unique_name};
use switchboard_tests::{
    DEV_USER_EMAIL, DEV_USER_PASSWORD, Dependency, ServiceName, Stack, blocking, client,
    log_action, logs_named, post_json, stack_options, start_stack, stop, with_logs,
};

const EVENTS: usize = 5000;
const CONCURRENCY: usize = 16;
const READ_LIMIT: u32 = 10_000;
const QUEUE: &str = "logs";
/// The kill comes once a third of the events were accepted, the restart once
/// two thirds were (or this long after the kill, should publishing stall).
const RESTART_AFTER: Duration = Duration::from_secs(20);
/// A client that was refused waits this long before its next event.
const PAUSE_AFTER_REFUSAL: Duration = Duration::from_millis(50);
const DELIVERY: Duration = Duration::from_secs(180);
const SERVICES: [ServiceName; 4] = [
    ServiceName::Broker,
    ServiceName::Auth,
    ServiceName::Logger,
    ServiceName::Listener,
];

/// What the load saw: when each 202 came, and every other answer.
#[derive(Default)]
struct Load {
    accepted: Mutex<Vec<(Instant, usize)>>,
    refused: Mutex<Vec<(usize, u16, String)>>,
    accepted_count: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_queue_leaders_node_under_load_loses_and_duplicates_nothing() {
    if servers_disabled() {
        return;
    }
    let started = Instant::now();
    let cluster = blocking(|| RabbitMqCluster::start(3))
        .await
        .unwrap_or_else(|err| panic!("the RabbitMQ cluster did not start: {err}"));
    let cluster = Arc::new(Mutex::new(cluster));
    let (vhost, url, others) = {
        let cluster = Arc::clone(&cluster);
        blocking(move || {
            let cluster = cluster.lock().unwrap_or_else(|p| p.into_inner());
            let vhost = cluster.create_vhost().expect("a vhost on the cluster");
            let url = format!(
                "amqp://guest:guest@127.0.0.1:{}/{vhost}",
                cluster.node(0).amqp_port()
            );
            (vhost, url, cluster.addresses()[1..].join(", "))
        })
        .await
    };
    eprintln!(
        "cluster of 3 up in {:?}; nodes after node 0: {others}",
        started.elapsed()
    );

    let options = stack_options()
        .services(SERVICES)
        .external(Dependency::RabbitMq)
        .setting(ServiceName::Broker, "events.amqp_url", &url)
        .setting(ServiceName::Broker, "events.amqp_nodes", &others)
        .setting(ServiceName::Broker, "limits.rate_per_second", 0)
        .setting(ServiceName::Auth, "events.amqp_url", &url)
        .setting(ServiceName::Auth, "events.amqp_nodes", &others)
        .setting(ServiceName::Listener, "amqp.url", &url)
        .setting(ServiceName::Listener, "amqp.nodes", &others)
        .setting(ServiceName::Logger, "limits.max_read_limit", READ_LIMIT);
    let stack = Arc::new(blocking(move || start_stack(options)).await);
    let pids: Vec<Option<u32>> = SERVICES
        .iter()
        .map(|service| stack.service_pid(*service))
        .collect();
    let leader = {
        let cluster = Arc::clone(&cluster);
        let vhost = vhost.clone();
        blocking(move || {
            let cluster = cluster.lock().unwrap_or_else(|p| p.into_inner());
            cluster.wait_for_leader(&vhost, QUEUE, Duration::from_secs(30))
        })
        .await
        .expect("the listener declared the logs queue")
    };
    eprintln!(
        "stack up after {:?}; node {leader} leads {QUEUE}",
        started.elapsed()
    );

    let client = client();
    let name = unique_name("cluster");
    let load = Arc::new(Load::default());
    let publishing = tokio::spawn(publish(
        client.clone(),
        Arc::clone(&stack),
        name.clone(),
        Arc::clone(&load),
    ));

    // The kill, once a third is accepted.
    wait_for_accepted(&load, EVENTS / 3, Duration::from_secs(120)).await;
    let killed_at = Instant::now();
    let killed = {
        let cluster = Arc::clone(&cluster);
        let vhost = vhost.clone();
        blocking(move || {
            let mut cluster = cluster.lock().unwrap_or_else(|p| p.into_inner());
            let leader = cluster
                .queue_leader(&vhost, QUEUE)
                .expect("list_queues")
                .expect("the queue has a leader");
            cluster.kill(leader).expect("SIGKILL the leader's node");
            leader
        })
        .await
    };
    let accepted_at_kill = load.accepted_count.load(Ordering::Relaxed);
    eprintln!("SIGKILLed node {killed} (the leader of {QUEUE}) after {accepted_at_kill} accepted");

    // A login after the kill: auth's event has to find another node.
    let login = post_json(
        &client,
        &format!("{}/handle", stack.broker_url()),
        &json!({"action": "auth", "auth": {"email": DEV_USER_EMAIL, "password": DEV_USER_PASSWORD}}),
    )
    .await;
    assert_eq!(login.status, 202, "login after the kill: {:?}", login.body);

    // The restart, once two thirds are accepted.
    let _ = tokio::time::timeout(
        RESTART_AFTER,
        wait_for_accepted(&load, EVENTS * 2 / 3, RESTART_AFTER),
    )
    .await;
    let restart_began = killed_at.elapsed();
    let rejoin = {
        let cluster = Arc::clone(&cluster);
        blocking(move || {
            let started = Instant::now();
            let mut cluster = cluster.lock().unwrap_or_else(|p| p.into_inner());
            cluster.restart(killed).map(|()| started.elapsed())
        })
        .await
        .unwrap_or_else(|err| panic!("node {killed} did not rejoin: {err}"))
    };
    let new_leader = {
        let cluster = Arc::clone(&cluster);
        let vhost = vhost.clone();
        blocking(move || {
            let cluster = cluster.lock().unwrap_or_else(|p| p.into_inner());
            cluster.queue_leader(&vhost, QUEUE)
        })
        .await
    };
    eprintln!(
        "node {killed} restarted {restart_began:?} after the kill, a member again after {rejoin:?}; {QUEUE} leader now {new_leader:?}"
    );

    publishing.await.expect("the load finished");
    let publish_time = killed_at.elapsed();
    let accepted: Vec<(Instant, usize)> = std::mem::take(&mut *lock(&load.accepted));
    let refused: Vec<(usize, u16, String)> = std::mem::take(&mut *lock(&load.refused));
    let (gap, gap_end) = longest_gap(&accepted);
    let mut refusals: HashMap<u16, usize> = HashMap::new();
    for (_, status, _) in &refused {
        *refusals.entry(*status).or_default() += 1;
    }
    eprintln!(
        "accepted {} of {EVENTS}; not accepted {} by status {refusals:?} (e.g. {:?}); \
         longest gap between accepted publishes {gap:?}, ending {:?} after the kill",
        accepted.len(),
        refused.len(),
        refused.first(),
        gap_end.map(|end| end.saturating_duration_since(killed_at)),
    );

    // Every accepted event stored exactly once, the others at most once.
    let accepted_events: Vec<usize> = accepted.iter().map(|(_, index)| *index).collect();
    let stored = wait_until_stored(&client, &stack, &name, &accepted_events).await;
    let mut lost = Vec::new();
    let mut duplicated = Vec::new();
    for index in &accepted_events {
        match stored.get(&data(*index)).copied().unwrap_or(0) {
            0 => lost.push(*index),
            1 => {}
            _ => duplicated.push(*index),
        }
    }
    for (index, _, _) in &refused {
        if stored.get(&data(*index)).copied().unwrap_or(0) > 1 {
            duplicated.push(*index);
        }
    }
    let stored_total: usize = stored.values().sum();
    eprintln!(
        "stored {stored_total} documents: {} accepted events lost, {} events duplicated; \
         {} not-accepted events stored anyway (their publish reached the queue)",
        lost.len(),
        duplicated.len(),
        stored_total.saturating_sub(accepted_events.len()),
    );
    assert!(
        lost.is_empty() && duplicated.is_empty(),
        "{}",
        with_logs(
            &stack,
            &[ServiceName::Broker, ServiceName::Listener],
            &format!("lost (accepted, not stored): {lost:?}; duplicated: {duplicated:?}")
        )
    );
    assert!(
        accepted.len() >= EVENTS * 9 / 10,
        "{}",
        with_logs(
            &stack,
            &[ServiceName::Broker],
            &format!(
                "only {} of {EVENTS} accepted: the failover refused too many",
                accepted.len()
            )
        )
    );

    // Auth's login event went out through another node.
    let email = DEV_USER_EMAIL.to_ascii_lowercase();
    let logins = logs_named(&client, &stack, "authentication", 100).await;
    assert!(
        logins
            .iter()
            .any(|entry| entry["data"] == format!("{email} logged in")),
        "{}",
        with_logs(
            &stack,
            &[ServiceName::Auth],
            "the login after the kill was not stored"
        )
    );

    // Nobody was restarted: every service is the process it started as.
    let now: Vec<Option<u32>> = SERVICES
        .iter()
        .map(|service| stack.service_pid(*service))
        .collect();
    assert_eq!(
        now, pids,
        "service processes (broker, auth, logger, listener)"
    );
    eprintln!(
        "published for {publish_time:?} after the kill; whole test {:?}",
        started.elapsed()
    );

    stop(stack).await;
    blocking(move || drop(cluster)).await;
}

/// Sends the events, `CONCURRENCY` at a time; a refused event is recorded,
/// not repeated, and its client pauses briefly.
async fn publish(client: reqwest::Client, stack: Arc<Stack>, name: String, load: Arc<Load>) {
    let url = format!("{}/handle", stack.broker_url());
    futures::stream::iter(0..EVENTS)
        .for_each_concurrent(CONCURRENCY, |index| {
            let (client, url, load) = (client.clone(), url.clone(), Arc::clone(&load));
            let body = log_action(&name, &data(index), Some("amqp"));
            async move {
                let reply = post_json(&client, &url, &body).await;
                if reply.status == 202 {
                    lock(&load.accepted).push((Instant::now(), index));
                    load.accepted_count.fetch_add(1, Ordering::Relaxed);
                } else {
                    lock(&load.refused).push((index, reply.status, reply.message().to_owned()));
                    tokio::time::sleep(PAUSE_AFTER_REFUSAL).await;
                }
            }
        })
        .await;
}

fn data(index: usize) -> String {
    format!("event {index}")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn wait_for_accepted(load: &Load, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while load.accepted_count.load(Ordering::Relaxed) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The longest time between two consecutive 202s (from the first to the
/// last), and when it ended.
fn longest_gap(accepted: &[(Instant, usize)]) -> (Duration, Option<Instant>) {
    let mut times: Vec<Instant> = accepted.iter().map(|(at, _)| *at).collect();
    times.sort();
    times
        .windows(2)
        .map(|pair| (pair[1] - pair[0], Some(pair[1])))
        .max_by_key(|(gap, _)| *gap)
        .unwrap_or((Duration::ZERO, None))
}

/// Polls the logger until every accepted event is stored (or `DELIVERY`
/// passes), waits a little for late redeliveries, and returns how often each
/// `data` is stored.
async fn wait_until_stored(
    client: &reqwest::Client,
    stack: &Stack,
    name: &str,
    accepted: &[usize],
) -> HashMap<String, usize> {
    let counts = async || {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for entry in logs_named(client, stack, name, READ_LIMIT).await {
            let text = entry["data"].as_str().unwrap_or_default().to_owned();
            *counts.entry(text).or_default() += 1;
        }
        counts
    };
    let deadline = Instant::now() + DELIVERY;
    loop {
        let stored = counts().await;
        let all = accepted
            .iter()
            .all(|index| stored.contains_key(&data(*index)));
        if all || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A redelivery of a message whose ack was lost would show up late.
    tokio::time::sleep(Duration::from_secs(2)).await;
    counts().await
}
