//! The real `switchboard-mail` binary the way systemd runs it: socket
//! activation (`systemd-socket-activate` passes the `http` socket as fd 3),
//! `Type=notify` readiness and status on `$NOTIFY_SOCKET`, SIGTERM, and the
//! SMTP password from `$CREDENTIALS_DIRECTORY`.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Relay, header, mail, received, recipient, send_raw};
use switchboard_testkit::MailHog;
use switchboard_testkit::activation::{NotifySocket, SocketActivation, sigterm, wait_for_exit};

const BINARY: &str = env!("CARGO_BIN_EXE_switchboard-mail");

fn socket_activated(port: u16, env: &[(&str, String)]) -> Child {
    SocketActivation::new()
        .listen(format!("127.0.0.1:{port}"), "http")
        .envs(env.iter().map(|(key, value)| (*key, value.clone())))
        .spawn(BINARY)
        .expect("spawn systemd-socket-activate")
}

fn terminate(child: &Child) {
    sigterm(child).expect("SIGTERM");
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    wait_for_exit(child, timeout)
        .unwrap_or_else(|| panic!("the service did not exit within {timeout:?} of SIGTERM"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_the_activated_socket_and_notifies_readiness() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let hog = MailHog::shared().expect("MailHog starts");
    let port = switchboard_testkit::free_port();
    let mut notify = NotifySocket::bind().expect("notify socket");
    // listen.http names a port nobody may bind: the service must use fd 3.
    let mut child = socket_activated(
        port,
        &[
            ("NOTIFY_SOCKET", notify.path().display().to_string()),
            ("SWITCHBOARD_MAIL__SMTP__PORT", hog.smtp_port().to_string()),
            ("SWITCHBOARD_MAIL__LISTEN__HTTP", "192.0.2.1:9".to_owned()),
            ("SWITCHBOARD_MAIL__RUNTIME__LOG_TARGET", "stderr".to_owned()),
        ],
    );

    // The first connection starts the service; it waits in the backlog
    // meanwhile, so retry only until the activator has bound the port.
    let to = recipient("activated");
    let base = format!("http://127.0.0.1:{port}");
    let body = mail(None, &to, "activated", "via fd 3").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, envelope) = loop {
        match common::client()
            .post(format!("{base}/send"))
            .body(body.clone())
            .send()
            .await
        {
            Ok(_) => break send_raw(&base, body.clone()).await,
            Err(err) if Instant::now() < deadline && err.is_connect() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("no answer on the activated socket: {err}"),
        }
    };
    assert_eq!(status, 202, "{envelope:?}");
    assert_eq!(envelope.message, format!("sent to {to}"));
    assert_eq!(received(hog, &to, 2).len(), 2);

    assert!(
        tokio::task::block_in_place(|| notify.wait_for("READY=1", Duration::from_secs(10))),
        "no READY=1; got {:?}",
        notify.seen()
    );
    assert!(
        notify
            .seen()
            .iter()
            .any(|datagram| datagram.contains("STATUS=serving; sending through 127.0.0.1:")),
        "no serving status; got {:?}",
        notify.seen()
    );

    terminate(&child);
    let exit = tokio::task::block_in_place(|| wait_exit(&mut child, Duration::from_secs(15)));
    assert!(exit.success(), "exit after SIGTERM: {exit}");
    assert!(
        tokio::task::block_in_place(|| notify.wait_for("STOPPING=1", Duration::from_secs(2))),
        "no STOPPING=1; got {:?}",
        notify.seen()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticates_with_the_password_from_the_systemd_credential() {
    if switchboard_testkit::servers_disabled() {
        return;
    }
    let hog = MailHog::shared().expect("MailHog starts");
    // The relay records the SMTP dialogue so the AUTH command can be checked.
    let relay = Relay::start(hog.smtp_port()).await;
    let credentials = tempfile::tempdir().expect("tempdir");
    std::fs::write(credentials.path().join("smtp-password"), "s3cret pass\n")
        .expect("write credential");
    let port = switchboard_testkit::free_port();
    let mut child = socket_activated(
        port,
        &[
            (
                "CREDENTIALS_DIRECTORY",
                credentials.path().display().to_string(),
            ),
            ("SWITCHBOARD_MAIL__SMTP__PORT", relay.port.to_string()),
            ("SWITCHBOARD_MAIL__SMTP__USERNAME", "relay-user".to_owned()),
            ("SWITCHBOARD_MAIL__RUNTIME__LOG_TARGET", "stderr".to_owned()),
        ],
    );
    let to = recipient("auth");
    let base = format!("http://127.0.0.1:{port}");
    let body = mail(None, &to, "authenticated", "m").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, envelope) = loop {
        match common::client()
            .post(format!("{base}/send"))
            .body(body.clone())
            .send()
            .await
        {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.expect("text");
                break (status, text);
            }
            Err(err) if Instant::now() < deadline && err.is_connect() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("no answer on the activated socket: {err}"),
        }
    };
    assert_eq!(status, 202, "{envelope}");
    let items = received(hog, &to, 1);
    assert_eq!(header(&items[0], "Subject"), "authenticated");

    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode("\0relay-user\0s3cret pass");
    let dialogue = relay.sent_by_clients();
    assert!(
        dialogue.contains(&format!("AUTH PLAIN {expected}")),
        "no AUTH PLAIN with the credential's password in:\n{dialogue}"
    );
    terminate(&child);
    let exit = tokio::task::block_in_place(|| wait_exit(&mut child, Duration::from_secs(15)));
    assert!(exit.success(), "exit after SIGTERM: {exit}");
}

#[test]
fn a_password_without_a_username_stops_the_service_with_a_clear_error() {
    let credentials = tempfile::tempdir().expect("tempdir");
    std::fs::write(credentials.path().join("smtp-password"), "pw\n").expect("write credential");
    let output = Command::new(BINARY)
        .env("CREDENTIALS_DIRECTORY", credentials.path())
        .env("SWITCHBOARD_MAIL__LISTEN__HTTP", "127.0.0.1:0")
        .env("SWITCHBOARD_MAIL__RUNTIME__LOG_TARGET", "stderr")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .output()
        .expect("run the binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("smtp.username is unset") && stderr.contains("smtp-password"),
        "{stderr}"
    );
    assert!(!stderr.contains("pw\n"), "the password leaked: {stderr}");
}

#[test]
fn an_unknown_key_stops_the_service_naming_the_key() {
    let output = Command::new(BINARY)
        .env("SWITCHBOARD_MAIL__SMTP__PASWORD_FILE", "/x")
        .env("SWITCHBOARD_MAIL__RUNTIME__LOG_TARGET", "stderr")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .output()
        .expect("run the binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pasword_file"), "{stderr}");
}
