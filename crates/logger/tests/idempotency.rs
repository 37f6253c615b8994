//! Idempotency ids against a real MongoDB-compatible server (FerretDB here):
//! repeating an entry under its id is stored once and answered as success on
//! every door; reusing the id for *different* content is refused — 409 over
//! HTTP, ALREADY_EXISTS over gRPC, `RpcError::Conflict` over RPC — and the
//! entry stored first stays as it was. Also within one `insert_many` batch.

mod common;

use common::{Logger, grpc_request, rpc_context, settings};
use mongodb::bson::{DateTime, doc};
use serde_json::json;
use switchboard_logger::entry::EntryRules;
use switchboard_logger::store::{self, StoreError};
use switchboard_testkit::{MongoDb, servers_disabled, unique_name};
use switchboard_wire::rpc::{BatchedEntry, MAX_BATCH_ENTRIES, RpcError};
use switchboard_wire::{LOG_ID_METADATA, LogEntry};
use tonic::Code;
use tonic::metadata::MetadataValue;

async fn logger() -> Logger {
    let mongo = MongoDb::shared().expect("MongoDB-compatible server");
    Logger::start(settings(&mongo.url())).await
}

fn entry(name: &str, data: &str, id: &str) -> LogEntry {
    LogEntry {
        name: name.to_owned(),
        data: data.to_owned(),
        id: Some(id.to_owned()),
    }
}

/// The one document stored under `id`: its name and data.
async fn stored(logger: &Logger, id: &str) -> (String, String) {
    let documents = logger.documents(doc! {"_id": id}).await;
    assert_eq!(documents.len(), 1, "{id}: {documents:?}");
    let text = |key| documents[0].get_str(key).expect(key).to_owned();
    (text("name"), text("data"))
}

