//! The Switchboard dev stack: PostgreSQL, RabbitMQ, MongoDB (or FerretDB) and
//! MailHog, then the six services, on one machine, on loopback; and, when
//! asked (the run command does), Prometheus scraping every service's
//! `metrics` socket.
//!
//! The stack imitates systemd: it binds every service's listening sockets
//! itself and keeps them open for its whole life (so connections wait in the
//! backlog while a service restarts), hands them to each service at fds 3..
//! with `LISTEN_FDS`/`LISTEN_FDNAMES`/`LISTEN_PID`, waits for `READY=1` on a
//! notify socket per service, stops services with SIGTERM then SIGKILL in
//! reverse order, and — in lazy mode — starts a service only when the first
//! connection waits on one of its sockets, like socket activation.
//!
//! [`Stack::start`] is what the run command (`switchboard-stack`), the
//! cross-service tests and the benchmark drive: temporary mode (a temporary
//! folder and free ports, [`StackOptions::temporary`]) or persistent mode (a
//! folder whose data the next start reuses and the usual ports,
//! [`StackOptions::persistent`]). Everything is synchronous (threads, no async
//! runtime), so a stack can live in a `static` shared by the tests of one
//! binary; if the process dies without dropping it, reaper processes stop the
//! services and servers.

mod binaries;
mod configs;
mod error;
mod options;
mod output;
mod service;
mod sockets;
mod supervisor;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use switchboard_testkit::{
    FERRETDB_DATABASE, FerretBackend, MailHog, MongoDb, MongoKind, Postgres, Prometheus, RabbitMq,
};

pub use binaries::{BIN_DIR_ENV, build_service_binaries, default_bin_dir, service_binary};
pub use error::{PortConflict, Result, StackError};
pub use options::{Console, DependencyPorts, ServicePorts, StackOptions, StateDir};
pub use rustix::process::Signal;
pub use service::{Dependency, METRICS_SOCKET, ServiceName, SocketSpec, UnknownService};
pub use supervisor::ServicePhase;

use configs::{USERS_DATABASE, Wiring};
use output::{ServiceLog, Terminal};
use sockets::NamedSocket;
use supervisor::{Shared, Supervisor};

/// The development user the stack creates when auth runs.
pub const DEV_USER_EMAIL: &str = "admin@example.com";
pub const DEV_USER_PASSWORD: &str = "verysecret";
pub const DEV_USER_FIRST_NAME: &str = "Admin";
pub const DEV_USER_LAST_NAME: &str = "User";

/// Longest notify socket path we bind (sun_path holds 108 bytes).
const MAX_SOCKET_PATH: usize = 100;

/// The dependency servers of a running stack, each behind a lock so tests can
/// stop and start them while the stack is shared.
#[derive(Debug, Default)]
struct Servers {
    postgres: Option<Mutex<Postgres>>,
    rabbitmq: Option<Mutex<RabbitMq>>,
    mongodb: Option<Mutex<MongoDb>>,
    mailhog: Option<Mutex<MailHog>>,
    prometheus: Option<Mutex<Prometheus>>,
}

