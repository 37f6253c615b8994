//! The bounds of `serve_http_with` against a hostile client on real loopback
//! sockets: half-sent heads, silent connections, idle keep-alive and HTTP/2
//! connections, the connection cap, the request timeout and header sizes.
//! Limits are small so that every test runs in about a second.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use switchboard_runtime::{HttpLimits, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Longest any wait in these tests may take before it counts as "never".
const BOUND: Duration = Duration::from_secs(10);

const PARTIAL_HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\n";

struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(limits: HttpLimits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new()
            .route("/fast", get(|| async { "fast" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "slow"
                }),
            );
        let shutdown = Shutdown::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                switchboard_runtime::service::serve_http_with(listener, router, shutdown, &limits)
                    .await
            }
        });
        Server {
            addr,
            shutdown,
            task,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }

    async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(BOUND, self.task)
            .await
            .expect("drains in time")
            .expect("server task")
            .expect("serves");
    }
}

fn limits() -> HttpLimits {
    HttpLimits {
        header_read_timeout_ms: 30_000,
        idle_timeout_ms: 30_000,
        ..HttpLimits::default()
    }
}

/// Reads and discards until the server closes the connection (EOF or
/// reset); the time that took, or `None` if it stayed open for [`BOUND`].
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

/// One HTTP/1.1 response on a kept-alive connection: status line and body.
async fn response(stream: &mut TcpStream) -> (String, String) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = find(&data, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .expect("content-length");
                if data.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]);
                    let status = head.lines().next().unwrap_or_default().to_owned();
                    return (status, body.into_owned());
                }
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a whole response: {data:?}");
            data.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(BOUND, read).await.expect("a response")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

async fn get_fast(stream: &mut TcpStream) -> (String, String) {
    stream
        .write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    response(stream).await
}

#[tokio::test]
async fn half_open_connections_are_closed_after_the_header_timeout_while_others_are_served() {
    let server = Server::start(HttpLimits {
        header_read_timeout_ms: 400,
        ..limits()
    })
    .await;
    // The server's deadline starts when it accepts a connection, which is
    // after this side's connect returns at the earliest: each connection's
    // lifetime is measured from its own connect.
    let mut half_open = Vec::new();
    for _ in 0..50 {
        let opened = Instant::now();
        let mut stream = server.connect().await;
        stream.write_all(PARTIAL_HEAD).await.expect("write");
        half_open.push((opened, stream));
    }
    let sent = Instant::now();

    // Meanwhile a whole request on another connection is answered at once.
    let mut normal = server.connect().await;
    let (status, body) = get_fast(&mut normal).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "fast")
    );
    assert!(
        sent.elapsed() < Duration::from_millis(400),
        "{:?}",
        sent.elapsed()
    );

    for (opened, stream) in &mut half_open {
        closed_within(stream)
            .await
            .expect("a half-open connection is closed");
        let lived = opened.elapsed();
        assert!(
            lived >= Duration::from_millis(400),
            "closed early: {lived:?}"
        );
        assert!(lived < Duration::from_secs(3), "closed late: {lived:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let server = Server::start(HttpLimits {
        header_read_timeout_ms: 300,
        ..limits()
    })
    .await;
    let mut silent = server.connect().await;
    let lived = closed_within(&mut silent).await.expect("closed");
    assert!(lived >= Duration::from_millis(290), "{lived:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_at_rest_gets_the_idle_timeout_not_the_header_timeout() {
    let server = Server::start(HttpLimits {
        header_read_timeout_ms: 200,
        idle_timeout_ms: 1_000,
        ..limits()
    })
    .await;
    let mut stream = server.connect().await;
    get_fast(&mut stream).await;
    let lived = closed_within(&mut stream).await.expect("closed when idle");
    assert!(
        lived >= Duration::from_millis(950),
        "closed before the idle timeout: {lived:?}"
    );
    assert!(lived < Duration::from_secs(4), "{lived:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_slow_head_on_a_kept_alive_connection_is_cut_at_the_header_timeout() {
    let server = Server::start(HttpLimits {
        header_read_timeout_ms: 300,
        idle_timeout_ms: 30_000,
        ..limits()
    })
    .await;
    let mut stream = server.connect().await;
    get_fast(&mut stream).await;
    stream.write_all(PARTIAL_HEAD).await.expect("write");
    let lived = closed_within(&mut stream).await.expect("closed");
    assert!(lived >= Duration::from_millis(290), "{lived:?}");
    assert!(lived < Duration::from_secs(3), "{lived:?}");
    server.stop().await;
}

#[tokio::test]
async fn the_connection_beyond_the_cap_waits_until_one_closes() {
    let server = Server::start(HttpLimits {
        max_connections: 2,
        ..limits()
    })
    .await;
    // Two connections that were served and now rest: both slots taken.
    let mut first = server.connect().await;
    get_fast(&mut first).await;
    let mut second = server.connect().await;
    get_fast(&mut second).await;

    let mut third = server.connect().await;
    third
        .write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.peek(&mut byte)).await;
    assert!(early.is_err(), "the third connection was served: {early:?}");

    drop(first);
    let (status, body) = response(&mut third).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "fast")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_request_beyond_the_request_timeout_gets_the_503_envelope() {
    let server = Server::start(HttpLimits {
        request_timeout_ms: 200,
        ..limits()
    })
    .await;
    let started = Instant::now();
    let reply = reqwest::Client::new()
        .get(format!("http://{}/slow", server.addr))
        .header("x-request-id", "slow-1")
        .timeout(BOUND)
        .send()
        .await
        .expect("an answer");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply.status(), 503);
    assert_eq!(reply.headers()["x-request-id"], "slow-1");
    let envelope: serde_json::Value = reply.json().await.expect("JSON");
    assert_eq!(
        envelope,
        serde_json::json!({"error": true, "message": "the request was not answered within 200 ms"})
    );
    // A fast request is unaffected.
    let fast = reqwest::get(format!("http://{}/fast", server.addr))
        .await
        .expect("fast");
    assert_eq!(fast.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn a_head_larger_than_max_header_bytes_gets_431() {
    let server = Server::start(HttpLimits {
        max_header_bytes: 8192,
        ..limits()
    })
    .await;
    let mut stream = server.connect().await;
    let big = format!(
        "GET /fast HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    stream.write_all(big.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut reply))
        .await
        .expect("answered and closed")
        .expect("read");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    // A head within the limit is served.
    let mut stream = server.connect().await;
    let (status, _) = get_fast(&mut stream).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    server.stop().await;
}

/// HTTP/2 frames, as far as these tests need them.
mod h2 {
    use super::*;

    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const HEADERS: u8 = 0x1;
    pub const DATA: u8 = 0x0;
    pub const END_STREAM: u8 = 0x1;

    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    pub async fn write(stream: &mut TcpStream, kind: u8, flags: u8, id: u32, payload: &[u8]) {
        let length = u32::try_from(payload.len())
            .expect("small frame")
            .to_be_bytes();
        let mut frame = vec![length[1], length[2], length[3], kind, flags];
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(payload);
        stream.write_all(&frame).await.expect("write frame");
    }

    /// The next frame, or `None` once the server closed the connection.
    pub async fn read(stream: &mut TcpStream) -> Option<Frame> {
        let mut header = [0u8; 9];
        stream.read_exact(&mut header).await.ok()?;
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
        let mut payload = vec![0u8; usize::try_from(length).expect("length")];
        stream.read_exact(&mut payload).await.ok()?;
        Some(Frame {
            kind: header[3],
            flags: header[4],
            stream: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
            payload,
        })
    }

    /// The value of a setting in a SETTINGS payload.
    pub fn setting(payload: &[u8], id: u16) -> Option<u32> {
        payload.chunks_exact(6).find_map(|entry| {
            (u16::from_be_bytes([entry[0], entry[1]]) == id)
                .then(|| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]))
        })
    }

    /// Connects with prior knowledge (h2c): preface and empty SETTINGS.
    pub async fn connect(addr: SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
        write(&mut stream, SETTINGS, 0, 0, &[]).await;
        stream
    }

    /// `GET /fast` on stream `id`, HPACK-encoded from the static table
    /// (`:method GET`, `:scheme http`, `:path` literal, `:authority` literal).
    pub async fn get_fast(stream: &mut TcpStream, id: u32) {
        let mut block = vec![0x82, 0x86];
        block.extend_from_slice(&[0x04, 5]);
        block.extend_from_slice(b"/fast");
        block.extend_from_slice(&[0x01, 1, b'x']);
        // END_STREAM | END_HEADERS
        write(stream, HEADERS, 0x5, id, &block).await;
    }
}

