//! The stack's Prometheus, with the real front-end binary (no dependency
//! server needed): it scrapes the `metrics` socket of exactly the services
//! the stack runs, under the job `switchboard-<service>`, and stops with the
//! stack, and what it scraped can be queried. Where `prometheus` is not
//! installed the test says so and skips.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use switchboard_stack::{METRICS_SOCKET, ServiceName, Stack, StackOptions, build_service_binaries};
use switchboard_testkit::{find_binary, process_alive, servers_disabled, skip};

/// `GET path` on `addr`; the status line's code.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply)
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned()
}

#[test]
fn prometheus_scrapes_the_services_the_stack_runs_and_stops_with_it() {
    if servers_disabled() {
        return;
    }
    if let Err(error) = find_binary("prometheus") {
        skip(&error.to_string());
        return;
    }
    let stack = Stack::start(
        StackOptions::temporary()
            .bin_dir(build_service_binaries().expect("service binaries"))
            .services([ServiceName::Frontend])
            .prometheus(true)
            .prometheus_scrape_interval(Duration::from_secs(1)),
    )
    .expect("stack");
    let metrics = stack
        .socket_addr(ServiceName::Frontend, METRICS_SOCKET)
        .expect("the front-end's metrics socket");
    let scrape_url = format!("http://{metrics}/metrics");
    assert_eq!(stack.metrics_url(ServiceName::Frontend), scrape_url);

    let (pid, port) = {
        let prometheus = stack.prometheus().expect("prometheus runs");
        (prometheus.pid().expect("running"), prometheus.port())
    };
    assert_eq!(
        stack.prometheus_url(),
        Some(format!("http://127.0.0.1:{port}"))
    );
    // Only the services this stack runs: not the broker, whose sockets were
    // bound for their addresses and closed again.
    let targets = stack
        .prometheus()
        .expect("prometheus")
        .targets()
        .expect("targets");
    let jobs: Vec<(&str, &str)> = targets
        .iter()
        .map(|t| (t.job.as_str(), t.scrape_url.as_str()))
        .collect();
    assert_eq!(jobs, vec![("switchboard-frontend", scrape_url.as_str())]);

    // A request to the page, then Prometheus sees the front-end up and
    // counting it under its route.
    let http = stack
        .socket_addr(ServiceName::Frontend, "http")
        .expect("the front-end's http socket");
    assert_eq!(get(http, "/"), "200");
    {
        let prometheus = stack.prometheus().expect("prometheus");
        prometheus
            .wait_until_up("switchboard-frontend", Duration::from_secs(30))
            .expect("the front-end was scraped");
        let memory = prometheus
            .query_value(r#"process_resident_memory_bytes{job="switchboard-frontend"}"#)
            .expect("query");
        assert!(memory.is_some_and(|bytes| bytes > 0.0), "{memory:?}");
        let pages = prometheus
        .wait_for_value(
            r#"switchboard_http_requests_total{job="switchboard-frontend",route="/",status="200"}"#,
            |pages| pages >= 1.0,
            Duration::from_secs(30),
        )
        .expect("the page's request, scraped");
        assert_eq!(pages, 1.0);
    }

    drop(stack);
    assert!(!process_alive(pid), "prometheus {pid} outlived the stack");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}
