//! What a stack looks like before it starts: where its state lives, which
//! ports it uses, which services run, what extra configuration they get.
//!
//! Two presets: [`StackOptions::temporary`] (tests and benchmarks: a temporary
//! folder, free ports everywhere) and [`StackOptions::persistent`] (the run
//! command: a folder that keeps its data, the usual ports).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use switchboard_testkit::{FerretBackend, MongoKind};

use crate::service::{Dependency, ServiceName};

/// Where the stack keeps its state (dependency data, notify sockets, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateDir {
    /// A fresh folder under the system temp dir, removed when the stack goes.
    Temporary,
    /// A folder that is created if missing and reused by the next start.
    Persistent(PathBuf),
}

/// Client ports of the dependency servers, and Prometheus' web port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DependencyPorts {
    pub postgres: u16,
    pub amqp: u16,
    pub rabbitmq_management: u16,
    pub mongodb: u16,
    pub smtp: u16,
    pub mailhog_http: u16,
    pub prometheus: u16,
}

impl DependencyPorts {
    /// 5432, 5672, 15672, 27017, 1025, 8025, 9090.
    pub const USUAL: DependencyPorts = DependencyPorts {
        postgres: 5432,
        amqp: 5672,
        rabbitmq_management: 15672,
        mongodb: 27017,
        smtp: 1025,
        mailhog_http: 8025,
        prometheus: 9090,
    };

    /// Every port shifted by `offset`, or `None` if one would pass 65535.
    pub fn offset(self, offset: u16) -> Option<Self> {
        Some(Self {
            postgres: self.postgres.checked_add(offset)?,
            amqp: self.amqp.checked_add(offset)?,
            rabbitmq_management: self.rabbitmq_management.checked_add(offset)?,
            mongodb: self.mongodb.checked_add(offset)?,
            smtp: self.smtp.checked_add(offset)?,
            mailhog_http: self.mailhog_http.checked_add(offset)?,
            prometheus: self.prometheus.checked_add(offset)?,
        })
    }
}

/// How the services' listening sockets get their ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServicePorts {
    /// Ports the kernel picks (the stack binds port 0 and keeps the socket).
    Free,
    /// README.md's default ports plus an offset.
    Default { offset: u16 },
}

/// Where the stack reports progress and the services' log lines, besides the
/// log files in its state folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Console {
    /// Colour the per-service prefixes (ANSI escapes).
    pub color: bool,
}

/// Everything [`crate::Stack::start`] needs to know.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub state: StateDir,
    /// `None`: free ports picked by the testkit.
    pub dependency_ports: Option<DependencyPorts>,
    pub service_ports: ServicePorts,
    /// The services to run; the dependency servers they need start with them.
    pub services: BTreeSet<ServiceName>,
    /// How many instances of a service run (absent: one). Every instance
    /// has the same configuration and sockets of its own on free ports; the
    /// broker is configured with every logger instance's doors
    /// (`downstream.logger_*_addrs|urls`).
    pub instances: BTreeMap<ServiceName, usize>,
    /// Extra environment per service, applied after the stack's own
    /// configuration, so it wins.
    pub extra_env: BTreeMap<ServiceName, Vec<(String, String)>>,
    /// Start a service with sockets only on the first connection to one of them.
    pub lazy: bool,
    /// Where the `switchboard-*` binaries are; `None`: next to the running executable.
    pub bin_dir: Option<PathBuf>,
    pub console: Option<Console>,
    /// Create the development user ([`crate::DEV_USER_EMAIL`]) when auth runs.
    pub seed_user: bool,
    /// Run RabbitMQ's management plugin (its web UI); slows RabbitMQ's start.
    pub rabbitmq_management: bool,
    /// Run Prometheus (found on `PATH`), scraping every selected service's
    /// `metrics` socket under the job `switchboard-<service>`; its data in
    /// `prometheus/` of a persistent state folder.
    pub prometheus: bool,
    /// How often Prometheus scrapes (also the scrape timeout, at most 10 s).
    pub prometheus_scrape_interval: Duration,
    /// Which MongoDB-protocol server to run; `None`: `mongod` where it is
    /// installed, else FerretDB. FerretDB is the choice on CPUs without AVX,
    /// which current `mongod` builds require.
    pub mongodb_server: Option<MongoKind>,
    /// FerretDB's backend; `None`: the test kit's default
    /// ([`FerretBackend::from_env`]). With `postgresql`, FerretDB keeps its
    /// documents in a database of its own (`ferretdb`) on the stack's
    /// PostgreSQL when the stack runs one.
    pub ferretdb_backend: Option<FerretBackend>,
    /// Whether the dependency servers sync their commits to disk; `None`:
    /// only with a persistent state folder (temporary stacks trade it for speed).
    pub durable: Option<bool>,
    /// How long a service may take from spawn to `READY=1`.
    pub ready_timeout: Duration,
    /// How long a service may drain after SIGTERM before it gets SIGKILL.
    pub stop_timeout: Duration,
    /// Set from a signal handler to abandon a start in progress.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Dependency servers the stack does not start although its services
    /// need them: the caller runs them (a test's RabbitMQ cluster) and
    /// points the services at them with [`StackOptions::setting`].
    pub external: BTreeSet<Dependency>,
}

