//! The three doors against a real MongoDB-compatible server (FerretDB here):
//! what goes in through each is stored once, readable through `GET /logs` and
//! in the database, and bad input is refused the same way everywhere.

mod common;

use std::collections::HashSet;

use common::{Logger, grpc_request, rpc_context, settings};
use mongodb::bson::doc;
use serde_json::json;
use switchboard_testkit::{MongoDb, metrics, servers_disabled, unique_name};
use switchboard_wire::LogEntry;
use switchboard_wire::rpc::RpcError;
use tonic::Code;

async fn logger() -> Logger {
    let mongo = MongoDb::shared().expect("MongoDB-compatible server");
    Logger::start(settings(&mongo.url())).await
}

fn entry(name: &str, data: &str, id: Option<&str>) -> LogEntry {
    LogEntry {
        name: name.to_owned(),
        data: data.to_owned(),
        id: id.map(str::to_owned),
    }
}

#[tokio::test]
async fn a_write_through_each_door_is_stored_and_readable() {
    if servers_disabled() {
        return;
    }
    let logger = logger().await;

    let (status, body) = logger
        .post_log(json!({"name": "via-http", "data": "over HTTP"}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"error": false, "message": "logged"}));

    let reply = logger
        .grpc_client()
        .await
        .write_log(grpc_request("via-grpc", "over gRPC"))
        .await
        .expect("gRPC write");
    assert_eq!(reply.into_inner().result, "logged!");

    let rpc = logger.rpc_client().await;
    let reply = rpc
        .log_info(rpc_context(), "via-rpc".into(), "over RPC".into())
        .await
        .expect("RPC transport");
    assert_eq!(reply, Ok("Processed payload via RPC:via-rpc".to_owned()));
    let reply = rpc
        .log_entry(rpc_context(), entry("via-rpc-entry", "with an entry", None))
        .await
        .expect("RPC transport");
    assert_eq!(
        reply,
        Ok("Processed payload via RPC:via-rpc-entry".to_owned())
    );

    // Through the read API, newest first.
    let (status, listed) = logger.get("/logs").await;
    assert_eq!(status, 200, "{listed}");
    let names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["via-rpc-entry", "via-rpc", "via-grpc", "via-http"]);
    let newest = &listed[0];
    assert_eq!(newest["data"], "with an entry");
    assert!(
        newest["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{newest}"
    );
    assert_eq!(newest["created_at"], newest["updated_at"]);

    // Directly in the database, in the original's document shape.
    for (name, data) in [
        ("via-http", "over HTTP"),
        ("via-grpc", "over gRPC"),
        ("via-rpc", "over RPC"),
    ] {
        let documents = logger.documents(doc! {"name": name}).await;
        assert_eq!(documents.len(), 1, "{name}");
        let document = &documents[0];
        assert_eq!(document.get_str("data").ok(), Some(data));
        assert!(document.get_object_id("_id").is_ok(), "{document}");
        assert!(document.get_datetime("created_at").is_ok(), "{document}");
        assert!(document.get_datetime("updated_at").is_ok(), "{document}");
        let mut keys: Vec<&str> = document.keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["_id", "created_at", "data", "name", "updated_at"]);
    }

    // One entry by its id.
    let id = newest["id"].as_str().expect("id");
    let (status, one) = logger.get(&format!("/logs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(&one, newest);
    let (status, missing) = logger.get("/logs/0123456789abcdef01234567").await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"], true);

    // The metrics door saw every write by its door, the group commit, and
    // the reads under the route's template, never an id.
    let exposition = reqwest::get(format!("{}/metrics", logger.metrics))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("exposition");
    for (door, stored) in [("http", 1.0), ("grpc", 1.0), ("rpc", 2.0)] {
        assert_eq!(
            metrics::sample(
                &exposition,
                &format!(r#"switchboard_logger_writes_total{{door="{door}",outcome="stored"}}"#)
            ),
            Some(stored),
            "{door}: {exposition}"
        );
    }
    assert_eq!(
        metrics::sample(&exposition, "switchboard_logger_batch_entries_sum"),
        Some(4.0),
        "{exposition}"
    );
    assert_eq!(
        metrics::sample(&exposition, "switchboard_logger_writes_waiting"),
        Some(0.0),
        "{exposition}"
    );
    assert_eq!(
        metrics::sum(
            &exposition,
            "switchboard_http_requests_total",
            &[("route", "/logs/{id}"), ("method", "GET")]
        ),
        Some(2.0),
        "{exposition}"
    );
    assert!(
        !exposition.contains("0123456789abcdef01234567"),
        "{exposition}"
    );
    assert_eq!(
        metrics::sample(
            &exposition,
            "switchboard_logger_store_read_duration_seconds_count"
        ),
        Some(3.0),
        "{exposition}"
    );

    logger.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn invalid_entries_are_refused_on_every_door() {
    if servers_disabled() {
        return;
    }
    let logger = logger().await;
    let max_name = logger.settings.limits.max_name_bytes;
    let max_data = logger.settings.limits.max_data_bytes;
    let long_name = "n".repeat(max_name + 1);
    let large_data = "d".repeat(max_data + 1);
    let cases = [
        ("", "data", "name must not be empty"),
        (
            long_name.as_str(),
            "data",
            "name is 257 bytes long; the limit is 256 bytes",
        ),
        (
            "big",
            large_data.as_str(),
            "data is 65537 bytes long; the limit is 65536 bytes",
        ),
    ];
    let grpc = &mut logger.grpc_client().await;
    let rpc = logger.rpc_client().await;
    for (name, data, reason) in cases {
        let (status, body) = logger.post_log(json!({"name": name, "data": data})).await;
        assert_eq!(status, 400, "HTTP {reason}");
        assert_eq!(body["error"], true);
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{body}"
        );

        let status = grpc
            .write_log(grpc_request(name, data))
            .await
            .expect_err("gRPC must refuse");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "gRPC {reason}: {status:?}"
        );
        assert!(status.message().contains(reason), "{status:?}");

        let reply = rpc
            .log_info(rpc_context(), name.to_owned(), data.to_owned())
            .await
            .expect("RPC transport");
        match reply {
            Err(RpcError::Invalid(message)) => assert!(message.contains(reason), "{message}"),
            other => panic!("RPC {reason}: {other:?}"),
        }
    }

    // Exactly at the limits is fine.
    let name = "n".repeat(max_name);
    let data = "d".repeat(max_data);
    let (status, body) = logger.post_log(json!({"name": name, "data": data})).await;
    assert_eq!(status, 202, "{body}");
    // The same with every byte escaped, as some JSON encoders do: the body
    // limit leaves room for it.
    let escaped_data = "\\u0041".repeat(max_data);
    let body = format!(r#"{{"name":"escaped","data":"{escaped_data}"}}"#);
    let response = common::http_client()
        .post(format!("{}/log", logger.http))
        .body(body)
        .send()
        .await
        .expect("POST escaped");
    assert_eq!(response.status(), 202);

    // Malformed bodies and a missing logEntry.
    for body in ["", "{", r#"{"name":"x"}"#, r#"{"name":5,"data":"x"}"#] {
        let response = common::http_client()
            .post(format!("{}/log", logger.http))
            .body(body)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 400, "{body:?}");
    }
    let status = grpc
        .write_log(switchboard_wire::proto::LogRequest { log_entry: None })
        .await
        .expect_err("no entry");
    assert_eq!(status.code(), Code::InvalidArgument);

    // Nothing refused was stored.
    let stored = logger.documents(doc! {}).await;
    let names: HashSet<String> = stored
        .iter()
        .map(|d| d.get_str("name").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, HashSet::from([name, "escaped".to_owned()]));
    logger.stop().await.expect("clean shutdown");
}

/// The same `LogRequest` layout with `bytes` instead of `string`, so a client
/// can send what the real proto forbids.
mod raw {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Log {
        #[prost(bytes = "vec", tag = "1")]
        pub name: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub data: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogRequest {
        #[prost(message, optional, tag = "1")]
        pub log_entry: Option<Log>,
    }
}

#[tokio::test]
async fn grpc_strings_that_are_not_utf8_are_invalid_arguments() {
    if servers_disabled() {
        return;
    }
    let logger = logger().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", logger.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let request = raw::LogRequest {
        log_entry: Some(raw::Log {
            name: b"bad-\xff-name".to_vec(),
            data: b"data".to_vec(),
        }),
    };
    let status = grpc
        .unary::<_, switchboard_wire::proto::LogResponse, _>(
            tonic::Request::new(request),
            http::uri::PathAndQuery::from_static("/logs.LogService/WriteLog"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("invalid UTF-8 must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("UTF-8"), "{status:?}");
    assert!(logger.documents(doc! {}).await.is_empty());
    logger.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_repeated_id_is_stored_once_on_every_door_that_takes_ids() {
    if servers_disabled() {
        return;
    }
    let logger = logger().await;
    let http_id = unique_name("http");
    for _ in 0..2 {
        let (status, body) = logger
            .post_log(json!({"name": "idem", "data": "from HTTP", "id": http_id}))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let rpc = logger.rpc_client().await;
    let rpc_id = unique_name("rpc");
    for _ in 0..2 {
        let reply = rpc
            .log_entry(rpc_context(), entry("idem", "from RPC", Some(&rpc_id)))
            .await
            .expect("RPC transport");
        assert_eq!(reply, Ok("Processed payload via RPC:idem".to_owned()));
    }
    // Concurrent repeats of one id land in the same batch or in parallel
    // batches: still one document, and every caller is told it is stored.
    let racing_id = unique_name("race");
    let mut calls = Vec::new();
    for _ in 0..20 {
        let rpc = rpc.clone();
        let racing_id = racing_id.clone();
        calls.push(tokio::spawn(async move {
            rpc.log_entry(rpc_context(), entry("idem", "raced", Some(&racing_id)))
                .await
        }));
    }
    for call in calls {
        let reply = call.await.expect("task").expect("RPC transport");
        assert!(reply.is_ok(), "{reply:?}");
    }

    for (id, data) in [
        (&http_id, "from HTTP"),
        (&rpc_id, "from RPC"),
        (&racing_id, "raced"),
    ] {
        let documents = logger.documents(doc! {"_id": id.as_str()}).await;
        assert_eq!(documents.len(), 1, "{id}");
        assert_eq!(documents[0].get_str("data").ok(), Some(data));
        let (status, one) = logger.get(&format!("/logs/{id}")).await;
        assert_eq!(status, 200);
        assert_eq!(one["id"], id.as_str());
    }
    assert_eq!(logger.documents(doc! {}).await.len(), 3);

    // An id that looks like an ObjectId is still the client's string.
    let hex_id = "65f0c0ffee0123456789abcd";
    let (status, _) = logger
        .post_log(json!({"name": "hex", "data": "d", "id": hex_id}))
        .await;
    assert_eq!(status, 202);
    let (status, one) = logger.get(&format!("/logs/{hex_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["name"], "hex");

    // gRPC's proto has no id field: every WriteLog is a new entry.
    let grpc = &mut logger.grpc_client().await;
    for _ in 0..2 {
        grpc.write_log(grpc_request("grpc-twice", "same"))
            .await
            .expect("gRPC write");
    }
    assert_eq!(logger.documents(doc! {"name": "grpc-twice"}).await.len(), 2);
    logger.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_thousand_concurrent_writes_from_fifty_tasks_are_all_stored_once() {
    if servers_disabled() {
        return;
    }
    let logger = logger().await;
    let rpc = logger.rpc_client().await;
    let grpc = logger.grpc_client().await;
    let http = common::http_client();
    let mut tasks = Vec::new();
    for task in 0..50 {
        let (rpc, mut grpc, http) = (rpc.clone(), grpc.clone(), http.clone());
        let url = format!("{}/log", logger.http);
        tasks.push(tokio::spawn(async move {
            for n in 0..20 {
                let data = format!("{task}-{n}");
                match (task + n) % 3 {
                    0 => {
                        let reply = rpc
                            .log_info(rpc_context(), "concurrent".into(), data)
                            .await
                            .expect("RPC transport");
                        assert!(reply.is_ok(), "{reply:?}");
                    }
                    1 => {
                        grpc.write_log(grpc_request("concurrent", &data))
                            .await
                            .expect("gRPC write");
                    }
                    _ => {
                        let response = http
                            .post(&url)
                            .json(&json!({"name": "concurrent", "data": data}))
                            .send()
                            .await
                            .expect("POST");
                        assert_eq!(response.status(), 202);
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
    let documents = logger.documents(doc! {"name": "concurrent"}).await;
    assert_eq!(documents.len(), 1000);
    let distinct: HashSet<&str> = documents
        .iter()
        .map(|d| d.get_str("data").expect("data"))
        .collect();
    let expected: HashSet<String> = (0..50)
        .flat_map(|task| (0..20).map(move |n| format!("{task}-{n}")))
        .collect();
    assert_eq!(distinct.len(), 1000);
    assert!(expected.iter().all(|data| distinct.contains(data.as_str())));
    logger.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_read_api_filters_by_limit_name_and_time() {
    if servers_disabled() {
        return;
    }
    let mut settings = settings(&MongoDb::shared().expect("server").url());
    settings.limits.max_read_limit = 5;
    let logger = Logger::start(settings).await;
    for n in 0..8 {
        let name = if n % 2 == 0 { "even" } else { "odd" };
        let (status, _) = logger
            .post_log(json!({"name": name, "data": n.to_string()}))
            .await;
        assert_eq!(status, 202);
        // Distinct creation times, so `before` has something to cut.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let data = |listed: &serde_json::Value| -> Vec<String> {
        listed
            .as_array()
            .expect("array")
            .iter()
            .map(|e| e["data"].as_str().expect("data").to_owned())
            .collect()
    };

    let (status, listed) = logger.get("/logs?limit=3").await;
    assert_eq!(status, 200);
    assert_eq!(data(&listed), ["7", "6", "5"]);
    // Capped at limits.max_read_limit.
    let (_, listed) = logger.get("/logs?limit=100").await;
    assert_eq!(data(&listed), ["7", "6", "5", "4", "3"]);
    let (_, listed) = logger.get("/logs?name=even").await;
    assert_eq!(data(&listed), ["6", "4", "2", "0"]);

    // Page backwards from the created_at of entry "4".
    let (_, all) = logger.get("/logs?limit=5").await;
    let cut = all[3]["created_at"]
        .as_str()
        .expect("created_at")
        .to_owned();
    assert_eq!(all[3]["data"], "4");
    let (status, listed) = logger
        .get(&format!("/logs?before={}", urlencode(&cut)))
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(data(&listed), ["3", "2", "1", "0"]);
    let (_, listed) = logger
        .get(&format!(
            "/logs?name=odd&limit=1&before={}",
            urlencode(&cut)
        ))
        .await;
    assert_eq!(data(&listed), ["3"]);

    for bad in [
        "/logs?before=yesterday",
        "/logs?limit=0",
        "/logs?limit=x",
        "/logs?limt=3",
    ] {
        let (status, body) = logger.get(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"], true);
    }
    logger.stop().await.expect("clean shutdown");
}

/// Pages through `GET /logs` by following each reply's `Link` header.
async fn follow_pages(logger: &Logger, first: &str) -> (Vec<String>, usize) {
    let client = common::http_client();
    let mut next = Some(first.to_owned());
    let (mut ids, mut pages) = (Vec::new(), 0);
    while let Some(path) = next.take() {
        let response = client
            .get(format!("{}{path}", logger.http))
            .send()
            .await
            .expect("GET /logs");
        assert_eq!(response.status(), 200, "{path}");
        next = response.headers().get("link").map(|link| {
            let link = link.to_str().expect("ASCII link");
            let target = link
                .strip_prefix('<')
                .and_then(|rest| rest.strip_suffix(">; rel=\"next\""))
                .unwrap_or_else(|| panic!("not a next link: {link}"));
            target.to_owned()
        });
        let page: Vec<serde_json::Value> = response.json().await.expect("JSON array");
        ids.extend(
            page.iter()
                .map(|e| e["id"].as_str().expect("id").to_owned()),
        );
        pages += 1;
        assert!(pages < 50, "pages never end");
    }
    (ids, pages)
}

/// Keyset pages: entries written in the same millisecond, with ObjectIds and
/// with clients' string ids, come out once each and in order, whatever the
/// page size; a name filter and entries written between pages do not disturb it.
#[tokio::test]
async fn pages_follow_the_link_header_without_repeats_or_gaps() {
    if servers_disabled() {
        return;
    }
    use mongodb::bson::DateTime;
    use mongodb::bson::oid::ObjectId;
    let logger = logger().await;
    let collection = logger.collection().await;
    let tie = DateTime::from_millis(1_800_000_000_000);
    let mut documents = Vec::new();
    // Newest-first order: later instants first; within an instant the
    // ObjectIds (larger first), then the strings (larger first).
    let mut expected = Vec::new();
    let later = DateTime::from_millis(tie.timestamp_millis() + 1);
    documents.push(doc! { "_id": "later", "name": "paged", "data": "d", "created_at": later });
    expected.push("later".to_owned());
    let mut oids: Vec<ObjectId> = (0..4).map(|_| ObjectId::new()).collect();
    oids.sort();
    for oid in oids.iter().rev() {
        documents.push(doc! { "_id": *oid, "name": "paged", "data": "d", "created_at": tie });
        expected.push(oid.to_hex());
    }
    for id in ["s-c", "s-b", "s-a"] {
        documents.push(doc! { "_id": id, "name": "paged", "data": "d", "created_at": tie });
        expected.push(id.to_owned());
    }
    let earlier = DateTime::from_millis(tie.timestamp_millis() - 1);
    documents
        .push(doc! { "_id": ObjectId::new(), "name": "paged", "data": "d", "created_at": earlier });
    expected.push(
        documents
            .last()
            .and_then(|d| d.get_object_id("_id").ok())
            .expect("oid")
            .to_hex(),
    );
    documents.push(doc! { "_id": "other-name", "name": "other", "data": "d", "created_at": tie });
    collection.insert_many(&documents).await.expect("seed");

    for limit in [1, 2, 3, 4, 9, 100] {
        let (ids, pages) = follow_pages(&logger, &format!("/logs?name=paged&limit={limit}")).await;
        assert_eq!(ids, expected, "limit {limit}");
        // A last page that is full ends with an empty one.
        assert_eq!(pages, expected.len() / limit + 1, "limit {limit}");
    }
    // Newer entries written between pages do not shift the next one.
    let (_, first) = logger.get("/logs?name=paged&limit=3").await;
    assert_eq!(first.as_array().map(Vec::len), Some(3));
    let response = common::http_client()
        .get(format!("{}/logs?name=paged&limit=3", logger.http))
        .send()
        .await
        .expect("GET");
    let link = response
        .headers()
        .get("link")
        .expect("a full page links on")
        .to_str()
        .expect("ascii")
        .to_owned();
    let (status, _) = logger
        .post_log(json!({"name": "paged", "data": "newest"}))
        .await;
    assert_eq!(status, 202);
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .expect("target")
        .to_owned();
    let (_, page) = logger.get(&next).await;
    let ids: Vec<&str> = page
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        expected[3..6]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );

    for (bad, says) in [
        ("/logs?cursor=zz", "cursor"),
        ("/logs?cursor=6331", "cursor"),
        ("/logs?cursor=&limit=1", "cursor"),
        (
            "/logs?before=2024-05-01T12%3A00%3A00Z&cursor=6331",
            "exclude",
        ),
    ] {
        let (status, body) = logger.get(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(says)),
            "{bad}: {body}"
        );
    }
    logger.stop().await.expect("clean shutdown");
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn batches_form_under_concurrent_load() {
    if servers_disabled() {
        return;
    }
    use std::sync::Arc;
    use switchboard_logger::entry::EntryRules;
    use switchboard_logger::{batch, store};

    let settings = settings(&MongoDb::shared().expect("server").url());
    let store = store::Store::new(&settings.mongodb).await.expect("store");
    store.ping().await.expect("ping");
    let metrics = switchboard_logger::metrics::LoggerMetrics::register(
        &switchboard_runtime::metrics::Metrics::new(),
    );
    let (writer, writers) =
        batch::start(store, Arc::new(store::Health::default()), 64, 1, &metrics);
    let rules = EntryRules::from(&settings.limits);
    let mut calls = Vec::new();
    for n in 0..300 {
        let writer = writer.clone();
        let entry = rules
            .parse("batched".into(), n.to_string(), None)
            .expect("valid");
        calls.push(tokio::spawn(async move { writer.write(&entry).await }));
    }
    for call in calls {
        call.await.expect("task").expect("stored");
    }
    assert_eq!(writer.stats().entries, 300);
    drop(writer);
    let stats = writers.finish().await;
    assert_eq!(stats.entries, 300);
    // One writer, 300 concurrent entries: they must have been grouped.
    assert!(stats.batches < 300, "{stats:?}");
    assert!(
        stats.largest_batch > 1 && stats.largest_batch <= 64,
        "{stats:?}"
    );
}

#[tokio::test]
async fn indexes_are_created_and_retention_fits_the_server() {
    if servers_disabled() {
        return;
    }
    let mongo = MongoDb::shared().expect("server");
    let mut settings = settings(&mongo.url());
    settings.mongodb.retention_days = 30;
    let logger = Logger::start(settings).await;
    let (status, _) = logger.post_log(json!({"name": "kept", "data": "d"})).await;
    assert_eq!(status, 202);
    let names = logger
        .collection()
        .await
        .list_index_names()
        .await
        .expect("list indexes");
    assert!(names.iter().any(|n| n == "created_at_desc"), "{names:?}");
    assert!(names.iter().any(|n| n == "name_created_at"), "{names:?}");
    // FerretDB v1 has no TTL indexes: retention is skipped (with a warning)
    // instead of failing the start; MongoDB gets the TTL index.
    let has_ttl = names.iter().any(|n| n == "created_at_ttl");
    assert_eq!(has_ttl, mongo.kind() == "mongod", "{names:?}");
    logger.stop().await.expect("clean shutdown");
}

/// The read `GET /logs?name=` makes, explained by the server: on MongoDB an
/// index scan of `name_created_at` with no in-memory sort. FerretDB 1.24 has
/// no index scans (it pushes equality filters down to SQL, and sorts in
/// memory); there the test checks that the name filter at least reaches
/// PostgreSQL, and the bench's `logger-read` shows what that costs.
#[tokio::test]
async fn the_name_read_is_served_by_an_index_where_the_server_can_say() {
    if servers_disabled() {
        return;
    }
    use switchboard_logger::store::{RecentQuery, Store};
    let mongo = MongoDb::shared().expect("server");
    let logger = logger().await;
    let query = RecentQuery {
        limit: 5,
        name: Some("explained".to_owned()),
        ..RecentQuery::default()
    };
    let client = mongodb::Client::with_uri_str(mongo.url())
        .await
        .expect("client");
    let explained = client
        .database(&logger.database)
        .run_command(doc! {
            "explain": {
                "find": &logger.settings.mongodb.collection,
                "filter": Store::recent_filter(&query),
                "sort": Store::recent_sort(),
                "limit": 5,
            },
        })
        .await
        .expect("explain");
    let plan = explained
        .get_document("queryPlanner")
        .map(|p| p.to_string())
        .unwrap_or_default();
    match mongo.ferret_backend() {
        None => {
            let winning = explained
                .get_document("queryPlanner")
                .and_then(|p| p.get_document("winningPlan"))
                .map(|p| p.to_string())
                .expect("a winning plan");
            assert!(
                winning.contains("IXSCAN") && winning.contains("name_created_at"),
                "{winning}"
            );
            assert!(!winning.contains("\"SORT\""), "sorted in memory: {winning}");
        }
        Some(switchboard_testkit::FerretBackend::Postgresql) => {
            assert_eq!(
                explained.get_bool("filterPushdown").ok(),
                Some(true),
                "{plan}"
            );
        }
        Some(_) => {
            // SQLite: FerretDB 1.24 pushes down nothing but `_id`.
            assert_eq!(
                explained.get_bool("filterPushdown").ok(),
                Some(false),
                "{plan}"
            );
        }
    }
    logger.stop().await.expect("clean shutdown");
}
