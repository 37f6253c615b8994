//! A MongoDB wire-protocol server: `mongod` where it is installed, else
//! FerretDB as built by `scripts/setup` (mongod is not packaged for Debian 12),
//! on one of the backends of [`FerretBackend`]: PostgreSQL (the default, a
//! private server in the FerretDB folder unless a database is given) or SQLite.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::binary::find_binary;
use crate::error::{Error, Result};
use crate::net::{mongo_ping, port_is_free};
use crate::postgres::Postgres;
use crate::process::{Startup, Supervised, log_tail, looks_like_port_clash, startup_error};
use crate::workdir::Workdir;
use crate::{ServerOptions, shared_instance, try_free_port};

/// Overrides [`FerretBackend::default`] for every FerretDB the test kit starts
/// (`postgresql`, `sqlite` or `sqlite-normal`), so a suite can run on another backend.
pub const FERRETDB_BACKEND_ENV: &str = "SWITCHBOARD_FERRETDB_BACKEND";

const SERVER: &str = "mongodb";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 3;
/// FerretDB's database in a PostgreSQL of its own or of the dev stack's.
pub const FERRETDB_DATABASE: &str = "ferretdb";

/// Which server speaks the MongoDB protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MongoKind {
    /// `mongod` (MongoDB itself).
    Mongod,
    /// FerretDB with the SQLite backend (no transactions, see SETUP-FACTS).
    FerretDb,
}

impl MongoKind {
    /// `"mongod"` or `"ferretdb"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mongod => "mongod",
            Self::FerretDb => "ferretdb",
        }
    }

    /// `mongod` if it is installed, else `ferretdb`.
    pub fn detect() -> Result<(MongoKind, PathBuf)> {
        if let Ok(mongod) = find_binary("mongod") {
            return Ok((Self::Mongod, mongod));
        }
        Ok((Self::FerretDb, find_binary("ferretdb")?))
    }
}

/// Where FerretDB keeps the documents. The benchmark's `store` scenario
/// compares them; the default is the one it found best (see the README's
/// Performance section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FerretBackend {
    /// PostgreSQL (FerretDB's `postgresql` handler): commits survive a
    /// machine crash when the server is durable, and its write tail is the
    /// shortest of the three.
    #[default]
    Postgresql,
    /// SQLite files with FerretDB's defaults (WAL, `synchronous=FULL`): an
    /// fsync on every commit, survives a power loss.
    Sqlite,
    /// SQLite files in WAL mode with `synchronous=NORMAL`: no fsync on
    /// commit, survives a crash of FerretDB but not of the machine.
    SqliteNormal,
}

impl FerretBackend {
    pub const ALL: [FerretBackend; 3] = [Self::Postgresql, Self::Sqlite, Self::SqliteNormal];

    /// `"postgresql"`, `"sqlite"` or `"sqlite-normal"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgresql => "postgresql",
            Self::Sqlite => "sqlite",
            Self::SqliteNormal => "sqlite-normal",
        }
    }

    /// What an acknowledged commit survives, in a few words.
    pub fn durability(self) -> &'static str {
        match self {
            Self::Postgresql => "a machine crash when PostgreSQL is durable (fsync per commit)",
            Self::Sqlite => "a machine crash (fsync per commit)",
            Self::SqliteNormal => "a crash of FerretDB, not of the machine (no fsync on commit)",
        }
    }

    /// [`FERRETDB_BACKEND_ENV`] if set, else the default.
    pub fn from_env() -> Result<Self> {
        match std::env::var(FERRETDB_BACKEND_ENV) {
            Ok(value) if !value.is_empty() => value.parse(),
            _ => Ok(Self::default()),
        }
    }
}

impl std::fmt::Display for FerretBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FerretBackend {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|backend| backend.as_str() == value)
            .ok_or_else(|| Error::Config(format!(
                "unknown FerretDB backend {value:?}: expected postgresql, sqlite or sqlite-normal"
            )))
    }
}

/// A MongoDB-compatible server on 127.0.0.1, without authentication.
/// Dropping it stops the server (and a private PostgreSQL behind FerretDB);
/// a temporary folder is removed.
#[derive(Debug)]
pub struct MongoDb {
    workdir: Workdir,
    port: u16,
    kind: MongoKind,
    /// FerretDB's backend; `None` for mongod.
    backend: Option<FerretBackend>,
    /// The PostgreSQL database FerretDB keeps the documents in.
    postgresql_url: Option<String>,
    /// Dropped after FerretDB (fields drop in order): FerretDB's own server
    /// when no database was given.
    private_postgres: Option<Postgres>,
    durable: Option<bool>,
    binary: PathBuf,
    startup_timeout: Duration,
    process: Option<Supervised>,
}

