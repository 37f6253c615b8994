//! What one client can hold of the logger's doors: RPC calls in flight per
//! connection, silent and idle connections on every door, the connection
//! caps, and the HTTP/2 settings the gRPC door advertises. Limits are small
//! so that every test runs in about a second.
//!
//! The in-flight cap is tested with calls the test holds up (a real store
//! cannot be made slow on demand) behind the door's real connection handling
//! ([`rpc::serve_calls`]); everything else runs against the whole logger on a
//! real MongoDB-compatible server.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Logger, grpc_request, rpc_context, settings};
use switchboard_logger::rpc::{self, Call};
use switchboard_logger::settings::{Grpc, Rpc};
use switchboard_runtime::Shutdown;
use switchboard_testkit::{MongoDb, servers_disabled};
use switchboard_wire::LogEntry;
use switchboard_wire::proto::log_service_client::LogServiceClient;
use switchboard_wire::rpc::{BatchedEntry, LogRpc, RpcError};
use tarpc::context::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// Longest any wait in these tests may take before it counts as "never".
const BOUND: Duration = Duration::from_secs(10);

/// Reads and discards until the peer closes the connection (EOF or reset);
/// the time that took, or `None` if it stayed open for [`BOUND`].
async fn closed_within(stream: &mut TcpStream) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

/// What the held-up calls are doing.
#[derive(Debug, Default, Clone)]
struct Calls {
    running: Vec<String>,
    finished: usize,
    /// The most calls of connection "a" that ever ran at once.
    peak_a: usize,
}

impl Calls {
    fn running_on(&self, connection: &str) -> usize {
        self.running
            .iter()
            .filter(|name| name.starts_with(connection))
            .count()
    }
}

/// A `LogRpc` whose calls run until the test releases them.
#[derive(Clone)]
struct Gate {
    calls: Arc<watch::Sender<Calls>>,
    release: Arc<Semaphore>,
}

impl Gate {
    fn new() -> Self {
        Self {
            calls: Arc::new(watch::Sender::new(Calls::default())),
            release: Arc::new(Semaphore::new(0)),
        }
    }

    async fn wait_for(&self, condition: impl FnMut(&Calls) -> bool) -> Calls {
        let mut calls = self.calls.subscribe();
        tokio::time::timeout(BOUND, calls.wait_for(condition))
            .await
            .expect("the condition within the bound")
            .expect("gate alive")
            .clone()
    }

    async fn hold(self, name: String) -> Result<String, RpcError> {
        self.calls.send_modify(|calls| {
            calls.running.push(name.clone());
            calls.peak_a = calls.peak_a.max(calls.running_on("a-"));
        });
        self.release
            .acquire()
            .await
            .expect("the gate is never closed")
            .forget();
        self.calls.send_modify(|calls| {
            calls.running.retain(|running| *running != name);
            calls.finished += 1;
        });
        Ok(name)
    }
}

impl LogRpc for Gate {
    async fn log_info(self, _: Context, name: String, _: String) -> Result<String, RpcError> {
        self.hold(name).await
    }

    async fn log_entry(self, _: Context, entry: LogEntry) -> Result<String, RpcError> {
        self.hold(entry.name).await
    }

    async fn log_entries(
        self,
        _: Context,
        entries: Vec<BatchedEntry>,
    ) -> Result<Vec<Result<String, RpcError>>, RpcError> {
        let holds = entries
            .into_iter()
            .map(|batched| self.clone().hold(batched.entry.name));
        Ok(futures::future::join_all(holds).await)
    }
}

/// The RPC door's connection handling with `gate` behind it.
async fn serve_gate(gate: &Gate, limits: Rpc) -> (SocketAddr, Shutdown) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let gate = gate.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        rpc::serve_calls(listener, &limits, stop, move |call: Call| {
            call.execute(gate.clone().serve())
        })
        .await;
    });
    (addr, shutdown)
}

