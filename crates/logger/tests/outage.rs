//! MongoDB going away and coming back: writes fail fast with the right error
//! on every door while it is gone, and the logger recovers by itself.

mod common;

use std::time::{Duration, Instant};

use common::{Logger, grpc_request, rpc_context, settings};
use mongodb::bson::doc;
use serde_json::json;
use switchboard_testkit::{MongoDb, servers_disabled};
use switchboard_wire::rpc::RpcError;
use tonic::Code;

/// Generous against a loaded 2-core machine, yet far below what an unbounded
/// wait (the driver's 30 s default server selection) would take.
const FAIL_FAST: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread")]
async fn writes_fail_fast_while_mongodb_is_down_and_recover_after() {
    if servers_disabled() {
        return;
    }
    let mut mongo = MongoDb::start().expect("own MongoDB-compatible server");
    let logger = Logger::start(settings(&mongo.url())).await;
    let rpc = logger.rpc_client().await;
    let grpc = &mut logger.grpc_client().await;
    let (status, _) = logger
        .post_log(json!({"name": "before", "data": "up"}))
        .await;
    assert_eq!(status, 202);

    tokio::task::block_in_place(|| mongo.stop());

    // Repeat, so both the first failure (which discovers the outage) and the
    // ones after it are checked.
    for round in 0..3 {
        let started = Instant::now();
        let (status, body) = logger
            .post_log(json!({"name": "during", "data": "down"}))
            .await;
        assert_eq!(status, 503, "round {round}: {body}");
        assert_eq!(body["error"], true);
        eprintln!("round {round}: HTTP failed after {:?}", started.elapsed());
        assert!(
            started.elapsed() < FAIL_FAST,
            "HTTP took {:?}",
            started.elapsed()
        );

        let started = Instant::now();
        let status = grpc
            .write_log(grpc_request("during", "down"))
            .await
            .expect_err("gRPC must fail");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            started.elapsed() < FAIL_FAST,
            "gRPC took {:?}",
            started.elapsed()
        );

        let started = Instant::now();
        let reply = rpc
            .log_info(rpc_context(), "during".into(), "down".into())
            .await
            .expect("RPC transport");
        assert!(matches!(reply, Err(RpcError::Unavailable(_))), "{reply:?}");
        assert!(
            started.elapsed() < FAIL_FAST,
            "RPC took {:?}",
            started.elapsed()
        );
    }
    let (status, body) = logger.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("mongodb"),
        "{body}"
    );
    let (status, _) = logger.get("/logs").await;
    assert_eq!(status, 503);

    tokio::task::block_in_place(|| mongo.start_again()).expect("restart MongoDB");

    // The logger notices by itself; no restart of the logger.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = logger
            .post_log(json!({"name": "after", "data": "up again"}))
            .await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "no recovery: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    grpc.write_log(grpc_request("after", "grpc"))
        .await
        .expect("gRPC after recovery");
    let reply = rpc
        .log_info(rpc_context(), "after".into(), "rpc".into())
        .await
        .expect("RPC transport");
    assert!(reply.is_ok(), "{reply:?}");
    let (status, _) = logger.get("/readyz").await;
    assert_eq!(status, 200);

    assert_eq!(logger.documents(doc! {"name": "before"}).await.len(), 1);
    assert_eq!(logger.documents(doc! {"name": "during"}).await.len(), 0);
    assert_eq!(logger.documents(doc! {"name": "after"}).await.len(), 3);
    logger.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_logger_waits_for_mongodb_before_it_serves() {
    if servers_disabled() {
        return;
    }
    let mut mongo = MongoDb::start().expect("own MongoDB-compatible server");
    tokio::task::block_in_place(|| mongo.stop());
    let url = mongo.url();
    let starter = tokio::spawn(async move { Logger::start(settings(&url)).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!starter.is_finished(), "served before MongoDB answered");
    tokio::task::block_in_place(|| mongo.start_again()).expect("start MongoDB");
    let logger = tokio::time::timeout(Duration::from_secs(30), starter)
        .await
        .expect("ready after MongoDB came up")
        .expect("start task");
    let (status, _) = logger
        .post_log(json!({"name": "late", "data": "start"}))
        .await;
    assert_eq!(status, 202);
    logger.stop().await.expect("clean shutdown");
}
