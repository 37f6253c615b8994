//! The real `switchboard-listener` binary, configured through environment
//! variables as its systemd unit would be: readiness only once consuming, the
//! status line, a clean SIGTERM, and the architecture's guarantee — every
//! event stored exactly once while the listener is SIGKILLed and restarted and
//! the logger is down for a while.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use switchboard_testkit::activation::{NotifySocket, sigterm, wait_for_exit};

/// Waits for a notification containing `wanted`; returns those seen before it.
fn wait_for_notification(notify: &mut NotifySocket, wanted: &str, within: Duration) -> Vec<String> {
    tokio::task::block_in_place(|| notify.wait_for_datagram(|m| m.contains(wanted), within))
        .unwrap_or_else(|| panic!("no {wanted:?} within {within:?}; got {:?}", notify.seen()))
        .iter()
        .map(|message| message.trim().to_owned())
        .collect()
}

/// Everything already queued on the socket.
fn drain(notify: &mut NotifySocket) -> Vec<String> {
    tokio::task::block_in_place(|| notify.drain(Duration::from_millis(50)))
        .iter()
        .map(|message| message.trim().to_owned())
        .collect()
}

/// Starts the binary with settings as `SWITCHBOARD_LISTENER__…` variables.
fn spawn_listener(notify: &NotifySocket, env: &[(&str, String)], log_name: &str) -> Child {
    let log = std::fs::File::create(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{log_name}.log")),
    )
    .expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard-listener"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NOTIFY_SOCKET", notify.path())
        .env("SWITCHBOARD_LISTENER__RUNTIME__LOG_TARGET", "stderr")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (key, value) in env {
        command.env(format!("SWITCHBOARD_LISTENER__{key}"), value);
    }
    command.spawn().expect("spawn switchboard-listener")
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    tokio::task::block_in_place(|| wait_for_exit(child, within))
        .unwrap_or_else(|| panic!("the listener did not exit within {within:?}"))
}

/// With RabbitMQ unreachable the listener says so in its status line and never
/// claims to be ready; SIGTERM still stops it at once, cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_consuming_and_sigterm_stops_it() {
    let mut notify = NotifySocket::bind().expect("notify socket");
    let closed_port = switchboard_testkit::free_port();
    let mut child = spawn_listener(
        &notify,
        &[(
            "AMQP__URL",
            format!("amqp://guest:guest@127.0.0.1:{closed_port}/%2f"),
        )],
        "listener-unreachable",
    );
    let seen = wait_for_notification(
        &mut notify,
        "STATUS=connecting to RabbitMQ",
        Duration::from_secs(30),
    );
    assert!(!seen.iter().any(|m| m.contains("READY=1")), "{seen:?}");
    let later = drain(&mut notify);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later: Vec<String> = later.into_iter().chain(drain(&mut notify)).collect();
    assert!(!later.iter().any(|m| m.contains("READY=1")), "{later:?}");

    sigterm(&child).expect("SIGTERM");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let last = drain(&mut notify);
    assert!(last.iter().any(|m| m.contains("STOPPING=1")), "{last:?}");
}

/// A configuration error stops the binary with a message naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_setting_is_named_on_exit() {
    let notify = NotifySocket::bind().expect("notify socket");
    let mut child = spawn_listener(
        &notify,
        &[("AMQP__PREFETCH", "0".to_owned())],
        "listener-bad-setting",
    );
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(!status.success());
    let log = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("listener-bad-setting.log"),
    )
    .expect("log");
    assert!(log.contains("amqp.prefetch"), "{log}");
}