#[tokio::test]
async fn a_pipelining_client_cannot_run_more_calls_than_the_cap_on_one_connection() {
    let gate = Gate::new();
    let (addr, shutdown) = serve_gate(
        &gate,
        Rpc {
            max_in_flight_per_connection: 2,
            ..Rpc::default()
        },
    )
    .await;

    // Five calls at once over one connection.
    let a = switchboard_wire::rpc::connect(addr).await.expect("connect");
    let mut calls = Vec::new();
    for i in 0..5 {
        let a = a.clone();
        calls.push(tokio::spawn(async move {
            a.log_info(rpc_context(), format!("a-{i}"), String::new())
                .await
        }));
    }
    gate.wait_for(|calls| calls.running_on("a-") == 2).await;

    // Another connection is served at once, so the door is reading; its call
    // came after the five were sent, and still "a" runs no more than two.
    let b = switchboard_wire::rpc::connect(addr).await.expect("connect");
    let b_call =
        tokio::spawn(async move { b.log_info(rpc_context(), "b-0".into(), String::new()).await });
    let now = gate.wait_for(|calls| calls.running_on("b-") == 1).await;
    assert_eq!(now.running_on("a-"), 2, "{now:?}");

    // The third call of "a" starts only once one of its first two finished.
    gate.release.add_permits(1);
    let now = gate
        .wait_for(|calls| calls.finished == 1 && calls.running_on("a-") == 2)
        .await;
    assert_eq!(now.peak_a, 2, "{now:?}");

    gate.release.add_permits(100);
    for call in calls {
        let reply = call.await.expect("task").expect("transport");
        assert!(reply.is_ok(), "{reply:?}");
    }
    assert!(b_call.await.expect("task").expect("transport").is_ok());
    assert_eq!(gate.calls.borrow().peak_a, 2);
    shutdown.trigger();
}

#[tokio::test]
async fn an_rpc_connection_is_closed_when_idle_but_not_while_a_call_runs() {
    let gate = Gate::new();
    let (addr, shutdown) = serve_gate(
        &gate,
        Rpc {
            idle_timeout_ms: 400,
            ..Rpc::default()
        },
    )
    .await;

    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let lived = closed_within(&mut silent).await.expect("closed");
    assert!(lived >= Duration::from_millis(390), "{lived:?}");
    assert!(lived < Duration::from_secs(3), "{lived:?}");

    // A call that runs longer than the idle timeout keeps its connection.
    let client = switchboard_wire::rpc::connect(addr).await.expect("connect");
    let call = tokio::spawn(async move {
        client
            .log_info(rpc_context(), "long".into(), String::new())
            .await
    });
    gate.wait_for(|calls| calls.running.len() == 1).await;
    // Time passing while the call runs is what this test is about.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    gate.release.add_permits(1);
    let reply = call
        .await
        .expect("task")
        .expect("the connection stayed open");
    assert_eq!(reply, Ok("long".to_owned()));
    shutdown.trigger();
}

async fn logger(configure: impl FnOnce(&mut switchboard_logger::Settings)) -> Logger {
    let mongo = MongoDb::shared().expect("MongoDB-compatible server");
    let mut settings = settings(&mongo.url());
    configure(&mut settings);
    Logger::start(settings).await
}

