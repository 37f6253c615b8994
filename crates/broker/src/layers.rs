//! Tower layers the broker adds around its routes: CORS as the original Go
//! broker configured go-chi/cors, and the per-client-IP rate limit on `/handle`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::middleware::NoOpMiddleware;
use switchboard_runtime::Shutdown;
use switchboard_runtime::http::{ApiError, REQUEST_ID_HEADER};
use tower_governor::GovernorLayer;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// CORS of the original broker: any `http://` or `https://` origin (mirrored,
/// since credentials forbid `*`), GET/POST/PUT/DELETE/OPTIONS, the headers
/// Accept, Authorization, Content-Type and X-CSRF-Token, `Link` (and our
/// `x-request-id`) exposed, credentials allowed, preflights cached for 300 s.
pub fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(|origin: &HeaderValue, _| {
            let origin = origin.as_bytes();
            origin.starts_with(b"https://") || origin.starts_with(b"http://")
        }))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::ACCEPT,
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-csrf-token"),
        ])
        .expose_headers([header::LINK, HeaderName::from_static(REQUEST_ID_HEADER)])
        .allow_credentials(true)
        .max_age(Duration::from_secs(300))
}

/// Keys the rate limit by the peer's IP address (`ConnectInfo`, which
/// `serve_http` provides). Requests without one (in-process tests) share a key
/// instead of failing.
#[derive(Debug, Clone, Copy)]
pub struct PeerIp;

impl KeyExtractor for PeerIp {
    type Key = IpAddr;

    fn extract<T>(
        &self,
        req: &axum::http::Request<T>,
    ) -> Result<Self::Key, tower_governor::GovernorError> {
        Ok(req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
    }
}

pub type RateLimit = GovernorLayer<PeerIp, NoOpMiddleware, axum::body::Body>;

/// The `/handle` rate limit: `per_second` sustained, `burst` at once, per
/// client IP; `None` (no limit) when either is 0. Answers 429 with the JSON
/// envelope and `retry-after`. Stale per-IP state is dropped every minute
/// until `shutdown`.
pub fn rate_limit(per_second: u32, burst: u32, shutdown: &Shutdown) -> Option<RateLimit> {
    if per_second == 0 || burst == 0 {
        return None;
    }
    // tower_governor's `per_second(n)` sets the *interval* to n seconds; the
    // rate we mean is one token every 1/n s.
    let interval =
        Duration::from_nanos(1_000_000_000 / u64::from(per_second)).max(Duration::from_nanos(1));
    let config: GovernorConfig<PeerIp, NoOpMiddleware> = GovernorConfigBuilder::default()
        .period(interval)
        .burst_size(burst)
        .key_extractor(PeerIp)
        .finish()?;
    let config = Arc::new(config);
    let limiter = config.limiter().clone();
    let stop = shutdown.requested();
    tokio::spawn(async move {
        tokio::pin!(stop);
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticker.tick() => limiter.retain_recent(),
            }
        }
    });
    Some(GovernorLayer::new(config).error_handler(too_many_requests))
}

fn too_many_requests(error: tower_governor::GovernorError) -> Response {
    match error {
        tower_governor::GovernorError::TooManyRequests { wait_time, headers } => {
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many requests from this address; retry in {wait_time} s"),
            )
            .into_response();
            if let Some(headers) = headers {
                response.headers_mut().extend(headers);
            }
            response
        }
        other => {
            tracing::warn!(error = %other, "rate limiter failed");
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate limit unavailable").into_response()
        }
    }
}
