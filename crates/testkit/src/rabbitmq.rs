//! RabbitMQ: a private node (own Erlang cookie, node name, ports, epmd and data
//! folder) that touches nothing of the system node: no /var/lib/rabbitmq, no
//! /etc/rabbitmq, no shared epmd on 4369.
//!
//! Debian's `/usr/sbin/rabbitmq*` wrappers switch to the system node's user and
//! cookie, so the real scripts in `/usr/lib/rabbitmq/bin` are used. A node
//! needs an epmd; one it spawned itself would outlive it, so each node gets its
//! own epmd child on its own port — except the members of a
//! [`crate::RabbitMqCluster`], which must find each other through one epmd
//! (Erlang asks the epmd on `ERL_EPMD_PORT` for a peer's distribution port)
//! and share one Erlang cookie.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::binary::find_binary;
use crate::error::{Error, Result};
use crate::net::{amqp_handshake, http_request, port_is_free, tcp_open};
use crate::process::{
    Startup, Supervised, log_tail, looks_like_port_clash, run_command, startup_error,
};
use crate::workdir::Workdir;
use crate::{RABBITMQ_CLI_PORTS, ServerOptions, shared_instance, try_free_port, unique_name};

const SERVER: &str = "rabbitmq";
/// Booting a node takes 5-7 s on an idle 2-core machine; parallel test
/// binaries can triple that.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);
const EPMD_TIMEOUT: Duration = Duration::from_secs(10);
/// A graceful stop takes ~1 s, ~7 s with the management plugin.
const STOP_GRACE: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 3;
const PERSISTENT_NODE: &str = "switchboard@localhost";

#[derive(Debug, Clone)]
struct Binaries {
    server: PathBuf,
    ctl: PathBuf,
    epmd: PathBuf,
}

/// A private RabbitMQ node on 127.0.0.1 with the default `guest` user.
/// Dropping it stops the node and its epmd; a temporary folder is removed.
#[derive(Debug)]
pub struct RabbitMq {
    workdir: Workdir,
    node: String,
    amqp_port: u16,
    dist_port: u16,
    epmd_port: u16,
    management_port: Option<u16>,
    binaries: Binaries,
    startup_timeout: Duration,
    member: Option<Membership>,
    // Declared before `epmd`: the node goes first.
    server: Option<Supervised>,
    epmd: Option<Supervised>,
}

/// What makes a node a member of a cluster: the cluster's epmd (not one of
/// its own), the cluster's cookie, and the node to join on its first boot.
#[derive(Debug, Clone)]
pub(crate) struct Membership {
    pub(crate) epmd_port: u16,
    pub(crate) cookie: String,
    /// `None` for the first node, which the others join.
    pub(crate) seed: Option<String>,
}

/// Options for [`RabbitMq`]; see [`RabbitMq::builder`].
#[derive(Debug, Clone, Default)]
pub struct RabbitMqBuilder {
    dir: Option<PathBuf>,
    node_name: Option<String>,
    amqp_port: Option<u16>,
    dist_port: Option<u16>,
    epmd_port: Option<u16>,
    management: bool,
    management_port: Option<u16>,
    startup_timeout: Option<Duration>,
    member: Option<Membership>,
}

impl RabbitMqBuilder {
    /// A member of a cluster: uses the cluster's epmd on `epmd_port` (started
    /// by the cluster) and its cookie, and joins `seed` on its first boot
    /// (classic-config peer discovery; a restarted node rejoins from its data).
    pub(crate) fn member(mut self, membership: Membership) -> Self {
        self.member = Some(membership);
        self
    }