/// Options for [`MongoDb`]; see [`MongoDb::builder`].
#[derive(Debug, Clone, Default)]
pub struct MongoDbBuilder {
    dir: Option<PathBuf>,
    port: Option<u16>,
    kind: Option<MongoKind>,
    backend: Option<FerretBackend>,
    postgresql_url: Option<String>,
    durable: Option<bool>,
    startup_timeout: Option<Duration>,
}

impl MongoDbBuilder {
    /// Persistent folder (created if missing; existing data reused). Default:
    /// a temporary folder.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Fixed port. Default: a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Which server to run. Default: `mongod` if installed, else FerretDB.
    pub fn kind(mut self, kind: MongoKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// FerretDB's backend. Default: [`FerretBackend::from_env`]. Ignored for mongod.
    pub fn ferret_backend(mut self, backend: FerretBackend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The PostgreSQL database (which must exist) for the `postgresql`
    /// backend. Default: a private server in `<dir>/postgres`.
    pub fn postgresql_url(mut self, url: impl Into<String>) -> Self {
        self.postgresql_url = Some(url.into());
        self
    }

    /// Whether the private PostgreSQL syncs its commits (see
    /// [`crate::PostgresBuilder::durable`]). Default: off for temporary
    /// folders, on for persistent ones.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = Some(durable);
        self
    }

    /// How long to wait for the server to answer `ping`. Default 30 s.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = Some(timeout);
        self
    }

