//! The scenarios through the running system: the broker's own layers
//! (`broker-hit`), logs through the broker on each transport (`broker-log`),
//! logins (`broker-auth`), and the logger's doors without the broker
//! (`logger-direct`). The AMQP path also checks that every accepted event was
//! stored exactly once and measures how long an event takes to become readable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use tokio::sync::Mutex;

use crate::clients::{BodyFn, GrpcWorker, HttpWorker, RpcWorker};
use crate::load::{self, LoadSpec, RunStats, Worker};

/// Where the system under test listens.
#[derive(Debug, Clone)]
pub struct Targets {
    pub broker: SocketAddr,
    pub logger_http: SocketAddr,
    pub logger_rpc: SocketAddr,
    pub logger_grpc_url: String,
    pub mongodb_url: String,
    pub logs_database: String,
    pub amqp_url: String,
}

/// The log transports of the broker, and the logger's own doors.
pub const BROKER_VIAS: [&str; 4] = ["rpc", "grpc", "http", "amqp"];
pub const LOGGER_DOORS: [&str; 3] = ["rpc", "grpc", "http"];

/// A log name no earlier run used, so counts and reads see only this run.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn http_workers(
    addr: SocketAddr,
    path: &str,
    body: BodyFn,
    status: u16,
    n: usize,
) -> Vec<HttpWorker> {
    (0..n)
        .map(|_| HttpWorker::new(addr, path, body.clone(), status))
        .collect()
}

pub async fn broker_hit(targets: &Targets, spec: LoadSpec) -> RunStats {
    let body: BodyFn = Arc::new(|_| Vec::new());
    load::run(
        http_workers(targets.broker, "/", body, 200, spec.concurrency),
        spec,
    )
    .await
}

/// The id the AMQP scenario gives event `seq`: the broker stores it as the
/// document's `_id`, so the bench can look single events up by primary key
/// instead of scanning the collection.
fn event_id(name: &str, seq: u64) -> String {
    format!("{name}-{seq}")
}

/// The `data` of event `seq`, unique within a run.
fn event_data(seq: u64) -> String {
    format!("bench {seq}")
}

/// A log body whose events carry [`event_id`]s.
fn log_body_with_ids(name: &str, via: &str) -> BodyFn {
    let name = name.to_owned();
    let via = via.to_owned();
    Arc::new(move |seq| {
        serde_json::json!({"action": "log", "log": {
            "name": name, "data": event_data(seq), "via": via, "id": event_id(&name, seq),
        }})
        .to_string()
        .into_bytes()
    })
}

fn log_body(name: &str, via: &str) -> BodyFn {
    let name = name.to_owned();
    let via = via.to_owned();
    Arc::new(move |seq| {
        serde_json::json!({"action": "log", "log": {"name": name, "data": format!("bench {seq}"), "via": via}})
            .to_string()
            .into_bytes()
    })
}

pub async fn broker_log(targets: &Targets, via: &str, spec: LoadSpec) -> RunStats {
    let name = unique(&format!("bench-broker-{via}"));
    load::run(
        http_workers(
            targets.broker,
            "/handle",
            log_body(&name, via),
            202,
            spec.concurrency,
        ),
        spec,
    )
    .await
}

pub async fn broker_auth(targets: &Targets, spec: LoadSpec) -> RunStats {
    let body: BodyFn = Arc::new(|_| {
        br#"{"action":"auth","auth":{"email":"admin@example.com","password":"verysecret"}}"#
            .to_vec()
    });
    load::run(
        http_workers(targets.broker, "/handle", body, 202, spec.concurrency),
        spec,
    )
    .await
}

