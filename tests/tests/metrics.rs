//! The whole stack seen by a real Prometheus (Debian's, started by the
//! stack on a free port): every service's metrics door is a target and up,
//! and after traffic through the broker the key series of every hop are
//! present and have moved — requests, calls per transport, publishes,
//! logins, writes per door, deliveries, sends. Where `prometheus` is not
//! installed the test says so and skips.

use std::time::Duration;

use serde_json::json;
use std::sync::Arc;
use switchboard_testkit::{find_binary, servers_disabled, skip};

use switchboard_tests::{
    DEV_USER_EMAIL, DEV_USER_PASSWORD, ServiceName, blocking, client, log_action, on, post_json,
    stack_options, start_stack, stop, with_logs,
};

/// Several scrapes at the stack's 1 s interval, on a busy machine.
const SCRAPED: Duration = Duration::from_secs(45);

/// The series each hop of the traffic below must move, with the service
/// whose door serves it.
const MOVED: [(ServiceName, &str); 12] = [
    (
        ServiceName::Broker,
        r#"switchboard_http_requests_total{job="switchboard-broker",route="/handle",method="POST"}"#,
    ),
    (
        ServiceName::Broker,
        r#"switchboard_outbound_calls_total{job="switchboard-broker",downstream="auth",transport="http",outcome="ok"}"#,
    ),
    (
        ServiceName::Broker,
        r#"switchboard_outbound_calls_total{job="switchboard-broker",downstream="mail",transport="http",outcome="ok"}"#,
    ),
    (
        ServiceName::Broker,
        r#"switchboard_outbound_calls_total{job="switchboard-broker",downstream="logger",transport="rpc",outcome="ok"}"#,
    ),
    (
        ServiceName::Broker,
        r#"switchboard_outbound_calls_total{job="switchboard-broker",downstream="logger",transport="grpc",outcome="ok"}"#,
    ),
    (
        ServiceName::Broker,
        r#"switchboard_outbound_calls_total{job="switchboard-broker",downstream="logger",transport="http",outcome="ok"}"#,
    ),
    (
        ServiceName::Broker,
        r#"switchboard_outbound_calls_total{job="switchboard-broker",downstream="rabbitmq",transport="amqp",outcome="ok"}"#,
    ),
    (
        ServiceName::Auth,
        r#"switchboard_auth_logins_total{job="switchboard-auth",outcome="ok"}"#,
    ),
    (
        ServiceName::Auth,
        r#"sum(switchboard_amqp_publishes_total{job="switchboard-auth"})"#,
    ),
    (
        ServiceName::Listener,
        r#"switchboard_listener_deliveries_total{job="switchboard-listener",outcome="stored"}"#,
    ),
    (
        ServiceName::Logger,
        r#"sum(switchboard_logger_writes_total{job="switchboard-logger",outcome="stored"})"#,
    ),
    (
        ServiceName::Mail,
        r#"switchboard_mail_sends_total{job="switchboard-mail",outcome="sent"}"#,
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_sees_every_service_up_and_every_hop_move() {
    if servers_disabled() {
        return;
    }
    if let Err(error) = find_binary("prometheus") {
        skip(&error.to_string());
        return;
    }
    let stack = Arc::new(
        blocking(|| {
            start_stack(
                stack_options()
                    .prometheus(true)
                    .prometheus_scrape_interval(Duration::from_secs(1)),
            )
        })
        .await,
    );

    let up = on(&stack, |stack| {
        let prometheus = stack.prometheus().expect("prometheus runs");
        for service in ServiceName::ALL {
            let job = format!("switchboard-{}", service.as_str());
            prometheus
                .wait_until_up(&job, SCRAPED)
                .unwrap_or_else(|err| panic!("{job} is not up: {err}"));
        }
        prometheus.targets().expect("targets")
    })
    .await;
    let mut jobs: Vec<&str> = up.iter().map(|target| target.job.as_str()).collect();
    jobs.sort_unstable();
    let mut expected: Vec<String> = ServiceName::ALL
        .iter()
        .map(|service| format!("switchboard-{}", service.as_str()))
        .collect();
    expected.sort_unstable();
    assert_eq!(jobs, expected, "{up:?}");

    let before = on(&stack, |stack| {
        let prometheus = stack.prometheus().expect("prometheus runs");
        MOVED.map(|(_, series)| {
            prometheus
                .query_value(series)
                .unwrap_or_else(|err| panic!("{series}: {err}"))
                .unwrap_or(0.0)
        })
    })
    .await;

    let client = client();
    let handle = format!("{}/handle", stack.broker_url());
    let login = json!({
        "action": "auth",
        "auth": {"email": DEV_USER_EMAIL, "password": DEV_USER_PASSWORD},
    });
    let mail = json!({"action": "mail", "mail": {
        "from": "sender@example.com", "to": "metrics@example.com",
        "subject": "Counted", "message": "Seen by Prometheus",
    }});
    let mut actions = vec![login, mail];
    for via in ["rpc", "grpc", "http", "amqp"] {
        actions.push(log_action(&format!("metrics-{via}"), "counted", Some(via)));
    }
    for action in &actions {
        let reply = post_json(&client, &handle, action).await;
        assert!(
            reply.status == 200 || reply.status == 202,
            "{action} answered {}: {:?}",
            reply.status,
            reply.body
        );
    }

    let moved = on(&stack, move |stack| {
        let prometheus = stack.prometheus().expect("prometheus runs");
        MOVED
            .iter()
            .zip(before)
            .map(|((service, series), before)| {
                prometheus
                    .wait_for_value(series, |now| now > before, SCRAPED)
                    .map_err(|err| {
                        with_logs(stack, &[*service], &format!("{series} did not move: {err}"))
                    })
            })
            .collect::<Vec<_>>()
    })
    .await;
    let stuck: Vec<String> = moved.into_iter().filter_map(Result::err).collect();
    assert!(stuck.is_empty(), "{}", stuck.join("\n\n"));

    // Process metrics from every door.
    let memory = on(&stack, |stack| {
        stack
            .prometheus()
            .expect("prometheus runs")
            .query(r#"process_resident_memory_bytes{job=~"switchboard-.*"}"#)
            .expect("query")
    })
    .await;
    assert_eq!(memory.len(), ServiceName::ALL.len(), "{memory:?}");
    assert!(memory.iter().all(|sample| sample.value > 0.0), "{memory:?}");
    stop(stack).await;
}
