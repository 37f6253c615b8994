//! Socket activation the way systemd does it: `systemd-socket-activate` binds the
//! socket, passes it as fd 3 with `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`, and
//! starts the service only when the first connection arrives.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example_binary() -> std::path::PathBuf {
    // `cargo test` builds examples, `cargo test --test socket_activation` does
    // not: build it here so the test stands on its own.
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "switchboard-runtime",
            "--example",
            "activated_http",
        ])
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the example failed");
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("examples/activated_http")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
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

#[test]
fn serves_on_the_socket_systemd_passes() {
    let Ok(activator) = which("systemd-socket-activate") else {
        panic!("systemd-socket-activate not found (package systemd): run scripts/setup");
    };
    let port = free_port();
    let mut child = Command::new(activator)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--fdname=http"])
        .arg(example_binary())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn systemd-socket-activate");

    // The activator binds first; the service starts on the first connection,
    // which waits in the backlog meanwhile instead of being refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        match get(port, "/socket") {
            Ok(reply) => break reply,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => panic!("no answer on the activated socket: {err}"),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.ends_with("inherited"),
        "service did not use the passed socket: {reply}"
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or(())
}
