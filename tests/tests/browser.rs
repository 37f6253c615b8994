//! The front-end page in a real browser (headless Chromium through
//! chromedriver, driven with fantoccini) against the whole running stack:
//! every button is clicked, the Received pane must show the broker's success
//! reply for each, and the effects must land — log documents in the database
//! (by every transport) and the mail in MailHog; the panels show every
//! downstream reachable and the newest entries, and the transport comparison
//! fills its table and chart.

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

/// Polls `script` (a function body) until it returns something other than
/// `null`, for at most 60 s.
async fn wait_for_js(browser: &Client, script: &str, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = browser
            .execute(script, vec![])
            .await
            .expect("reading the page");
        if !value.is_null() {
            return value;
        }
        assert!(Instant::now() < deadline, "no {what} within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    // The panels of the system at work: every downstream reachable, the
    // entries the clicks logged, and the four transports compared.
    let up = wait_for_js(
        &browser,
        "const up = document.querySelectorAll('#downstreams li[data-state=up]').length;
         return up === 6 ? up : null;",
        "six reachable downstreams on the page",
    )
    .await;
    assert_eq!(up, json!(6));
    wait_for_js(
        &browser,
        "return document.querySelector('#logs li[data-name=event]') ? true : null;",
        "the clicks' entries among the newest log entries",
    )
    .await;
    browser
        .execute(
            "document.getElementById('compareCount').value = '3';",
            vec![],
        )
        .await
        .expect("set the count");
    browser
        .find(Locator::Id("compareBtn"))
        .await
        .expect("compare button")
        .click()
        .await
        .expect("click compare");
    let rows = wait_for_js(
        &browser,
        "if (document.body.dataset.compare !== 'done') { return null; }
         return Array.from(document.querySelectorAll('#compare-table tbody tr')).map(
           (row) => Array.from(row.children).map((cell) => cell.textContent));",
        "the comparison of the four transports",
    )
    .await;
    let rows: Vec<Vec<String>> = serde_json::from_value(rows).expect("rows of cells");
    let vias: Vec<&str> = rows.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(vias, ["rpc", "grpc", "http", "amqp"], "{rows:?}");
    for row in &rows {
        assert_eq!((row[1].as_str(), row[2].as_str()), ("3", "0"), "{row:?}");
        for cell in &row[3..] {
            let ms: f64 = cell.parse().unwrap_or_else(|_| panic!("{row:?}"));
            assert!(ms > 0.0 && ms < 30_000.0, "{row:?}");
        }
    }
    let bars = browser
        .execute(
            "return document.querySelectorAll('#compare-chart rect.bar').length;",
            vec![],
        )
        .await
        .expect("chart");
    assert_eq!(bars, json!(8));

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
