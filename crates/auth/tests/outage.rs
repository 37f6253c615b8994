//! A RabbitMQ outage never fails or holds up a login: the real binary keeps
//! answering 202, logs the waiting events, and publishes them by itself once
//! RabbitMQ is back.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::credentials;
use switchboard_testkit::amqp_tap::EventTap;
use switchboard_testkit::{Postgres, RabbitMq};

const BINARY: &str = env!("CARGO_BIN_EXE_switchboard-auth");

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn readiness(base: &str) -> (u16, String) {
    match reqwest::get(format!("{base}/readyz")).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (
                status,
                body["message"].as_str().unwrap_or_default().to_owned(),
            )
        }
        Err(_) => (0, String::new()),
    }
}

/// Polls `/readyz` until its message contains `needle`.
async fn wait_for_readiness(base: &str, needle: &str, log: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, message) = readiness(base).await;
        if status == 200 && message.contains(needle) {
            return message;
        }
        if Instant::now() > deadline {
            panic!(
                "readiness never said {needle:?}; last: {status} {message:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A RabbitMQ node of the test's own (the test stops it) with a fresh vhost,
/// and a fresh database on the shared PostgreSQL: (node, AMQP URL, database URL).
fn own_rabbitmq_and_database() -> (RabbitMq, String, String) {
    let rabbit = tokio::task::block_in_place(RabbitMq::start).expect("rabbitmq");
    let amqp_url = tokio::task::block_in_place(|| rabbit.create_vhost()).expect("vhost");
    let database_url = Postgres::shared()
        .expect("postgres")
        .create_database()
        .expect("database");
    (rabbit, amqp_url, database_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_survive_a_rabbitmq_outage_and_events_follow_when_it_returns() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let (mut rabbit, amqp_url, database_url) = own_rabbitmq_and_database();
    // Durable, so it and what is routed to it survive the broker's restart.
    let queue = switchboard_testkit::unique_name("auth_events");
    let mut tap = EventTap::open(&amqp_url, Some(&queue)).await;

    let auth = Auth::start(&amqp_url, &database_url);
    let (base, log) = (auth.base.clone(), auth.log.clone());
    wait_for_readiness(&base, "amqp: connected", &log).await;
    let body = credentials("ada@example.com", "verysecret");

    let (status, _) = common::login(&base, &body, Some("before-outage")).await;
    assert_eq!(status, 202);
    let first = tap
        .next(Duration::from_secs(20))
        .await
        .expect("event before the outage");
    let first_id = first
        .properties
        .message_id()
        .as_ref()
        .expect("id")
        .to_string();

    tokio::task::block_in_place(|| rabbit.stop());

    // Not held up by the publisher: well under the 5 s confirm timeout.
    let started = Instant::now();
    let (status, reply) = common::login(&base, &body, Some("during-outage-1")).await;
    let took = started.elapsed();
    assert_eq!(status, 202, "{reply}");
    assert!(
        took < Duration::from_secs(2),
        "login took {took:?} during the outage"
    );

    // Still ready (RabbitMQ is optional), and saying RabbitMQ is gone.
    let message = wait_for_readiness(&base, "amqp: unreachable", &log).await;
    assert!(message.starts_with("ready; postgres: ok;"), "{message}");
    let (status, reply) = common::login(&base, &body, Some("during-outage-2")).await;
    assert_eq!(status, 202, "{reply}");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("kept for retry") && logged.contains("ada@example.com logged in"),
        "waiting events are not in the log:\n{logged}"
    );

    tokio::task::block_in_place(|| rabbit.start_again()).expect("start rabbitmq again");
    // The tap's connection died with the broker; the durable queue did not.
    let mut tap = EventTap::open(&amqp_url, Some(&queue)).await;
    let mut request_ids = Vec::new();
    let mut message_ids = Vec::new();
    while request_ids.len() < 2 {
        let Some(delivery) = tap.next(Duration::from_secs(60)).await else {
            panic!(
                "events from the outage never arrived (got {request_ids:?})\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let event: serde_json::Value = serde_json::from_slice(&delivery.data).expect("json");
        assert_eq!(event["data"], "ada@example.com logged in");
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .expect("id")
            .to_string();
        let request_id = match delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-request-id"))
        {
            Some(lapin::types::AMQPValue::LongString(id)) => id.to_string(),
            other => panic!("x-request-id header missing or not a string: {other:?}"),
        };
        // A redelivery after a lost confirm repeats the message id: skip it.
        if message_ids.contains(&id) {
            continue;
        }
        assert_ne!(id, first_id, "the pre-outage event came again");
        message_ids.push(id);
        request_ids.push(request_id);
    }
    request_ids.sort();
    assert!(
        request_ids[0].contains("during-outage-1"),
        "{request_ids:?}"
    );
    assert!(
        request_ids[1].contains("during-outage-2"),
        "{request_ids:?}"
    );
    wait_for_readiness(&base, "amqp: connected, 0 pending", &log).await;

    // SIGTERM: a clean exit.
    auth.terminate_cleanly().await;
}

/// SIGTERM while lapin is recovering a lost connection: the process exits 0
/// on its own (no `process::exit`), and no thread panics on the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_an_outage_exits_cleanly() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let (mut rabbit, amqp_url, database_url) = own_rabbitmq_and_database();
    let auth = Auth::start(&amqp_url, &database_url);
    wait_for_readiness(&auth.base, "amqp: connected", &auth.log).await;
    tokio::task::block_in_place(|| rabbit.stop());
    wait_for_readiness(&auth.base, "amqp: unreachable", &auth.log).await;
    let logged = auth.terminate_cleanly().await;
    assert!(!logged.contains("panicked"), "{logged}");
}

/// The real binary, seeded with ada@example.com / verysecret, logging to a
/// file.
struct Auth {
    server: Running,
    base: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Auth {
    fn start(amqp_url: &str, database_url: &str) -> Self {
        let (amqp_url, database_url) = (amqp_url.to_owned(), database_url.to_owned());
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("auth.log");
        let port = switchboard_testkit::free_port();
        let base = format!("http://127.0.0.1:{port}");
        let env = [
            ("SWITCHBOARD_AUTH__DATABASE__URL", database_url),
            ("SWITCHBOARD_AUTH__EVENTS__AMQP_URL", amqp_url),
            (
                "SWITCHBOARD_AUTH__EVENTS__PUBLISH_TIMEOUT_MS",
                "5000".into(),
            ),
            ("SWITCHBOARD_AUTH__SECURITY__BCRYPT_COST", "4".into()),
            (
                "SWITCHBOARD_AUTH__LISTEN__HTTP",
                format!("127.0.0.1:{port}"),
            ),
            ("SWITCHBOARD_AUTH__RUNTIME__LOG_TARGET", "stderr".into()),
        ];
        let seeded = Command::new(BINARY)
            .args([
                "user",
                "add",
                "--email",
                "ada@example.com",
                "--first-name",
                "Ada",
                "--last-name",
                "Lovelace",
            ])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(b"verysecret\n")?;
                child.wait_with_output()
            })
            .expect("user add");
        assert!(
            seeded.status.success(),
            "{}",
            String::from_utf8_lossy(&seeded.stderr)
        );

        let server = Running(
            Command::new(BINARY)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("spawn server"),
        );
        Self {
            server,
            base,
            log,
            _dir: dir,
        }
    }

    /// SIGTERM, then a successful exit within 20 s; the log.
    async fn terminate_cleanly(mut self) -> String {
        let pid = self.server.0.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let exit = loop {
            if let Some(exit) = self.server.0.try_wait().expect("wait") {
                break exit;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let logged = std::fs::read_to_string(&self.log).expect("the log");
        assert!(exit.success(), "{exit}\n{logged}");
        logged
    }
}
