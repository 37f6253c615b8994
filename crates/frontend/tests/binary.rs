//! The real `switchboard-frontend` binary the way systemd runs it: the `http`
//! socket passed as fd 3 by `systemd-socket-activate`, READY=1 and STOPPING=1
//! on `$NOTIFY_SOCKET`, the broker URL from the environment, exit on SIGTERM.
//! The test without a network of its own needs `unshare --net` (CAP_SYS_ADMIN)
//! and skips itself, saying so, where that is refused (the Nix build sandbox).

use std::process::Child;
use std::time::{Duration, Instant};

use switchboard_testkit::activation::{
    NotifySocket, SocketActivation, http_get, network_namespaces_permitted, sigterm, wait_for_exit,
};

const BINARY: &str = env!("CARGO_BIN_EXE_switchboard-frontend");

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    wait_for_exit(child, timeout)
        .unwrap_or_else(|| panic!("the front-end did not exit within {timeout:?} of SIGTERM"))
}

#[test]
fn serves_the_page_on_the_activated_socket_and_notifies_readiness() {
    serve_activated(&[]);
}

/// The unit runs with `PrivateNetwork=yes`: in a network namespace of its own
/// (only a loopback that is down), the service must still serve on the socket
/// it inherited, needing no network of its own.
#[test]
fn serves_without_any_network_of_its_own() {
    if let Err(reason) = network_namespaces_permitted().expect("unshare (package util-linux)") {
        switchboard_testkit::skip(&reason);
        return;
    }
    serve_activated(&["unshare", "--net", "--"]);
}

fn serve_activated(wrapper: &[&str]) {
    let mut notify = NotifySocket::bind().expect("notify socket");
    let port = switchboard_testkit::free_port();
    // listen.http names an address nobody may bind: the service must use fd 3.
    let mut child = SocketActivation::new()
        .listen(format!("127.0.0.1:{port}"), "http")
        .env("NOTIFY_SOCKET", notify.path().display().to_string())
        .env("SWITCHBOARD_FRONTEND__LISTEN__HTTP", "192.0.2.1:9")
        .env(
            "SWITCHBOARD_FRONTEND__PAGE__BROKER_URL",
            "http://broker.test:18080",
        )
        .env("SWITCHBOARD_FRONTEND__RUNTIME__LOG_TARGET", "stderr")
        .wrapper(wrapper)
        .spawn(BINARY)
        .expect("spawn systemd-socket-activate");

    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        match http_get(port, "/") {
            Ok(reply) => break reply,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => panic!("no answer on the activated socket: {err}"),
        }
    };
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains(r#"content="http://broker.test:18080""#),
        "the configured broker URL is not in the page: {page}"
    );
    let script = http_get(port, "/static/app.js").expect("GET /static/app.js");
    assert!(
        script
            .to_ascii_lowercase()
            .contains("content-type: text/javascript; charset=utf-8"),
        "{script}"
    );

    assert!(
        notify.wait_for("READY=1", Duration::from_secs(10)),
        "no READY=1; got {:?}",
        notify.seen()
    );
    sigterm(&child).expect("SIGTERM");
    let exit = wait_exit(&mut child, Duration::from_secs(15));
    assert!(exit.success(), "exit after SIGTERM: {exit}");
    assert!(
        notify.wait_for("STOPPING=1", Duration::from_secs(2)),
        "no STOPPING=1; got {:?}",
        notify.seen()
    );
}
