//! Distributed traces across the whole stack: every service exports its
//! spans over OTLP/gRPC to a real trace collector (the test kit's, built on
//! the official `opentelemetry-proto` service), and one request through the
//! broker is one trace, whichever transports it crosses.
//!
//! The tests send their own `traceparent`, as an instrumented client would,
//! so they know the trace id to look for; the broker's span is then the
//! child of the test's.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;
use switchboard_testkit::otlp::{CollectedSpan, Collector, Kind, render_tree};
use switchboard_testkit::servers_disabled;
use switchboard_tests::{
    DEV_USER_EMAIL, DEV_USER_PASSWORD, ServiceName, Stack, client, log_action, stack_options,
    start_stack, with_logs,
};

struct Traced {
    collector: Collector,
    stack: Stack,
}

fn traced() -> &'static Traced {
    static TRACED: OnceLock<Traced> = OnceLock::new();
    TRACED.get_or_init(|| {
        let collector = Collector::start().expect("the trace collector starts");
        let mut options = stack_options();
        for service in ServiceName::ALL {
            options = options
                .setting(service, "telemetry.otlp_endpoint", collector.endpoint())
                // Exported within a tenth of a second, not the default 5 s.
                .env(service, "OTEL_BSP_SCHEDULE_DELAY", "100");
        }
        let stack = start_stack(options);
        Traced { collector, stack }
    })
}

/// Long enough for an event's way through RabbitMQ and the listener's batch
/// on a busy machine, and for the exporters' next flush.
const ARRIVAL: Duration = Duration::from_secs(30);

/// A fresh W3C trace context of the test's own: (trace id, `traceparent`).
fn client_trace() -> (String, String) {
    let trace_id = format!("{:032x}", rand_u128());
    let traceparent = format!("00-{trace_id}-{:016x}-01", rand_u128() as u64 | 1);
    (trace_id, traceparent)
}

fn rand_u128() -> u128 {
    // Unique enough within one test run: time, and a counter for calls
    // within the same nanosecond.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let call = u128::from(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    now.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (call << 64) ^ call
}

async fn post_traced(traced: &Traced, body: &serde_json::Value, traceparent: &str) -> u16 {
    let response = client()
        .post(format!("{}/handle", traced.stack.broker_url()))
        .header("traceparent", traceparent)
        .json(body)
        .send()
        .await
        .expect("the broker answers");
    response.status().as_u16()
}

/// Waits until the trace holds a span of `service` named `leaf` and is
/// whole: every span's parent has arrived too, but for the broker's, whose
/// parent is the test's own span (spans arrive in each service's next
/// export, in no particular order). Returns the trace.
async fn trace_reaching(
    traced: &'static Traced,
    traceparent: &str,
    service: &'static str,
    leaf: &'static str,
) -> Vec<CollectedSpan> {
    let mut parts = traceparent.split('-').skip(1);
    let trace_id = parts.next().expect("a trace id").to_owned();
    let client_span = parts.next().expect("a span id").to_owned();
    let waited = tokio::task::spawn_blocking(move || {
        traced
            .collector
            .wait_for_trace(&trace_id, ARRIVAL, |spans| {
                let has_leaf = spans
                    .iter()
                    .any(|span| span.service == service && span.name == leaf);
                let whole = spans.iter().all(|span| match &span.parent_span_id {
                    Some(parent) => {
                        parent == &client_span || spans.iter().any(|other| &other.span_id == parent)
                    }
                    None => false,
                });
                has_leaf && whole
            })
    })
    .await
    .expect("waiting task");
    waited.unwrap_or_else(|err| {
        panic!(
            "{}",
            with_logs(
                &traced.stack,
                &ServiceName::ALL,
                &format!("the trace never reached {service} {leaf}: {err}")
            )
        )
    })
}

fn find<'a>(spans: &'a [CollectedSpan], service: &str, name: &str) -> &'a CollectedSpan {
    spans
        .iter()
        .find(|span| span.service == service && span.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no span {name:?} of {service} in the trace:\n{}",
                render_tree(spans)
            )
        })
}

/// The spans from `leaf` up to the trace's first span, leaf first; panics
/// if a parent link leads to a span that is not in the trace (other than
/// the test's own, above the broker).
fn ancestry<'a>(spans: &'a [CollectedSpan], leaf: &'a CollectedSpan) -> Vec<&'a CollectedSpan> {
    let mut path = vec![leaf];
    let mut current = leaf;
    while let Some(parent_id) = &current.parent_span_id {
        match spans.iter().find(|span| &span.span_id == parent_id) {
            Some(parent) => {
                path.push(parent);
                current = parent;
            }
            None => break,
        }
    }
    path
}

