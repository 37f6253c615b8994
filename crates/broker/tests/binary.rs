//! The real `switchboard-broker` binary the way systemd runs it: socket
//! activation (`systemd-socket-activate` passes the `http` socket as fd 3),
//! configuration from `SWITCHBOARD_BROKER__…` variables, READY=1 on
//! `$NOTIFY_SOCKET` without waiting for any downstream, STOPPING=1 and a clean
//! exit on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_switchboard-broker");

fn activator() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("systemd-socket-activate"))
        .find(|candidate| candidate.is_file())
        .expect("systemd-socket-activate not found (package systemd): run scripts/setup")
}

/// `systemd-socket-activate` passes on only the variables named with `-E`.
fn socket_activated(port: u16, env: &[(&str, String)]) -> Child {
    let mut command = Command::new(activator());
    command.args(["--listen", &format!("127.0.0.1:{port}"), "--fdname=http"]);
    for (key, value) in env {
        command.arg("-E").arg(format!("{key}={value}"));
    }
    command
        .arg(BINARY)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn systemd-socket-activate")
}

struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Self {
            _dir: dir,
            path,
            socket,
            seen: Vec::new(),
        }
    }

    fn wait_for(&mut self, line: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buffer = [0u8; 4096];
        loop {
            if self.seen.iter().any(|seen| seen.lines().any(|l| l == line)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            if let Ok(n) = self.socket.recv(&mut buffer) {
                self.seen
                    .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
            }
        }
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the broker did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let mut notify = NotifySocket::bind();
    let mut child = socket_activated(
        port,
        &[
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
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
        notify.seen
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
        message.contains(&format!("127.0.0.1:{closed}")),
        "{message}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let exit = tokio::task::block_in_place(|| wait_exit(&mut child, Duration::from_secs(15)));
    assert!(exit.success(), "exit after SIGTERM: {exit}");
    assert!(
        tokio::task::block_in_place(|| notify.wait_for("STOPPING=1", Duration::from_secs(2))),
        "no STOPPING=1; got {:?}",
        notify.seen
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
    let mut command = Command::new(activator());
    command
        .args(["--listen", &format!("127.0.0.1:{port}"), "--fdname=http"])
        .arg("-E")
        .arg(format!(
            "SWITCHBOARD_BROKER__EVENTS__AMQP_URL={}",
            rabbit.amqp_url()
        ))
        .arg("-E")
        .arg("SWITCHBOARD_BROKER__RUNTIME__LOG_TARGET=stderr")
        .arg(BINARY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
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

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let exit = tokio::task::block_in_place(|| wait_exit(&mut child, Duration::from_secs(15)));
    let stderr = reader.join().expect("stderr reader");
    assert!(exit.success(), "exit after SIGTERM: {exit}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(rabbit);
}
