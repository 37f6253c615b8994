//! MailHog: an SMTP server that keeps every message in memory and shows them
//! over an HTTP API, so tests can check what the mail service sent. The API
//! and the web UI share one HTTP port (MailHog serves both on one listener
//! when their addresses are equal), like the dev setup's 8025.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;

use crate::binary::find_binary;
use crate::error::{Error, Result};
use crate::net::{http_request, port_is_free, tcp_open, url_encode};
use crate::process::{Startup, Supervised, log_tail, looks_like_port_clash, startup_error};
use crate::workdir::Workdir;
use crate::{ServerOptions, shared_instance, try_free_port};

const SERVER: &str = "mailhog";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(5);
const PORT_ATTEMPTS: usize = 3;
/// MailHog's v2 API pages at 50 by default; no test sends more than this.
const PAGE: usize = 10_000;

/// A MailHog server: SMTP and HTTP (API and UI) on 127.0.0.1, messages in
/// memory (lost on [`MailHog::stop`]). Dropping it stops the server.
#[derive(Debug)]
pub struct MailHog {
    workdir: Workdir,
    smtp_port: u16,
    http_port: u16,
    binary: PathBuf,
    startup_timeout: Duration,
    process: Option<Supervised>,
}

/// Options for [`MailHog`]; see [`MailHog::builder`].
#[derive(Debug, Clone, Default)]
pub struct MailHogBuilder {
    dir: Option<PathBuf>,
    smtp_port: Option<u16>,
    http_port: Option<u16>,
    startup_timeout: Option<Duration>,
}

impl MailHogBuilder {
    /// Persistent folder for the log. Default: a temporary folder.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Fixed SMTP port. Default: a free one.
    pub fn smtp_port(mut self, port: u16) -> Self {
        self.smtp_port = Some(port);
        self
    }

