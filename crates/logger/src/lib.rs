//! `switchboard-logger`: the central log store. Three doors — HTTP
//! (`POST /log`), the Rust-native RPC (tarpc `LogRpc`) and gRPC
//! (`logs.LogService`) — validate entries the same way and hand them to one
//! group-commit writer in front of MongoDB (or FerretDB).
//!
//! The binary binds (or inherits) the listeners and calls [`run`]; tests do the
//! same with `127.0.0.1:0` listeners, mini-redis style.

pub mod batch;
pub mod entry;
pub mod grpc;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod rpc;
pub mod settings;
pub mod store;

use std::sync::Arc;

use tokio::net::TcpListener;

use switchboard_runtime::metrics::{self as runtime_metrics, Metrics};
use switchboard_runtime::{Shutdown, lifecycle, wait};

pub use settings::Settings;

use crate::entry::EntryRules;
use crate::ingest::Ingest;
use crate::metrics::LoggerMetrics;
use crate::store::{Health, Store};

/// The logger's three listening sockets (socket names `http`, `rpc`, `grpc`).
#[derive(Debug)]
pub struct DoorListeners {
    pub http: TcpListener,
    pub rpc: TcpListener,
    pub grpc: TcpListener,
    /// The metrics door (socket name `metrics`), if the logger has one.
    pub metrics: Option<TcpListener>,
}

/// Why the logger stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `mongodb.url` or its password file; never shows the password.
    #[error(transparent)]
    MongoUrl(#[from] store::OpenError),
    #[error("the HTTP door failed: {0}")]
    Http(#[source] std::io::Error),
    #[error("the gRPC door failed: {0}")]
    Grpc(#[source] tonic::transport::Error),
}

/// Connects to MongoDB (waiting until it answers), then serves the three doors
/// until `shutdown`, draining in-flight writes before returning.
pub async fn run(
    settings: Settings,
    listeners: DoorListeners,
    shutdown: Shutdown,
) -> Result<(), Error> {
    // Served from the start: a wait for the store is worth watching too.
    let registry = Metrics::new();
    let metrics = LoggerMetrics::register(&registry);
    let metrics_door = runtime_metrics::spawn_door(listeners.metrics, &registry);
    let store = Store::new(&settings.mongodb)
        .await
        .map_err(Error::MongoUrl)?;
    // Ready once MongoDB answers and the indexes exist.
    let prepared = wait::until_ready("MongoDB", &shutdown, || async {
        store.ping().await?;
        let kind = store.server_kind().await?;
        store
            .prepare(settings.mongodb.retention_days, &kind)
            .await
            .map(|()| kind)
    })
    .await;
    let Some(kind) = prepared else {
        if let Some(door) = metrics_door {
            door.close().await;
        }
        return Ok(()); // shut down before the store ever answered
    };
    tracing::info!(?kind, database = %settings.mongodb.database, collection = %settings.mongodb.collection, "log store ready");

    let health = Arc::new(Health::default());
    let (writer, writers) = batch::start(
        store.clone(),
        Arc::clone(&health),
        settings.batching.max_batch,
        settings.batching.writers,
        &metrics,
    );
    let prober = {
        let (store, health, stop) = (store.clone(), Arc::clone(&health), shutdown.requested());
        tokio::spawn(async move { health.probe_while_down(&store, stop).await })
    };

    let ingest = Ingest::new(EntryRules::from(&settings.limits), writer, metrics);
    let router = http::router(
        ingest.clone(),
        store.clone(),
        settings.limits.max_read_limit,
    );
    let http_door = {
        let shutdown = shutdown.clone();
        async move {
            let result = switchboard_runtime::service::serve_http_with(
                listeners.http,
                router,
                shutdown.clone(),
                &settings.http,
            )
            .await
            .map_err(Error::Http);
            stop_all_on_error(&shutdown, result)
        }
    };
    let rpc_door = rpc::serve(
        listeners.rpc,
        rpc::RpcDoor::new(ingest.clone()),
        &settings.rpc,
        shutdown.clone(),
    );
    let grpc_door = {
        let shutdown = shutdown.clone();
        let door = grpc::GrpcDoor::new(ingest.clone());
        async move {
            let result = grpc::serve(listeners.grpc, door, &settings.grpc, shutdown.clone())
                .await
                .map_err(Error::Grpc);
            stop_all_on_error(&shutdown, result)
        }
    };
    // The doors hold the only other writer handles; once they are done the
    // writers store what is still queued and stop.
    drop(ingest);

    lifecycle::status("serving HTTP, RPC and gRPC");
    lifecycle::ready();
    tracing::info!("logger ready");
    let (http_result, (), grpc_result) = tokio::join!(http_door, rpc_door, grpc_door);

    let stats = writers.finish().await;
    tracing::info!(
        batches = stats.batches,
        entries = stats.entries,
        largest_batch = stats.largest_batch,
        "all writes stored; logger stopped"
    );
    prober.abort();
    if let Some(door) = metrics_door {
        door.close().await;
    }
    http_result.and(grpc_result)
}

fn stop_all_on_error(shutdown: &Shutdown, result: Result<(), Error>) -> Result<(), Error> {
    if let Err(err) = &result {
        tracing::error!(error = %err, "a door failed; shutting the logger down");
        shutdown.trigger();
    }
    result
}