pub async fn logger_direct(
    targets: &Targets,
    door: &str,
    spec: LoadSpec,
) -> anyhow::Result<RunStats> {
    let name = unique(&format!("bench-logger-{door}"));
    Ok(match door {
        "rpc" => {
            load::run(
                RpcWorker::connect_shared(targets.logger_rpc, spec.concurrency, &name).await?,
                spec,
            )
            .await
        }
        "grpc" => {
            load::run(
                GrpcWorker::connect_shared(&targets.logger_grpc_url, spec.concurrency, &name)
                    .await?,
                spec,
            )
            .await
        }
        "http" => {
            let body: BodyFn = {
                let name = name.clone();
                Arc::new(move |seq| {
                    serde_json::json!({"name": name, "data": format!("bench {seq}")})
                        .to_string()
                        .into_bytes()
                })
            };
            load::run(
                http_workers(targets.logger_http, "/log", body, 202, spec.concurrency),
                spec,
            )
            .await
        }
        other => anyhow::bail!("unknown logger door {other:?} (rpc, grpc or http)"),
    })
}

/// What the AMQP path measured beyond throughput.
#[derive(Debug, Clone)]
pub struct AmqpOutcome {
    pub accepted: RunStats,
    /// From the broker's 202 to the document being readable, for sampled events.
    pub end_to_end: RunStats,
    pub stored: u64,
    /// Every event the broker accepted, warm-up included.
    pub accepted_total: u64,
    /// Accepted events per second from the first request until the last one
    /// was stored: what the whole path sustains, consumer included.
    pub end_to_end_rate: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub drain_time: Duration,
}

