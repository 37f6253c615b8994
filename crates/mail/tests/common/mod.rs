//! Shared by the mail service's integration tests: start the service in-process
//! against a real MailHog, post to it, and read what MailHog received.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_mail::settings::Settings;
use switchboard_mail::{MailListeners, run};
use switchboard_runtime::Shutdown;
use switchboard_runtime::http::Envelope;
use switchboard_testkit::MailHog;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A mail service running in this test's runtime.
pub struct Running {
    pub base: String,
    /// The metrics door (`GET /metrics`).
    pub metrics: String,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<Result<(), switchboard_mail::Error>>,
}

impl Running {
    /// Stops the service and checks it ended without error.
    pub async fn stop(self) {
        self.shutdown.trigger();
        let result = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the service stops within 15 s")
            .expect("the service task does not panic");
        assert!(result.is_ok(), "the service failed: {result:?}");
    }
}

/// Settings pointing at `smtp_port` on 127.0.0.1, adjusted by `configure`.
pub fn settings(smtp_port: u16, configure: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = Settings::default();
    settings.smtp.port = smtp_port;
    settings.smtp.send_timeout_ms = 5_000;
    configure(&mut settings);
    settings
}

/// Starts the service on a fresh loopback port and waits until it serves.
pub async fn start(settings: Settings) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics_addr: SocketAddr = metrics.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let task = tokio::spawn(run(
        settings,
        MailListeners {
            http: listener,
            metrics: Some(metrics),
        },
        shutdown.clone(),
    ));
    let base = format!("http://{addr}");
    // The listener is bound before run() starts, so this waits for readiness
    // (the SMTP test) rather than racing the bind.
    let response = client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("the service answers /healthz");
    assert_eq!(response.status(), 200);
    Running {
        base,
        metrics: format!("http://{metrics_addr}"),
        shutdown,
        task,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// `POST /send` with `body`; status and envelope.
pub async fn send(base: &str, body: &Value) -> (u16, Envelope) {
    send_raw(base, body.to_string()).await
}

pub async fn send_raw(base: &str, body: String) -> (u16, Envelope) {
    let response = client()
        .post(format!("{base}/send"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /send");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let envelope: Envelope = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("reply is not an envelope ({err}): {text}"));
    (status, envelope)
}

/// A recipient no other test uses.
pub fn recipient(prefix: &str) -> String {
    format!("{}@example.com", switchboard_testkit::unique_name(prefix))
}

pub fn mail(from: Option<&str>, to: &str, subject: &str, message: &str) -> Value {
    let mut body = json!({"to": to, "subject": subject, "message": message});
    if let Some(from) = from {
        body["from"] = json!(from);
    }
    body
}

/// Waits (off the async workers) until `count` messages for `to` are in MailHog.
pub fn received(hog: &MailHog, to: &str, count: usize) -> Vec<Value> {
    tokio::task::block_in_place(|| {
        hog.wait_for_messages_to(to, count, Duration::from_secs(15))
            .expect("messages arrive in MailHog")
    })
}

/// How many messages for `to` MailHog has right now.
pub fn count_to(hog: &MailHog, to: &str) -> usize {
    tokio::task::block_in_place(|| {
        hog.messages_to(to).expect("MailHog search")["items"]
            .as_array()
            .map_or(0, Vec::len)
    })
}

/// The first value of header `name` of a MailHog message.
pub fn header(item: &Value, name: &str) -> String {
    item["Content"]["Headers"][name][0]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} header in {item:#}"))
        .to_owned()
}

/// A decoded MIME part: its content type and body text.
#[derive(Debug)]
pub struct Part {
    pub content_type: String,
    pub text: String,
}

/// The MIME parts of a MailHog message, bodies decoded from their transfer
/// encoding (MailHog shows them as they went over the wire).
pub fn parts(item: &Value) -> Vec<Part> {
    let parts = item["MIME"]["Parts"]
        .as_array()
        .unwrap_or_else(|| panic!("not a multipart message: {item:#}"));
    parts
        .iter()
        // MailHog also lists the epilogue after the closing boundary as a part.
        .filter(|part| part["Headers"]["Content-Type"].is_array())
        .map(|part| {
            let headers = &part["Headers"];
            let content_type = headers["Content-Type"][0].as_str().unwrap_or("").to_owned();
            let encoding = headers["Content-Transfer-Encoding"][0]
                .as_str()
                .unwrap_or("7bit")
                .to_ascii_lowercase();
            let body = part["Body"].as_str().unwrap_or("");
            let text = match encoding.as_str() {
                "quoted-printable" => String::from_utf8(
                    quoted_printable::decode(body, quoted_printable::ParseMode::Robust)
                        .expect("quoted-printable"),
                )
                .expect("utf-8")
                .replace("\r\n", "\n"),
                "base64" => {
                    use base64::Engine;
                    let compact: String = body.split_whitespace().collect();
                    String::from_utf8(
                        base64::engine::general_purpose::STANDARD
                            .decode(compact)
                            .expect("base64"),
                    )
                    .expect("utf-8")
                    .replace("\r\n", "\n")
                }
                _ => body.replace("\r\n", "\n"),
            };
            Part { content_type, text }
        })
        .collect()
}

/// A TCP relay in front of MailHog. It records what clients send (to check the
/// SMTP dialogue) and can turn silent: it then cuts the connections it carries
/// and accepts new ones without ever answering, the way a hung server behaves.
pub struct Relay {
    pub port: u16,
    silent: Arc<AtomicBool>,
    carried: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    sent_by_clients: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let silent = Arc::new(AtomicBool::new(false));
        let carried: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let sent_by_clients: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (flag, connections, recording) =
            (silent.clone(), carried.clone(), sent_by_clients.clone());
        let task = tokio::spawn(async move {
            let mut held: Vec<TcpStream> = Vec::new();
            while let Ok((inbound, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    held.push(inbound);
                    continue;
                }
                let recording = recording.clone();
                let relay = tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = inbound.into_split();
                    let (mut server_read, mut server_write) = outbound.into_split();
                    let upstream_copy = async {
                        let mut buffer = [0u8; 4096];
                        loop {
                            match client_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    recording
                                        .lock()
                                        .expect("lock")
                                        .extend_from_slice(&buffer[..n]);
                                    if server_write.write_all(&buffer[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = server_write.shutdown().await;
                    };
                    let downstream_copy = async {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                        let _ = client_write.shutdown().await;
                    };
                    tokio::join!(upstream_copy, downstream_copy);
                });
                connections.lock().expect("lock").push(relay);
            }
        });
        Self {
            port,
            silent,
            carried,
            sent_by_clients,
            task,
        }
    }

    /// Cuts every carried connection and answers no new one.
    pub fn go_silent(&self) {
        self.silent.store(true, Ordering::SeqCst);
        for relay in self.carried.lock().expect("lock").drain(..) {
            relay.abort();
        }
    }

    pub fn speak_again(&self) {
        self.silent.store(false, Ordering::SeqCst);
    }

    /// Everything clients sent so far, lossily as text.
    pub fn sent_by_clients(&self) -> String {
        String::from_utf8_lossy(&self.sent_by_clients.lock().expect("lock")).into_owned()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        for relay in self.carried.lock().expect("lock").drain(..) {
            relay.abort();
        }
    }
}