#[tokio::test]
async fn http_same_content_is_stored_once_other_content_is_409() {
    if servers_disabled() {
        return;
    }
    let logger = logger().await;
    let id = unique_name("order-42-shipped");
    let first = json!({"name": "order", "data": "42 shipped", "id": id});
    for attempt in 0..2 {
        let (status, body) = logger.post_log(first.clone()).await;
        assert_eq!(status, 202, "attempt {attempt}: {body}");
        assert_eq!(body, json!({"error": false, "message": "logged"}));
    }
    for other in [
        json!({"name": "order", "data": "42 cancelled", "id": id}),
        json!({"name": "invoice", "data": "42 shipped", "id": id}),
    ] {
        let (status, body) = logger.post_log(other.clone()).await;
        assert_eq!(status, 409, "{other} -> {body}");
        assert_eq!(body["error"], json!(true));
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(&id), "{message}");
        assert!(message.contains("different name or data"), "{message}");
    }
    assert_eq!(
        stored(&logger, &id).await,
        ("order".to_owned(), "42 shipped".to_owned())
    );
    logger.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn grpc_other_content_under_a_taken_id_is_already_exists() {
    if servers_disabled() {
        return;
    }
    let logger = logger().await;
    let mut client = logger.grpc_client().await;
    let id = unique_name("grpc-id");
    let request = |name: &str, data: &str| {
        let mut request = tonic::Request::new(grpc_request(name, data));
        request.metadata_mut().insert(
            LOG_ID_METADATA,
            MetadataValue::try_from(id.as_str()).expect("ASCII id"),
        );
        request
    };
    for _ in 0..2 {
        let reply = client
            .write_log(request("event", "first"))
            .await
            .expect("same content is success");
        assert_eq!(reply.into_inner().result, "logged!");
    }
    let status = client
        .write_log(request("event", "second"))
        .await
        .expect_err("other content under the same id");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains(&id), "{status:?}");
    assert_eq!(
        stored(&logger, &id).await,
        ("event".to_owned(), "first".to_owned())
    );
    logger.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn rpc_other_content_under_a_taken_id_is_a_conflict() {
    if servers_disabled() {
        return;
    }
    let logger = logger().await;
    let rpc = logger.rpc_client().await;
    let id = unique_name("rpc-id");
    for _ in 0..2 {
        let reply = rpc
            .log_entry(rpc_context(), entry("event", "first", &id))
            .await
            .expect("RPC transport");
        assert_eq!(reply, Ok("Processed payload via RPC:event".to_owned()));
    }
    let reply = rpc
        .log_entry(rpc_context(), entry("event", "second", &id))
        .await
        .expect("RPC transport");
    match reply {
        Err(RpcError::Conflict(message)) => assert!(message.contains(&id), "{message}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        stored(&logger, &id).await,
        ("event".to_owned(), "first".to_owned())
    );
    logger.stop().await.expect("clean shutdown");
}

/// Repeats inside one unordered `insert_many`: the server stores the first
/// document and reports each later one as a duplicate of it; each is then
/// judged against what was stored. Entries without a clash in the same batch
/// are stored as usual.
#[tokio::test]
async fn duplicates_within_one_batch_are_judged_one_by_one() {
    if servers_disabled() {
        return;
    }
    let settings = settings(&MongoDb::shared().expect("server").url());
    let store = store::Store::new(&settings.mongodb).await.expect("store");
    store.ping().await.expect("ping");
    let rules = EntryRules::from(&settings.limits);
    let id = unique_name("batched");
    let other_id = unique_name("unrelated");
    let now = DateTime::now();
    let document = |name: &str, data: &str, id: &str| {
        let entry = rules
            .parse(name.into(), data.into(), Some(id.into()))
            .expect("valid");
        store::document(&entry, now)
    };
    let documents = [
        document("event", "first", &id),
        document("event", "first", &id),
        document("event", "second", &id),
        document("event", "other", &other_id),
        document("renamed", "first", &id),
    ];
    let outcomes = store
        .insert_batch(&documents.iter().collect::<Vec<_>>())
        .await;
    let conflict = Err(StoreError::Conflict { id: id.clone() });
    assert_eq!(
        outcomes,
        [Ok(()), Ok(()), conflict.clone(), Ok(()), conflict],
        "{outcomes:?}"
    );

    // A later batch: a repeat is stored once, a clash is still a clash.
    let outcomes = store
        .insert_batch(&[
            &document("event", "first", &id),
            &document("event", "x", &id),
        ])
        .await;
    assert_eq!(
        outcomes,
        [Ok(()), Err(StoreError::Conflict { id: id.clone() })]
    );
    let found = store.get(&id).await.expect("read").expect("stored");
    assert_eq!(
        (found.name.as_str(), found.data.as_str()),
        ("event", "first")
    );
    let found = store.get(&other_id).await.expect("read").expect("stored");
    assert_eq!(found.data, "other");
}

/// `log_entries` answers every entry as `log_entry` would, in order: stored,
/// a repeat of a stored id, a conflict, an invalid entry; one bad entry fails
/// alone. A call over the batch bound is refused as a whole, and stores
/// nothing.
#[tokio::test]
async fn a_batch_over_rpc_gets_one_outcome_per_entry() {
    if servers_disabled() {
        return;
    }
    let logger = logger().await;
    let rpc = logger.rpc_client().await;
    let taken = unique_name("batch-taken");
    let fresh = unique_name("batch-fresh");
    let invalid = unique_name("batch-invalid");
    rpc.log_entry(rpc_context(), entry("event", "first", &taken))
        .await
        .expect("RPC transport")
        .expect("stored");
    let batched = |name: &str, data: &str, id: &str| {
        BatchedEntry::new(entry(name, data, id), Some(&format!("request-of-{id}")))
    };
    let outcomes = rpc
        .log_entries(
            rpc_context(),
            vec![
                batched("event", "new", &fresh),
                batched("event", "first", &taken),
                batched("event", "second", &taken),
                batched("", "no name", &invalid),
            ],
        )
        .await
        .expect("RPC transport")
        .expect("a batch within the bound");
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert_eq!(
        outcomes[0],
        Ok("Processed payload via RPC:event".to_owned())
    );
    assert_eq!(
        outcomes[1],
        Ok("Processed payload via RPC:event".to_owned())
    );
    assert!(
        matches!(&outcomes[2], Err(RpcError::Conflict(message)) if message.contains(&taken)),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[3], Err(RpcError::Invalid(message)) if message.contains("name")),
        "{outcomes:?}"
    );
    assert_eq!(
        stored(&logger, &fresh).await,
        ("event".to_owned(), "new".to_owned())
    );
    assert_eq!(
        stored(&logger, &taken).await,
        ("event".to_owned(), "first".to_owned())
    );

    let too_many = unique_name("batch-too-many");
    let oversized = (0..=MAX_BATCH_ENTRIES)
        .map(|at| batched(&too_many, "x", &format!("{too_many}-{at}")))
        .collect();
    let refused = rpc
        .log_entries(rpc_context(), oversized)
        .await
        .expect("RPC transport");
    match refused {
        Err(RpcError::Invalid(message)) => {
            assert!(message.contains("at most 1000 entries"), "{message}")
        }
        other => panic!("expected the call refused, got {other:?}"),
    }
    assert_eq!(logger.documents(doc! {"name": &too_many}).await, []);
    logger.stop().await.expect("clean shutdown");
}
