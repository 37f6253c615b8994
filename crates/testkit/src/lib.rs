//! Real dependency servers for tests and the dev stack: PostgreSQL, RabbitMQ,
//! MongoDB (or FerretDB where mongod is not installed) and MailHog, started as
//! child processes on loopback ports and stopped on drop; and Prometheus,
//! scraping the targets it is given, with helpers to query it
//! ([`Prometheus::wait_until_up`], [`Prometheus::query_value`]).
//!
//! Everything here is synchronous (std::process, std::net polling): it works from
//! any test runtime, from statics and from the dev stack runner.
//!
//! # Two modes
//!
//! * **Temporary** (tests): `Postgres::start()` etc. pick free loopback ports and
//!   a fresh folder under the system temp dir, retry with new ports if a port was
//!   taken in between, and delete the folder on drop. `Postgres::shared()` etc.
//!   start one instance per test process, kept in a static; tests that share it
//!   isolate themselves with [`Postgres::create_database`],
//!   [`RabbitMq::create_vhost`], unique MongoDB database names
//!   ([`unique_name`]) and unique mail recipients ([`MailHog::messages_to`]).
//! * **Persistent** (dev stack): give a folder and fixed ports, either with the
//!   per-server builders (`Postgres::builder().dir(path).port(5432).start()`,
//!   `RabbitMq::builder().dir(..).amqp_port(5672).management_port(15672)`) or
//!   with the common [`ServerOptions`] (`Postgres::start_with(&options)`). The
//!   folder is created if missing and existing data in it is reused; it is never
//!   deleted, and persistent servers are stopped gracefully.
//!
//! # Nothing outlives the test process
//!
//! Every server runs in its own process group; dropping the handle stops the
//! whole group (a polite signal, then SIGKILL). Because shared instances live in
//! statics and are never dropped, and because a test binary can die from a
//! panic, an abort or SIGKILL, each server also gets a tiny `sh` reaper in its
//! own process group that waits for the test process to disappear, then kills
//! the server's group and removes its temporary folder.
//!
//! Server output goes to log files in the server's folder; start-up errors quote
//! the tail of that log.
//!
//! # Clusters
//!
//! [`RabbitMqCluster`] runs several private RabbitMQ nodes as one cluster (a
//! shared cookie and epmd), with SIGKILL and restart of a node and the
//! leader of a quorum queue, for failover tests.
//!
//! # Example
//!
//! ```no_run
//! use switchboard_testkit::{MailHog, Postgres, RabbitMq, servers_disabled};
//!
//! # fn main() -> switchboard_testkit::Result<()> {
//! if servers_disabled() {
//!     return Ok(());
//! }
//! // One server per test process, one database (vhost) per test.
//! let database_url = Postgres::shared()?.create_database()?;
//! let amqp_url = RabbitMq::shared()?.create_vhost()?;
//! // A server of the test's own, for outage tests.
//! let mut mailhog = MailHog::start()?;
//! mailhog.stop();
//! mailhog.start_again()?;
//! # let _ = (database_url, amqp_url);
//! # Ok(())
//! # }
//! ```
//!
//! # Skipping
//!
//! Sandboxed builds (the Nix `checkPhase`) cannot start servers: they set
//! `SWITCHBOARD_SKIP_SERVER_TESTS=1`, and server-backed tests begin with
//! `if switchboard_testkit::servers_disabled() { return; }`. Tests that need
//! a privilege the sandbox does not grant skip themselves the same way, with
//! [`skip`] (e.g. after [`activation::network_namespaces_permitted`]).
//!
//! # Services as systemd runs them
//!
//! [`activation`] is the harness of the services' binary tests: socket
//! activation through `systemd-socket-activate`, a notify socket, SIGTERM and
//! a wait for the exit.
//!
//! # Traces
//!
//! [`otlp::Collector`] (feature `otlp`) is a real OTLP/gRPC trace receiver on
//! a free loopback port, built from the official protocol definitions: point
//! a service's exporter at [`otlp::Collector::endpoint`], then wait for a
//! trace with [`otlp::Collector::wait_for_trace`] and check its shape
//! ([`otlp::CollectedSpan::is_child_of`], [`otlp::render_tree`]).

