//! Why the stack could not start, or could not do what it was asked. Messages
//! name the service, port or file at fault and, where known, the fix.

use std::path::PathBuf;
use std::time::Duration;

use crate::service::{Dependency, ServiceName};

/// A port the stack needs that something else holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConflict {
    /// Who wanted it, e.g. `postgres` or `broker (http)`.
    pub wanted_by: String,
    pub port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(
        "ports already in use on 127.0.0.1: {}. Stop what holds them (another stack, or a system server such as postgresql or rabbitmq-server), or shift the stack's ports: --port-offset N moves the dependency servers, --service-port-offset N the services",
        .0.iter().map(|c| format!("{} ({})", c.port, c.wanted_by)).collect::<Vec<_>>().join(", ")
    )]
    PortsInUse(Vec<PortConflict>),

    #[error("a port offset of {0} pushes a port past 65535")]
    PortOffset(u16),

    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },

    #[error("another stack is using {} (its lock file is held); stop it first", .0.display())]
    Locked(PathBuf),

    #[error("{dependency}: {source}")]
    Dependency {
        dependency: Dependency,
        #[source]
        source: switchboard_testkit::Error,
    },

    #[error("{0} is not part of this stack")]
    DependencyNotRunning(Dependency),

    #[error("prometheus: {0} (or run the stack without it: --no-prometheus)")]
    Prometheus(#[source] switchboard_testkit::Error),

    #[error(
        "{} not found in {}: build the services (`cargo build --bins`) or point --bin-dir at them",
        .binary.display(), .dir.display()
    )]
    MissingBinary { binary: PathBuf, dir: PathBuf },

    #[error("building the service binaries failed (`{command}`):\n{output}")]
    Build { command: String, output: String },

    #[error("cannot start {service}: {source}")]
    Spawn {
        service: ServiceName,
        #[source]
        source: std::io::Error,
    },

    #[error("{service} exited before it was ready ({status}); last lines of its log:\n{log_tail}")]
    ServiceExited {
        service: ServiceName,
        status: String,
        log_tail: String,
    },

    #[error(
        "{service} did not report READY=1 within {waited:?} (last status: {status}); last lines of its log:\n{log_tail}"
    )]
    NotReady {
        service: ServiceName,
        waited: Duration,
        status: String,
        log_tail: String,
    },

    #[error("{0} is not part of this stack")]
    ServiceNotSelected(ServiceName),

    #[error("seeding the development user failed ({status}):\n{output}")]
    Seed { status: String, output: String },

    #[error("interrupted")]
    Interrupted,
}

impl StackError {
    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source,
        }
    }
}

pub type Result<T, E = StackError> = std::result::Result<T, E>;