/// The architecture's guarantee: 1,000 events published while the listener is
/// SIGKILLed and restarted, and while the logger is down for a while, are all
/// stored, each exactly once (redeliveries are de-duplicated by message id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_are_stored_exactly_once_across_kill_and_logger_outage() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    init_tracing();
    const EVENTS: usize = 1_000;
    let (amqp_url, _) = fresh_vhost();
    let mut logger = Logger::start(logger_settings(&shared_mongo_url())).await;
    let store = logger.store().await;
    let env = [
        ("AMQP__URL", amqp_url.clone()),
        ("LOGGER__RPC_ADDR", logger.rpc.to_string()),
        ("LOGGER__TIMEOUT_MS", "2000".to_owned()),
    ];
    let mut notify = NotifySocket::bind().expect("notify socket");
    let mut child = spawn_listener(&notify, &env, "listener-thousand-1");
    let before_ready = wait_for_notification(&mut notify, "READY=1", Duration::from_secs(60));
    assert!(
        before_ready.iter().all(|m| !m.contains("consuming:")),
        "READY=1 comes when consuming starts: {before_ready:?}"
    );
    wait_until_consuming(&amqp_url).await;

    let name = event_name("thousand");
    let published = Arc::new(AtomicUsize::new(0));
    let publishing = {
        let (amqp_url, name, published) = (amqp_url.clone(), name.clone(), published.clone());
        tokio::spawn(async move {
            let publisher = Publisher::connect(&amqp_url, "logs_topic").await;
            let keys = ["log.INFO", "log.WARNING", "log.ERROR"];
            for i in 0..EVENTS {
                publisher
                    .event(
                        keys[i % 3],
                        &name,
                        &format!("event {i}"),
                        &format!("{name}-{i}"),
                    )
                    .await;
                published.store(i + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            publisher.close().await;
        })
    };
    let reached = |n: usize| {
        let published = published.clone();
        move || {
            let done = published.load(Ordering::SeqCst) >= n;
            async move { done.then_some(()) }
        }
    };

    // The logger goes away while events keep coming: the listener holds a
    // prefetch's worth and the rest wait in the queue.
    wait_for("200 published", PATIENCE, reached(200)).await;
    logger.stop().await;
    wait_for("400 published", PATIENCE, reached(400)).await;
    let stored_before_outage = store.count_named(&name).await;
    // The logger returns and the listener flushes the backlog at full speed;
    // it is SIGKILLed in the middle of that, with many deliveries in flight.
    logger.start_again().await;
    wait_for("the flush to be under way", PATIENCE, || async {
        (store.count_named(&name).await > stored_before_outage + 20).then_some(())
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let stored_at_kill = store.count_named(&name).await;
    drain(&mut notify);
    let mut child = spawn_listener(&notify, &env, "listener-thousand-2");
    wait_for_notification(&mut notify, "READY=1", Duration::from_secs(60));

    // A second outage of the logger, with the new process running through it.
    wait_for("700 published", PATIENCE, reached(700)).await;
    logger.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    logger.start_again().await;

    publishing.await.expect("publisher");
    store.wait_for_count(&name, EVENTS as u64).await;
    // Exactly once: one document per message id, none extra.
    let ids: std::collections::HashSet<String> = store
        .documents(mongodb::bson::doc! { "name": &name })
        .await
        .iter()
        .map(|document| document.get_str("_id").expect("string _id").to_owned())
        .collect();
    assert_eq!(ids.len(), EVENTS);
    wait_for("an empty queue", PATIENCE, || async {
        (ready_messages(&amqp_url, "logs").await == Some(0)).then_some(())
    })
    .await;
    assert_eq!(ready_messages(&amqp_url, "logs.dead").await, Some(0));
    eprintln!(
        "stored before the first outage: {stored_before_outage}; when killed: {stored_at_kill}"
    );

    // The status line reports the counts (refreshed at most once a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let statuses: Vec<String> = drain(&mut notify)
        .into_iter()
        .filter(|m| m.starts_with("STATUS="))
        .collect();
    let last = statuses.last().expect("status lines after READY");
    assert!(
        last.starts_with("STATUS=consuming: ") && last.ends_with(" retried, 0 dead-lettered"),
        "{statuses:?}"
    );
    let stored: u64 = last["STATUS=consuming: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("stored count");
    assert!(stored > 0 && stored <= EVENTS as u64 + 64, "{last}");
    sigterm(&child).expect("SIGTERM");
    let exit = wait_exit(&mut child, Duration::from_secs(15));
    assert!(exit.success(), "{exit:?}");
    logger.stop().await;
}