    /// Persistent folder (created if missing; an existing node's data is
    /// reused). Default: a temporary folder.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Erlang node name (`name@localhost`). Default: unique for temporary
    /// folders, `switchboard@localhost` for persistent ones (the node's data
    /// is stored under its name, so it must not change between runs).
    pub fn node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = Some(name.into());
        self
    }

    /// Fixed AMQP port. Default: a free one.
    pub fn amqp_port(mut self, port: u16) -> Self {
        self.amqp_port = Some(port);
        self
    }

    /// Fixed Erlang distribution port. Default: a free one.
    pub fn dist_port(mut self, port: u16) -> Self {
        self.dist_port = Some(port);
        self
    }

    /// Fixed port for the node's own epmd. Default: a free one.
    pub fn epmd_port(mut self, port: u16) -> Self {
        self.epmd_port = Some(port);
        self
    }

    /// Enables the management plugin (HTTP API and UI, user guest/guest) on a
    /// free port. Makes start-up and a graceful stop a few seconds slower.
    pub fn with_management(mut self) -> Self {
        self.management = true;
        self
    }

    /// Enables the management plugin on a fixed port.
    pub fn management_port(mut self, port: u16) -> Self {
        self.management = true;
        self.management_port = Some(port);
        self
    }

    /// How long to wait for the node to accept AMQP clients. Default 90 s.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = Some(timeout);
        self
    }

    /// Starts epmd and the node.
    pub fn start(self) -> Result<RabbitMq> {
        let binaries = Binaries {
            server: find_binary("rabbitmq-server")?,
            ctl: find_binary("rabbitmqctl")?,
            epmd: find_binary("epmd")?,
        };
        let workdir = Workdir::create(SERVER, self.dir.as_deref(), false)?;
        let node = match (&self.node_name, workdir.is_temporary()) {
            (Some(name), _) => qualify(name),
            (None, true) => format!("{}@localhost", unique_name("rabbit")),
            (None, false) => PERSISTENT_NODE.to_owned(),
        };
        // A member's epmd is the cluster's: already running, so not free.
        let own_epmd_port = match &self.member {
            Some(_) => None,
            None => self.epmd_port,
        };
        let fixed = [
            self.amqp_port,
            self.dist_port,
            own_epmd_port,
            self.management_port,
        ];
        for port in fixed.into_iter().flatten() {
            if !port_is_free(port) {
                return Err(Error::PortInUse {
                    server: SERVER.to_owned(),
                    port,
                });
            }
        }
        let mut node = RabbitMq {
            workdir,
            node,
            amqp_port: 0,
            dist_port: 0,
            epmd_port: 0,
            management_port: None,
            binaries,
            startup_timeout: self.startup_timeout.unwrap_or(DEFAULT_TIMEOUT),
            member: self.member.clone(),
            server: None,
            epmd: None,
        };
        let all_fixed = fixed[..2].iter().all(Option::is_some)
            && (self.member.is_some() || self.epmd_port.is_some())
            && (!self.management || self.management_port.is_some());
        let may_retry = node.workdir.is_temporary() && !all_fixed;
        let mut attempt = 0;
        loop {
            attempt += 1;
            node.amqp_port = pick(self.amqp_port)?;
            node.dist_port = pick(self.dist_port)?;
            node.epmd_port = match &self.member {
                Some(member) => member.epmd_port,
                None => pick(self.epmd_port)?,
            };
            node.management_port = if self.management {
                Some(pick(self.management_port)?)
            } else {
                None
            };
            node.write_config()?;
            match node.launch() {
                Ok(()) => return Ok(node),
                Err(error) if may_retry && attempt < PORT_ATTEMPTS && node.lost_port_race() => {
                    tracing::debug!(%error, "rabbitmq lost a port race, retrying with new ports");
                    node.clear_logs();
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl RabbitMq {
    /// Starts a node of its own in a temporary folder on free ports.
    pub fn start() -> Result<RabbitMq> {
        Self::builder().start()
    }

    /// The node shared by all tests of this process, started on first use.
    /// Isolate tests with [`RabbitMq::create_vhost`].
    pub fn shared() -> Result<&'static RabbitMq> {
        static SHARED: Mutex<Option<&'static RabbitMq>> = Mutex::new(None);
        shared_instance(&SHARED, Self::start)
    }

    /// Options: folder, node name, ports, management plugin, start-up timeout.
    pub fn builder() -> RabbitMqBuilder {
        RabbitMqBuilder::default()
    }

    /// Starts with the common [`ServerOptions`] (folder and AMQP port).
    pub fn start_with(options: &ServerOptions) -> Result<RabbitMq> {
        let mut builder = Self::builder();
        builder.dir = options.dir.clone();
        builder.amqp_port = options.port;
        builder.start()
    }

    /// The AMQP port on 127.0.0.1.
    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f` (the default vhost `/`).
    pub fn amqp_url(&self) -> String {
        self.amqp_url_for("%2f")
    }

    /// The AMQP URL of `vhost` (already percent-encoded if it needs it).
    pub fn amqp_url_for(&self, vhost: &str) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/{vhost}", self.amqp_port)
    }

    /// The Erlang node name, for `rabbitmqctl -n`.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The Erlang distribution port.
    pub fn dist_port(&self) -> u16 {
        self.dist_port
    }

    /// The port of the node's own epmd.
    pub fn epmd_port(&self) -> u16 {
        self.epmd_port
    }

    /// The management HTTP port, when the plugin is enabled.
    pub fn management_port(&self) -> Option<u16> {
        self.management_port
    }

    /// `http://127.0.0.1:PORT` of the management API and UI, when enabled.
    pub fn management_url(&self) -> Option<String> {
        self.management_port
            .map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// The node's folder: config, `mnesia/`, `log/`, `rabbit.pid`, `server.log`.
    pub fn dir(&self) -> &Path {
        self.workdir.path()
    }

    /// The wrapper's output log (boot errors land here); the node's own log
    /// is `log/<node>.log` in [`RabbitMq::dir`].
    pub fn log_path(&self) -> PathBuf {
        self.workdir.path().join("server.log")
    }

    /// Process id of the `rabbitmq-server` wrapper (leader of the node's
    /// process group) while running.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Supervised::pid)
    }

    /// Process id of the node's epmd while running.
    pub fn epmd_pid(&self) -> Option<u32> {
        self.epmd.as_ref().map(Supervised::pid)
    }

    /// Whether the node is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Creates a fresh vhost with a unique name on which `guest` may do
    /// everything, and returns its AMQP URL, so tests sharing a node cannot see
    /// each other's exchanges and queues. Costs one `rabbitmqctl` call.
    pub fn create_vhost(&self) -> Result<String> {
        let vhost = unique_name("vh");
        // One CLI call instead of add_vhost + set_permissions: each call boots
        // an Erlang VM (~0.3 s), and importing definitions does both at once.
        let definitions = serde_json::json!({
            "vhosts": [{ "name": vhost }],
            "permissions": [{
                "user": "guest", "vhost": vhost,
                "configure": ".*", "write": ".*", "read": ".*"
            }]
        });
        let file = self.workdir.path().join(format!("{vhost}.json"));
        std::fs::write(&file, definitions.to_string())
            .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
        let imported = self.rabbitmqctl(&["import_definitions", &file.to_string_lossy()]);
        let _ = std::fs::remove_file(&file);
        imported?;
        Ok(self.amqp_url_for(&vhost))
    }

    /// Runs `rabbitmqctl -n NODE -q ARGS...` against this node and returns its output.
    pub fn rabbitmqctl(&self, args: &[&str]) -> Result<String> {
        if self.server.is_none() {
            return Err(Error::Stopped {
                server: SERVER.to_owned(),
            });
        }
        let mut command = self.command(&self.binaries.ctl);
        command.args(["-n", &self.node, "-q"]).args(args);
        run_command(command)
    }

    /// Stops the node gracefully (SIGTERM, then SIGKILL of its process group
    /// after 30 s) and its epmd, keeping ports and data for
    /// [`RabbitMq::start_again`]. No-op when stopped.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop(Signal::TERM, STOP_GRACE);
        }
        if let Some(mut epmd) = self.epmd.take() {
            epmd.kill_now();
        }
    }

    /// Kills the node at once (SIGKILL to its process group, `beam.smp`
    /// included), as a crash or `kill -9` would: no clean shutdown, nothing
    /// flushed. Its epmd and its data stay, for [`RabbitMq::start_again`].
    /// No-op when stopped.
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill_now();
        }
    }

    /// Starts a stopped node again with the same name, ports and data. No-op
    /// when running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        self.launch()
    }

    /// A command for a RabbitMQ script with only this node's settings: any
    /// `RABBITMQ_*`/`ERL_*` variable of the caller's environment (a developer's
    /// shell) is dropped, since it could point at another node.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        for (key, _) in std::env::vars_os() {
            let inherited = key.to_string_lossy();
            if inherited.starts_with("RABBITMQ_") || inherited.starts_with("ERL_") {
                command.env_remove(&key);
            }
        }
        command
            .envs(self.environment())
            .current_dir(self.workdir.path());
        command
    }

    fn environment(&self) -> Vec<(&'static str, OsString)> {
        let dir = self.workdir.path();
        let path = |name: &str| dir.join(name).into_os_string();
        let number = |port: u16| OsString::from(port.to_string());
        vec![
            // The Erlang cookie lives in $HOME; the CLI must see the same one.
            ("HOME", dir.as_os_str().to_owned()),
            ("RABBITMQ_NODENAME", OsString::from(&self.node)),
            ("RABBITMQ_NODE_IP_ADDRESS", OsString::from("127.0.0.1")),
            ("RABBITMQ_NODE_PORT", number(self.amqp_port)),
            // Defaults to AMQP + 20000, which can exceed 65535 for a random port.
            ("RABBITMQ_DIST_PORT", number(self.dist_port)),
            ("ERL_EPMD_PORT", number(self.epmd_port)),
            ("ERL_EPMD_ADDRESS", OsString::from("127.0.0.1")),
            ("RABBITMQ_MNESIA_BASE", path("mnesia")),
            ("RABBITMQ_LOG_BASE", path("log")),
            ("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf")),
            ("RABBITMQ_ADVANCED_CONFIG_FILE", path("advanced.config")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins")),
            ("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf")),
            ("RABBITMQ_PID_FILE", path("rabbit.pid")),
            // Distribution on loopback only; no busy-waiting schedulers, which
            // steal CPU from everything else on a small shared machine.
            (
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                OsString::from(
                    "-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none",
                ),
            ),
            (
                "RABBITMQ_CTL_DIST_PORT_MIN",
                number(*RABBITMQ_CLI_PORTS.start()),
            ),
            (
                "RABBITMQ_CTL_DIST_PORT_MAX",
                number(*RABBITMQ_CLI_PORTS.end()),
            ),
        ]
    }

    fn write_config(&self) -> Result<()> {
        let dir = self.workdir.path();
        let mut conf = format!(
            "# Written by switchboard-testkit at every start.\n\
             listeners.tcp.default = 127.0.0.1:{}\n\
             log.file.level = info\n\
             log.console = false\n",
            self.amqp_port
        );
        if let Some(Membership {
            seed: Some(seed), ..
        }) = &self.member
        {
            // Read on the first boot only: a restarted member rejoins the
            // cluster recorded in its data.
            conf.push_str(&format!(
                "cluster_formation.peer_discovery_backend = classic_config\n\
                 cluster_formation.classic_config.nodes.1 = {seed}\n"
            ));
        }
        let plugins = match self.management_port {
            Some(port) => {
                conf.push_str(&format!(
                    "management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {port}\n"
                ));
                "[rabbitmq_management].\n"
            }
            None => "[].\n",
        };
        let files = [
            ("rabbitmq.conf", conf.as_str()),
            ("advanced.config", "[].\n"),
            ("enabled_plugins", plugins),
            ("rabbitmq-env.conf", ""),
        ];
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::write(&path, content)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        if let Some(member) = &self.member {
            write_cookie(&dir.join(".erlang.cookie"), &member.cookie)?;
        }
        Ok(())
    }

    fn epmd_log(&self) -> PathBuf {
        self.workdir.path().join("epmd.log")
    }

    fn node_log(&self) -> PathBuf {
        self.workdir
            .path()
            .join("log")
            .join(format!("{}.log", self.node))
    }

    /// Starts the node's own epmd unless it runs (a cluster member uses the
    /// cluster's), then the node, and waits until the node answers an AMQP
    /// handshake (and the management API, when enabled).
    fn launch(&mut self) -> Result<()> {
        let started = Instant::now();
        let removable = self.workdir.removable().map(Path::to_path_buf);
        let epmd_log = self.epmd_log();
        let mut epmd = match (&self.member, self.epmd.take()) {
            (Some(_), _) => None,
            (None, Some(running)) => Some(running),
            (None, None) => Some(spawn_epmd(
                &self.binaries.epmd,
                self.epmd_port,
                self.workdir.path(),
                &epmd_log,
                None,
            )?),
        };
        let mut stop_epmd = || {
            if let Some(mut epmd) = epmd.take() {
                epmd.kill_now();
            }
        };

        let command = self.command(&self.binaries.server);
        let log = self.log_path();
        let mut server = match Supervised::spawn(SERVER, command, &log, removable.as_deref()) {
            Ok(server) => server,
            Err(error) => {
                stop_epmd();
                return Err(error);
            }
        };
        let (amqp_port, management_port) = (self.amqp_port, self.management_port);
        // Booting takes seconds: poll gently.
        let startup = server.wait_ready(self.startup_timeout, Duration::from_millis(100), || {
            amqp_handshake(amqp_port)
                && management_port
                    .is_none_or(|port| http_request("GET", port, "/api/overview").is_ok())
        });
        match startup {
            Startup::Ready => {
                tracing::debug!(node = %self.node, amqp_port, elapsed = ?started.elapsed(), "rabbitmq ready");
                self.epmd = epmd;
                self.server = Some(server);
                Ok(())
            }
            failed => {
                // The wrapper exits 0 even when the boot failed: judge by readiness only.
                server.kill_now();
                stop_epmd();
                let node_log = self.node_log();
                Err(startup_error(
                    SERVER,
                    failed,
                    self.startup_timeout,
                    &[&log, &node_log, &epmd_log],
                ))
            }
        }
    }

    fn lost_port_race(&self) -> bool {
        [self.log_path(), self.node_log(), self.epmd_log()]
            .iter()
            .any(|log| looks_like_port_clash(&log_tail(log, 40)))
    }

    /// Forgets the logs of a failed attempt so the next one is judged on its own.
    fn clear_logs(&self) {
        for log in [self.log_path(), self.node_log(), self.epmd_log()] {
            let _ = std::fs::remove_file(log);
        }
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        if self.workdir.is_temporary() {
            // Throwaway data: no need to wait for a clean shutdown.
            if let Some(mut server) = self.server.take() {
                server.kill_now();
            }
            if let Some(mut epmd) = self.epmd.take() {
                epmd.kill_now();
            }
        } else {
            self.stop();
        }
    }
}

