//! `POST /send` against a real MailHog: what arrives, what is refused, and how
//! an SMTP outage or a silent SMTP server is reported.

mod common;

use common::{Relay, count_to, header, mail, parts, received, recipient, send, start};
use serde_json::json;
use switchboard_testkit::MailHog;

fn shared_hog() -> &'static MailHog {
    MailHog::shared().expect("MailHog starts (run scripts/setup if it is missing)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_message_arrives_as_multipart_alternative_with_escaped_html() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let hog = shared_hog();
    let service = start(common::settings(hog.smtp_port(), |_| {})).await;
    let to = recipient("rcpt");
    let message = "<b>&\"x\"\nsecond line\n\nnew paragraph";

    let response = common::client()
        .post(format!("{}/send", service.base))
        .header("x-request-id", "req-4711")
        .body(mail(Some("Me <me@example.com>"), &to, "Test email", message).to_string())
        .send()
        .await
        .expect("POST /send");
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-request-id"], "req-4711");
    let envelope: switchboard_runtime::http::Envelope = response.json().await.expect("envelope");
    assert!(!envelope.error);
    assert_eq!(envelope.message, format!("sent to {to}"));

    let items = received(hog, &to, 1);
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(header(item, "From"), "Me <me@example.com>");
    assert_eq!(header(item, "To"), to);
    assert_eq!(header(item, "Subject"), "Test email");
    assert_eq!(header(item, "X-Request-Id"), "req-4711");
    assert!(
        header(item, "Content-Type").starts_with("multipart/alternative"),
        "{}",
        header(item, "Content-Type")
    );
    assert_eq!(item["Raw"]["From"], "me@example.com");
    assert_eq!(item["Raw"]["To"], json!([to]));

    let parts = parts(item);
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(parts[0].content_type.starts_with("text/plain"), "{parts:?}");
    assert!(parts[1].content_type.starts_with("text/html"), "{parts:?}");
    let (plain, html) = (&parts[0].text, &parts[1].text);
    assert!(plain.contains(message), "plain part: {plain}");
    assert!(
        html.contains("&lt;b&gt;&amp;&#34;x&#34;<br>"),
        "HTML part: {html}"
    );
    assert!(html.contains("second line</p>"), "HTML part: {html}");
    assert!(html.contains("<p>new paragraph</p>"), "HTML part: {html}");
    assert!(!html.contains("<b>"), "HTML part not escaped: {html}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_text_survives_the_transfer_encoding() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let hog = shared_hog();
    let service = start(common::settings(hog.smtp_port(), |_| {})).await;
    let to = recipient("utf8");
    let message = format!("Grüße aus Zürich — ✉\n{}", "long line ".repeat(30));
    let (status, envelope) = send(&service.base, &mail(None, &to, "Grüße", &message)).await;
    assert_eq!(status, 202, "{envelope:?}");
    let items = received(hog, &to, 1);
    let parts = parts(&items[0]);
    assert!(parts[0].text.contains(&message), "{parts:?}");
    assert!(parts[1].text.contains("Grüße aus Zürich — ✉"), "{parts:?}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_absent_from_uses_the_configured_sender() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let hog = shared_hog();
    let sender_address = recipient("sender");
    let service = start(common::settings(hog.smtp_port(), |settings| {
        settings.sender.name = "Switchboard Test".into();
        settings.sender.address = sender_address.clone();
    }))
    .await;
    let to = recipient("default_from");
    for from in [Some(""), None] {
        let (status, envelope) = send(&service.base, &mail(from, &to, "default", "hi")).await;
        assert_eq!(status, 202, "{envelope:?}");
    }
    let items = received(hog, &to, 2);
    for item in &items {
        assert_eq!(
            header(item, "From"),
            format!("\"Switchboard Test\" <{sender_address}>")
        );
        assert_eq!(item["Raw"]["From"], sender_address.as_str());
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_injection_is_refused_and_nothing_is_sent() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let hog = shared_hog();
    let service = start(common::settings(hog.smtp_port(), |_| {})).await;
    let to = recipient("inject");
    let victim = recipient("victim");
    let attempts = [
        (
            "to",
            mail(None, &format!("{to}\r\nBcc: {victim}"), "s", "m"),
        ),
        ("to", mail(None, &format!("{to}\nBcc: {victim}"), "s", "m")),
        ("to", mail(None, &format!("{to}, {victim}"), "s", "m")),
        (
            "from",
            mail(
                Some(&format!("me@example.com\r\nBcc: {victim}")),
                &to,
                "s",
                "m",
            ),
        ),
        (
            "subject",
            mail(None, &to, &format!("hello\r\nBcc: {victim}"), "m"),
        ),
        (
            "subject",
            mail(None, &to, &format!("hello\nBcc: {victim}"), "m"),
        ),
    ];
    for (field, body) in &attempts {
        let (status, envelope) = send(&service.base, body).await;
        assert_eq!(status, 400, "{body} -> {envelope:?}");
        assert!(envelope.error);
        assert!(
            envelope.message.contains(&format!("`{field}`")),
            "{body} -> {}",
            envelope.message
        );
    }
    // A valid message afterwards is the only one that arrives.
    let (status, _) = send(&service.base, &mail(None, &to, "after", "ok")).await;
    assert_eq!(status, 202);
    let items = received(hog, &to, 1);
    assert_eq!(items.len(), 1, "a refused message was sent: {items:#?}");
    assert_eq!(header(&items[0], "Subject"), "after");
    assert_eq!(count_to(hog, &victim), 0);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_400_that_says_what_is_wrong() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let hog = shared_hog();
    let service = start(common::settings(hog.smtp_port(), |settings| {
        settings.limits.max_message_bytes = 1024;
    }))
    .await;
    let to = recipient("bad_input");
    let cases = [
        (
            mail(None, &to, "s", &"x".repeat(1025)),
            "the limit is 1024 bytes",
        ),
        (
            mail(None, &to, &"s".repeat(999), "m"),
            "the limit is 998 bytes",
        ),
        (
            mail(None, "not-an-address", "s", "m"),
            "not a valid mailbox",
        ),
        (mail(None, "", "s", "m"), "`to` is required"),
        (
            mail(None, "rcpt🚀@exämple.com", "s", "m"),
            "`to` has non-ASCII characters in its address",
        ),
        (
            mail(Some("sender@exämple.com"), &to, "s", "m"),
            "`from` has non-ASCII characters in its address",
        ),
        (
            json!({"subject": "s", "message": "m"}),
            "missing field `to`",
        ),
        (json!({"to": to, "message": "m"}), "missing field `subject`"),
        (json!({"to": to, "subject": "s"}), "missing field `message`"),
    ];
    for (body, expected) in &cases {
        let (status, envelope) = send(&service.base, body).await;
        assert_eq!(status, 400, "{body}");
        assert!(envelope.error);
        assert!(
            envelope.message.contains(expected),
            "expected {expected:?}, got {:?}",
            envelope.message
        );
    }
    // A body beyond the HTTP limit (2 × 1024 + 64 KiB) is cut off there, still a 400.
    // (Just over the limit: a far larger body can make the client see a broken
    // pipe before it reads the early 400.)
    let huge = mail(None, &to, "s", &"x".repeat(100_000));
    let (status, envelope) = send(&service.base, &huge).await;
    assert_eq!(status, 400, "{envelope:?}");
    assert!(envelope.message.contains("limit"), "{}", envelope.message);
    // Exactly at the limit is fine.
    let (status, envelope) = send(&service.base, &mail(None, &to, "s", &"x".repeat(1024))).await;
    assert_eq!(status, 202, "{envelope:?}");
    assert_eq!(received(hog, &to, 1).len(), 1);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_is_a_502_naming_the_server_and_recovers() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let mut hog = MailHog::start().expect("MailHog starts");
    let smtp = format!("127.0.0.1:{}", hog.smtp_port());
    let service = start(common::settings(hog.smtp_port(), |_| {})).await;
    let client = common::client();
    let to = recipient("outage");

    let (status, _) = send(&service.base, &mail(None, &to, "before", "m")).await;
    assert_eq!(status, 202);
    let ready = client
        .get(format!("{}/readyz", service.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);

    tokio::task::block_in_place(|| hog.stop());
    let (status, envelope) = send(&service.base, &mail(None, &to, "during", "m")).await;
    assert_eq!(status, 502, "{envelope:?}");
    assert!(envelope.error);
    assert!(envelope.message.contains(&smtp), "{}", envelope.message);
    let ready = client
        .get(format!("{}/readyz", service.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let text = ready.text().await.expect("text");
    assert!(text.contains(&smtp), "{text}");

    tokio::task::block_in_place(|| hog.start_again()).expect("MailHog starts again");
    let (status, envelope) = send(&service.base, &mail(None, &to, "after", "m")).await;
    assert_eq!(status, 202, "{envelope:?}");
    // MailHog forgot everything when it stopped: only the last one is there.
    let items = received(&hog, &to, 1);
    assert_eq!(header(&items[0], "Subject"), "after");

    // Two sent and one failed, each timed; a bad request is refused unsent.
    let (status, _) = send(&service.base, &mail(None, "not an address", "x", "m")).await;
    assert_eq!(status, 400);
    let exposition = client
        .get(format!("{}/metrics", service.metrics))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("exposition");
    let count = |series: &str| switchboard_testkit::metrics::sample(&exposition, series);
    assert_eq!(
        count(r#"switchboard_mail_sends_total{outcome="sent"}"#),
        Some(2.0),
        "{exposition}"
    );
    assert_eq!(
        count(r#"switchboard_mail_sends_total{outcome="failed"}"#),
        Some(1.0),
        "{exposition}"
    );
    assert_eq!(
        count(r#"switchboard_mail_sends_total{outcome="refused"}"#),
        Some(1.0),
        "{exposition}"
    );
    assert_eq!(
        count("switchboard_mail_send_duration_seconds_count"),
        Some(3.0),
        "{exposition}"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_smtp_server_is_a_504_and_the_service_recovers() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let hog = shared_hog();
    let relay = Relay::start(hog.smtp_port()).await;
    let service = start(common::settings(relay.port, |settings| {
        settings.smtp.send_timeout_ms = 700;
    }))
    .await;
    let to = recipient("silent");
    let (status, _) = send(&service.base, &mail(None, &to, "first", "m")).await;
    assert_eq!(status, 202);

    relay.go_silent();
    let started = std::time::Instant::now();
    let (status, envelope) = send(&service.base, &mail(None, &to, "lost", "m")).await;
    assert_eq!(status, 504, "{envelope:?}");
    assert!(
        envelope
            .message
            .contains(&format!("127.0.0.1:{}", relay.port)),
        "{}",
        envelope.message
    );
    assert!(
        envelope.message.contains("did not answer within"),
        "{}",
        envelope.message
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    relay.speak_again();
    let (status, envelope) = send(&service.base, &mail(None, &to, "second", "m")).await;
    assert_eq!(status, 202, "{envelope:?}");
    let items = received(hog, &to, 2);
    let mut subjects: Vec<String> = items.iter().map(|item| header(item, "Subject")).collect();
    subjects.sort();
    assert_eq!(subjects, ["first", "second"]);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_are_json_errors() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let hog = shared_hog();
    let service = start(common::settings(hog.smtp_port(), |_| {})).await;
    let client = common::client();
    let response = client
        .get(format!("{}/send", service.base))
        .send()
        .await
        .expect("GET /send");
    assert_eq!(response.status(), 405);
    let response = client
        .post(format!("{}/nowhere", service.base))
        .send()
        .await
        .expect("POST /nowhere");
    assert_eq!(response.status(), 404);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_is_required_not_attempted() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    // MailHog offers no STARTTLS: with encryption = "starttls" the mailer must
    // refuse to talk to it in plain text rather than fall back.
    let hog = shared_hog();
    let settings = common::settings(hog.smtp_port(), |settings| {
        settings.smtp.encryption = switchboard_mail::settings::Encryption::Starttls;
    });
    let mailer = switchboard_mail::smtp::Mailer::new(&settings.smtp, None).expect("mailer");
    let err = mailer
        .test_connection()
        .await
        .expect_err("no plain-text fallback");
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{}", hog.smtp_port())),
        "{text}"
    );
    assert!(text.to_lowercase().contains("starttls"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_serves_only_once_the_smtp_server_answers() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let mut hog = MailHog::start().expect("MailHog starts");
    tokio::task::block_in_place(|| hog.stop());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = switchboard_runtime::Shutdown::new();
    let task = tokio::spawn(switchboard_mail::run(
        common::settings(hog.smtp_port(), |_| {}),
        switchboard_mail::MailListeners {
            http: listener,
            metrics: None,
        },
        shutdown.clone(),
    ));
    // Connections wait in the backlog while the relay is down.
    let early = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(700))
        .build()
        .expect("client")
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(early.is_err(), "served before the SMTP server answered");
    assert!(!task.is_finished());

    tokio::task::block_in_place(|| hog.start_again()).expect("MailHog starts again");
    let to = recipient("late_relay");
    let (status, envelope) = send(&base, &mail(None, &to, "late", "m")).await;
    assert_eq!(status, 202, "{envelope:?}");
    assert_eq!(received(&hog, &to, 1).len(), 1);
    shutdown.trigger();
    let result = task.await.expect("no panic");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_waiting_for_the_relay_ends_cleanly() {
    let port = switchboard_testkit::free_port();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shutdown = switchboard_runtime::Shutdown::new();
    let task = tokio::spawn(switchboard_mail::run(
        common::settings(port, |_| {}),
        switchboard_mail::MailListeners {
            http: listener,
            metrics: None,
        },
        shutdown.clone(),
    ));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    shutdown.trigger();
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("ends within 5 s")
        .expect("no panic");
    assert!(result.is_ok(), "{result:?}");
}
