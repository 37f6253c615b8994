//! Persistent mode, as the run command uses it: fixed ports, a state folder
//! whose data the next start reuses, the development user seeded (again, without
//! complaint), one stack per folder, and a clear error when a port is taken.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use switchboard_stack::{
    DEV_USER_EMAIL, DEV_USER_PASSWORD, DependencyPorts, ServiceName, ServicePorts, Stack,
    StackError, StackOptions, build_service_binaries,
};
use switchboard_testkit::{free_port, servers_disabled};

fn options(dir: &std::path::Path, ports: DependencyPorts, offset: u16) -> StackOptions {
    StackOptions::persistent(dir)
        .bin_dir(build_service_binaries().expect("service binaries"))
        .services([ServiceName::Auth])
        .rabbitmq_management(false)
        .prometheus(false)
        .dependency_ports(ports)
        .service_ports(ServicePorts::Default { offset })
        .setting(ServiceName::Auth, "security.bcrypt_cost", 4)
}

/// Free ports for the servers auth needs (PostgreSQL, RabbitMQ).
fn free_dependency_ports() -> DependencyPorts {
    DependencyPorts {
        postgres: free_port(),
        amqp: free_port(),
        rabbitmq_management: free_port(),
        mongodb: free_port(),
        smtp: free_port(),
        mailhog_http: free_port(),
        prometheus: free_port(),
    }
}

/// An offset under which every service port (8080-8084, 5001, 50001, 9180-9185) is free.
fn free_service_offset() -> u16 {
    loop {
        let offset = free_port() % 15_000 + 1;
        let all_free = ServiceName::ALL
            .iter()
            .flat_map(|service| service.sockets())
            .all(|socket| {
                std::net::TcpListener::bind(("127.0.0.1", socket.default_port + offset)).is_ok()
            });
        if all_free {
            return offset;
        }
    }
}

/// `POST /authenticate` as the development user; the status code.
fn login(stack: &Stack) -> u16 {
    let addr = stack.socket_addr(ServiceName::Auth, "http").expect("auth");
    let body = format!(r#"{{"email":"{DEV_USER_EMAIL}","password":"{DEV_USER_PASSWORD}"}}"#);
    let mut stream = TcpStream::connect(addr).expect("connect to auth");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "POST /authenticate HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply");
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_second_start_reuses_the_state_and_a_folder_serves_one_stack() {
    if servers_disabled() {
        return;
    }
    let dir = tempfile::tempdir().expect("state folder");
    let state = dir.path().join("stack");
    let ports = free_dependency_ports();
    let offset = free_service_offset();

    let first = Stack::start(options(&state, ports, offset)).expect("first start");
    assert_eq!(
        login(&first),
        202,
        "{}",
        first.service_log(ServiceName::Auth)
    );
    first
        .postgres()
        .expect("postgres")
        .psql(
            "users",
            "CREATE TABLE persisted_marker (note text); INSERT INTO persisted_marker VALUES ('kept')",
        )
        .expect("write a marker");

    // The same folder cannot serve a second stack at the same time.
    match Stack::start(options(&state, ports, offset)) {
        Err(StackError::Locked(locked)) => {
            assert_eq!(locked, std::fs::canonicalize(&state).expect("canonical"));
        }
        other => panic!("expected the folder to be locked, got {other:?}"),
    }
    drop(first);

    let second = Stack::start(options(&state, ports, offset)).expect("second start");
    assert_eq!(
        second.postgres_url("users").expect("url"),
        format!("postgres://postgres@127.0.0.1:{}/users", ports.postgres)
    );
    let marker = second
        .postgres()
        .expect("postgres")
        .psql("users", "SELECT note FROM persisted_marker")
        .expect("read the marker");
    assert_eq!(marker, "kept", "the database did not survive the restart");
    assert_eq!(
        login(&second),
        202,
        "{}",
        second.service_log(ServiceName::Auth)
    );
    assert!(state.join("logs/auth.log").is_file());
}

#[test]
fn taken_ports_are_all_named_before_anything_starts() {
    if servers_disabled() {
        return;
    }
    let dir = tempfile::tempdir().expect("state folder");
    let ports = free_dependency_ports();
    let offset = free_service_offset();
    let postgres_holder =
        std::net::TcpListener::bind(("127.0.0.1", ports.postgres)).expect("hold postgres port");
    let auth_holder =
        std::net::TcpListener::bind(("127.0.0.1", 8081 + offset)).expect("hold auth port");
    let metrics_holder = std::net::TcpListener::bind(("127.0.0.1", 9181 + offset))
        .expect("hold auth's metrics port");
    let prometheus_holder =
        std::net::TcpListener::bind(("127.0.0.1", ports.prometheus)).expect("hold prometheus port");

    // With Prometheus: its port is checked with the others (and nothing
    // starts, so it need not be installed).
    let error = Stack::start(options(dir.path(), ports, offset).prometheus(true))
        .expect_err("ports are taken");
    let StackError::PortsInUse(conflicts) = &error else {
        panic!("expected PortsInUse, got {error}");
    };
    let mut named: Vec<(String, u16)> = conflicts
        .iter()
        .map(|c| (c.wanted_by.clone(), c.port))
        .collect();
    named.sort();
    assert_eq!(
        named,
        vec![
            ("auth http".to_owned(), 8081 + offset),
            ("auth metrics".to_owned(), 9181 + offset),
            ("postgres".to_owned(), ports.postgres),
            ("prometheus".to_owned(), ports.prometheus),
        ]
    );
    assert!(error.to_string().contains("--port-offset"), "{error}");
    // Nothing was started: the folder holds no server data.
    assert!(!dir.path().join("postgres").exists());
    drop((
        postgres_holder,
        auth_holder,
        metrics_holder,
        prometheus_holder,
    ));
}
