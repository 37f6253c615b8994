//! What every Switchboard service shares: layered configuration, sockets handed
//! down by systemd (or the dev stack), readiness and shutdown notifications,
//! logging to journald or stderr, and the HTTP conventions of the wire contract
//! (the JSON envelope, errors that never leak panics, health endpoints), and
//! secrets from files or systemd credentials ([`credentials`], [`amqp`]).
//!
//! A service's `main.rs` stays thin: it calls [`service::Service::start`],
//! connects to its dependencies, builds its routers and hands them the listeners
//! it took from [`listen::Listeners`].

pub mod amqp;
pub mod config;
pub mod credentials;
pub mod http;
pub mod lifecycle;
pub mod listen;
pub mod service;
pub mod telemetry;

pub use config::{ConfigError, RuntimeSettings};
pub use lifecycle::Shutdown;
pub use listen::Listeners;
