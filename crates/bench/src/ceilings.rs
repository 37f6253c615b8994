//! The machine's own ceilings, measured in the same run as the scenarios so a
//! ratio compares like with like: a bare axum handler (HTTP), raw MongoDB
//! inserts one by one and batched (the store), bcrypt verifies on every core
//! (auth), and RabbitMQ publish-with-confirm plus consume-with-ack (events).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use mongodb::bson::{DateTime, doc};

use crate::load::{self, LoadSpec, RunStats, Worker};

/// The body the bare handler answers, the same size as the broker's `POST /`.
pub const BARE_BODY: &str = r#"{"error":false,"message":"Hit the broker"}"#;

/// Serves the bare axum handler until the process is killed (`serve-bare`).
pub async fn serve_bare(listen: SocketAddr) -> anyhow::Result<()> {
    let router = axum::Router::new().route(
        "/",
        axum::routing::post(|| async { ([("content-type", "application/json")], BARE_BODY) }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, router).await?;
    Ok(())
}

/// `insert_one` per request into a collection shaped like the logger's.
pub struct InsertOneWorker {
    collection: mongodb::Collection<mongodb::bson::Document>,
}

impl Worker for InsertOneWorker {
    async fn call(&mut self, seq: u64) -> Result<(), String> {
        let now = DateTime::now();
        self.collection
            .insert_one(doc! { "name": "ceiling", "data": format!("insert {seq}"), "created_at": now, "updated_at": now })
            .await
            .map(|_| ())
            .map_err(|err| err.to_string())
    }
}

/// `insert_many` of `batch` documents per request.
pub struct InsertManyWorker {
    collection: mongodb::Collection<mongodb::bson::Document>,
    batch: usize,
}

impl Worker for InsertManyWorker {
    async fn call(&mut self, seq: u64) -> Result<(), String> {
        let now = DateTime::now();
        let docs = (0..self.batch)
            .map(|i| doc! { "name": "ceiling-batch", "data": format!("insert {seq}.{i}"), "created_at": now, "updated_at": now });
        self.collection
            .insert_many(docs)
            .await
            .map(|_| ())
            .map_err(|err| err.to_string())
    }
}

/// A collection on a fresh database of the store server, with the logger's
/// write concern (journaled) so the comparison is fair.
pub async fn ceiling_collection(
    mongodb_url: &str,
) -> anyhow::Result<mongodb::Collection<mongodb::bson::Document>> {
    let client = mongodb::Client::with_uri_str(mongodb_url)
        .await
        .context("connect to MongoDB")?;
    let concern = mongodb::options::WriteConcern::builder()
        .w(mongodb::options::Acknowledgment::Nodes(1))
        .journal(true)
        .build();
    let database = client.database(&format!("bench_ceiling_{}", std::process::id()));
    let options = mongodb::options::CollectionOptions::builder()
        .write_concern(concern)
        .build();
    Ok(database.collection_with_options("logs", options))
}

pub async fn store_single(mongodb_url: &str, spec: LoadSpec) -> anyhow::Result<RunStats> {
    let collection = ceiling_collection(mongodb_url).await?;
    let workers = (0..spec.concurrency)
        .map(|_| InsertOneWorker {
            collection: collection.clone(),
        })
        .collect();
    let stats = load::run(workers, spec).await;
    let _ = collection.drop().await;
    Ok(stats)
}

/// Documents per second with `insert_many`; the stats count documents, not calls.
pub async fn store_batched(
    mongodb_url: &str,
    spec: LoadSpec,
    batch: usize,
) -> anyhow::Result<RunStats> {
    let collection = ceiling_collection(mongodb_url).await?;
    let workers = (0..spec.concurrency)
        .map(|_| InsertManyWorker {
            collection: collection.clone(),
            batch,
        })
        .collect();
    let mut stats = load::run(workers, spec).await;
    // Counted in documents, so the CPU per operation is per document too.
    stats.ok *= batch as u64;
    stats.issued *= batch as u64;
    let _ = collection.drop().await;
    Ok(stats)
}

/// Names the read scenarios spread entries over: a name query matches one
/// entry in this many.
pub const READ_NAMES: u64 = 100;

/// The name of seeded entry `n`.
pub fn read_name(n: u64) -> String {
    format!("bench-read-{}", n % READ_NAMES)
}

/// Adds entries `from..to`, shaped like the logger's documents, with
/// `insert_many` of 1,000: what a busy logger would have stored.
pub async fn seed(
    collection: &mongodb::Collection<mongodb::bson::Document>,
    from: u64,
    to: u64,
) -> anyhow::Result<()> {
    let start = DateTime::now().timestamp_millis();
    let mut next = from;
    while next < to {
        let end = (next + 1_000).min(to);
        let documents = (next..end).map(|n| {
            let at = DateTime::from_millis(start + i64::try_from(n).unwrap_or(i64::MAX) / 16);
            doc! { "name": read_name(n), "data": format!("seeded entry {n} of the read benchmark"), "created_at": at, "updated_at": at }
        });
        collection
            .insert_many(documents)
            .ordered(false)
            .await
            .with_context(|| format!("seed entries {next}..{end}"))?;
        next = end;
    }
    Ok(())
}

/// The logger's name read (`find {name}`, newest first, limit 5) straight on the store.
pub struct NameReadWorker {
    collection: mongodb::Collection<mongodb::bson::Document>,
}

impl Worker for NameReadWorker {
    async fn call(&mut self, seq: u64) -> Result<(), String> {
        use futures::TryStreamExt;
        let found: Vec<mongodb::bson::Document> = self
            .collection
            .find(doc! { "name": read_name(seq) })
            .sort(doc! { "created_at": -1, "_id": -1 })
            .limit(5)
            .await
            .map_err(|err| err.to_string())?
            .try_collect()
            .await
            .map_err(|err| err.to_string())?;
        if found.len() == 5 {
            Ok(())
        } else {
            Err(format!("found {} entries, not 5", found.len()))
        }
    }
}

/// Name reads on a collection seeded with `seeded` entries.
pub async fn store_read(
    mongodb_url: &str,
    spec: LoadSpec,
    seeded: u64,
) -> anyhow::Result<RunStats> {
    let collection = ceiling_collection(mongodb_url).await?;
    collection
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "name": 1, "created_at": -1 })
                .build(),
        )
        .await
        .context("create the name index")?;
    seed(&collection, 0, seeded).await?;
    let workers = (0..spec.concurrency)
        .map(|_| NameReadWorker {
            collection: collection.clone(),
        })
        .collect();
    let stats = load::run(workers, spec).await;
    let _ = collection.drop().await;
    Ok(stats)
}

