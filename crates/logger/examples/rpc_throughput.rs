//! Ad-hoc throughput measurement (not a test): many concurrent small writes
//! through the RPC and gRPC doors of an in-process logger against a FerretDB
//! (or mongod) started by switchboard-testkit, next to the raw insert rates
//! of the same server measured with the MongoDB driver alone.
//!
//! ```sh
//! cargo run --release -p switchboard-logger --example rpc_throughput -- 10000 1000
//! ```
//! Arguments: total writes (default 10000), concurrent callers (default 1000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{DateTime, doc, oid::ObjectId};
use mongodb::options::{Acknowledgment, CollectionOptions, WriteConcern};
use switchboard_logger::{DoorListeners, Settings};
use switchboard_runtime::{RuntimeSettings, Shutdown};
use switchboard_wire::proto::log_service_client::LogServiceClient;
use tokio::net::TcpListener;

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let mut args = std::env::args().skip(1);
    let total: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1_000);
    let runtime = RuntimeSettings {
        log_filter: "warn,switchboard_logger=info".into(),
        ..RuntimeSettings::default()
    };
    switchboard_runtime::telemetry::init_logs("throughput", &runtime);

    let mongo = switchboard_testkit::MongoDb::start()?;
    println!("server: {} at {}", mongo.kind(), mongo.url());
    raw_ceiling(&mongo.url(), total.min(5_000), concurrency).await?;

    let mut settings = Settings::default();
    settings.mongodb.url = mongo.url();
    settings.mongodb.database = switchboard_testkit::unique_name("throughput");
    let bind = || TcpListener::bind("127.0.0.1:0");
    let listeners = DoorListeners {
        http: bind().await?,
        rpc: bind().await?,
        grpc: bind().await?,
        metrics: None,
    };
    let rpc_addr = listeners.rpc.local_addr()?;
    let grpc_addr = listeners.grpc.local_addr()?;
    let http_addr = listeners.http.local_addr()?;
    let shutdown = Shutdown::new();
    let logger = tokio::spawn(switchboard_logger::run(
        settings,
        listeners,
        shutdown.clone(),
    ));
    // Wait for READY (the doors serve only after the store answered).
    while tokio::net::TcpStream::connect(http_addr).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    for round in 0..2 {
        rpc_writes(rpc_addr, total, concurrency, round).await?;
    }
    grpc_writes(grpc_addr, total, concurrency).await?;

    shutdown.trigger();
    logger.await??;
    Ok(())
}

/// What the server takes without the logger: one insert at a time, and
/// `concurrency` single inserts in parallel over the driver's pool.
async fn raw_ceiling(url: &str, total: usize, concurrency: usize) -> Result<(), Failure> {
    let client = mongodb::Client::with_uri_str(url).await?;
    let collection = client
        .database(&switchboard_testkit::unique_name("raw"))
        .collection_with_options::<mongodb::bson::Document>(
        "logs",
        CollectionOptions::builder()
            .write_concern(
                WriteConcern::builder()
                    .w(Acknowledgment::Nodes(1))
                    .journal(true)
                    .build(),
            )
            .build(),
    );
    let document = |n: usize| {
        let now = DateTime::now();
        doc! { "_id": ObjectId::new(), "name": "raw", "data": format!("entry {n}"), "created_at": now, "updated_at": now }
    };
    collection.insert_one(document(0)).await?;

    let sequential = total.min(2_000);
    let started = Instant::now();
    for n in 0..sequential {
        collection.insert_one(document(n)).await?;
    }
    report("raw insert_one, sequential", sequential, started.elapsed());

    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(total) {
        let (collection, next) = (collection.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                collection.insert_one(document(0)).await?;
            }
            Ok::<(), mongodb::error::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    report(
        &format!("raw insert_one, {} concurrent", concurrency.min(total)),
        total,
        started.elapsed(),
    );

    for batch in [16usize, 256] {
        let started = Instant::now();
        let mut written = 0;
        while written < total {
            let size = batch.min(total - written);
            collection
                .insert_many((0..size).map(document))
                .ordered(false)
                .await?;
            written += size;
        }
        report(
            &format!("raw insert_many of {batch}, sequential"),
            total,
            started.elapsed(),
        );
    }
    Ok(())
}

async fn rpc_writes(
    addr: std::net::SocketAddr,
    total: usize,
    concurrency: usize,
    round: usize,
) -> Result<(), Failure> {
    // tarpc clients allow 1000 calls in flight each.
    let clients = concurrency.div_ceil(1000).max(1);
    let mut connected = Vec::new();
    for _ in 0..clients {
        connected.push(switchboard_wire::rpc::connect(addr).await?);
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..concurrency {
        let client = connected[caller % clients].clone();
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    return Ok::<(), Failure>(());
                }
                let ctx = switchboard_wire::rpc::context(Duration::from_secs(30));
                client
                    .log_info(ctx, "bench".into(), format!("entry {n}"))
                    .await?
                    .map_err(|err| format!("write {n}: {err}"))?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    report(
        &format!(
            "logger RPC, {concurrency} concurrent over {clients} connection(s), round {round}"
        ),
        total,
        started.elapsed(),
    );
    Ok(())
}

async fn grpc_writes(
    addr: std::net::SocketAddr,
    total: usize,
    concurrency: usize,
) -> Result<(), Failure> {
    let client = LogServiceClient::connect(format!("http://{addr}")).await?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut client = client.clone();
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    return Ok::<(), Failure>(());
                }
                let request = switchboard_wire::proto::LogRequest {
                    log_entry: Some(switchboard_wire::proto::Log {
                        name: "bench".into(),
                        data: format!("entry {n}"),
                    }),
                };
                client.write_log(request).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    report(
        &format!("logger gRPC, {concurrency} concurrent over one channel"),
        total,
        started.elapsed(),
    );
    Ok(())
}

fn report(what: &str, writes: usize, elapsed: Duration) {
    #[allow(clippy::cast_precision_loss)]
    let rate = writes as f64 / elapsed.as_secs_f64();
    println!("{what}: {writes} writes in {elapsed:.2?} = {rate:.0}/s");
}
