//! Headless Chromium through chromedriver, for the tests that click the test
//! page (feature `browser`): chromedriver on a free port, killed on drop, and
//! a WebDriver session with the flags of SETUP-FACTS §6.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

/// A running chromedriver and the browser profile folder its sessions use.
pub struct Browser {
    process: Child,
    url: String,
    profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Browser {
    /// Starts chromedriver and waits until it listens. Panics (with what to
    /// install) when it is missing: a browser test cannot go on without it.
    pub async fn start() -> Browser {
        let port = crate::free_port();
        let process = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver not found (packages chromium, chromium-driver): run scripts/setup",
            );
        let browser = Browser {
            process,
            url: format!("http://127.0.0.1:{port}"),
            profile: tempfile::tempdir().expect("browser profile folder"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        browser
    }

    /// A new headless Chromium session.
    pub async fn session(&self) -> Client {
        let capabilities: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                // The Chromium on PATH (the dev shell's on NixOS; Debian's
                // elsewhere): chromedriver is found the same way, and the
                // two must match.
                "binary": chromium_binary(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run",
                    format!("--user-data-dir={}", self.profile.path().display()),
                ],
            },
        }))
        .expect("capabilities");
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session through chromedriver")
    }
}

/// Chromium as [`crate::find_binary`] finds it (PATH first), Debian's path
/// otherwise.
pub fn chromium_binary() -> String {
    crate::find_binary("chromium")
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}