/// Starts `epmd` on 127.0.0.1:`port` (output to `log`) and waits until it
/// accepts connections. Its reaper removes `removable` after killing it, if
/// given (a node's own epmd gives none: its folder is the node's to remove).
pub(crate) fn spawn_epmd(
    binary: &Path,
    port: u16,
    dir: &Path,
    log: &Path,
    removable: Option<&Path>,
) -> Result<Supervised> {
    let mut command = Command::new(binary);
    command
        .args(["-port", &port.to_string(), "-address", "127.0.0.1"])
        .current_dir(dir);
    let mut epmd = Supervised::spawn("epmd", command, log, removable)?;
    match epmd.wait_ready(EPMD_TIMEOUT, Duration::from_millis(20), || tcp_open(port)) {
        Startup::Ready => Ok(epmd),
        failed => {
            epmd.kill_now();
            Err(startup_error("epmd", failed, EPMD_TIMEOUT, &[log]))
        }
    }
}

fn pick(fixed: Option<u16>) -> Result<u16> {
    match fixed {
        Some(port) => Ok(port),
        None => try_free_port(),
    }
}

/// Erlang refuses a cookie file others can read: written, then made 0400.
fn write_cookie(path: &Path, cookie: &str) -> Result<()> {
    if path.exists() {
        // 0400 after the first start: make it writable to replace it.
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    std::fs::write(path, cookie)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400)))
        .map_err(|e| Error::io(format!("writing the Erlang cookie {}", path.display()), e))
}

fn qualify(name: &str) -> String {
    if name.contains('@') {
        name.to_owned()
    } else {
        format!("{name}@localhost")
    }
}