    /// Fixed HTTP port (API and UI). Default: a free one.
    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }

    /// How long to wait for SMTP and the API to answer. Default 30 s.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = Some(timeout);
        self
    }

    /// Starts the server.
    pub fn start(self) -> Result<MailHog> {
        let binary = find_binary(SERVER)?;
        let workdir = Workdir::create(SERVER, self.dir.as_deref(), false)?;
        for port in [self.smtp_port, self.http_port].into_iter().flatten() {
            if !port_is_free(port) {
                return Err(Error::PortInUse {
                    server: SERVER.to_owned(),
                    port,
                });
            }
        }
        let mut server = MailHog {
            workdir,
            smtp_port: 0,
            http_port: 0,
            binary,
            startup_timeout: self.startup_timeout.unwrap_or(DEFAULT_TIMEOUT),
            process: None,
        };
        let may_retry =
            server.workdir.is_temporary() && (self.smtp_port.is_none() || self.http_port.is_none());
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.smtp_port = match self.smtp_port {
                Some(port) => port,
                None => try_free_port()?,
            };
            server.http_port = match self.http_port {
                Some(port) => port,
                None => try_free_port()?,
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(error) if may_retry && attempt < PORT_ATTEMPTS && server.lost_port_race() => {
                    tracing::debug!(%error, "mailhog lost a port race, retrying with new ports");
                    let _ = std::fs::remove_file(server.log_path());
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl MailHog {
    /// Starts a server of its own in a temporary folder on free ports.
    pub fn start() -> Result<MailHog> {
        Self::builder().start()
    }

    /// The server shared by all tests of this process, started on first use.
    /// Tests sharing it use unique recipients and [`MailHog::messages_to`]
    /// (and never [`MailHog::delete_all`]).
    pub fn shared() -> Result<&'static MailHog> {
        static SHARED: Mutex<Option<&'static MailHog>> = Mutex::new(None);
        shared_instance(&SHARED, Self::start)
    }

    /// Options: folder, ports, start-up timeout.
    pub fn builder() -> MailHogBuilder {
        MailHogBuilder::default()
    }

    /// Starts with the common [`ServerOptions`] (folder and SMTP port).
    pub fn start_with(options: &ServerOptions) -> Result<MailHog> {
        let mut builder = Self::builder();
        builder.dir = options.dir.clone();
        builder.smtp_port = options.port;
        builder.start()
    }

    /// The SMTP port on 127.0.0.1.
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port
    }

    /// The HTTP port (API and UI) on 127.0.0.1.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// `http://127.0.0.1:PORT`, the base of `/api/v1/...` and `/api/v2/...`
    /// (and of the web UI).
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The server's folder (its log).
    pub fn dir(&self) -> &Path {
        self.workdir.path()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.workdir.path().join("mailhog.log")
    }

    /// The server's process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    /// Whether the server is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// `GET /api/v2/messages`: `{"total", "count", "start", "items": [...]}`,
    /// newest first; each item has `Content.Headers` (e.g. `Subject`),
    /// `Content.Body`, `Raw.From`, `Raw.To`, `MIME.Parts`.
    pub fn messages(&self) -> Result<Value> {
        self.get_json(&format!("/api/v2/messages?limit={PAGE}"))
    }

    /// The messages with `address` among their recipients (`GET
    /// /api/v2/search?kind=to`), same shape as [`MailHog::messages`].
    pub fn messages_to(&self, address: &str) -> Result<Value> {
        self.get_json(&format!(
            "/api/v2/search?kind=to&query={}&limit={PAGE}",
            url_encode(address)
        ))
    }

    /// Polls [`MailHog::messages_to`] until at least `count` messages for
    /// `address` arrived, and returns their `items`. Sending is asynchronous
    /// in the services, so tests wait for mail instead of sleeping.
    pub fn wait_for_messages_to(
        &self,
        address: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.messages_to(address)?;
            let items = found
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if items.len() >= count {
                return Ok(items);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "{count} message(s) to {address} in MailHog (have {})",
                        items.len()
                    ),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `DELETE /api/v1/messages`: removes every message. Only for tests that
    /// own their MailHog (not the shared one).
    pub fn delete_all(&self) -> Result<()> {
        self.ensure_running()?;
        let response = http_request("DELETE", self.http_port, "/api/v1/messages")
            .map_err(|e| Error::io(format!("DELETE {}/api/v1/messages", self.api_url()), e))?;
        if response.status != 200 {
            return Err(Error::Protocol {
                server: SERVER.to_owned(),
                detail: format!(
                    "DELETE /api/v1/messages answered {}: {}",
                    response.status, response.body
                ),
            });
        }
        Ok(())
    }

    /// Stops the server; its messages are gone, its ports are kept for
    /// [`MailHog::start_again`]. No-op when stopped.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Signal::TERM, STOP_GRACE);
        }
    }

    /// Starts a stopped server again on the same ports (with no messages).
    /// No-op when running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        self.launch()
    }

    fn ensure_running(&self) -> Result<()> {
        if self.process.is_none() {
            return Err(Error::Stopped {
                server: SERVER.to_owned(),
            });
        }
        Ok(())
    }

    fn get_json(&self, path: &str) -> Result<Value> {
        self.ensure_running()?;
        let response = http_request("GET", self.http_port, path)
            .map_err(|e| Error::io(format!("GET {}{path}", self.api_url()), e))?;
        if response.status != 200 {
            return Err(Error::Protocol {
                server: SERVER.to_owned(),
                detail: format!("GET {path} answered {}: {}", response.status, response.body),
            });
        }
        serde_json::from_str(&response.body).map_err(|e| Error::Protocol {
            server: SERVER.to_owned(),
            detail: format!(
                "GET {path} did not return JSON ({e}): {:.200}",
                response.body
            ),
        })
    }

    fn launch(&mut self) -> Result<()> {
        let started = Instant::now();
        let http = format!("127.0.0.1:{}", self.http_port);
        let mut command = Command::new(&self.binary);
        command
            .args(["-smtp-bind-addr", &format!("127.0.0.1:{}", self.smtp_port)])
            .args(["-api-bind-addr", &http, "-ui-bind-addr", &http])
            .current_dir(self.workdir.path());
        let log = self.log_path();
        let mut process = Supervised::spawn(SERVER, command, &log, self.workdir.removable())?;
        let (smtp_port, http_port) = (self.smtp_port, self.http_port);
        let startup = process.wait_ready(self.startup_timeout, Duration::from_millis(20), || {
            tcp_open(smtp_port)
                && http_request("GET", http_port, "/api/v2/messages?limit=1")
                    .is_ok_and(|r| r.status == 200)
        });
        match startup {
            Startup::Ready => {
                tracing::debug!(smtp_port, http_port, elapsed = ?started.elapsed(), "mailhog ready");
                self.process = Some(process);
                Ok(())
            }
            failed => {
                process.kill_now();
                Err(startup_error(SERVER, failed, self.startup_timeout, &[&log]))
            }
        }
    }

    fn lost_port_race(&self) -> bool {
        looks_like_port_clash(&log_tail(&self.log_path(), 20))
    }
}

impl Drop for MailHog {
    fn drop(&mut self) {
        self.stop();
    }
}
