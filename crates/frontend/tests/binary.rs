//! The real `switchboard-frontend` binary the way systemd runs it: the `http`
//! socket passed as fd 3 by `systemd-socket-activate`, READY=1 and STOPPING=1
//! on `$NOTIFY_SOCKET`, the broker URL from the environment, exit on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_switchboard-frontend");

fn activator() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("systemd-socket-activate"))
        .find(|candidate| candidate.is_file())
        .expect("systemd-socket-activate not found (package systemd): run scripts/setup")
}

fn get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the front-end did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn received(socket: &UnixDatagram, seen: &mut Vec<String>, line: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        if seen
            .iter()
            .any(|datagram| datagram.lines().any(|l| l == line))
        {
            return true;
        }
        if let Ok(n) = socket.recv(&mut buffer) {
            seen.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    }
    seen.iter()
        .any(|datagram| datagram.lines().any(|l| l == line))
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
    let probe = Command::new("unshare").args(["--net", "true"]).status();
    if !probe.is_ok_and(|status| status.success()) {
        panic!("`unshare --net` is not permitted here; this test needs root (CAP_SYS_ADMIN)");
    }
    serve_activated(&["unshare", "--net", "--"]);
}

fn serve_activated(wrapper: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let port = switchboard_testkit::free_port();
    // listen.http names an address nobody may bind: the service must use fd 3.
    let mut child = Command::new(activator())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--fdname=http"])
        .arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", notify_path.display()))
        .args(["-E", "SWITCHBOARD_FRONTEND__LISTEN__HTTP=192.0.2.1:9"])
        .args([
            "-E",
            "SWITCHBOARD_FRONTEND__PAGE__BROKER_URL=http://broker.test:18080",
        ])
        .args(["-E", "SWITCHBOARD_FRONTEND__RUNTIME__LOG_TARGET=stderr"])
        .args(wrapper)
        .arg(BINARY)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn systemd-socket-activate");

    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        match get(port, "/") {
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
    let script = get(port, "/static/app.js").expect("GET /static/app.js");
    assert!(
        script
            .to_ascii_lowercase()
            .contains("content-type: text/javascript; charset=utf-8"),
        "{script}"
    );

    let mut seen = Vec::new();
    assert!(
        received(&notify, &mut seen, "READY=1", Duration::from_secs(10)),
        "no READY=1; got {seen:?}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = wait_exit(&mut child, Duration::from_secs(15));
    assert!(exit.success(), "exit after SIGTERM: {exit}");
    assert!(
        received(&notify, &mut seen, "STOPPING=1", Duration::from_secs(2)),
        "no STOPPING=1; got {seen:?}"
    );
}