/// Every accepted event through the broker over AMQP, then a count check:
/// each accepted event must be stored exactly once.
pub async fn broker_log_amqp(targets: &Targets, spec: LoadSpec) -> anyhow::Result<AmqpOutcome> {
    let name = unique("bench-broker-amqp");
    let client = mongodb::Client::with_uri_str(&targets.mongodb_url)
        .await
        .context("connect to MongoDB")?;
    let collection = client
        .database(&targets.logs_database)
        .collection::<Document>("logs");
    let samples: Arc<Mutex<Vec<(u64, SystemTime)>>> = Arc::new(Mutex::new(Vec::new()));
    let accepted_data: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));

    struct AmqpWorker {
        inner: HttpWorker,
        samples: Arc<Mutex<Vec<(u64, SystemTime)>>>,
        accepted: Arc<Mutex<Vec<u64>>>,
    }
    impl Worker for AmqpWorker {
        async fn call(&mut self, seq: u64) -> Result<(), String> {
            self.inner.call(seq).await?;
            if seq.is_multiple_of(500) {
                self.samples.lock().await.push((seq, SystemTime::now()));
            }
            self.accepted.lock().await.push(seq);
            Ok(())
        }
    }
    let workers = (0..spec.concurrency)
        .map(|_| AmqpWorker {
            inner: HttpWorker::new(
                targets.broker,
                "/handle",
                log_body_with_ids(&name, "amqp"),
                202,
            ),
            samples: samples.clone(),
            accepted: accepted_data.clone(),
        })
        .collect();
    let run_started = SystemTime::now();
    let accepted = load::run(workers, spec).await;
    let load_ended = SystemTime::now();
    let drain_started = Instant::now();

    // Waiting for the backlog polls the store by `_id` only (pushed down to
    // SQLite by FerretDB); a full read happens once the last accepted event is
    // there, and again (rarely) when a redelivered one is stored after later
    // ones. Latencies come from the documents themselves, not from when a poll
    // found them: polling the store while the listener drains into it costs
    // the very server being measured, and a first version (a find by name
    // every 5 ms) kept FerretDB a full core busy and cut the measured drain
    // rate to a third.
    const POLL_INTERVAL: Duration = Duration::from_millis(20);
    let deadline = drain_started + Duration::from_secs(300);
    let accepted_list = accepted_data.lock().await.clone();
    if let Some(&last) = accepted_list.last() {
        let last_id = event_id(&name, last);
        while collection
            .find_one(doc! {"_id": &last_id})
            .projection(doc! {"_id": 1})
            .await?
            .is_none()
            && Instant::now() < deadline
        {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
    // Counted by `data`, not `_id`: the unique `_id` is the very mechanism
    // that keeps a redelivery from being stored twice, so counting ids could
    // not see it fail.
    let mut stored_counts: HashMap<String, u64> = HashMap::new();
    let mut received_at: HashMap<String, SystemTime> = HashMap::new();
    loop {
        stored_counts.clear();
        received_at.clear();
        let mut cursor = collection
            .find(doc! {"name": &name})
            .projection(doc! {"data": 1, "created_at": 1})
            .await?;
        while let Some(found) = cursor.try_next().await? {
            if let Ok(data) = found.get_str("data") {
                *stored_counts.entry(data.to_owned()).or_default() += 1;
                if let Ok(created) = found.get_datetime("created_at") {
                    received_at.insert(data.to_owned(), created.to_system_time());
                }
            }
        }
        let all_there = accepted_list
            .iter()
            .all(|seq| stored_counts.contains_key(&event_data(*seq)));
        if all_there || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Sampled end-to-end latency: from the broker's 202 to the logger taking
    // the entry in (`created_at`; it is readable once its batch is stored,
    // a few milliseconds later), on the same host's clock.
    let sampled = samples.lock().await.clone();
    let mut end_to_end = RunStats {
        ok: 0,
        errors: 0,
        elapsed: accepted.elapsed,
        latency_us: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)?,
        error_samples: Vec::new(),
        issued: sampled.len() as u64,
    };
    for (seq, accepted_at) in sampled {
        match received_at.get(&event_data(seq)) {
            Some(received) => {
                let latency = received.duration_since(accepted_at).unwrap_or_default();
                let micros = (latency.as_micros() as u64).clamp(1, 60_000_000);
                let _ = end_to_end.latency_us.record(micros);
                end_to_end.ok += 1;
            }
            None => end_to_end.errors += 1,
        }
    }
    // The whole path's rate: accepted events over the time from the first
    // request until the logger took in the last of them.
    let last_received = received_at.values().max().copied();
    let drain_time = last_received
        .and_then(|last| last.duration_since(load_ended).ok())
        .unwrap_or_default();
    let whole = last_received
        .and_then(|last| last.duration_since(run_started).ok())
        .map_or(0.0, |span| span.as_secs_f64());
    let lost = accepted_list
        .iter()
        .filter(|seq| !stored_counts.contains_key(&event_data(**seq)))
        .count() as u64;
    let duplicated = stored_counts.values().map(|n| n.saturating_sub(1)).sum();
    let stored = stored_counts.values().sum();
    Ok(AmqpOutcome {
        accepted,
        end_to_end,
        stored,
        accepted_total: accepted_list.len() as u64,
        end_to_end_rate: if whole > 0.0 {
            accepted_list.len() as f64 / whole
        } else {
            0.0
        },
        lost,
        duplicated,
        drain_time,
    })
}

/// `logger-read`: name reads through the logger's `GET /logs` while four
/// connections keep writing through `POST /log`, on a collection of
/// whatever size the caller seeded. Returns (reads, writes).
pub async fn logger_read(targets: &Targets, spec: LoadSpec) -> (RunStats, RunStats) {
    let readers = (0..spec.concurrency)
        .map(|_| {
            let path: crate::clients::PathFn =
                Arc::new(|seq| format!("/logs?name={}&limit=5", crate::ceilings::read_name(seq)));
            HttpWorker::getter(targets.logger_http, path, 200)
        })
        .collect();
    let name = unique("bench-read-writes");
    let body: BodyFn = Arc::new(move |seq| {
        serde_json::json!({"name": name, "data": format!("written during reads {seq}")})
            .to_string()
            .into_bytes()
    });
    let writers = http_workers(targets.logger_http, "/log", body, 202, 4);
    tokio::join!(load::run(readers, spec), load::run(writers, spec))
}

/// The logger's collection, for seeding the read scenario.
pub async fn logs_collection(targets: &Targets) -> anyhow::Result<mongodb::Collection<Document>> {
    let client = mongodb::Client::with_uri_str(&targets.mongodb_url)
        .await
        .context("connect to MongoDB")?;
    Ok(client.database(&targets.logs_database).collection("logs"))
}
