//! Downstream outages seen through the broker, and recovery.
//!
//! The stack holds every service's listening socket the way systemd does, so
//! a *stopped* service's socket still accepts connections: the broker's
//! request waits in the backlog and times out — 504 (the broker's timeout is
//! set low here). With the socket closed too (the service is gone for good,
//! or its socket unit stopped), connecting fails — 502. After the service
//! starts again, the same request succeeds.
//!
//! The rate limit gets a stack of its own (only the broker), since a low
//! limit would disturb every other test.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_testkit::{servers_disabled, unique_name};
use switchboard_tests::{
    DEV_USER_EMAIL, DEV_USER_PASSWORD, Dependency, ServiceName, Stack, blocking, client,
    log_action, on, post_json, stack_options, start_stack, stop, with_logs,
};

const BROKER_TIMEOUT_MS: u64 = 1500;
const RECOVERY: Duration = Duration::from_secs(30);

struct Case {
    service: ServiceName,
    label: String,
    body: Value,
}

fn cases() -> Vec<Case> {
    let mut cases = vec![
        Case {
            service: ServiceName::Auth,
            label: "auth".into(),
            body: json!({"action": "auth", "auth": {"email": DEV_USER_EMAIL, "password": DEV_USER_PASSWORD}}),
        },
        Case {
            service: ServiceName::Mail,
            label: "mail".into(),
            body: json!({"action": "mail", "mail": {
                "from": "", "to": "outage@example.com", "subject": "outage", "message": "still there?"
            }}),
        },
    ];
    for via in ["rpc", "grpc", "http"] {
        cases.push(Case {
            service: ServiceName::Logger,
            label: format!("log via {via}"),
            body: log_action(&unique_name("outage"), "outage test", Some(via)),
        });
    }
    cases
}

async fn send(client: &reqwest::Client, stack: &Stack, body: &Value) -> switchboard_tests::Reply {
    post_json(client, &format!("{}/handle", stack.broker_url()), body).await
}

/// Repeats the request until it gets `expected` (a downstream client may need
/// a moment to notice its peer came back); panics with logs otherwise.
async fn until_status(
    client: &reqwest::Client,
    stack: &Stack,
    case: &Case,
    expected: u16,
    what: &str,
) {
    let deadline = std::time::Instant::now() + RECOVERY;
    loop {
        let reply = send(client, stack, &case.body).await;
        if reply.status == expected {
            assert_eq!(
                reply.body["error"],
                json!(expected >= 400),
                "{:?}",
                reply.body
            );
            return;
        }
        if std::time::Instant::now() >= deadline {
            panic!(
                "{}",
                with_logs(
                    stack,
                    &[ServiceName::Broker, case.service],
                    &format!(
                        "{} {what}: expected {expected}, still {} {:?} after {RECOVERY:?}",
                        case.label, reply.status, reply.body
                    )
                )
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_downstream_is_504_a_closed_one_502_and_both_recover() {
    if servers_disabled() {
        return;
    }
    let options = stack_options()
        .setting(
            ServiceName::Broker,
            "downstream.timeout_ms",
            BROKER_TIMEOUT_MS,
        )
        .setting(ServiceName::Broker, "limits.rate_per_second", 0);
    let stack = Arc::new(blocking(move || start_stack(options)).await);
    let client = client();

    for case in cases() {
        until_status(&client, &stack, &case, 202, "before the outage").await;

        // Stopped, socket still open: the request waits unanswered.
        let service = case.service;
        on(&stack, move |stack| stack.stop_service(service))
            .await
            .expect("stop the service");
        let started = std::time::Instant::now();
        let reply = send(&client, &stack, &case.body).await;
        assert_eq!(
            reply.status,
            504,
            "{}",
            with_logs(
                &stack,
                &[ServiceName::Broker],
                &format!(
                    "{} while {service} is stopped: {:?}",
                    case.label, reply.body
                )
            )
        );
        assert_eq!(reply.body["error"], json!(true));
        assert!(
            started.elapsed() >= Duration::from_millis(BROKER_TIMEOUT_MS / 2),
            "a 504 must come from the broker's timeout, it came after {:?}",
            started.elapsed()
        );

        on(&stack, move |stack| stack.start_service(service))
            .await
            .expect("start the service again");
        until_status(&client, &stack, &case, 202, "after the service came back").await;

        // Stopped and its socket closed: connections are refused.
        on(&stack, move |stack| {
            stack.stop_service(service)?;
            stack.close_sockets(service)
        })
        .await
        .expect("stop the service and close its socket");
        until_status(&client, &stack, &case, 502, "with its socket closed").await;

        on(&stack, move |stack| stack.start_service(service))
            .await
            .expect("start the service and reopen its socket");
        until_status(&client, &stack, &case, 202, "after the socket came back").await;
    }
}

/// A dependency server outage behind a service: MailHog down makes mail (and
/// so the broker) fail with a 5xx; once it is back, mail goes out again.
#[tokio::test(flavor = "multi_thread")]
async fn an_smtp_outage_is_a_gateway_error_and_recovers() {
    if servers_disabled() {
        return;
    }
    let options = stack_options()
        .services([ServiceName::Broker, ServiceName::Mail])
        .setting(ServiceName::Broker, "downstream.timeout_ms", 3000)
        .setting(ServiceName::Mail, "smtp.connect_timeout_ms", 1000)
        .setting(ServiceName::Mail, "smtp.send_timeout_ms", 1000);
    let stack = Arc::new(blocking(move || start_stack(options)).await);
    let client = client();
    let mail = Case {
        service: ServiceName::Mail,
        label: "mail during an SMTP outage".into(),
        body: json!({"action": "mail", "mail": {
            "from": "", "to": "smtp-outage@example.com", "subject": "s", "message": "m"
        }}),
    };
    until_status(&client, &stack, &mail, 202, "before the outage").await;
    on(&stack, move |stack| {
        stack.stop_dependency(Dependency::MailHog)
    })
    .await
    .expect("stop MailHog");
    let reply = send(&client, &stack, &mail.body).await;
    assert!(
        reply.status == 502 || reply.status == 504,
        "{}",
        with_logs(
            &stack,
            &[ServiceName::Broker, ServiceName::Mail],
            &format!("mail with MailHog down: {} {:?}", reply.status, reply.body)
        )
    );
    assert_eq!(reply.body["error"], json!(true));
    on(&stack, move |stack| {
        stack.start_dependency(Dependency::MailHog)
    })
    .await
    .expect("start MailHog again");
    until_status(&client, &stack, &mail, 202, "after MailHog came back").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_requests_from_one_client_are_429() {
    if servers_disabled() {
        return;
    }
    let options = stack_options()
        .services([ServiceName::Broker])
        .setting(ServiceName::Broker, "limits.rate_per_second", 1)
        .setting(ServiceName::Broker, "limits.rate_burst", 3);
    let stack = Arc::new(blocking(move || start_stack(options)).await);
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        // An unknown action: answered by the broker alone, after the limiter.
        let reply = send(&client, &stack, &json!({"action": "dance"})).await;
        statuses.push(reply.status);
        if reply.status == 429 {
            assert_eq!(reply.body["error"], json!(true), "{:?}", reply.body);
        }
    }
    assert_eq!(statuses[0], 400, "{statuses:?}");
    assert!(statuses.contains(&429), "no 429 in {statuses:?}");
    let allowed = statuses.iter().filter(|s| **s == 400).count();
    assert!(
        (3..=5).contains(&allowed),
        "a burst of 3 at 1/s lets 3 (a 4th or 5th if a second passed) through: {statuses:?}"
    );
    stop(stack).await;
}
