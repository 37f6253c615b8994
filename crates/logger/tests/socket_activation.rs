//! The real binary under `systemd-socket-activate` with its three named
//! sockets (`http`, `rpc`, `grpc`), as the `.socket` units pass them: it must
//! serve on exactly those sockets, send READY=1 once MongoDB answers, and
//! drain and exit cleanly on SIGTERM.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{grpc_request, rpc_context};
use switchboard_testkit::{MongoDb, free_port, servers_disabled, unique_name};

/// Kills the activator (and so the logger, which it execs) if a test fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn notifications(socket: &UnixDatagram, until: &str) -> Vec<String> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = message.lines().any(|line| line == until);
                received.push(message);
                if done {
                    return received;
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) if err.kind() == std::io::ErrorKind::TimedOut => {}
            Err(err) => panic!("notify socket: {err}"),
        }
    }
    panic!("no {until} within 60 s; got {received:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_the_three_sockets_systemd_passes_and_notifies_readiness() {
    if servers_disabled() {
        return;
    }
    let mongo = MongoDb::shared().expect("MongoDB-compatible server");
    let dir = tempfile::tempdir().expect("temp dir");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");

    // The configured fallback addresses are taken: binding them instead of
    // using the passed sockets would fail the start.
    let occupied: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let occupied_addr = |i: usize| occupied[i].local_addr().expect("addr").to_string();
    let [http, rpc, grpc] = [free_port(), free_port(), free_port()]
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
    let database = unique_name("activated");

    let child = Command::new("systemd-socket-activate")
        .args(["--listen", &http.to_string()])
        .args(["--listen", &rpc.to_string()])
        .args(["--listen", &grpc.to_string()])
        .arg("--fdname=http:rpc:grpc")
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
        .arg(format!(
            "--setenv=SWITCHBOARD_LOGGER__MONGODB__URL={}",
            mongo.url()
        ))
        .arg(format!(
            "--setenv=SWITCHBOARD_LOGGER__MONGODB__DATABASE={database}"
        ))
        .arg(format!(
            "--setenv=SWITCHBOARD_LOGGER__LISTEN__HTTP={}",
            occupied_addr(0)
        ))
        .arg(format!(
            "--setenv=SWITCHBOARD_LOGGER__LISTEN__RPC={}",
            occupied_addr(1)
        ))
        .arg(format!(
            "--setenv=SWITCHBOARD_LOGGER__LISTEN__GRPC={}",
            occupied_addr(2)
        ))
        .arg("--setenv=SWITCHBOARD_LOGGER__RUNTIME__LOG_TARGET=stderr")
        .arg(env!("CARGO_BIN_EXE_switchboard-logger"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("systemd-socket-activate (package systemd) must be installed");
    let mut running = Running(child);

    // The activator starts the logger on the first connection; the request
    // waits in the backlog until the logger serves.
    let client = common::http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    let response = loop {
        match client
            .post(format!("http://{http}/log"))
            .body(r#"{"name":"activated","data":"via http"}"#)
            .send()
            .await
        {
            Ok(response) => break response,
            Err(err) if Instant::now() < deadline => {
                eprintln!("waiting for the activated logger: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("no answer on the passed http socket: {err}"),
        }
    };
    assert_eq!(response.status(), 202);

    let ready = tokio::task::block_in_place(|| notifications(&notify, "READY=1"));
    assert!(ready.iter().any(|m| m.contains("READY=1")), "{ready:?}");

    let rpc_client = switchboard_wire::rpc::connect(rpc)
        .await
        .expect("RPC connect");
    let reply = rpc_client
        .log_info(rpc_context(), "activated".into(), "via rpc".into())
        .await
        .expect("RPC transport");
    assert_eq!(reply, Ok("Processed payload via RPC:activated".to_owned()));
    let mut grpc_client = switchboard_wire::proto::log_service_client::LogServiceClient::connect(
        format!("http://{grpc}"),
    )
    .await
    .expect("gRPC connect");
    let reply = grpc_client
        .write_log(grpc_request("activated", "via grpc"))
        .await
        .expect("gRPC write");
    assert_eq!(reply.into_inner().result, "logged!");

    let (status, listed) = {
        let response = client
            .get(format!("http://{http}/logs?name=activated"))
            .send()
            .await
            .expect("GET /logs");
        (
            response.status(),
            response.json::<serde_json::Value>().await.expect("JSON"),
        )
    };
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");

    // SIGTERM: STOPPING=1, drain, exit 0.
    drop(rpc_client);
    let pid = running.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let stopping = tokio::task::block_in_place(|| notifications(&notify, "STOPPING=1"));
    assert!(!stopping.is_empty());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = running.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "logger did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    drop(occupied);
}
