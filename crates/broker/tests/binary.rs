//! The real `switchboard-broker` binary the way systemd runs it: socket
//! activation (`systemd-socket-activate` passes the `http` socket as fd 3),
//! configuration from `SWITCHBOARD_BROKER__…` variables, READY=1 on
//! `$NOTIFY_SOCKET` without waiting for any downstream, STOPPING=1 and a clean
//! exit on SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_testkit::activation::{NotifySocket, SocketActivation, sigterm, wait_for_exit};

const BINARY: &str = env!("CARGO_BIN_EXE_switchboard-broker");

fn socket_activated(port: u16, env: &[(&str, String)]) -> Child {
    SocketActivation::new()
        .listen(format!("127.0.0.1:{port}"), "http")
        .envs(env.iter().map(|(key, value)| (*key, value.clone())))
        .spawn(BINARY)
        .expect("spawn systemd-socket-activate")
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    wait_for_exit(child, timeout)
        .unwrap_or_else(|| panic!("the broker did not exit within {timeout:?}"))
}

async fn post(base: &str, path: &str, body: Value) -> reqwest::Result<(u16, Value)> {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .timeout(Duration::from_secs(10))
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_the_activated_socket_and_is_ready_without_downstreams() {
    let port = switchboard_testkit::free_port();
    let closed = switchboard_testkit::free_port();
    let mut notify = NotifySocket::bind().expect("notify socket");
    let mut child = socket_activated(
        port,
        &[
            ("NOTIFY_SOCKET", notify.path().display().to_string()),
            // A port nobody may bind: the broker must serve on fd 3.
            ("SWITCHBOARD_BROKER__LISTEN__HTTP", "192.0.2.1:9".to_owned()),
            (
                "SWITCHBOARD_BROKER__DOWNSTREAM__LOGGER_RPC_ADDR",
                format!("127.0.0.1:{closed}"),
            ),
            (
                "SWITCHBOARD_BROKER__EVENTS__AMQP_URL",
                format!("amqp://guest:guest@127.0.0.1:{closed}/%2f"),
            ),
            (
                "SWITCHBOARD_BROKER__DOWNSTREAM__TIMEOUT_MS",
                "1000".to_owned(),
            ),
            (
                "SWITCHBOARD_BROKER__ADMIN__EXPOSE_DOWNSTREAMS",
                "true".to_owned(),
            ),
            (
                "SWITCHBOARD_BROKER__RUNTIME__LOG_TARGET",
                "stderr".to_owned(),
            ),
        ],
    );

    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        match post(&base, "/", json!({})).await {
            Ok(reply) => break reply,
            Err(err) if Instant::now() < deadline && err.is_connect() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("no answer on the activated socket: {err}"),
        }
    };
    assert_eq!(
        (status, body),
        (200, json!({"error": false, "message": "Hit the broker"}))
    );

    // Nothing runs behind it, yet it is READY (downstreams start on demand).
    assert!(
        tokio::task::block_in_place(|| notify.wait_for("READY=1", Duration::from_secs(10))),
        "no READY=1; got {:?}",
        notify.seen()
    );
    // The environment reached the settings: the RPC address is the closed port.
    let (status, body) = post(
        &base,
        "/handle",
        json!({"action": "log", "log": {"name": "n", "data": "d"}}),
    )
    .await
    .expect("POST /handle");
    assert_eq!(status, 502, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("logger (rpc) is unreachable"),
        "{message}"
    );
    assert!(!message.contains("127.0.0.1"), "internal detail: {message}");
    let downstreams = reqwest::get(format!("{base}/downstreams"))
        .await
        .expect("GET /downstreams")
        .text()
        .await
        .expect("body");
    assert!(
        downstreams.contains(&format!("127.0.0.1:{closed}")),
        "{downstreams}"
    );

    sigterm(&child).expect("SIGTERM");
    let exit = tokio::task::block_in_place(|| wait_exit(&mut child, Duration::from_secs(15)));
    assert!(exit.success(), "exit after SIGTERM: {exit}");
    assert!(
        tokio::task::block_in_place(|| notify.wait_for("STOPPING=1", Duration::from_secs(2))),
        "no STOPPING=1; got {:?}",
        notify.seen()
    );
}

#[test]
fn a_misspelled_key_stops_it_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "[downstream]\ntimeout = 5\n").expect("write config");
    let output = Command::new(BINARY)
        .arg("--config")
        .arg(&config)
        .env("SWITCHBOARD_BROKER__RUNTIME__LOG_TARGET", "stderr")
        .output()
        .expect("run the broker");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("timeout"), "{stderr}");
}

/// `SIGTERM` while RabbitMQ is down and lapin is recovering the connection in
/// its own thread: the broker still exits cleanly, and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_cleanly_during_a_rabbitmq_outage() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let mut rabbit = tokio::task::spawn_blocking(switchboard_testkit::RabbitMq::start)
        .await
        .expect("join")
        .expect("RabbitMQ");
    let port = switchboard_testkit::free_port();
    let mut command = SocketActivation::new()
        .listen(format!("127.0.0.1:{port}"), "http")
        .env("SWITCHBOARD_BROKER__EVENTS__AMQP_URL", rabbit.amqp_url())
        .env("SWITCHBOARD_BROKER__RUNTIME__LOG_TARGET", "stderr")
        // The test watches RabbitMQ's reachability there.
        .env("SWITCHBOARD_BROKER__ADMIN__EXPOSE_DOWNSTREAMS", "true")
        .command(BINARY)
        .expect("systemd-socket-activate");
    command.stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn systemd-socket-activate");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });

    let base = format!("http://127.0.0.1:{port}");
    let rabbit_reachable = |expected: bool| {
        let base = base.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let body: Option<Value> = async {
                    reqwest::get(format!("{base}/downstreams"))
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()
                }
                .await;
                let reachable = body.as_ref().and_then(|body| {
                    body["data"].as_array()?.iter().find_map(|status| {
                        (status["name"] == "rabbitmq (amqp)").then(|| status["reachable"] == true)
                    })
                });
                if reachable == Some(expected) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "RabbitMQ reachable never became {expected}: {body:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    rabbit_reachable(true).await;
    let rabbit = tokio::task::spawn_blocking(move || {
        rabbit.stop();
        rabbit
    })
    .await
    .expect("join");
    rabbit_reachable(false).await;
    // Let lapin's recovery make a few attempts.
    tokio::time::sleep(Duration::from_secs(1)).await;

    sigterm(&child).expect("SIGTERM");
    let exit = tokio::task::block_in_place(|| wait_exit(&mut child, Duration::from_secs(15)));
    let stderr = reader.join().expect("stderr reader");
    assert!(exit.success(), "exit after SIGTERM: {exit}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(rabbit);
}