pub mod activation;
#[cfg(feature = "amqp")]
pub mod amqp_tap;
mod binary;
#[cfg(feature = "browser")]
pub mod browser;
mod error;
mod mailhog;
pub mod metrics;
mod mongodb;
mod net;
#[cfg(feature = "otlp")]
pub mod otlp;
mod postgres;
mod process;
mod prometheus;
mod rabbitmq;
mod rabbitmq_cluster;
mod workdir;

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use binary::{find_binary, find_binary_in};
pub use error::{Error, Result};
pub use mailhog::{MailHog, MailHogBuilder};
pub use mongodb::{
    FERRETDB_BACKEND_ENV, FERRETDB_DATABASE, FerretBackend, MongoDb, MongoDbBuilder, MongoKind,
};
pub use postgres::{Postgres, PostgresBuilder};
pub use process::process_alive;
pub use prometheus::{Prometheus, PrometheusBuilder, Sample, ScrapeJob, ScrapeTarget};
pub use rabbitmq::{RabbitMq, RabbitMqBuilder};
pub use rabbitmq_cluster::RabbitMqCluster;

/// Environment variable that turns server-backed tests into visible no-ops.
pub const SKIP_SERVER_TESTS_ENV: &str = "SWITCHBOARD_SKIP_SERVER_TESTS";

/// The port range RabbitMQ's CLI tools (`rabbitmqctl`) listen on for their own
/// Erlang distribution connection. Server ports are never picked from it, so a
/// CLI call can always find a slot.
pub const RABBITMQ_CLI_PORTS: std::ops::RangeInclusive<u16> = 35672..=35699;

/// Where and on which port a server runs; the common subset of the per-server
/// builders, for callers (the dev stack) that treat all servers alike.
///
/// `dir: None` means a fresh temporary folder removed on drop; `Some(path)`
/// means a persistent folder (created if missing, data reused, never removed).
/// `port: None` picks a free port (with retries on a start-up port race when
/// the folder is temporary); `Some(port)` uses exactly that port, which is then
/// checked to be free before start. `port` is the client port: PostgreSQL's,
/// RabbitMQ's AMQP port, MongoDB's, MailHog's SMTP port, Prometheus' web
/// port. The other ports of a server (RabbitMQ's distribution and epmd
/// ports, MailHog's HTTP port) are picked free unless set through the
/// server's builder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerOptions {
    /// Persistent folder, or `None` for a temporary one.
    pub dir: Option<PathBuf>,
    /// Fixed client port, or `None` for a free one.
    pub port: Option<u16>,
}

impl ServerOptions {
    /// Temporary folder, free ports: what tests use.
    pub fn temporary() -> Self {
        Self::default()
    }

    /// A persistent folder and a fixed client port: what the dev stack uses.
    pub fn persistent(dir: impl Into<PathBuf>, port: u16) -> Self {
        Self {
            dir: Some(dir.into()),
            port: Some(port),
        }
    }
}

/// Ports already handed out by this process: bind(0) may return a port again
/// right after it was released, and two servers of one test must not get the
/// same one.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free TCP port on 127.0.0.1: binds port 0, reads the port, closes.
///
/// Another process may take the port before the server binds it; server
/// start-up therefore retries with new ports on a port clash. Never returns a
/// port in [`RABBITMQ_CLI_PORTS`] nor one this process returned before.
///
/// # Panics
/// Only if no loopback port can be bound at all (no loopback interface), where
/// no server test could run anyway; [`try_free_port`] returns that as an error.
pub fn free_port() -> u16 {
    match try_free_port() {
        Ok(port) => port,
        Err(error) => panic!("switchboard-testkit: {error}"),
    }
}

