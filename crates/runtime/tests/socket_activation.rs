//! Socket activation the way systemd does it: `systemd-socket-activate` binds the
//! socket, passes it as fd 3 with `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`, and
//! starts the service only when the first connection arrives.
//!
//! The service is this test binary itself, run again with only
//! [`activated_http_service`] selected: no second build (a nested `cargo build`
//! would need the network or a writable cargo home, which a Nix build has not,
//! and would not know the target dir or profile of the running test).

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use switchboard_runtime::http::{always_ready, standard_service};
use switchboard_runtime::{Listeners, Shutdown, lifecycle};
use switchboard_testkit::activation::{KillOnDrop, SocketActivation, http_get};

/// Set (to any value) only in the re-run test binary that plays the service.
const SERVICE_ENV: &str = "SWITCHBOARD_RUNTIME_TEST_ACTIVATED_SERVICE";
const SERVICE_TEST: &str = "activated_http_service";

#[test]
fn serves_on_the_socket_systemd_passes() {
    let port = switchboard_testkit::free_port();
    let test_binary = std::env::current_exe().expect("test binary path");
    let _child = KillOnDrop(
        SocketActivation::new()
            .listen(format!("127.0.0.1:{port}"), "http")
            .env(SERVICE_ENV, "1")
            .args([SERVICE_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .spawn(&test_binary)
            .expect("spawn systemd-socket-activate"),
    );

    // The activator binds first; the service starts on the first connection,
    // which waits in the backlog meanwhile instead of being refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        match http_get(port, "/socket") {
            Ok(reply) => break reply,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => panic!("no answer on the activated socket: {err}"),
        }
    };
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.ends_with("inherited"),
        "service did not use the passed socket: {reply}"
    );
}

/// Not a test of its own: the minimal service that
/// [`serves_on_the_socket_systemd_passes`] starts under the activator, serving
/// `/socket` (which says whether the `http` socket was inherited) on the
/// socket named `http`, or on 127.0.0.1:0 when none was passed. Without
/// [`SERVICE_ENV`] (every ordinary test run) it returns at once.
#[test]
fn activated_http_service() {
    if std::env::var_os(SERVICE_ENV).is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let mut listeners = Listeners::from_env().expect("LISTEN_FDS");
        let inherited = listeners.has("http");
        let listener = listeners
            .tcp("http", "127.0.0.1:0".parse().expect("address"))
            .await
            .expect("http listener");
        let shutdown = Shutdown::new();
        shutdown.trigger_on_signals().expect("signal handlers");
        let mode = if inherited { "inherited" } else { "bound" };
        let router = Router::new().route("/socket", get(move || async move { mode }));
        lifecycle::ready();
        switchboard_runtime::service::serve_http(
            listener,
            standard_service(
                router,
                always_ready(),
                1024,
                &switchboard_runtime::metrics::Metrics::new(),
            ),
            shutdown,
        )
        .await
        .expect("serve");
    });
}
