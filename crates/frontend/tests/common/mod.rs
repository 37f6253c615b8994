//! Shared by the front-end's integration tests: start the service in-process.

#![allow(dead_code)]

use std::time::Duration;

use switchboard_frontend::settings::Settings;
use switchboard_frontend::{FrontendListeners, run};
use switchboard_runtime::Shutdown;

/// A front-end running in this test's runtime.
pub struct Running {
    pub base: String,
    /// The metrics door (`GET /metrics`).
    pub metrics: String,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<Result<(), switchboard_frontend::Error>>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.trigger();
        let result = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the service stops within 15 s")
            .expect("the service task does not panic");
        assert!(result.is_ok(), "the service failed: {result:?}");
    }
}

/// Starts the front-end on a fresh loopback port with `broker_url`.
pub async fn start(broker_url: &str) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut settings = Settings::default();
    settings.page.broker_url = broker_url.to_owned();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics_addr = metrics.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let task = tokio::spawn(run(
        settings,
        FrontendListeners {
            http: listener,
            metrics: Some(metrics),
        },
        shutdown.clone(),
    ));
    Running {
        base: format!("http://{addr}"),
        metrics: format!("http://{metrics_addr}"),
        shutdown,
        task,
    }
}