/// bcrypt verifies per second with one blocking thread per core, at `cost`.
pub async fn bcrypt_verifies(
    cost: u32,
    threads: usize,
    spec: LoadSpec,
) -> anyhow::Result<RunStats> {
    let hash = Arc::new(bcrypt::hash("verysecret", cost)?);
    struct Verify(Arc<String>);
    impl Worker for Verify {
        async fn call(&mut self, _seq: u64) -> Result<(), String> {
            let hash = self.0.clone();
            match tokio::task::spawn_blocking(move || bcrypt::verify("verysecret", &hash)).await {
                Ok(Ok(true)) => Ok(()),
                Ok(Ok(false)) => Err("bcrypt verify said no".into()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(err) => Err(err.to_string()),
            }
        }
    }
    let spec = LoadSpec {
        concurrency: threads,
        ..spec
    };
    Ok(load::run((0..threads).map(|_| Verify(hash.clone())).collect(), spec).await)
}

/// Publish-with-confirm and consume-with-ack through lapin, on a durable quorum
/// queue with persistent messages (what the event path does). Throughput counts
/// messages both confirmed and consumed; latency is publish to consume.
pub async fn amqp_confirm_ack(amqp_url: &str, spec: LoadSpec) -> anyhow::Result<RunStats> {
    let queue = format!("bench.ceiling.{}", std::process::id());
    let properties =
        ConnectionProperties::default().with_connection_name("switchboard-bench".into());
    let publisher = Connection::connect(amqp_url, properties.clone())
        .await
        .context("connect to RabbitMQ")?;
    let consumer_connection = Connection::connect(amqp_url, properties).await?;
    let publish_channel = publisher.create_channel().await?;
    publish_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    publish_channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .context("declare the ceiling queue")?;

    let consume_channel = consumer_connection.create_channel().await?;
    consume_channel
        .basic_qos(256, BasicQosOptions::default())
        .await?;
    let mut consumer = consume_channel
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumed = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(std::sync::Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
    ));
    let origin = Instant::now();
    let measure_from = origin + spec.warmup;
    let consumer_task = {
        let consumed = consumed.clone();
        let latency = latency.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let sent_us: u64 = std::str::from_utf8(&delivery.data)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .unwrap_or(0);
                let now_us = origin.elapsed().as_micros() as u64;
                if origin + Duration::from_micros(sent_us) >= measure_from {
                    consumed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut histogram) = latency.lock() {
                        let _ = histogram.record(now_us.saturating_sub(sent_us).max(1));
                    }
                }
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
        })
    };

    struct Publish {
        channel: lapin::Channel,
        queue: String,
        origin: Instant,
    }
    impl Worker for Publish {
        async fn call(&mut self, _seq: u64) -> Result<(), String> {
            let body = self.origin.elapsed().as_micros().to_string();
            let confirm = self
                .channel
                .basic_publish(
                    "".into(),
                    self.queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .map_err(|err| err.to_string())?;
            match confirm.await {
                Ok(confirmation) if confirmation.is_ack() => Ok(()),
                Ok(_) => Err("broker nacked".into()),
                Err(err) => Err(err.to_string()),
            }
        }
    }
    let workers = (0..spec.concurrency)
        .map(|_| Publish {
            channel: publish_channel.clone(),
            queue: queue.clone(),
            origin,
        })
        .collect();
    let published = load::run(workers, spec).await;
    // Let the consumer drain what was confirmed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumed.load(Ordering::Relaxed) < published.ok && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer_task.abort();
    let _ = publish_channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = publisher.close(0, "done".into()).await;
    let _ = consumer_connection.close(0, "done".into()).await;
    let histogram = latency
        .lock()
        .map(|h| h.clone())
        .map_err(|_| anyhow::anyhow!("latency lock poisoned"))?;
    Ok(RunStats {
        ok: consumed.load(Ordering::Relaxed).min(published.ok),
        errors: published.errors,
        elapsed: published.elapsed,
        latency_us: histogram,
        error_samples: published.error_samples,
        issued: published.issued,
    })
}