#[tokio::test]
async fn http2_limits_are_advertised_and_an_idle_connection_gets_a_goaway() {
    let server = Server::start(HttpLimits {
        header_read_timeout_ms: 200,
        idle_timeout_ms: 800,
        http2_max_concurrent_streams: 7,
        max_header_bytes: 16_384,
        ..limits()
    })
    .await;
    let mut stream = h2::connect(server.addr).await;
    let settings = tokio::time::timeout(BOUND, h2::read(&mut stream))
        .await
        .expect("server settings")
        .expect("a frame");
    assert_eq!(settings.kind, h2::SETTINGS);
    assert_eq!(
        h2::setting(&settings.payload, 0x3),
        Some(7),
        "MAX_CONCURRENT_STREAMS"
    );
    assert_eq!(
        h2::setting(&settings.payload, 0x6),
        Some(16_384),
        "MAX_HEADER_LIST_SIZE"
    );
    // Acknowledge the server's settings, then ask for one response.
    h2::write(&mut stream, h2::SETTINGS, 0x1, 0, &[]).await;
    h2::get_fast(&mut stream, 1).await;

    let mut answered = None;
    let read = async {
        while let Some(frame) = h2::read(&mut stream).await {
            if frame.stream == 1 && frame.kind == h2::DATA && frame.flags & h2::END_STREAM != 0 {
                assert_eq!(frame.payload, b"fast");
                answered = Some(Instant::now());
            }
            if frame.kind == h2::GOAWAY {
                return Some(Instant::now());
            }
        }
        None
    };
    let goaway = tokio::time::timeout(BOUND, read)
        .await
        .expect("a GOAWAY within the bound")
        .expect("a GOAWAY before the close");
    let answered = answered.expect("the request was answered first");
    let idle = goaway - answered;
    // Pings and window updates between requests do not count as a head: the
    // connection rests for the idle timeout, not the header timeout.
    assert!(idle >= Duration::from_millis(750), "{idle:?}");
    assert!(idle < Duration::from_secs(4), "{idle:?}");
    closed_within(&mut stream)
        .await
        .expect("closed after the GOAWAY");
    server.stop().await;
}