/// The services along `path`, each once, from the trace's first span down.
fn services_down(path: &[&CollectedSpan]) -> Vec<String> {
    let mut services: Vec<String> = Vec::new();
    for span in path.iter().rev() {
        if services.last() != Some(&span.service) {
            services.push(span.service.clone());
        }
    }
    services
}

fn assert_rooted_at_the_client(
    spans: &[CollectedSpan],
    traceparent: &str,
    path: &[&CollectedSpan],
) {
    let top = path.last().expect("a path has a span");
    let client_span = traceparent.split('-').nth(2).expect("a span id");
    assert_eq!(
        (
            top.service.as_str(),
            top.kind,
            top.parent_span_id.as_deref()
        ),
        ("switchboard-broker", Kind::Server, Some(client_span)),
        "the broker's request span is not the child of the client's:\n{}",
        render_tree(spans)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_is_one_trace_from_the_broker_to_the_store() {
    if servers_disabled() {
        return;
    }
    let traced = tokio::task::spawn_blocking(traced).await.expect("stack");
    let (trace_id, traceparent) = client_trace();
    let login = json!({
        "action": "auth",
        "auth": {"email": DEV_USER_EMAIL, "password": DEV_USER_PASSWORD},
    });
    assert_eq!(post_traced(traced, &login, &traceparent).await, 202);

    let spans = trace_reaching(traced, &traceparent, "switchboard-logger", "store insert").await;
    let tree = render_tree(&spans);
    // Shown with --nocapture: what a login looks like in a trace viewer.
    println!("trace {trace_id}:\n{tree}");
    let store = find(&spans, "switchboard-logger", "store insert");
    let path = ancestry(&spans, store);
    assert_eq!(
        services_down(&path),
        [
            "switchboard-broker",
            "switchboard-auth",
            "switchboard-listener",
            "switchboard-logger"
        ],
        "the login's event did not travel in one trace:\n{tree}"
    );
    assert_rooted_at_the_client(&spans, &traceparent, &path);

    // Each hop is the child of the one before it, with the kind its role
    // gives it.
    let broker_request = find(&spans, "switchboard-broker", "POST /handle");
    let auth_call = find(&spans, "switchboard-broker", "auth http");
    let auth_request = find(&spans, "switchboard-auth", "POST /authenticate");
    let bcrypt = find(&spans, "switchboard-auth", "bcrypt");
    let publish = find(&spans, "switchboard-auth", "rabbitmq amqp");
    let consume = find(&spans, "switchboard-listener", "log.INFO process");
    for (child, parent, kind) in [
        (auth_call, broker_request, Kind::Client),
        (auth_request, auth_call, Kind::Server),
        (bcrypt, auth_request, Kind::Internal),
        (publish, auth_request, Kind::Producer),
        (consume, publish, Kind::Consumer),
    ] {
        assert!(
            child.is_child_of(parent) && child.kind == kind,
            "{} {} ({:?}) is not the {kind:?} child of {} {}:\n{tree}",
            child.service,
            child.name,
            child.kind,
            parent.service,
            parent.name
        );
    }
    assert_eq!(
        (
            broker_request.attribute("http.route"),
            broker_request.attribute("http.response.status_code")
        ),
        (Some("/handle"), Some("202")),
        "{broker_request:?}"
    );
    assert!(
        path.iter().any(|span| span.span_id == consume.span_id),
        "the store insert does not descend from the listener's delivery:\n{tree}"
    );

    // Log lines carry the trace id (TRACE_ID in the journal; the same
    // field on stderr, which the stack keeps): the request lines of the
    // services that log one per request.
    for service in [ServiceName::Broker, ServiceName::Auth] {
        let log = traced.stack.service_log(service);
        assert!(
            log.contains(&trace_id),
            "{} logged nothing with trace id {trace_id}:\n{log}",
            service.as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_request_is_one_trace_over_each_transport() {
    if servers_disabled() {
        return;
    }
    let traced = tokio::task::spawn_blocking(traced).await.expect("stack");
    let cases: [(&str, &[&str]); 4] = [
        ("rpc", &["switchboard-broker", "switchboard-logger"]),
        ("grpc", &["switchboard-broker", "switchboard-logger"]),
        ("http", &["switchboard-broker", "switchboard-logger"]),
        (
            "amqp",
            &[
                "switchboard-broker",
                "switchboard-listener",
                "switchboard-logger",
            ],
        ),
    ];
    for (via, services) in cases {
        let (_, traceparent) = client_trace();
        let body = log_action(&format!("traced-{via}"), "followed", Some(via));
        let status = post_traced(traced, &body, &traceparent).await;
        assert!(
            status == 200 || status == 202,
            "logging via {via} answered {status}"
        );
        let spans =
            trace_reaching(traced, &traceparent, "switchboard-logger", "store insert").await;
        let store = find(&spans, "switchboard-logger", "store insert");
        let path = ancestry(&spans, store);
        assert_eq!(
            services_down(&path),
            services,
            "logging via {via} is not one trace:\n{}",
            render_tree(&spans)
        );
        assert_rooted_at_the_client(&spans, &traceparent, &path);
        let call_name = match via {
            "amqp" => "rabbitmq amqp".to_owned(),
            other => format!("logger {other}"),
        };
        let call = find(&spans, "switchboard-broker", &call_name);
        assert!(
            path.iter().any(|span| span.span_id == call.span_id),
            "the store insert does not descend from the broker's {call_name} call:\n{}",
            render_tree(&spans)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mail_is_one_trace_to_the_smtp_server() {
    if servers_disabled() {
        return;
    }
    let traced = tokio::task::spawn_blocking(traced).await.expect("stack");
    let (_, traceparent) = client_trace();
    let mail = json!({"action": "mail", "mail": {
        "from": "sender@example.com", "to": "traced@example.com",
        "subject": "Traced", "message": "Followed through the broker",
    }});
    assert_eq!(post_traced(traced, &mail, &traceparent).await, 202);
    let spans = trace_reaching(traced, &traceparent, "switchboard-mail", "mail-server smtp").await;
    let smtp = find(&spans, "switchboard-mail", "mail-server smtp");
    let path = ancestry(&spans, smtp);
    assert_eq!(
        services_down(&path),
        ["switchboard-broker", "switchboard-mail"],
        "{}",
        render_tree(&spans)
    );
    assert_rooted_at_the_client(&spans, &traceparent, &path);
    let names: Vec<&str> = path.iter().rev().map(|span| span.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "POST /handle",
            "mail http",
            "POST /send",
            "mail-server smtp"
        ],
        "{}",
        render_tree(&spans)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_span_is_named_by_its_route_never_by_a_client_s_path() {
    if servers_disabled() {
        return;
    }
    let traced = tokio::task::spawn_blocking(traced).await.expect("stack");
    let (_, traceparent) = client_trace();
    let response = client()
        .get(format!(
            "{}/no/such/path-{}",
            traced.stack.broker_url(),
            rand_u128()
        ))
        .header("traceparent", &traceparent)
        .send()
        .await
        .expect("the broker answers");
    assert_eq!(response.status().as_u16(), 404);
    let spans = trace_reaching(traced, &traceparent, "switchboard-broker", "GET other").await;
    let request = find(&spans, "switchboard-broker", "GET other");
    assert_eq!(
        request.attribute("http.route"),
        Some("other"),
        "{request:?}"
    );
    assert_eq!(
        request.attribute("http.response.status_code"),
        Some("404"),
        "{request:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_the_client_did_not_keep_is_kept_nowhere() {
    if servers_disabled() {
        return;
    }
    let traced = tokio::task::spawn_blocking(traced).await.expect("stack");
    // Requests whose trace the client did not keep (flags 00), over every
    // path a trace takes: each service after the broker must hear that the
    // trace is not kept, or it would start (and keep) one of its own.
    let (unkept_trace, sampled) = client_trace();
    let unkept = format!("{}-00", sampled.trim_end_matches("-01"));
    let request_id = format!("unkept-{:x}", rand_u128() as u64);
    let login = json!({
        "action": "auth",
        "auth": {"email": DEV_USER_EMAIL, "password": DEV_USER_PASSWORD},
    });
    let mut bodies = vec![login.clone()];
    for via in ["rpc", "grpc", "http", "amqp"] {
        bodies.push(log_action(
            &format!("unkept-{via}"),
            "not followed",
            Some(via),
        ));
    }
    for body in &bodies {
        let response = client()
            .post(format!("{}/handle", traced.stack.broker_url()))
            .header("traceparent", &unkept)
            .header("x-request-id", &request_id)
            .json(body)
            .send()
            .await
            .expect("the broker answers");
        let status = response.status().as_u16();
        assert!(status == 200 || status == 202, "{body} answered {status}");
    }
    // The same paths, kept: once their traces have arrived whole, every
    // service has exported what it ended before them.
    for body in &bodies {
        let (_, traceparent) = client_trace();
        let status = post_traced(traced, body, &traceparent).await;
        assert!(status == 200 || status == 202, "{body} answered {status}");
        trace_reaching(traced, &traceparent, "switchboard-logger", "store insert").await;
    }
    let leaked: Vec<_> = traced
        .collector
        .spans()
        .into_iter()
        .filter(|span| {
            span.trace_id == unkept_trace || span.attribute("request_id") == Some(&request_id)
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "spans of requests whose trace was not kept reached the collector:\n{}",
        render_tree(&leaked)
    );
}
