//! Two logger instances behind one store, reached by the broker over RPC,
//! gRPC and HTTP, while one of them is SIGKILLed under load.
//!
//! The stack runs the logger twice ([`StackOptions::instances`]): the broker
//! gets the first instance's doors as its single-address settings and the
//! second's in `downstream.logger_*_addrs|urls`. 3,000 log requests go
//! through the broker, 16 at a time, a third over each transport, without
//! client ids (so the broker assigns each entry its id, and a retry that
//! stored twice would show as two documents). Once a third have been
//! answered the second instance's process is SIGKILLed: its open
//! connections break with calls in flight. Two cases:
//!
//! - its host went: the sockets are closed too, so connects are refused;
//!   the retries on the first logger leave no request failed (at most 1%
//!   is allowed);
//! - only the process died and the stack holds its sockets, as systemd does
//!   (until it restarts the unit): connects still succeed and calls wait
//!   unanswered in the backlog, so a request sent there before the broker
//!   noticed (gRPC: the health watcher's probe, RPC and HTTP: the first
//!   timeout, then one trial per back-off) runs into its deadline (504).
//!
//! A request that is not answered with 202 is not repeated. Then: every
//! request answered 202 is stored exactly once, every other at most once,
//! and the failures around the kill are counted and printed by transport.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard_testkit::{metrics, servers_disabled, unique_name};
use switchboard_tests::{
    ServiceName, Signal, Stack, blocking, client, get, log_action, logs_named, on, post_json,
    stack_options, start_stack, stop, with_logs,
};

const REQUESTS: usize = 3000;
const CONCURRENCY: usize = 16;
const READ_LIMIT: u32 = 10_000;
const TRANSPORTS: [&str; 3] = ["rpc", "grpc", "http"];
/// The instance that is killed (the first one's HTTP door serves the reads).
const KILLED: usize = 2;

/// What the load saw: each request's transport, answer and when it came.
struct Load {
    answers: Mutex<Vec<Answer>>,
    /// How many requests have been answered, for the kill to wait on.
    answered: tokio::sync::watch::Sender<usize>,
}

struct Answer {
    index: usize,
    status: u16,
    message: String,
    at: Instant,
}

