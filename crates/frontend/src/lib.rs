//! `switchboard-frontend`: serves the test page, whose buttons call the broker
//! from the browser. The page, its stylesheet and its script are compiled into
//! the binary, so the service needs no files, no CDN and no outbound network:
//! under systemd it runs with `PrivateNetwork=yes` on an inherited socket.
//!
//! The binary (`main.rs`) only reads the configuration and takes the listening
//! socket; tests call [`run`] with a listener of their own.

pub mod page;
pub mod settings;

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use switchboard_runtime::http::always_ready;
use switchboard_runtime::metrics::{self as runtime_metrics, Metrics};
use switchboard_runtime::{Shutdown, lifecycle};
use tokio::net::TcpListener;

use crate::page::{Site, SiteError};
use crate::settings::Settings;

/// The front-end accepts no request bodies; anything larger is refused early.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// The sockets the service serves on, bound (or inherited) by the caller.
#[derive(Debug)]
pub struct FrontendListeners {
    /// The page and its assets; socket name `http`.
    pub http: TcpListener,
    /// The metrics door (socket name `metrics`), if the front-end has one.
    pub metrics: Option<TcpListener>,
}

/// Why the service could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Site(#[from] SiteError),
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Prepares the page, reports READY and serves until `shutdown`, then drains.
pub async fn run(
    settings: Settings,
    listeners: FrontendListeners,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let site = Arc::new(Site::new(&settings.page.broker_url)?);
    let metrics = Metrics::new();
    let router = switchboard_runtime::http::standard_service(
        routes(site),
        always_ready(),
        MAX_BODY_BYTES,
        &metrics,
    );
    let metrics_door = runtime_metrics::spawn_door(listeners.metrics, &metrics);
    tracing::info!(
        addr = ?listeners.http.local_addr().ok(),
        broker_url = %settings.page.broker_url,
        "serving the test page"
    );
    lifecycle::status(&format!(
        "serving; the page calls the broker at {}",
        settings.page.broker_url
    ));
    lifecycle::ready();
    let served = switchboard_runtime::service::serve_http_with(
        listeners.http,
        router,
        shutdown,
        &settings.http,
    )
    .await
    .map_err(Error::Serve);
    if let Some(door) = metrics_door {
        door.close().await;
    }
    served
}

/// The page and its assets (health routes are added by the runtime).
pub fn routes(site: Arc<Site>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        .with_state(site)
}

async fn index(State(site): State<Arc<Site>>, headers: HeaderMap) -> Response {
    site.index(&headers)
}

async fn css(
    State(site): State<Arc<Site>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    site.css(&headers, query.as_deref())
}

async fn js(
    State(site): State<Arc<Site>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    site.js(&headers, query.as_deref())
}