/// Addresses fixed at start (a stopped and restarted server keeps its ports).
#[derive(Debug, Clone, Default)]
struct Addresses {
    sockets: BTreeMap<(ServiceName, &'static str), SocketAddr>,
    /// The sockets of further instances (2, 3, …) of a service.
    instance_sockets: BTreeMap<(ServiceName, usize, &'static str), SocketAddr>,
    postgres_port: Option<u16>,
    amqp_port: Option<u16>,
    rabbitmq_management_port: Option<u16>,
    mongodb_port: Option<u16>,
    mongodb_kind: Option<&'static str>,
    smtp_port: Option<u16>,
    mailhog_http_port: Option<u16>,
    prometheus_port: Option<u16>,
}

impl Wiring for Addresses {
    fn socket(&self, service: ServiceName, name: &str) -> SocketAddr {
        self.sockets
            .iter()
            .find(|((s, n), _)| *s == service && *n == name)
            .map(|(_, addr)| *addr)
            // Every socket of every service is bound at start, so this is unreachable.
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    fn postgres_url(&self, database: &str) -> Option<String> {
        self.postgres_port
            .map(|port| format!("postgres://postgres@127.0.0.1:{port}/{database}"))
    }

    fn amqp_url(&self) -> Option<String> {
        self.amqp_port
            .map(|port| format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
    }

    fn mongodb_url(&self) -> Option<String> {
        self.mongodb_port
            .map(|port| format!("mongodb://127.0.0.1:{port}/?directConnection=true"))
    }

    fn smtp_port(&self) -> Option<u16> {
        self.smtp_port
    }

    fn other_instances(&self, service: ServiceName, name: &str) -> Vec<SocketAddr> {
        // Keys sort by instance: the list is in instance order.
        self.instance_sockets
            .iter()
            .filter(|((s, _, n), _)| *s == service && *n == name)
            .map(|(_, addr)| *addr)
            .collect()
    }
}

/// The state folder and what keeps it: a temporary folder (removed on drop,
/// or by its reaper if the process dies) or the lock of a persistent one.
#[derive(Debug)]
struct StateFolder {
    path: PathBuf,
    run_dir: PathBuf,
    /// Held for its `Drop`: removes the temporary folders.
    _temporary: Option<tempfile::TempDir>,
    _run_temporary: Option<tempfile::TempDir>,
    reaper: Option<Child>,
    _lock: Option<File>,
}

impl StateFolder {
    fn prepare(state: &StateDir) -> Result<Self> {
        let (path, temporary, lock) = match state {
            StateDir::Temporary => {
                let temp = tempfile::Builder::new()
                    .prefix("switchboard-stack-")
                    .tempdir()
                    .map_err(|e| StackError::io("creating a temporary state folder", e))?;
                (temp.path().to_path_buf(), Some(temp), None)
            }
            StateDir::Persistent(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StackError::io(format!("creating {}", dir.display()), e))?;
                let dir = std::fs::canonicalize(dir)
                    .map_err(|e| StackError::io(format!("resolving {}", dir.display()), e))?;
                let lock_path = dir.join("stack.lock");
                let lock = File::create(&lock_path)
                    .map_err(|e| StackError::io(format!("creating {}", lock_path.display()), e))?;
                match lock.try_lock() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => return Err(StackError::Locked(dir)),
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(StackError::io(
                            format!("locking {}", lock_path.display()),
                            e,
                        ));
                    }
                }
                (dir, None, Some(lock))
            }
        };
        for sub in ["logs", "run"] {
            let dir = path.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(|e| StackError::io(format!("creating {}", dir.display()), e))?;
        }
        let mut run_dir = path.join("run");
        let mut run_temporary = None;
        if run_dir.join("frontend.notify").as_os_str().len() > MAX_SOCKET_PATH {
            // A deep project folder: unix socket paths must stay short.
            let temp = tempfile::Builder::new()
                .prefix("switchboard-run-")
                .tempdir_in("/tmp")
                .map_err(|e| StackError::io("creating a folder for notify sockets", e))?;
            run_dir = temp.path().to_path_buf();
            run_temporary = Some(temp);
        }
        let removable: Vec<&Path> = [temporary.as_ref(), run_temporary.as_ref()]
            .into_iter()
            .flatten()
            .map(tempfile::TempDir::path)
            .collect();
        let reaper = if removable.is_empty() {
            None
        } else {
            spawn_folder_reaper(&removable)
        };
        Ok(Self {
            path,
            run_dir,
            _temporary: temporary,
            _run_temporary: run_temporary,
            reaper,
            _lock: lock,
        })
    }
}

impl Drop for StateFolder {
    fn drop(&mut self) {
        if let Some(mut reaper) = self.reaper.take() {
            if let Some(pid) = i32::try_from(reaper.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            }
            let _ = reaper.wait();
        }
        // The TempDirs remove themselves when the fields drop.
    }
}

/// Removes temporary folders once this process is gone, in case it dies
/// without dropping the stack (a `static` stack in a test binary).
fn spawn_folder_reaper(folders: &[&Path]) -> Option<Child> {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(r#"p="$1"; shift; while kill -0 "$p" 2>/dev/null; do sleep 1; done; sleep 2; rm -rf -- "$@""#)
        .arg("switchboard-stack-folder-reaper")
        .arg(std::process::id().to_string())
        .args(folders)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.spawn().ok()
}

/// A running stack. Dropping it stops the services in reverse start order,
/// then the dependency servers.
#[derive(Debug)]
pub struct Stack {
    shared: Arc<Shared>,
    supervisors: Vec<Arc<Supervisor>>,
    servers: Servers,
    addresses: Addresses,
    watchers: Vec<std::thread::JoinHandle<()>>,
    stopped: bool,
    // Last: removed after everything in it has stopped.
    folder: StateFolder,
}

impl Stack {
    /// Starts the dependency servers the selected services need, seeds the
    /// development user, then starts the services and waits until every one
    /// that is not lazy has sent `READY=1`.
    pub fn start(options: StackOptions) -> Result<Stack> {
        let terminal = Terminal::new(options.console);
        let folder = StateFolder::prepare(&options.state)?;
        let interrupted = || {
            options
                .interrupt
                .as_ref()
                .is_some_and(|flag| flag.load(Ordering::Relaxed))
        };

        let binaries = resolve_binaries(&options)?;
        let sockets = bind_service_sockets(&options)?;
        let dependencies = options.dependencies();
        refuse_port_conflicts(&options, &dependencies, sockets.conflicts)?;
        let mut addresses = Addresses::of_sockets(&sockets.bound, &sockets.instances);

        let servers = start_servers(&options, &dependencies, &addresses, &folder.path, &terminal)?;
        if interrupted() {
            return Err(StackError::Interrupted);
        }
        addresses.learn_servers(&servers)?;
        let environment = environments(&options, &addresses, &folder.path.join("config"))?;

        if options.seed_user
            && let (Some(binary), Some(env)) = (
                binaries.get(&ServiceName::Auth),
                environment.get(&ServiceName::Auth),
            )
        {
            let started = Instant::now();
            seed_dev_user(binary, env)?;
            terminal.progress(format!(
                "development user {DEV_USER_EMAIL} ready ({:.1?})",
                started.elapsed()
            ));
        }

        let shared = Arc::new(Shared {
            terminal,
            run_dir: folder.run_dir.clone(),
            closing: AtomicBool::new(false),
            stop_timeout: options.stop_timeout,
            ready_timeout: options.ready_timeout,
        });
        let mut stack = Stack {
            shared: Arc::clone(&shared),
            supervisors: Vec::new(),
            servers,
            addresses,
            watchers: Vec::new(),
            stopped: false,
            folder,
        };
        stack.launch(
            binaries,
            &environment,
            sockets.bound,
            sockets.instances,
            &options,
        )?;
        Ok(stack)
    }

    /// A supervisor per selected service with its sockets; starts the eager
    /// ones and waits for their `READY=1`, arms the lazy ones.
    fn launch(
        &mut self,
        mut binaries: BTreeMap<ServiceName, PathBuf>,
        environment: &BTreeMap<ServiceName, Vec<(String, String)>>,
        mut bound: BTreeMap<ServiceName, Vec<NamedSocket>>,
        mut instances: BTreeMap<(ServiceName, usize), Vec<NamedSocket>>,
        options: &StackOptions,
    ) -> Result<()> {
        let log_dir = self.folder.path.join("logs");
        for service in ServiceName::ALL {
            let (Some(binary), Some(env)) = (binaries.remove(&service), environment.get(&service))
            else {
                continue;
            };
            for instance in 1..=options.instance_count(service) {
                let service_sockets = if instance == 1 {
                    bound.remove(&service).unwrap_or_default()
                } else {
                    instances.remove(&(service, instance)).unwrap_or_default()
                };
                let label = supervisor::instance_label(service, instance);
                let log = ServiceLog::create(service, &label, &log_dir)?;
                self.supervisors.push(Supervisor::new(
                    service,
                    instance,
                    binary.clone(),
                    env.clone(),
                    options.lazy,
                    service_sockets,
                    log,
                    Arc::clone(&self.shared),
                ));
            }
        }
        // Sockets of services that do not run: closed, so calls to them are refused.
        drop(bound);

        let started = Instant::now();
        let mut eager = Vec::new();
        let mut lazy = Vec::new();
        for supervisor in &self.supervisors {
            if supervisor.is_lazy() {
                supervisor.arm();
                let watcher = Arc::clone(supervisor);
                let handle = std::thread::Builder::new()
                    .name(format!("{}-activation", supervisor.service))
                    .spawn(move || watcher.watch_for_connections())
                    .map_err(|e| StackError::io("starting a socket watcher thread", e))?;
                self.watchers.push(handle);
                lazy.push(supervisor.label.as_str());
            } else {
                supervisor.start()?;
                eager.push(Arc::clone(supervisor));
            }
        }
        if !eager.is_empty() {
            let names: Vec<&str> = eager.iter().map(|s| s.label.as_str()).collect();
            self.shared
                .terminal
                .progress(format!("starting {}", names.join(", ")));
        }
        for supervisor in &eager {
            supervisor.wait_ready(options.ready_timeout, options.interrupt.as_deref())?;
            self.shared.terminal.progress(format!(
                "{} ready ({:.1?})",
                supervisor.label,
                started.elapsed()
            ));
        }
        if !lazy.is_empty() {
            self.shared.terminal.progress(format!(
                "{} start on their first connection (lazy)",
                lazy.join(", ")
            ));
        }
        Ok(())
    }

    /// The state folder (dependency data, `logs/<service>.log`).
    pub fn state_dir(&self) -> &Path {
        &self.folder.path
    }

    /// The address of a service's socket (`http`, `rpc`, `grpc`, `metrics`).
    pub fn socket_addr(&self, service: ServiceName, socket: &str) -> Option<SocketAddr> {
        self.addresses
            .sockets
            .iter()
            .find(|((s, n), _)| *s == service && *n == socket)
            .map(|(_, addr)| *addr)
    }

    /// `http://<address>/metrics` of the service's `metrics` socket.
    pub fn metrics_url(&self, service: ServiceName) -> String {
        format!(
            "http://{}/metrics",
            self.addresses.socket(service, METRICS_SOCKET)
        )
    }

    pub fn broker_url(&self) -> String {
        self.addresses.http(ServiceName::Broker)
    }

    pub fn auth_url(&self) -> String {
        self.addresses.http(ServiceName::Auth)
    }

    pub fn mail_url(&self) -> String {
        self.addresses.http(ServiceName::Mail)
    }

    pub fn frontend_url(&self) -> String {
        self.addresses.http(ServiceName::Frontend)
    }

    pub fn logger_http_url(&self) -> String {
        self.addresses.http(ServiceName::Logger)
    }

    pub fn logger_rpc_addr(&self) -> SocketAddr {
        self.addresses.socket(ServiceName::Logger, "rpc")
    }

    pub fn logger_grpc_url(&self) -> String {
        format!(
            "http://{}",
            self.addresses.socket(ServiceName::Logger, "grpc")
        )
    }

    /// `postgres://postgres@127.0.0.1:PORT/<database>` when PostgreSQL runs.
    pub fn postgres_url(&self, database: &str) -> Option<String> {
        self.addresses.postgres_url(database)
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f` when RabbitMQ runs.
    pub fn amqp_url(&self) -> Option<String> {
        self.addresses.amqp_url()
    }

    /// RabbitMQ's management UI (guest/guest) when enabled.
    pub fn rabbitmq_management_url(&self) -> Option<String> {
        self.addresses
            .rabbitmq_management_port
            .map(|port| format!("http://127.0.0.1:{port}"))
    }

    pub fn mongodb_url(&self) -> Option<String> {
        self.addresses.mongodb_url()
    }

    /// `mongod` or `ferretdb`.
    pub fn mongodb_kind(&self) -> Option<&'static str> {
        self.addresses.mongodb_kind
    }

    /// MailHog's web UI and API.
    pub fn mailhog_url(&self) -> Option<String> {
        self.addresses
            .mailhog_http_port
            .map(|port| format!("http://127.0.0.1:{port}"))
    }

    pub fn smtp_port(&self) -> Option<u16> {
        self.addresses.smtp_port
    }

    /// Prometheus' web UI and API when it runs ([`StackOptions::prometheus`]).
    pub fn prometheus_url(&self) -> Option<String> {
        self.addresses
            .prometheus_port
            .map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// The Prometheus server (queries, targets, `wait_until_up`), scraping
    /// every service of the stack under the job `switchboard-<service>`.
    pub fn prometheus(&self) -> Option<MutexGuard<'_, Prometheus>> {
        self.servers.prometheus.as_ref().map(lock)
    }

    /// The MailHog server (messages, delete_all, stop/start_again).
    pub fn mailhog(&self) -> Option<MutexGuard<'_, MailHog>> {
        self.servers.mailhog.as_ref().map(lock)
    }

    pub fn postgres(&self) -> Option<MutexGuard<'_, Postgres>> {
        self.servers.postgres.as_ref().map(lock)
    }

    pub fn rabbitmq(&self) -> Option<MutexGuard<'_, RabbitMq>> {
        self.servers.rabbitmq.as_ref().map(lock)
    }

    pub fn mongodb(&self) -> Option<MutexGuard<'_, MongoDb>> {
        self.servers.mongodb.as_ref().map(lock)
    }

    /// Stops a dependency server (keeping its port and data) to simulate an outage.
    pub fn stop_dependency(&self, dependency: Dependency) -> Result<()> {
        let missing = || StackError::DependencyNotRunning(dependency);
        match dependency {
            Dependency::Postgres => self.postgres().ok_or_else(missing)?.stop(),
            Dependency::RabbitMq => self.rabbitmq().ok_or_else(missing)?.stop(),
            Dependency::MongoDb => self.mongodb().ok_or_else(missing)?.stop(),
            Dependency::MailHog => self.mailhog().ok_or_else(missing)?.stop(),
        }
        self.shared
            .terminal
            .progress(format!("{dependency} stopped"));
        Ok(())
    }

    /// Starts a stopped dependency server again on the same port with the same data.
    pub fn start_dependency(&self, dependency: Dependency) -> Result<()> {
        let missing = || StackError::DependencyNotRunning(dependency);
        let wrap = |source| StackError::Dependency { dependency, source };
        match dependency {
            Dependency::Postgres => self.postgres().ok_or_else(missing)?.start_again(),
            Dependency::RabbitMq => self.rabbitmq().ok_or_else(missing)?.start_again(),
            Dependency::MongoDb => self.mongodb().ok_or_else(missing)?.start_again(),
            Dependency::MailHog => self.mailhog().ok_or_else(missing)?.start_again(),
        }
        .map_err(wrap)?;
        self.shared
            .terminal
            .progress(format!("{dependency} started again"));
        Ok(())
    }

    fn supervisor(&self, service: ServiceName) -> Result<&Arc<Supervisor>> {
        self.instance(service, 1)
    }

    fn instance(&self, service: ServiceName, instance: usize) -> Result<&Arc<Supervisor>> {
        self.supervisors
            .iter()
            .find(|s| s.service == service && s.instance == instance)
            .ok_or(StackError::ServiceNotSelected(service))
    }

    /// The services this stack runs, in start order (each once, however
    /// many instances it has).
    pub fn services(&self) -> Vec<ServiceName> {
        self.supervisors
            .iter()
            .filter(|s| s.instance == 1)
            .map(|s| s.service)
            .collect()
    }

    /// The address of socket `socket` of the service's instance `instance`
    /// (1: the service itself, as [`Stack::socket_addr`]).
    pub fn instance_socket_addr(
        &self,
        service: ServiceName,
        instance: usize,
        socket: &str,
    ) -> Option<SocketAddr> {
        if instance <= 1 {
            return self.socket_addr(service, socket);
        }
        self.addresses
            .instance_sockets
            .iter()
            .find(|((s, i, n), _)| *s == service && *i == instance && *n == socket)
            .map(|(_, addr)| *addr)
    }

    /// [`Stack::kill`] for one instance of the service.
    pub fn kill_instance(
        &self,
        service: ServiceName,
        instance: usize,
        signal: Signal,
    ) -> Result<bool> {
        Ok(self.instance(service, instance)?.kill(signal))
    }

    /// [`Stack::close_sockets`] for one instance of the service.
    pub fn close_instance_sockets(&self, service: ServiceName, instance: usize) -> Result<()> {
        self.instance(service, instance)?.close_sockets();
        Ok(())
    }

    /// [`Stack::start_service`] for one instance of the service.
    pub fn start_instance(&self, service: ServiceName, instance: usize) -> Result<()> {
        let supervisor = self.instance(service, instance)?;
        supervisor.start()?;
        supervisor.wait_ready(self.shared.ready_timeout, None)
    }

    /// [`Stack::service_pid`] for one instance of the service.
    pub fn instance_pid(&self, service: ServiceName, instance: usize) -> Option<u32> {
        self.instance(service, instance).ok()?.pid()
    }

    /// [`Stack::service_log`] for one instance of the service.
    pub fn instance_log(&self, service: ServiceName, instance: usize) -> String {
        match self.instance(service, instance) {
            Ok(supervisor) => supervisor.log.tail(400),
            Err(err) => err.to_string(),
        }
    }

    /// The pid of the service's current process.
    pub fn service_pid(&self, service: ServiceName) -> Option<u32> {
        self.supervisor(service).ok()?.pid()
    }

    pub fn service_phase(&self, service: ServiceName) -> Option<ServicePhase> {
        Some(self.supervisor(service).ok()?.phase())
    }

    /// The last lines the service printed (and the stack's notes about it).
    pub fn service_log(&self, service: ServiceName) -> String {
        match self.supervisor(service) {
            Ok(supervisor) => supervisor.log.tail(400),
            Err(err) => err.to_string(),
        }
    }

    /// The service's full log file.
    pub fn service_log_path(&self, service: ServiceName) -> Option<PathBuf> {
        Some(self.supervisor(service).ok()?.log.path().to_path_buf())
    }

    /// Sends a signal to the service's process; false if it was not running.
    /// Returns at once, except for SIGKILL, after which it waits (up to 5 s)
    /// until the process is gone. A killed service stays down until
    /// [`Stack::start_service`] or [`Stack::restart`].
    pub fn kill(&self, service: ServiceName, signal: Signal) -> Result<bool> {
        Ok(self.supervisor(service)?.kill(signal))
    }

    /// Stops the service (SIGTERM, drain, SIGKILL after the stop timeout).
    /// Its sockets stay open, as systemd's do: connections queue and wait.
    pub fn stop_service(&self, service: ServiceName) -> Result<()> {
        self.supervisor(service)?.stop();
        Ok(())
    }

    /// Closes the stack's copies of the service's sockets: once the service is
    /// stopped too, connections are refused. [`Stack::start_service`] binds
    /// them again on the same ports.
    pub fn close_sockets(&self, service: ServiceName) -> Result<()> {
        self.supervisor(service)?.close_sockets();
        Ok(())
    }

    /// Starts the service if it is not running and waits for `READY=1`.
    pub fn start_service(&self, service: ServiceName) -> Result<()> {
        let supervisor = self.supervisor(service)?;
        supervisor.start()?;
        supervisor.wait_ready(self.shared.ready_timeout, None)
    }

    /// Stops, then starts the service and waits for `READY=1`.
    pub fn restart(&self, service: ServiceName) -> Result<()> {
        self.stop_service(service)?;
        self.start_service(service)
    }

    /// Waits until the service's current process has sent `READY=1`.
    pub fn wait_ready(&self, service: ServiceName, timeout: Duration) -> Result<()> {
        self.supervisor(service)?.wait_ready(timeout, None)
    }

    /// Stops everything, showing progress on the console: services in
    /// reverse start order, then the dependency servers.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.shared.closing.store(true, Ordering::Relaxed);
        let terminal = self.shared.terminal;
        for supervisor in self.supervisors.iter().rev() {
            if supervisor.pid().is_some() {
                terminal.progress(format!("stopping {}", supervisor.service));
            }
            supervisor.stop();
        }
        // After the services: their going down is on record.
        if let Some(prometheus) = self.servers.prometheus.take() {
            terminal.progress("stopping prometheus");
            drop(prometheus);
        }
        if let Some(mailhog) = self.servers.mailhog.take() {
            terminal.progress("stopping mailhog");
            drop(mailhog);
        }
        if let Some(mongodb) = self.servers.mongodb.take() {
            terminal.progress("stopping mongodb");
            drop(mongodb);
        }
        if let Some(rabbitmq) = self.servers.rabbitmq.take() {
            terminal.progress("stopping rabbitmq");
            drop(rabbitmq);
        }
        if let Some(postgres) = self.servers.postgres.take() {
            terminal.progress("stopping postgres");
            drop(postgres);
        }
        for watcher in self.watchers.drain(..) {
            let _ = watcher.join();
        }
        if terminal.is_attached() {
            terminal.progress("stopped");
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

struct BoundSockets {
    bound: BTreeMap<ServiceName, Vec<NamedSocket>>,
    /// Further instances' sockets, always on free ports (the usual ports
    /// are the first instance's).
    instances: BTreeMap<(ServiceName, usize), Vec<NamedSocket>>,
    conflicts: Vec<PortConflict>,
}

/// Binds every service's sockets (also of services that will not run, to know
/// addresses to configure; those are closed again later).
fn bind_service_sockets(options: &StackOptions) -> Result<BoundSockets> {
    let mut bound: BTreeMap<ServiceName, Vec<NamedSocket>> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for service in ServiceName::ALL {
        for spec in service.sockets() {
            let port = match options.service_ports {
                ServicePorts::Free => {
                    let socket = bind_a_free_port(&service.to_string(), spec)?;
                    bound.entry(service).or_default().push(socket);
                    continue;
                }
                ServicePorts::Default { offset } => spec
                    .default_port
                    .checked_add(offset)
                    .ok_or(StackError::PortOffset(offset))?,
            };
            match NamedSocket::bind(spec, port) {
                Ok(socket) => bound.entry(service).or_default().push(socket),
                Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
                    conflicts.push(PortConflict {
                        wanted_by: format!("{service} {}", spec.name),
                        port,
                    });
                }
                Err(err) => {
                    return Err(StackError::io(
                        format!("binding 127.0.0.1:{port} for {service} ({})", spec.name),
                        err,
                    ));
                }
            }
        }
    }
    let mut instances: BTreeMap<(ServiceName, usize), Vec<NamedSocket>> = BTreeMap::new();
    for service in &options.services {
        for instance in 2..=options.instance_count(*service) {
            for spec in service.sockets() {
                let label = supervisor::instance_label(*service, instance);
                let socket = bind_a_free_port(&label, spec)?;
                instances
                    .entry((*service, instance))
                    .or_default()
                    .push(socket);
            }
        }
    }
    Ok(BoundSockets {
        bound,
        instances,
        conflicts,
    })
}

/// Binds `spec` on a free port for `label` (a service or an instance). From
/// the testkit's ledger, not port 0: the kernel may hand a bind(0) the port a
/// dependency server (RabbitMQ's distribution port, say) was given and has
/// not bound yet, or one another stack in this process has just closed. The
/// ledger knows this process only: a port another process took between the
/// choice and the bind (tests run side by side) is given up for the next.
fn bind_a_free_port(label: &str, spec: &SocketSpec) -> Result<NamedSocket> {
    const ATTEMPTS: usize = 5;
    let mut attempt = 1;
    loop {
        let port = switchboard_testkit::try_free_port().map_err(|source| {
            StackError::io(
                format!("choosing a free port for {label} ({})", spec.name),
                std::io::Error::other(source.to_string()),
            )
        })?;
        match NamedSocket::bind(spec, port) {
            Ok(socket) => return Ok(socket),
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse && attempt < ATTEMPTS => {
                attempt += 1;
            }
            Err(err) => {
                return Err(StackError::io(
                    format!("binding 127.0.0.1:{port} for {label} ({})", spec.name),
                    err,
                ));
            }
        }
    }
}

fn dependency_port_list(
    ports: &DependencyPorts,
    dependencies: &[Dependency],
    management: bool,
) -> Vec<(&'static str, u16)> {
    let mut list = Vec::new();
    for dependency in dependencies {
        match dependency {
            Dependency::Postgres => list.push(("postgres", ports.postgres)),
            Dependency::RabbitMq => {
                list.push(("rabbitmq amqp", ports.amqp));
                if management {
                    list.push(("rabbitmq management", ports.rabbitmq_management));
                }
            }
            Dependency::MongoDb => list.push(("mongodb", ports.mongodb)),
            Dependency::MailHog => {
                list.push(("mailhog smtp", ports.smtp));
                list.push(("mailhog http", ports.mailhog_http));
            }
        }
    }
    list
}

/// Starts the dependency servers side by side (RabbitMQ alone takes seconds),
/// and Prometheus beside them when asked.
fn start_servers(
    options: &StackOptions,
    dependencies: &[Dependency],
    addresses: &Addresses,
    state: &Path,
    terminal: &Terminal,
) -> Result<Servers> {
    if dependencies.is_empty() && !options.prometheus {
        return Ok(Servers::default());
    }
    let mut names: Vec<&str> = dependencies.iter().map(|d| d.as_str()).collect();
    if options.prometheus {
        names.push("prometheus");
    }
    terminal.progress(format!("starting {}", names.join(", ")));
    // Every selected service's `metrics` socket, bound already: Prometheus
    // may scrape before a service runs (the connection waits in the backlog).
    let scrape_jobs: Vec<(String, SocketAddr)> = options
        .services
        .iter()
        .map(|service| {
            (
                service.metrics_job(),
                addresses.socket(*service, METRICS_SOCKET),
            )
        })
        .collect();
    let scrape_interval = options.prometheus_scrape_interval;
    let persistent = matches!(options.state, StateDir::Persistent(_));
    let mongodb_server = options.mongodb_server;
    let ferretdb_backend = match options.ferretdb_backend {
        Some(backend) => backend,
        None => FerretBackend::from_env().map_err(dependency_error(Dependency::MongoDb))?,
    };
    let durable = options.durable;
    let postgres_in_stack = dependencies.contains(&Dependency::Postgres);
    let ports = options.dependency_ports;
    let management = options.rabbitmq_management;
    let started = Instant::now();
    let mut servers = Servers::default();
    let mut first_error = None;
    std::thread::scope(|scope| {
        // FerretDB on PostgreSQL waits for the stack's PostgreSQL, which
        // starts in well under a second, far sooner than RabbitMQ.
        let (ferretdb_database, ferretdb_database_ready) = std::sync::mpsc::channel::<String>();
        let ferretdb_on_postgres = dependencies.contains(&Dependency::MongoDb)
            && mongodb_server != Some(MongoKind::Mongod)
            && ferretdb_backend == FerretBackend::Postgresql;
        let postgres = dependencies.contains(&Dependency::Postgres).then(|| {
            scope.spawn(move || {
                let mut builder = Postgres::builder();
                if persistent {
                    builder = builder.dir(state.join("postgres"));
                }
                if let Some(ports) = ports {
                    builder = builder.port(ports.postgres);
                }
                if let Some(durable) = durable {
                    builder = builder.durable(durable);
                }
                let server = builder
                    .start()
                    .map_err(dependency_error(Dependency::Postgres))?;
                if ferretdb_on_postgres {
                    // Should this fail, the dropped sender tells FerretDB's
                    // thread to give up; this error is the one reported.
                    let url = server
                        .ensure_database(FERRETDB_DATABASE)
                        .map_err(dependency_error(Dependency::Postgres))?;
                    let _ = ferretdb_database.send(url);
                }
                Ok(server)
            })
        });
        let rabbitmq = dependencies.contains(&Dependency::RabbitMq).then(|| {
            scope.spawn(|| {
                let mut builder = RabbitMq::builder();
                if persistent {
                    builder = builder.dir(state.join("rabbitmq"));
                }
                if let Some(ports) = ports {
                    builder = builder.amqp_port(ports.amqp);
                    if management {
                        builder = builder.management_port(ports.rabbitmq_management);
                    }
                } else if management {
                    builder = builder.with_management();
                }
                builder
                    .start()
                    .map_err(dependency_error(Dependency::RabbitMq))
            })
        });
        let mongodb = dependencies.contains(&Dependency::MongoDb).then(|| {
            scope.spawn(move || {
                let mut builder = MongoDb::builder().ferret_backend(ferretdb_backend);
                if let Some(kind) = mongodb_server {
                    builder = builder.kind(kind);
                }
                if ferretdb_on_postgres && postgres_in_stack {
                    match ferretdb_database_ready.recv() {
                        Ok(url) => builder = builder.postgresql_url(url),
                        Err(_) => {
                            return Err(StackError::io(
                                "starting FerretDB on PostgreSQL",
                                std::io::Error::other("the stack's PostgreSQL did not start"),
                            ));
                        }
                    }
                }
                if let Some(durable) = durable {
                    builder = builder.durable(durable);
                }
                if persistent {
                    builder = builder.dir(state.join("mongodb"));
                }
                if let Some(ports) = ports {
                    builder = builder.port(ports.mongodb);
                }
                builder
                    .start()
                    .map_err(dependency_error(Dependency::MongoDb))
            })
        });
        let mailhog = dependencies.contains(&Dependency::MailHog).then(|| {
            scope.spawn(|| {
                let mut builder = MailHog::builder();
                if persistent {
                    builder = builder.dir(state.join("mailhog"));
                }
                if let Some(ports) = ports {
                    builder = builder.smtp_port(ports.smtp).http_port(ports.mailhog_http);
                }
                builder
                    .start()
                    .map_err(dependency_error(Dependency::MailHog))
            })
        });
        let prometheus = options.prometheus.then(|| {
            let jobs = &scrape_jobs;
            scope.spawn(move || {
                let mut builder = Prometheus::builder().scrape_interval(scrape_interval);
                for (job, target) in jobs {
                    builder = builder.job(job.as_str(), [target]);
                }
                if persistent {
                    builder = builder.dir(state.join("prometheus"));
                }
                if let Some(ports) = ports {
                    builder = builder.port(ports.prometheus);
                }
                builder.start().map_err(StackError::Prometheus)
            })
        });
        type Started = std::thread::Result<Result<String>>;
        let mut settle = |server: &str, outcome: Started| match outcome {
            Ok(Ok(detail)) => terminal.progress(format!(
                "{server} ready on {detail} ({:.1?})",
                started.elapsed()
            )),
            Ok(Err(err)) => {
                first_error.get_or_insert(err);
            }
            Err(_) => {
                first_error.get_or_insert(StackError::io(
                    format!("starting {server}"),
                    std::io::Error::other("the start-up thread panicked"),
                ));
            }
        };
        if let Some(handle) = postgres {
            let outcome = handle.join().map(|result| {
                result.map(|server| {
                    let detail = format!("127.0.0.1:{}", server.port());
                    servers.postgres = Some(Mutex::new(server));
                    detail
                })
            });
            settle(Dependency::Postgres.as_str(), outcome);
        }
        if let Some(handle) = rabbitmq {
            let outcome = handle.join().map(|result| {
                result.map(|server| {
                    let detail = match server.management_port() {
                        Some(port) => format!(
                            "127.0.0.1:{} (management 127.0.0.1:{port})",
                            server.amqp_port()
                        ),
                        None => format!("127.0.0.1:{}", server.amqp_port()),
                    };
                    servers.rabbitmq = Some(Mutex::new(server));
                    detail
                })
            });
            settle(Dependency::RabbitMq.as_str(), outcome);
        }
        if let Some(handle) = mongodb {
            let outcome = handle.join().map(|result| {
                result.map(|server| {
                    let detail = format!("127.0.0.1:{} ({})", server.port(), server.describe());
                    servers.mongodb = Some(Mutex::new(server));
                    detail
                })
            });
            settle(Dependency::MongoDb.as_str(), outcome);
        }
        if let Some(handle) = mailhog {
            let outcome = handle.join().map(|result| {
                result.map(|server| {
                    let detail = format!(
                        "127.0.0.1:{} (web 127.0.0.1:{})",
                        server.smtp_port(),
                        server.http_port()
                    );
                    servers.mailhog = Some(Mutex::new(server));
                    detail
                })
            });
            settle(Dependency::MailHog.as_str(), outcome);
        }
        if let Some(handle) = prometheus {
            let outcome = handle.join().map(|result| {
                result.map(|server| {
                    let detail = format!(
                        "127.0.0.1:{} (scraping {} every {:?})",
                        server.port(),
                        if server.jobs().len() == 1 {
                            "1 service".to_owned()
                        } else {
                            format!("{} services", server.jobs().len())
                        },
                        scrape_interval
                    );
                    servers.prometheus = Some(Mutex::new(server));
                    detail
                })
            });
            settle("prometheus", outcome);
        }
    });
    match first_error {
        // Dropping `servers` stops those that did start.
        Some(err) => Err(err),
        None => Ok(servers),
    }
}

fn dependency_error(dependency: Dependency) -> impl Fn(switchboard_testkit::Error) -> StackError {
    move |source| StackError::Dependency { dependency, source }
}

fn ensure_database(postgres: &Postgres, database: &str) -> Result<()> {
    postgres
        .ensure_database(database)
        .map(drop)
        .map_err(dependency_error(Dependency::Postgres))
}

/// Each selected service's binary in the configured (or default) folder.
fn resolve_binaries(options: &StackOptions) -> Result<BTreeMap<ServiceName, PathBuf>> {
    let bin_dir = match &options.bin_dir {
        Some(dir) => dir.clone(),
        None => default_bin_dir()?,
    };
    options
        .services
        .iter()
        .map(|service| Ok((*service, service_binary(&bin_dir, *service)?)))
        .collect()
}

/// Every fixed port taken by someone else, services' and servers' alike, in
/// one error, before anything starts.
fn refuse_port_conflicts(
    options: &StackOptions,
    dependencies: &[Dependency],
    mut conflicts: Vec<PortConflict>,
) -> Result<()> {
    if let Some(ports) = options.dependency_ports {
        let mut wanted = dependency_port_list(&ports, dependencies, options.rabbitmq_management);
        if options.prometheus {
            wanted.push(("prometheus", ports.prometheus));
        }
        for (label, port) in wanted {
            if !sockets::port_is_free(port) {
                conflicts.push(PortConflict {
                    wanted_by: label.to_owned(),
                    port,
                });
            }
        }
    }
    if conflicts.is_empty() {
        Ok(())
    } else {
        Err(StackError::PortsInUse(conflicts))
    }
}

impl Addresses {
    fn of_sockets(
        bound: &BTreeMap<ServiceName, Vec<NamedSocket>>,
        instances: &BTreeMap<(ServiceName, usize), Vec<NamedSocket>>,
    ) -> Self {
        let mut addresses = Addresses::default();
        for (service, list) in bound {
            for socket in list {
                addresses
                    .sockets
                    .insert((*service, socket.name), socket.addr);
            }
        }
        for ((service, instance), list) in instances {
            for socket in list {
                addresses
                    .instance_sockets
                    .insert((*service, *instance, socket.name), socket.addr);
            }
        }
        addresses
    }

    /// The ports of the servers that started; creates auth's database.
    fn learn_servers(&mut self, servers: &Servers) -> Result<()> {
        if let Some(postgres) = &servers.postgres {
            let postgres = postgres.lock().unwrap_or_else(|p| p.into_inner());
            self.postgres_port = Some(postgres.port());
            ensure_database(&postgres, USERS_DATABASE)?;
        }
        if let Some(rabbitmq) = &servers.rabbitmq {
            let rabbitmq = rabbitmq.lock().unwrap_or_else(|p| p.into_inner());
            self.amqp_port = Some(rabbitmq.amqp_port());
            self.rabbitmq_management_port = rabbitmq.management_port();
        }
        if let Some(mongodb) = &servers.mongodb {
            let mongodb = mongodb.lock().unwrap_or_else(|p| p.into_inner());
            self.mongodb_port = Some(mongodb.port());
            self.mongodb_kind = Some(mongodb.kind());
        }
        if let Some(mailhog) = &servers.mailhog {
            let mailhog = mailhog.lock().unwrap_or_else(|p| p.into_inner());
            self.smtp_port = Some(mailhog.smtp_port());
            self.mailhog_http_port = Some(mailhog.http_port());
        }
        if let Some(prometheus) = &servers.prometheus {
            self.prometheus_port = Some(lock(prometheus).port());
        }
        Ok(())
    }
}

/// Every selected service's environment: its configuration file in
/// `config_dir`, then the caller's extra variables.
fn environments(
    options: &StackOptions,
    addresses: &Addresses,
    config_dir: &Path,
) -> Result<BTreeMap<ServiceName, Vec<(String, String)>>> {
    std::fs::create_dir_all(config_dir)
        .map_err(|e| StackError::io(format!("creating {}", config_dir.display()), e))?;
    let mut environment = BTreeMap::new();
    for service in &options.services {
        let mut env = service_environment(*service, addresses, config_dir)?;
        if let Some(extra) = options.extra_env.get(service) {
            env.extend(extra.iter().cloned());
        }
        environment.insert(*service, env);
    }
    Ok(environment)
}

/// The environment of one service: its configuration file (written from its
/// own settings type, see [`configs`]) named by `SWITCHBOARD_<SERVICE>_CONFIG`.
fn service_environment(
    service: ServiceName,
    addresses: &Addresses,
    config_dir: &Path,
) -> Result<Vec<(String, String)>> {
    let text = configs::service_config(service, addresses).map_err(|err| {
        StackError::io(
            format!("writing the configuration of {}", service.as_str()),
            std::io::Error::other(err),
        )
    })?;
    let path = config_dir.join(format!("{}.toml", service.as_str()));
    std::fs::write(&path, text)
        .map_err(|e| StackError::io(format!("writing {}", path.display()), e))?;
    Ok(vec![(
        switchboard_runtime::config::file_variable(service.as_str()),
        path.display().to_string(),
    )])
}

/// `switchboard-auth user add … --skip-existing` with the password on stdin.
fn seed_dev_user(auth_binary: &Path, env: &[(String, String)]) -> Result<()> {
    let mut command = Command::new(auth_binary);
    command
        .args([
            "user",
            "add",
            "--email",
            DEV_USER_EMAIL,
            "--first-name",
            DEV_USER_FIRST_NAME,
            "--last-name",
            DEV_USER_LAST_NAME,
            "--skip-existing",
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("NOTIFY_SOCKET")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| StackError::io(format!("running {}", auth_binary.display()), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{DEV_USER_PASSWORD}")
            .map_err(|e| StackError::io("writing the password to switchboard-auth", e))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| StackError::io("waiting for switchboard-auth user add", e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(StackError::Seed {
            status: output.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            ),
        })
    }
}