    /// Starts the server.
    pub fn start(self) -> Result<MongoDb> {
        let (kind, binary) = match self.kind {
            None => MongoKind::detect()?,
            Some(kind) => (kind, find_binary(kind.as_str())?),
        };
        let workdir = Workdir::create(SERVER, self.dir.as_deref(), false)?;
        if let Some(port) = self.port
            && !port_is_free(port)
        {
            return Err(Error::PortInUse {
                server: kind.as_str().to_owned(),
                port,
            });
        }
        let backend = match kind {
            MongoKind::Mongod => None,
            MongoKind::FerretDb => Some(match self.backend {
                Some(backend) => backend,
                None => FerretBackend::from_env()?,
            }),
        };
        let mut server = MongoDb {
            workdir,
            port: self.port.unwrap_or(0),
            kind,
            backend,
            postgresql_url: self.postgresql_url,
            private_postgres: None,
            durable: self.durable,
            binary,
            startup_timeout: self.startup_timeout.unwrap_or(DEFAULT_TIMEOUT),
            process: None,
        };
        if backend == Some(FerretBackend::Postgresql) {
            server.prepare_postgresql()?;
        } else {
            let data = server.data_dir();
            std::fs::create_dir_all(&data)
                .map_err(|e| Error::io(format!("creating {}", data.display()), e))?;
        }

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
                    tracing::debug!(%error, "mongodb lost a port race, retrying with a new port");
                    // Judge the next attempt by its own log.
                    let _ = std::fs::remove_file(server.log_path());
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl MongoDb {
    /// Starts a server of its own in a temporary folder on a free port.
    pub fn start() -> Result<MongoDb> {
        Self::builder().start()
    }

    /// The server shared by all tests of this process, started on first use.
    /// Isolate tests with unique database names ([`crate::unique_name`]).
    pub fn shared() -> Result<&'static MongoDb> {
        static SHARED: Mutex<Option<&'static MongoDb>> = Mutex::new(None);
        shared_instance(&SHARED, Self::start)
    }

    /// Options: folder, port, server kind, start-up timeout.
    pub fn builder() -> MongoDbBuilder {
        MongoDbBuilder::default()
    }

    /// Starts with the common [`ServerOptions`] (folder and port).
    pub fn start_with(options: &ServerOptions) -> Result<MongoDb> {
        let mut builder = Self::builder();
        builder.dir = options.dir.clone();
        builder.port = options.port;
        builder.start()
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mongodb://127.0.0.1:PORT/?directConnection=true`.
    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// `"ferretdb"` or `"mongod"`: tests of features FerretDB lacks
    /// (transactions) can check this.
    pub fn kind(&self) -> &'static str {
        self.kind.as_str()
    }

    /// The server kind as an enum.
    pub fn server_kind(&self) -> MongoKind {
        self.kind
    }

    /// FerretDB's backend; `None` for mongod.
    pub fn ferret_backend(&self) -> Option<FerretBackend> {
        self.backend
    }

    /// `"mongod"`, or FerretDB and its backend (`"ferretdb on postgresql"`).
    pub fn describe(&self) -> String {
        match self.backend {
            None => self.kind().to_owned(),
            Some(backend) => format!("{} on {backend}", self.kind()),
        }
    }

    /// The private PostgreSQL behind FerretDB, when it has one.
    pub fn private_postgres(&self) -> Option<&Postgres> {
        self.private_postgres.as_ref()
    }

    /// The server's folder: the data folder and `mongodb.log`.
    pub fn dir(&self) -> &Path {
        self.workdir.path()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.workdir.path().join("mongodb.log")
    }

    /// The server's process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    /// Whether the server is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Stops the server (SIGTERM, SIGKILL after 10 s), keeping port and data for
    /// [`MongoDb::start_again`]. No-op when stopped.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Signal::TERM, STOP_GRACE);
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

    /// Starts the private PostgreSQL when no database was given, and creates
    /// FerretDB's database in it on first use.
    fn prepare_postgresql(&mut self) -> Result<()> {
        if self.postgresql_url.is_some() {
            return Ok(());
        }
        let mut builder = Postgres::builder();
        if !self.workdir.is_temporary() {
            builder = builder.dir(self.workdir.path().join("postgres"));
        }
        if let Some(durable) = self.durable {
            builder = builder.durable(durable);
        }
        let postgres = builder.start()?;
        let url = postgres.ensure_database(FERRETDB_DATABASE)?;
        self.postgresql_url = Some(url);
        self.private_postgres = Some(postgres);
        Ok(())
    }

    fn data_dir(&self) -> PathBuf {
        let name = match self.kind {
            MongoKind::Mongod => "db",
            MongoKind::FerretDb => "sqlite",
        };
        self.workdir.path().join(name)
    }

    fn launch(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut command = Command::new(&self.binary);
        command.current_dir(self.workdir.path());
        let port = self.port.to_string();
        match self.kind {
            MongoKind::Mongod => {
                command
                    .arg("--dbpath")
                    .arg(self.data_dir())
                    .args(["--bind_ip", "127.0.0.1", "--port", &port])
                    .arg("--unixSocketPrefix")
                    .arg(self.workdir.path())
                    .args(["--setParameter", "diagnosticDataCollectionEnabled=false"]);
            }
            MongoKind::FerretDb => {
                // Upstream's command line, which Switchboard's build speaks
                // too: nixpkgs' `ferretdb` (under `nix run`) is upstream's.
                command
                    .arg(format!("--listen-addr=127.0.0.1:{port}"))
                    .arg(format!("--state-dir={}", self.workdir.path().display()))
                    .args(["--debug-addr=-", "--telemetry=disable"]);
                match (self.backend, &self.postgresql_url) {
                    (Some(FerretBackend::Postgresql), Some(url)) => {
                        command
                            .arg("--handler=postgresql")
                            .arg(format!("--postgresql-url={url}"));
                    }
                    (backend, _) => {
                        let synchronous = match backend {
                            Some(FerretBackend::SqliteNormal) => "normal",
                            _ => "full",
                        };
                        command.arg("--handler=sqlite").arg(format!(
                            "--sqlite-url=file:{}/?_pragma=synchronous({synchronous})",
                            self.data_dir().display()
                        ));
                    }
                }
            }
        }
        let log = self.log_path();
        let mut process =
            Supervised::spawn(self.kind.as_str(), command, &log, self.workdir.removable())?;
        let port = self.port;
        match process.wait_ready(self.startup_timeout, Duration::from_millis(25), || {
            mongo_ping(port)
        }) {
            Startup::Ready => {
                tracing::debug!(kind = self.kind(), port, elapsed = ?started.elapsed(), "mongodb ready");
                self.process = Some(process);
                Ok(())
            }
            failed => {
                process.kill_now();
                Err(startup_error(
                    self.kind.as_str(),
                    failed,
                    self.startup_timeout,
                    &[&log],
                ))
            }
        }
    }

    fn lost_port_race(&self) -> bool {
        looks_like_port_clash(&log_tail(&self.log_path(), 20))
    }
}

impl Drop for MongoDb {
    fn drop(&mut self) {
        self.stop();
    }
}
