//! The real binary under `systemd-socket-activate` with its three named
//! sockets (`http`, `rpc`, `grpc`), as the `.socket` units pass them: it must
//! serve on exactly those sockets, send READY=1 once MongoDB answers, and
//! drain and exit cleanly on SIGTERM.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::{grpc_request, rpc_context};
use switchboard_testkit::activation::{
    KillOnDrop, NotifySocket, SocketActivation, sigterm, wait_for_exit,
};
use switchboard_testkit::{MongoDb, free_port, servers_disabled, unique_name};

/// How long the logger may take to answer, become ready or stop.
const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn serves_the_three_sockets_systemd_passes_and_notifies_readiness() {
    if servers_disabled() {
        return;
    }
    let mongo = MongoDb::shared().expect("MongoDB-compatible server");
    let mut notify = NotifySocket::bind().expect("notify socket");

    // The configured fallback addresses are taken: binding them instead of
    // using the passed sockets would fail the start.
    let occupied: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let occupied_addr = |i: usize| occupied[i].local_addr().expect("addr").to_string();
    let [http, rpc, grpc] = [free_port(), free_port(), free_port()]
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
    let database = unique_name("activated");

    let mut running = KillOnDrop(
        SocketActivation::new()
            .listen(http, "http")
            .listen(rpc, "rpc")
            .listen(grpc, "grpc")
            .env("NOTIFY_SOCKET", notify.path().display().to_string())
            .env("SWITCHBOARD_LOGGER__MONGODB__URL", mongo.url())
            .env("SWITCHBOARD_LOGGER__MONGODB__DATABASE", database)
            .env("SWITCHBOARD_LOGGER__LISTEN__HTTP", occupied_addr(0))
            .env("SWITCHBOARD_LOGGER__LISTEN__RPC", occupied_addr(1))
            .env("SWITCHBOARD_LOGGER__LISTEN__GRPC", occupied_addr(2))
            .env("SWITCHBOARD_LOGGER__RUNTIME__LOG_TARGET", "stderr")
            .spawn(env!("CARGO_BIN_EXE_switchboard-logger"))
            .expect("systemd-socket-activate (package systemd) must be installed"),
    );

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

    let ready = tokio::task::block_in_place(|| notify.wait_for("READY=1", PATIENCE));
    assert!(
        ready,
        "no READY=1 within {PATIENCE:?}; got {:?}",
        notify.seen()
    );

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
    sigterm(&running).expect("SIGTERM");
    let stopping = tokio::task::block_in_place(|| notify.wait_for("STOPPING=1", PATIENCE));
    assert!(
        stopping,
        "no STOPPING=1 within {PATIENCE:?}; got {:?}",
        notify.seen()
    );
    let status =
        tokio::task::block_in_place(|| wait_for_exit(&mut running, Duration::from_secs(20)))
            .unwrap_or_else(|| panic!("logger did not exit after SIGTERM"));
    assert!(status.success(), "exit status {status}");
    drop(occupied);
}
