//! Logging with `tracing`: structured journald entries under systemd, readable
//! lines on stderr everywhere else.
//!
//! Under journald every span and event field becomes a journal field of its own
//! (`request_id` → `REQUEST_ID`), so `journalctl -u switchboard-broker
//! REQUEST_ID=…` finds one request across its log lines.

use std::os::fd::AsFd;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogTarget, RuntimeSettings};

/// Installs the global subscriber for `service` (e.g. `switchboard-auth`).
/// Safe to call more than once: later calls keep the first subscriber.
pub fn init(service: &str, settings: &RuntimeSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_filter))
        .unwrap_or_else(|err| {
            eprintln!(
                "invalid runtime.log_filter {:?}: {err}; using \"info\"",
                settings.log_filter
            );
            EnvFilter::new("info")
        });
    let journald = match settings.log_target {
        LogTarget::Stderr => None,
        LogTarget::Journald => journald_layer(service),
        LogTarget::Auto if stderr_is_journal() => journald_layer(service),
        LogTarget::Auto => None,
    };
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match journald {
        Some(layer) => registry.with(layer).try_init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .try_init(),
    };
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
}

fn journald_layer(service: &str) -> Option<tracing_journald::Layer> {
    match tracing_journald::layer() {
        Ok(layer) => Some(
            layer
                .with_field_prefix(None)
                .with_syslog_identifier(service.to_owned()),
        ),
        Err(err) => {
            eprintln!("journald is not reachable ({err}); logging to stderr");
            None
        }
    }
}

/// systemd sets `JOURNAL_STREAM=<dev>:<inode>` for the stream it connected to
/// stdout/stderr; it only counts if stderr is still that very stream (a child
/// with redirected stderr inherits the variable but not the stream).
fn stderr_is_journal() -> bool {
    let Some(expected) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    match rustix::fs::fstat(std::io::stderr().as_fd()) {
        Ok(stat) => expected == format!("{}:{}", stat.st_dev, stat.st_ino),
        Err(_) => false,
    }
}