#[tokio::test]
async fn the_logger_closes_silent_connections_on_every_door() {
    if servers_disabled() {
        return;
    }
    let logger = logger(|settings| {
        settings.http.header_read_timeout_ms = 300;
        settings.rpc.idle_timeout_ms = 300;
        settings.grpc.silence_timeout_ms = 300;
    })
    .await;
    let http: SocketAddr = logger
        .http
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let mut half_open = TcpStream::connect(http).await.expect("connect");
    half_open
        .write_all(b"POST /log HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut rpc = TcpStream::connect(logger.rpc).await.expect("connect");
    let mut grpc = TcpStream::connect(logger.grpc).await.expect("connect");
    for (door, stream) in [
        ("http", &mut half_open),
        ("rpc", &mut rpc),
        ("grpc", &mut grpc),
    ] {
        let lived = closed_within(stream)
            .await
            .unwrap_or_else(|| panic!("{door}: still open"));
        assert!(lived < Duration::from_secs(3), "{door}: {lived:?}");
    }

    // Clients that speak get their answers meanwhile.
    let (status, body) = logger
        .post_log(serde_json::json!({"name": "limits", "data": "http"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let reply = logger
        .rpc_client()
        .await
        .log_info(rpc_context(), "limits".into(), "rpc".into())
        .await
        .expect("transport");
    assert!(reply.is_ok(), "{reply:?}");
    logger
        .grpc_client()
        .await
        .write_log(grpc_request("limits", "grpc"))
        .await
        .expect("gRPC write");
    logger.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_rpc_and_grpc_doors_beyond_their_connection_cap_wait_until_one_closes() {
    if servers_disabled() {
        return;
    }
    let logger = logger(|settings| {
        settings.rpc = Rpc {
            max_connections: 1,
            ..Rpc::default()
        };
        settings.grpc = Grpc {
            max_connections: 1,
            ..Grpc::default()
        };
    })
    .await;
    let rpc_holder = TcpStream::connect(logger.rpc).await.expect("connect");
    let grpc_holder = TcpStream::connect(logger.grpc).await.expect("connect");

    // The second connection is not served while the first holds the slot...
    let rpc = logger.rpc_client().await;
    let short = switchboard_wire::rpc::context(Duration::from_millis(500));
    let waited = rpc.log_info(short, "capped".into(), "rpc".into()).await;
    assert!(
        matches!(waited, Err(tarpc::client::RpcError::DeadlineExceeded)),
        "{waited:?}"
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", logger.grpc))
        .expect("gRPC URL")
        .connect_lazy();
    let mut grpc = LogServiceClient::new(channel);
    let waited = tokio::time::timeout(
        Duration::from_millis(500),
        grpc.write_log(grpc_request("capped", "grpc")),
    )
    .await;
    assert!(waited.is_err(), "{waited:?}");

    // ...and is, once it closes.
    drop(rpc_holder);
    drop(grpc_holder);
    let reply = rpc
        .log_info(rpc_context(), "capped".into(), "rpc".into())
        .await
        .expect("transport");
    assert!(reply.is_ok(), "{reply:?}");
    grpc.write_log(grpc_request("capped", "grpc"))
        .await
        .expect("gRPC write");
    logger.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_grpc_door_advertises_its_stream_and_header_limits() {
    if servers_disabled() {
        return;
    }
    let logger = logger(|settings| {
        settings.grpc.max_concurrent_streams = 9;
        settings.grpc.max_header_bytes = 12_345;
    })
    .await;
    let mut stream = TcpStream::connect(logger.grpc).await.expect("connect");
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface and SETTINGS");
    let mut header = [0u8; 9];
    tokio::time::timeout(BOUND, stream.read_exact(&mut header))
        .await
        .expect("server SETTINGS in time")
        .expect("read");
    assert_eq!(header[3], 0x4, "a SETTINGS frame");
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    let mut payload = vec![0u8; usize::try_from(length).expect("length")];
    stream.read_exact(&mut payload).await.expect("payload");
    let setting = |id: u16| {
        payload.chunks_exact(6).find_map(|entry| {
            (u16::from_be_bytes([entry[0], entry[1]]) == id)
                .then(|| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]))
        })
    };
    assert_eq!(setting(0x3), Some(9), "MAX_CONCURRENT_STREAMS");
    assert_eq!(setting(0x6), Some(12_345), "MAX_HEADER_LIST_SIZE");
    // A peer that never acknowledges the shutdown's GOAWAY would hold the
    // drain until the silence timeout.
    drop(stream);
    logger.stop().await.expect("clean stop");
}
