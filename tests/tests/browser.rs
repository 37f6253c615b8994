//! The front-end page in a real browser (headless Chromium through
//! chromedriver, driven with fantoccini) against the whole running stack:
//! every button is clicked, the Received pane must show the broker's success
//! reply for each, and the effects must land — log documents in the database
//! (by every transport) and the mail in MailHog.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use switchboard_testkit::browser::Browser;
use switchboard_testkit::servers_disabled;
use switchboard_tests::{
    ServiceName, Stack, blocking, client, logs_named, stack_options, start_stack, wait_for_logs,
    with_logs,
};

/// What the page shows after a click: the Output entry's state (`ok`,
/// `error`), the Received status line and the Received pane's JSON.
#[derive(Debug)]
struct Shown {
    state: String,
    output: String,
    status: String,
    received: Value,
}

/// Clicks `button` and waits until its request finished (the newest Output
/// entry is no longer pending).
async fn click(browser: &Client, button: &str) -> Shown {
    let entries_before = browser
        .find_all(Locator::Css("#output .entry"))
        .await
        .expect("output entries")
        .len();
    browser
        .find(Locator::Id(button))
        .await
        .unwrap_or_else(|err| panic!("button #{button}: {err}"))
        .click()
        .await
        .unwrap_or_else(|err| panic!("clicking #{button}: {err}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let finished = browser
            .execute(
                "const entries = document.querySelectorAll('#output .entry');
                 const last = entries[entries.length - 1];
                 if (entries.length <= arguments[0] || last.dataset.state === 'pending') { return null; }
                 return {
                   state: last.dataset.state,
                   output: last.textContent,
                   status: document.getElementById('received-status').textContent,
                   received: document.getElementById('received').textContent,
                 };",
                vec![json!(entries_before)],
            )
            .await
            .expect("reading the page");
        if !finished.is_null() {
            let received_text = finished["received"].as_str().unwrap_or_default();
            return Shown {
                state: finished["state"].as_str().unwrap_or_default().to_owned(),
                output: finished["output"].as_str().unwrap_or_default().to_owned(),
                status: finished["status"].as_str().unwrap_or_default().to_owned(),
                received: serde_json::from_str(received_text)
                    .unwrap_or_else(|_| Value::String(received_text.to_owned())),
            };
        }
        assert!(
            Instant::now() < deadline,
            "#{button}: no answer shown within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_button_of_the_page_succeeds_against_the_running_stack() {
    if servers_disabled() {
        return;
    }
    let stack: std::sync::Arc<Stack> =
        std::sync::Arc::new(blocking(|| start_stack(stack_options())).await);
    let http = client();
    let driver = Browser::start().await;
    let browser = driver.session().await;
    browser
        .goto(&stack.frontend_url())
        .await
        .expect("open the front-end");
    browser
        .wait()
        .for_element(Locator::Css("body[data-ready='true']"))
        .await
        .expect("the page's script runs");

    // Button → HTTP status and message the Received pane must show.
    let expected: [(&str, &str, &str); 7] = [
        ("brokerBtn", "200", "Hit the broker"),
        ("authBrokerBtn", "202", "Authenticated!"),
        ("logBtn", "202", "logged"),
        ("logGBtn", "202", "logged"),
        ("logAmqpBtn", "202", "logged"),
        ("logHttpBtn", "202", "logged"),
        ("mailBtn", "202", "Message sent to you@there.com"),
    ];
    let mut failures = Vec::new();
    for (button, status, message) in expected {
        let shown = click(&browser, button).await;
        let ok = shown.state == "ok"
            && shown.output.contains(message)
            && shown.status.starts_with(&format!("HTTP {status}"))
            && shown.received["error"] == json!(false)
            && shown.received["message"] == json!(message);
        if !ok {
            failures.push(format!(
                "#{button}: expected HTTP {status} {message:?}, page shows {shown:?}"
            ));
        }
    }
    let sent = browser
        .find(Locator::Id("payload"))
        .await
        .expect("Sent pane")
        .text()
        .await
        .expect("Sent text");
    let _ = browser.close().await;
    assert!(
        failures.is_empty(),
        "{}",
        with_logs(
            &stack,
            &[ServiceName::Broker, ServiceName::Frontend],
            &failures.join("\n")
        )
    );
    // The last click was the mail button: its request is in the Sent pane.
    assert!(sent.contains("you@there.com"), "Sent pane: {sent}");

    // The effects landed: the page logs under the name "event" by RPC, gRPC,
    // RabbitMQ and HTTP (four documents in this fresh stack), and sends one mail.
    let events = wait_for_logs(&http, &stack, "event", 4, 100, Duration::from_secs(30)).await;
    assert_eq!(
        events,
        4,
        "{}",
        with_logs(
            &stack,
            &[ServiceName::Listener, ServiceName::Logger],
            "documents named \"event\""
        )
    );
    let data: Vec<Value> = logs_named(&http, &stack, "event", 100)
        .await
        .into_iter()
        .map(|entry| entry["data"].clone())
        .collect();
    assert!(data.contains(&json!("Some kind of gRPC data")), "{data:?}");
    let mail = blocking({
        let stack = std::sync::Arc::clone(&stack);
        move || {
            stack
                .mailhog()
                .expect("the stack runs MailHog")
                .wait_for_messages_to("you@there.com", 1, Duration::from_secs(30))
        }
    })
    .await
    .expect("the page's mail arrives in MailHog");
    assert_eq!(mail.len(), 1);
    assert_eq!(
        mail[0]["Content"]["Headers"]["Subject"][0],
        json!("Test email")
    );

    drop(driver);
    blocking(move || drop(stack)).await;
}
