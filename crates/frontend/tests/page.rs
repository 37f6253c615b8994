//! The page and its assets over HTTP: content types, cache headers,
//! revalidation, the injected broker URL and the security headers.

mod common;

use reqwest::StatusCode;
use reqwest::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    X_CONTENT_TYPE_OPTIONS,
};
use switchboard_runtime::http::Envelope;

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> String {
    response
        .headers()
        .get(&name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_owned()
}

/// The `?v=` of an asset reference in the page.
fn asset_version(page: &str, asset: &str) -> String {
    let marker = format!("{asset}?v=");
    let start = page.find(&marker).expect("asset reference") + marker.len();
    page[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect()
}

#[tokio::test]
async fn the_page_carries_the_configured_broker_url_and_a_strict_policy() {
    let service = common::start("https://broker.example.com:8443/api/").await;
    let response = reqwest::get(format!("{}/", service.base))
        .await
        .expect("GET /");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(header(&response, CACHE_CONTROL), "no-cache");
    assert_eq!(header(&response, X_CONTENT_TYPE_OPTIONS), "nosniff");
    let policy = header(&response, CONTENT_SECURITY_POLICY);
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(
        policy.contains("connect-src 'self' https://broker.example.com:8443;"),
        "{policy}"
    );
    let page = response.text().await.expect("text");
    assert!(
        page.contains(
            r#"<meta name="switchboard-broker-url" content="https://broker.example.com:8443/api">"#
        ),
        "{page}"
    );
    assert!(page.contains("<h1>Test microservices</h1>"), "{page}");
    assert!(!page.contains("cdn."), "the page must not load from a CDN");
    service.stop().await;
}

#[tokio::test]
async fn assets_have_their_content_types_and_cache_headers() {
    let service = common::start("http://127.0.0.1:8080").await;
    let page = reqwest::get(format!("{}/", service.base))
        .await
        .expect("GET /")
        .text()
        .await
        .expect("text");
    let client = reqwest::Client::new();
    for (path, content_type, must_contain) in [
        (
            "/static/app.css",
            "text/css; charset=utf-8",
            "--error: #b3261e",
        ),
        (
            "/static/app.js",
            "text/javascript; charset=utf-8",
            "switchboard-broker-url",
        ),
    ] {
        let version = asset_version(&page, path);
        assert_eq!(version.len(), 16, "{path} version in {page}");

        let versioned = client
            .get(format!("{}{path}?v={version}", service.base))
            .send()
            .await
            .expect("versioned asset");
        assert_eq!(versioned.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&versioned, CONTENT_TYPE), content_type);
        assert_eq!(
            header(&versioned, CACHE_CONTROL),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(header(&versioned, X_CONTENT_TYPE_OPTIONS), "nosniff");
        let etag = header(&versioned, ETAG);
        let body = versioned.text().await.expect("text");
        assert!(body.contains(must_contain), "{path}");

        // Unversioned or stale references must revalidate.
        for url in [
            format!("{}{path}", service.base),
            format!("{}{path}?v=0000000000000000", service.base),
        ] {
            let response = client.get(&url).send().await.expect("asset");
            assert_eq!(response.status(), StatusCode::OK, "{url}");
            assert_eq!(header(&response, CACHE_CONTROL), "no-cache", "{url}");
        }

        let revalidated = client
            .get(format!("{}{path}", service.base))
            .header(IF_NONE_MATCH, &etag)
            .send()
            .await
            .expect("conditional");
        assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(header(&revalidated, ETAG), etag);
        assert!(revalidated.text().await.expect("text").is_empty());
    }
    service.stop().await;
}

#[tokio::test]
async fn the_page_revalidates_with_its_etag() {
    let service = common::start("http://127.0.0.1:8080").await;
    let client = reqwest::Client::new();
    let first = client
        .get(format!("{}/", service.base))
        .send()
        .await
        .expect("GET /");
    let etag = header(&first, ETAG);
    let again = client
        .get(format!("{}/", service.base))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .expect("conditional GET /");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    // A different broker URL is a different page.
    let other = common::start("http://10.0.0.5:8080").await;
    let other_etag = header(
        &client
            .get(format!("{}/", other.base))
            .send()
            .await
            .expect("GET /"),
        ETAG,
    );
    assert_ne!(etag, other_etag);
    service.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn health_endpoints_answer_and_unknown_paths_are_404() {
    let service = common::start("http://127.0.0.1:8080").await;
    for path in ["/healthz", "/readyz"] {
        let response = reqwest::get(format!("{}{path}", service.base))
            .await
            .expect(path);
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let envelope: Envelope = response.json().await.expect("envelope");
        assert!(!envelope.error);
    }
    let response = reqwest::get(format!("{}/static/other.js", service.base))
        .await
        .expect("unknown asset");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = reqwest::Client::new()
        .post(format!("{}/", service.base))
        .send()
        .await
        .expect("POST /");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    service.stop().await;
}

/// The metrics door counts each answer under its route, and an unknown
/// path under `other`: a client cannot mint labels.
#[tokio::test]
async fn answers_are_counted_by_route_on_the_metrics_door() {
    let service = common::start("http://127.0.0.1:8080").await;
    for path in ["/", "/", "/healthz", "/static/other.js", "/wp-admin.php"] {
        reqwest::get(format!("{}{path}", service.base))
            .await
            .expect(path);
    }
    let refused = reqwest::Client::new()
        .delete(format!("{}/static/app.js", service.base))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = reqwest::get(format!("{}/metrics", service.metrics))
        .await
        .expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let exposition = response.text().await.expect("exposition");
    let count = |series: &str| switchboard_testkit::metrics::sample(&exposition, series);
    assert_eq!(
        count(r#"switchboard_http_requests_total{route="/",method="GET",status="200"}"#),
        Some(2.0),
        "{exposition}"
    );
    assert_eq!(
        count(r#"switchboard_http_requests_total{route="/healthz",method="GET",status="200"}"#),
        Some(1.0),
        "{exposition}"
    );
    assert_eq!(
        count(r#"switchboard_http_requests_total{route="other",method="GET",status="404"}"#),
        Some(2.0),
        "{exposition}"
    );
    // A method a route does not take is not its route's either.
    assert_eq!(
        count(r#"switchboard_http_requests_total{route="other",method="DELETE",status="405"}"#),
        Some(1.0),
        "{exposition}"
    );
    assert_eq!(
        count(r#"switchboard_http_request_duration_seconds_count{route="/",method="GET"}"#),
        Some(2.0),
        "{exposition}"
    );
    assert!(!exposition.contains("wp-admin"), "{exposition}");
    assert!(
        count("process_open_fds").is_some_and(|fds| fds > 0.0),
        "{exposition}"
    );
    // The API door does not serve the metrics; the metrics door serves nothing else.
    let api = reqwest::get(format!("{}/metrics", service.base))
        .await
        .expect("API door");
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    let other = reqwest::get(format!("{}/", service.metrics))
        .await
        .expect("metrics door");
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    service.stop().await;
}

#[tokio::test]
async fn an_unusable_broker_url_stops_the_service_with_the_reason() {
    let service = common::start("http://evil\"><script>").await;
    let result = service.task.await.expect("no panic");
    let err = result.expect_err("must refuse");
    assert!(err.to_string().contains("page.broker_url"), "{err}");
}