impl StackOptions {
    /// Temporary folder, free ports everywhere, every service, dev user seeded,
    /// no console output: what tests and benchmarks use.
    pub fn temporary() -> Self {
        Self {
            state: StateDir::Temporary,
            dependency_ports: None,
            service_ports: ServicePorts::Free,
            services: ServiceName::ALL.into_iter().collect(),
            instances: BTreeMap::new(),
            extra_env: BTreeMap::new(),
            lazy: false,
            bin_dir: None,
            console: None,
            seed_user: true,
            rabbitmq_management: false,
            prometheus: false,
            prometheus_scrape_interval: Duration::from_secs(5),
            mongodb_server: None,
            ferretdb_backend: None,
            durable: None,
            ready_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(15),
            interrupt: None,
            external: BTreeSet::new(),
        }
    }

    /// A persistent folder, the usual ports, RabbitMQ's management UI and
    /// Prometheus: what the run command uses.
    pub fn persistent(dir: impl Into<PathBuf>) -> Self {
        Self {
            state: StateDir::Persistent(dir.into()),
            dependency_ports: Some(DependencyPorts::USUAL),
            service_ports: ServicePorts::Default { offset: 0 },
            rabbitmq_management: true,
            prometheus: true,
            ..Self::temporary()
        }
    }

    /// Runs only these services (and the dependency servers they need).
    pub fn services(mut self, services: impl IntoIterator<Item = ServiceName>) -> Self {
        self.services = services.into_iter().collect();
        self
    }

    /// Runs `count` instances of `service` (at least one), each with the
    /// same configuration and sockets of its own (free ports): several
    /// loggers behind one store, say. The first is the one the other
    /// methods and accessors name; the others are reached through
    /// [`crate::Stack::instance_socket_addr`], [`crate::Stack::kill_instance`] and
    /// their likes.
    pub fn instances(mut self, service: ServiceName, count: usize) -> Self {
        self.instances.insert(service, count.max(1));
        self
    }

    /// How many instances of `service` run.
    pub fn instance_count(&self, service: ServiceName) -> usize {
        self.instances.get(&service).copied().unwrap_or(1).max(1)
    }

    /// Sets an environment variable for one service.
    pub fn env(
        mut self,
        service: ServiceName,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.extra_env
            .entry(service)
            .or_default()
            .push((name.into(), value.into()));
        self
    }

    /// Overrides one configuration key of a service, by its dotted README
    /// name: `.setting(ServiceName::Broker, "downstream.timeout_ms", 500)`.
    pub fn setting(self, service: ServiceName, dotted_key: &str, value: impl ToString) -> Self {
        let variable = service.setting_variable(dotted_key);
        self.env(service, variable, value.to_string())
    }

    pub fn lazy(mut self, lazy: bool) -> Self {
        self.lazy = lazy;
        self
    }

    /// Runs this MongoDB-protocol server instead of the detected one.
    pub fn mongodb_server(mut self, kind: MongoKind) -> Self {
        self.mongodb_server = Some(kind);
        self
    }