/// How the second logger goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// Sockets closed, then SIGKILL: nothing listens any more.
    HostGone,
    /// SIGKILL only: the stack keeps the sockets open, as systemd would.
    ProcessOnly,
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_one_of_two_loggers_under_load_loses_and_duplicates_nothing() {
    run(Kill::HostGone).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logger_killed_behind_held_sockets_costs_timeouts_but_loses_nothing() {
    run(Kill::ProcessOnly).await;
}

async fn run(kill: Kill) {
    if servers_disabled() {
        return;
    }
    let started = Instant::now();
    let options = stack_options()
        .services([ServiceName::Broker, ServiceName::Logger])
        .instances(ServiceName::Logger, 2)
        .setting(ServiceName::Broker, "limits.rate_per_second", 0)
        .setting(ServiceName::Logger, "limits.max_read_limit", READ_LIMIT);
    let stack = Arc::new(blocking(move || start_stack(options)).await);
    eprintln!("stack with two loggers up in {:?}", started.elapsed());

    let client = client();
    let name = unique_name("instances");
    let load = Arc::new(Load {
        answers: Mutex::new(Vec::with_capacity(REQUESTS)),
        answered: tokio::sync::watch::channel(0).0,
    });
    let sending = tokio::spawn(send(
        client.clone(),
        Arc::clone(&stack),
        name.clone(),
        Arc::clone(&load),
    ));

    let mut answered = load.answered.subscribe();
    tokio::time::timeout(
        Duration::from_secs(120),
        answered.wait_for(|answered| *answered >= REQUESTS / 3),
    )
    .await
    .expect("a third of the requests answered within 2 minutes")
    .expect("the load is running");
    // The second logger took its share over every transport before the kill.
    let metrics_url = format!(
        "http://{}/metrics",
        stack
            .instance_socket_addr(ServiceName::Logger, KILLED, "metrics")
            .expect("the second logger's metrics socket")
    );
    let exposition = get(&client, &metrics_url).await;
    let exposition = exposition.body.as_str().unwrap_or_default().to_owned();
    for door in TRANSPORTS {
        let stored = metrics::sum(
            &exposition,
            "switchboard_logger_writes_total",
            &[("door", door), ("outcome", "stored")],
        )
        .unwrap_or(0.0);
        assert!(
            stored > 0.0,
            "the second logger stored nothing over {door} before the kill:\n{exposition}"
        );
    }

    let killed_at = Instant::now();
    let killed = on(&stack, move |stack| {
        if kill == Kill::HostGone {
            // Sockets first: with the stack's copies closed, the process's
            // are the last, and the kill leaves nothing listening.
            stack.close_instance_sockets(ServiceName::Logger, KILLED)?;
        }
        stack.kill_instance(ServiceName::Logger, KILLED, Signal::KILL)
    })
    .await
    .expect("close and kill the second logger");
    assert!(killed, "the second logger was not running");
    let answered_at_kill = *load.answered.borrow();
    eprintln!("{kill:?}: SIGKILLed the second logger after {answered_at_kill} answers");

    sending.await.expect("the load finished");
    let load_time = started.elapsed();
    let answers: Vec<Answer> = std::mem::take(&mut *lock(&load.answers));

    // Failures by transport and status, and when they came.
    let mut failures: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    let mut failure_times = Vec::new();
    for answer in answers.iter().filter(|answer| answer.status != 202) {
        *failures
            .entry((TRANSPORTS[answer.index % 3], answer.status))
            .or_default() += 1;
        failure_times.push(answer.at.saturating_duration_since(killed_at));
    }
    let accepted: Vec<usize> = answers
        .iter()
        .filter(|answer| answer.status == 202)
        .map(|answer| answer.index)
        .collect();
    eprintln!(
        "answered {} of {REQUESTS}: {} with 202, {} failed by (transport, status) {failures:?}, \
         at {:?} after the kill (e.g. {:?})",
        answers.len(),
        accepted.len(),
        failure_times.len(),
        failure_times.iter().min().zip(failure_times.iter().max()),
        answers
            .iter()
            .find(|answer| answer.status != 202)
            .map(|answer| (answer.status, answer.message.clone())),
    );

    // Every 202 stored exactly once, every other request at most once.
    let stored = stored_counts(&client, &stack, &name).await;
    let mut lost = Vec::new();
    let mut duplicated = Vec::new();
    let mut failed_but_stored = 0;
    for answer in &answers {
        let count = stored.get(&data(answer.index)).copied().unwrap_or(0);
        if answer.status == 202 && count == 0 {
            lost.push(answer.index);
        }
        if answer.status != 202 && count == 1 {
            failed_but_stored += 1;
        }
        if count > 1 {
            duplicated.push(answer.index);
        }
    }
    let stored_total: usize = stored.values().sum();
    // The broker logs each retry on the other logger: how often the kill
    // needed one.
    let broker_log = stack
        .service_log_path(ServiceName::Broker)
        .and_then(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default();
    let retries: Vec<(&str, usize)> = [
        ("rpc", "logger RPC connection failed"),
        ("grpc", "logger gRPC connection failed"),
        ("http", "logger HTTP door did not answer"),
    ]
    .into_iter()
    .map(|(via, line)| (via, broker_log.matches(line).count()))
    .collect();
    eprintln!("retries on the other logger: {retries:?}");
    eprintln!(
        "stored {stored_total} documents: {} answered requests lost, {} duplicated; \
         {failed_but_stored} failed requests stored anyway (stored, the answer lost)",
        lost.len(),
        duplicated.len(),
    );
    assert_eq!(answers.len(), REQUESTS, "every request was answered");
    assert!(
        lost.is_empty() && duplicated.is_empty(),
        "{}",
        with_logs(
            &stack,
            &[ServiceName::Broker],
            &format!("lost (202, not stored): {lost:?}; duplicated: {duplicated:?}")
        )
    );
    // The retry on the other logger is what makes the kill nearly free: a
    // request fails only when both of its attempts did. Behind held
    // sockets a request may instead wait for an answer that never comes.
    let allowed = match kill {
        Kill::HostGone => REQUESTS / 100,
        Kill::ProcessOnly => REQUESTS / 20,
    };
    assert!(
        failure_times.len() <= allowed,
        "{}",
        with_logs(
            &stack,
            &[ServiceName::Broker],
            &format!(
                "{} of {REQUESTS} requests failed around the kill: {failures:?}",
                failure_times.len()
            )
        )
    );
    eprintln!("load ran {load_time:?}; whole test {:?}", started.elapsed());
    stop(stack).await;
}

/// Sends the requests, `CONCURRENCY` at a time, each transport in turn; an
/// answer other than 202 is recorded, not repeated.
async fn send(client: reqwest::Client, stack: Arc<Stack>, name: String, load: Arc<Load>) {
    let url = format!("{}/handle", stack.broker_url());
    futures::stream::iter(0..REQUESTS)
        .for_each_concurrent(CONCURRENCY, |index| {
            let (client, url, load) = (client.clone(), url.clone(), Arc::clone(&load));
            let body = log_action(&name, &data(index), Some(TRANSPORTS[index % 3]));
            async move {
                let reply = post_json(&client, &url, &body).await;
                lock(&load.answers).push(Answer {
                    index,
                    status: reply.status,
                    message: reply.message().to_owned(),
                    at: Instant::now(),
                });
                load.answered.send_modify(|answered| *answered += 1);
            }
        })
        .await;
}

fn data(index: usize) -> String {
    format!("request {index}")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How often each `data` of `name` is stored. Every write was answered (or
/// failed) before this runs, and nothing writes later: one read suffices.
async fn stored_counts(
    client: &reqwest::Client,
    stack: &Stack,
    name: &str,
) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for entry in logs_named(client, stack, name, READ_LIMIT).await {
        let text = entry["data"].as_str().unwrap_or_default().to_owned();
        *counts.entry(text).or_default() += 1;
    }
    counts
}
