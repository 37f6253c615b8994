//! PostgreSQL: `initdb` plus a `postgres` postmaster on 127.0.0.1 with its unix
//! socket in the server's folder. As root both run as the `postgres` OS user
//! (they refuse root). Temporary instances trade durability for speed (fsync
//! off); persistent ones (dev stack) keep PostgreSQL's defaults.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::binary::{find_binary, sibling_or_find};
use crate::error::{Error, Result};
use crate::net::{port_is_free, tcp_open};
use crate::process::{
    Startup, Supervised, log_tail, looks_like_port_clash, run_command, startup_error,
};
use crate::workdir::Workdir;
use crate::{ServerOptions, shared_instance, try_free_port, unique_name};

const SERVER: &str = "postgres";
const SUPERUSER: &str = "postgres";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 3;

/// The PostgreSQL tools of one installation.
#[derive(Debug, Clone)]
struct Binaries {
    postgres: PathBuf,
    initdb: PathBuf,
    pg_isready: PathBuf,
    psql: PathBuf,
}

impl Binaries {
    fn find() -> Result<Self> {
        let postgres = find_binary("postgres")?;
        Ok(Self {
            initdb: sibling_or_find(&postgres, "initdb")?,
            pg_isready: sibling_or_find(&postgres, "pg_isready")?,
            psql: sibling_or_find(&postgres, "psql")?,
            postgres,
        })
    }
}

/// A PostgreSQL server (superuser `postgres`, trust authentication, loopback
/// only). Dropping it stops the server; a temporary folder is removed.
#[derive(Debug)]
pub struct Postgres {
    workdir: Workdir,
    port: u16,
    binaries: Binaries,
    /// (uid, gid) of the `postgres` OS user when we are root.
    run_as: Option<(u32, u32)>,
    durable: bool,
    startup_timeout: Duration,
    process: Option<Supervised>,
}

/// Options for [`Postgres`]; see [`Postgres::builder`].
#[derive(Debug, Clone, Default)]
pub struct PostgresBuilder {
    dir: Option<PathBuf>,
    port: Option<u16>,
    durable: Option<bool>,
    startup_timeout: Option<Duration>,
}

