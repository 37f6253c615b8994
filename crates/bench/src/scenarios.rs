//! The scenarios through the running system: the broker's own layers
//! (`broker-hit`), logs through the broker on each transport (`broker-log`),
//! logins (`broker-auth`), and the logger's doors without the broker
//! (`logger-direct`). The AMQP path also checks that every accepted event was
//! stored exactly once and measures how long an event takes to become readable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let samples: Arc<Mutex<Vec<(String, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let accepted_data: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));

    struct AmqpWorker {
        inner: HttpWorker,
        samples: Arc<Mutex<Vec<(String, Instant)>>>,
        accepted: Arc<Mutex<Vec<String>>>,
    }
    impl Worker for AmqpWorker {
        async fn call(&mut self, seq: u64) -> Result<(), String> {
            self.inner.call(seq).await?;
            let data = format!("bench {seq}");
            if seq.is_multiple_of(500) {
                self.samples
                    .lock()
                    .await
                    .push((data.clone(), Instant::now()));
            }
            self.accepted.lock().await.push(data);
            Ok(())
        }
    }
    let workers = (0..spec.concurrency)
        .map(|_| AmqpWorker {
            inner: HttpWorker::new(targets.broker, "/handle", log_body(&name, "amqp"), 202),
            samples: samples.clone(),
            accepted: accepted_data.clone(),
        })
        .collect();
    let run_started = Instant::now();
    let accepted = load::run(workers, spec).await;

    // Sampled end-to-end latency: poll for each sampled document until it is there.
    let sampled = samples.lock().await.clone();
    let mut end_to_end = RunStats {
        ok: 0,
        errors: 0,
        elapsed: accepted.elapsed,
        latency_us: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)?,
        error_samples: Vec::new(),
        issued: sampled.len() as u64,
    };
    let drain_started = Instant::now();
    // A closed loop can publish faster than the consumer stores: the backlog
    // then takes a while to drain, and that time is part of the measurement.
    let deadline = drain_started + Duration::from_secs(300);
    let mut pending: HashMap<String, Instant> = sampled.into_iter().collect();
    while !pending.is_empty() && Instant::now() < deadline {
        let names: Vec<String> = pending.keys().cloned().collect();
        let mut cursor = collection
            .find(doc! {"name": &name, "data": {"$in": names}})
            .projection(doc! {"data": 1})
            .await?;
        while let Some(found) = cursor.try_next().await? {
            if let Ok(data) = found.get_str("data")
                && let Some(accepted_at) = pending.remove(data)
            {
                // The poll finds the document up to one poll interval late; the
                // interval is small against the latencies measured.
                let micros = accepted_at.elapsed().as_micros().max(1) as u64;
                let _ = end_to_end.latency_us.record(micros.min(60_000_000));
                end_to_end.ok += 1;
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    end_to_end.errors = pending.len() as u64;

    // Exactly once: every accepted event stored, none twice.
    let accepted_list = accepted_data.lock().await.clone();
    let mut stored_counts: HashMap<String, u64> = HashMap::new();
    loop {
        stored_counts.clear();
        let mut cursor = collection
            .find(doc! {"name": &name})
            .projection(doc! {"data": 1})
            .await?;
        while let Some(found) = cursor.try_next().await? {
            if let Ok(data) = found.get_str("data") {
                *stored_counts.entry(data.to_owned()).or_default() += 1;
            }
        }
        let all_there = accepted_list
            .iter()
            .all(|data| stored_counts.contains_key(data));
        if all_there || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_time = drain_started.elapsed();
    let whole = run_started.elapsed().as_secs_f64();
    let lost = accepted_list
        .iter()
        .filter(|data| !stored_counts.contains_key(*data))
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
