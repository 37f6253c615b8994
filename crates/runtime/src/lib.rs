//! What every Switchboard service shares: layered configuration, sockets handed
//! down by systemd (or the dev stack), readiness and shutdown notifications,
//! logging to journald or stderr, and the HTTP conventions of the wire contract
//! (the JSON envelope, errors that never leak panics, health endpoints), and
//! secrets from files or systemd credentials ([`credentials`], [`amqp`]), and
//! the bounds every door keeps ([`limits`]), and the Prometheus metrics every
//! service exports ([`metrics`]).
//!
//! A service's `main.rs` stays thin: it calls [`service::Service::start`],
//! connects to its dependencies, builds its routers and hands them the listeners
//! it took from [`listen::Listeners`].

pub mod amqp;
pub mod backoff;
pub mod config;
mod connection;
pub mod credentials;
pub mod edge;
pub mod http;
pub mod lifecycle;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod service;
pub mod telemetry;
pub mod wait;

pub use config::{ConfigError, RuntimeSettings, TelemetrySettings};
pub use lifecycle::Shutdown;
pub use limits::HttpLimits;
pub use listen::Listeners;