impl PostgresBuilder {
    /// Persistent folder (created if missing; an existing cluster in
    /// `<dir>/data` is reused). Default: a temporary folder.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Fixed port. Default: a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Whether commits survive a machine crash (fsync, full page writes,
    /// synchronous commit). Default: off for temporary folders, on for
    /// persistent ones.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = Some(durable);
        self
    }

    /// How long to wait for the server to accept connections. Default 30 s.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = Some(timeout);
        self
    }

    /// Initialises the cluster if needed and starts the server.
    pub fn start(self) -> Result<Postgres> {
        let binaries = Binaries::find()?;
        let run_as = if rustix::process::geteuid().is_root() {
            Some(lookup_user(SUPERUSER)?)
        } else {
            None
        };
        let workdir = Workdir::create(SERVER, self.dir.as_deref(), run_as.is_some())?;
        if let Some(port) = self.port
            && !port_is_free(port)
        {
            return Err(Error::PortInUse {
                server: SERVER.to_owned(),
                port,
            });
        }
        let durable = self.durable.unwrap_or(!workdir.is_temporary());
        let mut server = Postgres {
            port: self.port.unwrap_or(0),
            workdir,
            binaries,
            run_as,
            durable,
            startup_timeout: self.startup_timeout.unwrap_or(DEFAULT_TIMEOUT),
            process: None,
        };
        server.prepare()?;

        let may_retry = server.workdir.is_temporary() && self.port.is_none();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.port.is_none() {
                server.port = try_free_port()?;
            }
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(error) if may_retry && attempt < PORT_ATTEMPTS && server.lost_port_race() => {
                    tracing::debug!(%error, "postgres lost a port race, retrying with a new port");
                    // Judge the next attempt by its own log.
                    let _ = std::fs::remove_file(server.log_path());
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl Postgres {
    /// Starts a server of its own in a temporary folder on a free port.
    pub fn start() -> Result<Postgres> {
        Self::builder().start()
    }

    /// The instance shared by all tests of this process, started on first use.
    /// Isolate tests with [`Postgres::create_database`].
    pub fn shared() -> Result<&'static Postgres> {
        static SHARED: Mutex<Option<&'static Postgres>> = Mutex::new(None);
        shared_instance(&SHARED, Self::start)
    }

    /// Options: folder, port, durability, start-up timeout.
    pub fn builder() -> PostgresBuilder {
        PostgresBuilder::default()
    }

    /// Starts with the common [`ServerOptions`] (folder and port).
    pub fn start_with(options: &ServerOptions) -> Result<Postgres> {
        let mut builder = Self::builder();
        builder.dir = options.dir.clone();
        builder.port = options.port;
        builder.start()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder holding the unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        self.workdir.path()
    }

    /// The server's folder: `data/` (the cluster), `postgres.log`, the socket.
    pub fn dir(&self) -> &Path {
        self.workdir.path()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.workdir.path().join("postgres.log")
    }

    /// The postmaster's process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    /// Whether the server is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a fresh database with a unique name and returns its URL.
    pub fn create_database(&self) -> Result<String> {
        let name = unique_name("db");
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(&name))
    }

    /// Creates `database` unless it exists, and returns its URL.
    pub fn ensure_database(&self, database: &str) -> Result<String> {
        let exists = self.psql(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"),
        )?;
        if exists.trim() != "1" {
            self.psql("postgres", &format!("CREATE DATABASE \"{database}\""))?;
        }
        Ok(self.url(database))
    }

    /// Runs SQL with `psql` as the superuser on `database`, stopping at the
    /// first error, and returns the unaligned, tuples-only output (rows on
    /// lines, columns separated by `|`).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        if self.process.is_none() {
            return Err(Error::Stopped {
                server: SERVER.to_owned(),
            });
        }
        let mut command = Command::new(&self.binaries.psql);
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ])
            .env("PGCONNECT_TIMEOUT", "10");
        let output = run_command(command)?;
        Ok(output.trim_end_matches('\n').to_owned())
    }

    /// Stops the server (fast shutdown: open sessions are disconnected), keeping
    /// its port and data for [`Postgres::start_again`]. No-op when stopped.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Signal::INT, STOP_GRACE);
        }
    }

    /// Starts a stopped server again on the same port with the same data.
    /// No-op when running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        self.launch()
    }

    fn data_dir(&self) -> PathBuf {
        self.workdir.path().join("data")
    }

    fn initdb_log(&self) -> PathBuf {
        self.workdir.path().join("initdb.log")
    }

    /// Hands the folder to the server's user and creates the cluster if there is none.
    fn prepare(&self) -> Result<()> {
        let dir = self.workdir.path();
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| {
                Error::io(format!("handing {} to the postgres user", dir.display()), e)
            })?;
        }
        if self.data_dir().join("PG_VERSION").is_file() {
            return Ok(());
        }
        let started = Instant::now();
        let mut command = self.command(&self.binaries.initdb);
        command.arg("-D").arg(self.data_dir()).args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        if !self.durable {
            command.arg("--no-sync");
        }
        let output = run_command(command)?;
        // Keep initdb's chatter out of the test output but available.
        let _ = std::fs::write(self.initdb_log(), output);
        tracing::debug!(elapsed = ?started.elapsed(), "initdb done");
        Ok(())
    }

    /// A command for a PostgreSQL program, as the right user, in the folder,
    /// with a locale that exists everywhere.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(self.workdir.path())
            .env("LC_ALL", "C.UTF-8")
            .env_remove("PGDATA");
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Starts the postmaster on `self.port` and waits until it accepts
    /// connections on both the socket and TCP.
    fn launch(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut command = self.command(&self.binaries.postgres);
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.socket_dir().display()
            ))
            .args(["-c", "max_connections=200"]);
        if !self.durable {
            command.args([
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
            ]);
        }
        let log = self.log_path();
        let mut process = Supervised::spawn(SERVER, command, &log, self.workdir.removable())?;

        let (port, socket_dir, pg_isready) = (
            self.port,
            self.socket_dir().to_path_buf(),
            self.binaries.pg_isready.clone(),
        );
        let startup = process.wait_ready(self.startup_timeout, Duration::from_millis(25), || {
            tcp_open(port) && pg_isready_ok(&pg_isready, &socket_dir, port)
        });
        match startup {
            Startup::Ready => {
                tracing::debug!(port, elapsed = ?started.elapsed(), "postgres ready");
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

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pg_isready_ok(pg_isready: &Path, socket_dir: &Path, port: u16) -> bool {
    Command::new(pg_isready)
        .arg("-q")
        .arg("-h")
        .arg(socket_dir)
        .args([
            "-p",
            &port.to_string(),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-t",
            "2",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// (uid, gid) of an OS user, from /etc/passwd.
fn lookup_user(user: &str) -> Result<(u32, u32)> {
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| Error::io("reading /etc/passwd", e))?;
    passwd
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            (name == user).then_some((uid, gid))
        })
        .next()
        .ok_or_else(|| Error::MissingUser {
            user: user.to_owned(),
            server: SERVER.to_owned(),
        })
}
