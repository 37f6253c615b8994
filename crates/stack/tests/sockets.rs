//! The stack's systemd imitation with the real front-end binary (it needs no
//! dependency server, so these stacks start in a fraction of a second): the
//! service serves on the socket the stack passed, READY=1 is awaited, the
//! socket survives a restart (a request sent while the service is down is
//! answered once it is back), closing it refuses connections, a killed
//! service is reported, and lazy mode starts the service on its first
//! connection and again after it stopped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use switchboard_stack::{
    ServiceName, ServicePhase, Signal, Stack, StackOptions, build_service_binaries,
};

/// One stack at a time in this file: a stack binds every service's sockets on
/// kernel-chosen ports (and closes those of services it does not run), so a
/// stack starting in a parallel test can be handed the port another test just
/// closed and then accept on it, which made "a closed socket refuses" fail
/// about once in a dozen runs.
fn one_stack_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sandboxed builds (Nix) set the skip switch: they cannot run cargo from a
/// test to build the service binaries, nor spawn the stack's helpers.
fn sandboxed() -> bool {
    switchboard_testkit::servers_disabled()
}

fn frontend_only() -> StackOptions {
    let bin_dir = build_service_binaries().expect("service binaries");
    StackOptions::temporary()
        .bin_dir(bin_dir)
        .services([ServiceName::Frontend])
}

fn frontend_addr(stack: &Stack) -> SocketAddr {
    stack
        .socket_addr(ServiceName::Frontend, "http")
        .expect("front-end socket")
}

/// `GET /healthz` over a fresh connection; the reply's first line.
fn health(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply.lines().next().unwrap_or_default().to_owned())
}

/// Nothing listens on `addr`. A connect from the ephemeral range to a closed
/// port in it can meet itself (TCP simultaneous open: source port ==
/// destination port), which is not a listener; such a connection is tried
/// again, anything else that connects fails the test with both ends named.
fn assert_refused(addr: SocketAddr) {
    for _ in 0..3 {
        match TcpStream::connect(addr) {
            Err(_) => return,
            Ok(stream) => {
                let local = stream.local_addr().ok();
                let peer = stream.peer_addr().ok();
                assert_eq!(
                    local, peer,
                    "a closed socket refuses, but {addr} accepted (local {local:?}, peer {peer:?})"
                );
            }
        }
    }
    panic!("{addr}: three connects met themselves");
}

#[test]
fn a_service_serves_on_the_passed_socket_which_outlives_its_restarts() {
    if sandboxed() {
        return;
    }
    let _serial = one_stack_at_a_time();
    let stack = Stack::start(frontend_only()).expect("stack");
    let addr = frontend_addr(&stack);
    assert_eq!(
        stack.service_phase(ServiceName::Frontend),
        Some(ServicePhase::Ready)
    );
    assert_eq!(health(addr).expect("health").trim(), "HTTP/1.1 200 OK");
    let log = stack.service_log(ServiceName::Frontend);
    assert!(
        log.contains("using socket passed by the service manager"),
        "the service bound its own socket instead of the passed one:\n{log}"
    );
    let first_pid = stack.service_pid(ServiceName::Frontend).expect("pid");

    // Down: the socket still accepts; the request waits and is answered by
    // the next incarnation.
    stack.stop_service(ServiceName::Frontend).expect("stop");
    assert_eq!(stack.service_pid(ServiceName::Frontend), None);
    assert_eq!(
        stack.service_phase(ServiceName::Frontend),
        Some(ServicePhase::Stopped)
    );
    let waiting = std::thread::spawn(move || health(addr));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "nobody should answer while stopped");
    stack.start_service(ServiceName::Frontend).expect("start");
    let answered = waiting
        .join()
        .expect("join")
        .expect("answered after restart");
    assert_eq!(answered.trim(), "HTTP/1.1 200 OK");
    assert_ne!(stack.service_pid(ServiceName::Frontend), Some(first_pid));

    // Closed: refused; started again: the same port serves.
    stack.stop_service(ServiceName::Frontend).expect("stop");
    stack.close_sockets(ServiceName::Frontend).expect("close");
    assert_refused(addr);
    stack.restart(ServiceName::Frontend).expect("restart");
    assert_eq!(health(addr).expect("health").trim(), "HTTP/1.1 200 OK");

    // Killed: reported as an unexpected exit, and restartable.
    assert!(
        stack
            .kill(ServiceName::Frontend, Signal::KILL)
            .expect("kill")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match stack.service_phase(ServiceName::Frontend) {
            Some(ServicePhase::Exited(status)) => {
                assert!(status.contains("KILL"), "{status}");
                break;
            }
            other => assert!(Instant::now() < deadline, "still {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stack
        .start_service(ServiceName::Frontend)
        .expect("start after kill");
    assert_eq!(health(addr).expect("health").trim(), "HTTP/1.1 200 OK");
}

#[test]
fn lazy_services_start_on_their_first_connection_and_again_after_a_stop() {
    if sandboxed() {
        return;
    }
    let _serial = one_stack_at_a_time();
    let stack = Stack::start(frontend_only().lazy(true)).expect("stack");
    let addr = frontend_addr(&stack);
    assert_eq!(
        stack.service_phase(ServiceName::Frontend),
        Some(ServicePhase::WaitingForConnection)
    );
    // A scrape waits on the metrics socket and starts nothing.
    let metrics = stack
        .socket_addr(ServiceName::Frontend, "metrics")
        .expect("metrics socket");
    let _scrape = TcpStream::connect(metrics).expect("the metrics socket queues connections");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        stack.service_pid(ServiceName::Frontend),
        None,
        "a lazy service must not start before a connection, nor on a scrape"
    );

    let started = Instant::now();
    assert_eq!(health(addr).expect("health").trim(), "HTTP/1.1 200 OK");
    let cold = started.elapsed();
    assert!(stack.service_pid(ServiceName::Frontend).is_some());
    stack
        .wait_ready(ServiceName::Frontend, Duration::from_secs(10))
        .expect("ready after activation");
    eprintln!("first response after activation: {cold:?}");

    stack.stop_service(ServiceName::Frontend).expect("stop");
    assert_eq!(
        stack.service_phase(ServiceName::Frontend),
        Some(ServicePhase::WaitingForConnection)
    );
    assert_eq!(health(addr).expect("health").trim(), "HTTP/1.1 200 OK");
    assert!(stack.service_pid(ServiceName::Frontend).is_some());
}

#[test]
fn a_service_that_is_not_selected_is_refused_by_name() {
    if sandboxed() {
        return;
    }
    let _serial = one_stack_at_a_time();
    let stack = Stack::start(frontend_only()).expect("stack");
    let error = stack
        .restart(ServiceName::Broker)
        .expect_err("the broker is not part of this stack");
    assert_eq!(error.to_string(), "broker is not part of this stack");
    // Its address is known but nothing listens there.
    let broker = stack
        .socket_addr(ServiceName::Broker, "http")
        .expect("address");
    assert!(TcpStream::connect(broker).is_err());
}