    /// Keeps FerretDB's documents on this backend.
    pub fn ferretdb_backend(mut self, backend: FerretBackend) -> Self {
        self.ferretdb_backend = Some(backend);
        self
    }

    /// Makes the dependency servers sync commits (or not) whatever the state folder.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = Some(durable);
        self
    }

    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    pub fn console(mut self, console: Console) -> Self {
        self.console = Some(console);
        self
    }

    pub fn dependency_ports(mut self, ports: DependencyPorts) -> Self {
        self.dependency_ports = Some(ports);
        self
    }

    pub fn service_ports(mut self, ports: ServicePorts) -> Self {
        self.service_ports = ports;
        self
    }

    pub fn seed_user(mut self, seed: bool) -> Self {
        self.seed_user = seed;
        self
    }

    pub fn rabbitmq_management(mut self, enabled: bool) -> Self {
        self.rabbitmq_management = enabled;
        self
    }

    /// Runs Prometheus beside the stack, scraping the selected services.
    pub fn prometheus(mut self, enabled: bool) -> Self {
        self.prometheus = enabled;
        self
    }

    /// How often Prometheus scrapes; default 5 s.
    pub fn prometheus_scrape_interval(mut self, interval: Duration) -> Self {
        self.prometheus_scrape_interval = interval;
        self
    }

    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    pub fn interrupt(mut self, flag: Arc<AtomicBool>) -> Self {
        self.interrupt = Some(flag);
        self
    }

    /// Leaves `dependency` to the caller, who runs it and configures the
    /// services to reach it (e.g. `events.amqp_url` for a RabbitMQ cluster):
    /// the stack neither starts it nor wires the services to it.
    pub fn external(mut self, dependency: Dependency) -> Self {
        self.external.insert(dependency);
        self
    }

    /// The dependency servers the stack starts for the selected services,
    /// in start order (those left [`external`](Self::external) excluded).
    pub fn dependencies(&self) -> Vec<Dependency> {
        let needed: BTreeSet<Dependency> = self
            .services
            .iter()
            .flat_map(|service| service.dependencies().iter().copied())
            .filter(|dependency| !self.external.contains(dependency))
            .collect();
        needed.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_follow_the_selected_services() {
        let all = StackOptions::temporary();
        assert_eq!(all.dependencies(), Dependency::ALL.to_vec());
        let broker = StackOptions::temporary().services([ServiceName::Broker]);
        assert_eq!(broker.dependencies(), vec![Dependency::RabbitMq]);
        let frontend = StackOptions::temporary().services([ServiceName::Frontend]);
        assert!(frontend.dependencies().is_empty());
        let cluster = StackOptions::temporary()
            .services([ServiceName::Broker])
            .external(Dependency::RabbitMq);
        assert!(cluster.dependencies().is_empty());
    }

    #[test]
    fn settings_become_environment_variables() {
        let options =
            StackOptions::temporary().setting(ServiceName::Broker, "limits.rate_per_second", 2);
        assert_eq!(
            options.extra_env[&ServiceName::Broker],
            vec![(
                "SWITCHBOARD_BROKER__LIMITS__RATE_PER_SECOND".to_owned(),
                "2".to_owned()
            )]
        );
    }

    #[test]
    fn the_run_command_runs_prometheus_and_tests_do_not() {
        assert!(StackOptions::persistent("/tmp/x").prometheus);
        assert!(!StackOptions::temporary().prometheus);
        assert!(
            !StackOptions::persistent("/tmp/x")
                .prometheus(false)
                .prometheus
        );
        assert_eq!(DependencyPorts::USUAL.prometheus, 9090);
    }

    #[test]
    fn port_offsets_are_checked() {
        let shifted = DependencyPorts::USUAL.offset(10_000).expect("fits");
        assert_eq!(shifted.postgres, 15432);
        assert_eq!(shifted.rabbitmq_management, 25672);
        assert_eq!(shifted.prometheus, 19090);
        assert!(DependencyPorts::USUAL.offset(60_000).is_none());
    }
}