/// [`free_port`], returning an error instead of panicking.
pub fn try_free_port() -> Result<u16> {
    let mut last_error = None;
    for _ in 0..200 {
        let port = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
            Ok(address) => address.port(),
            Err(error) => {
                last_error = Some(error);
                continue;
            }
        };
        if RABBITMQ_CLI_PORTS.contains(&port) {
            continue;
        }
        let mut guard = HANDED_OUT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let handed_out = guard.get_or_insert_with(HashSet::new);
        // The ephemeral range has ~28k ports; forget old ones long before it runs out.
        if handed_out.len() > 8_000 {
            handed_out.clear();
        }
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(Error::Io {
        action: "finding a free port on 127.0.0.1".to_owned(),
        source: last_error
            .unwrap_or_else(|| std::io::Error::other("every port tried was in use or reserved")),
    })
}

/// A name no other test (in this or another process) uses: `prefix` (lower-cased,
/// reduced to `[a-z0-9_]`, starting with a letter) + `_` + 10 hex digits, e.g.
/// `logs_3f9a1c07be`. Safe unquoted as a PostgreSQL database, a RabbitMQ vhost or
/// queue, a MongoDB database or collection, and in an e-mail local part.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    hasher.write_u128(nanos);
    let suffix = hasher.finish() & 0xff_ffff_ffff;

    let mut clean: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .take(40)
        .collect();
    if !clean.starts_with(|c: char| c.is_ascii_lowercase()) {
        clean.insert(0, 't');
    }
    format!("{clean}_{suffix:010x}")
}

/// True when `SWITCHBOARD_SKIP_SERVER_TESTS=1` (sandboxed builds such as the Nix
/// `checkPhase`, which cannot start servers). Prints a visible `skipping: ...`
/// line to stderr naming the test, so a skipped test never passes silently.
pub fn servers_disabled() -> bool {
    let disabled = std::env::var_os(SKIP_SERVER_TESTS_ENV).is_some_and(|value| value == "1");
    if disabled {
        skip(&format!(
            "{SKIP_SERVER_TESTS_ENV}=1, this test needs real servers"
        ));
    }
    disabled
}

/// Says that the running test skips itself: `skipping: <test>: <reason>` on
/// stderr, the test named after its thread. The caller then returns.
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>");
    // Straight to fd 2, not eprintln!: libtest captures the macros' output
    // of passing tests, and a skip must be visible.
    let _ = writeln!(std::io::stderr(), "skipping: {test}: {reason}");
}

/// One instance per test process, created on first use and kept in a static.
/// A failed start is not cached: the next caller tries again.
fn shared_instance<T: Send + Sync + 'static>(
    slot: &'static Mutex<Option<&'static T>>,
    start: impl FnOnce() -> Result<T>,
) -> Result<&'static T> {
    // Holding the lock while starting makes concurrent first callers wait for
    // the one instance instead of starting several.
    let mut guard = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(instance) = *guard {
        return Ok(instance);
    }
    // Leaked on purpose: the instance lives until the process exits, and its
    // reaper stops the server and removes its folder then.
    let instance: &'static T = Box::leak(Box::new(start()?));
    *guard = Some(instance);
    Ok(instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_distinct_and_safe() {
        let names: HashSet<String> = (0..1000).map(|_| unique_name("Logs-DB")).collect();
        assert_eq!(names.len(), 1000);
        for name in &names {
            assert!(name.starts_with("logsdb_"), "{name}");
            assert_eq!(name.len(), "logsdb_".len() + 10, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            );
        }
        assert!(unique_name("").starts_with("t_"));
        assert!(unique_name("9x").starts_with("t9x_"));
    }

    #[test]
    fn free_ports_are_distinct_and_outside_the_cli_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|port| !RABBITMQ_CLI_PORTS.contains(port)));
        // Free means bindable right now.
        let port = free_port();
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok());
    }

    #[test]
    fn server_options_constructors() {
        assert_eq!(
            ServerOptions::temporary(),
            ServerOptions {
                dir: None,
                port: None
            }
        );
        let options = ServerOptions::persistent("/var/tmp/x", 5432);
        assert_eq!(options.dir, Some(PathBuf::from("/var/tmp/x")));
        assert_eq!(options.port, Some(5432));
    }
}
