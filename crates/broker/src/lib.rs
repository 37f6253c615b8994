//! switchboard-broker: the API gateway. One URL for clients; HTTP in, and out
//! to auth (HTTP), logger (RPC, gRPC, HTTP or RabbitMQ) and mail (HTTP).
//!
//! The binary (`main.rs`) binds or inherits the listener and calls [`run`];
//! tests bind `127.0.0.1:0` and do the same.

pub mod api;
pub mod clients;
pub mod error;
pub mod layers;
pub mod payload;
pub mod settings;

use std::sync::Arc;

use axum::Router;
use switchboard_runtime::http::{ReadinessCheck, standard_service_with};
use switchboard_runtime::metrics::{self, Metrics};
use switchboard_runtime::{Shutdown, lifecycle};
use tokio::net::TcpListener;

pub use crate::error::Error;
pub use crate::settings::Settings;

/// The sockets the broker serves on.
#[derive(Debug)]
pub struct BrokerListeners {
    /// The HTTP door (socket name `http`).
    pub http: TcpListener,
    /// The metrics door (socket name `metrics`), if the broker has one.
    pub metrics: Option<TcpListener>,
}

/// Serves the broker until `shutdown`, then drains in-flight requests.
///
/// Tells systemd READY as soon as it serves: the downstream clients are built
/// but not connected, because the downstreams are socket-activated and may
/// start lazily; a downstream that is down costs its requests a 502, not the
/// broker its readiness.
pub async fn run(
    settings: Settings,
    listeners: BrokerListeners,
    shutdown: Shutdown,
) -> Result<(), Error> {
    settings.validate()?;
    let metrics = Metrics::new();
    let downstreams = Arc::new(clients::Downstreams::new(&settings, &metrics)?);
    // The AMQP connection outlives the shutdown request until every request
    // in flight has drained: a draining `via: amqp` still gets its confirm.
    let background_stop = Shutdown::new();
    let background = downstreams.start(&background_stop);
    let router = app(&settings, Arc::clone(&downstreams), &shutdown, &metrics);
    let metrics_door = metrics::spawn_door(listeners.metrics, &metrics);
    if let Ok(addr) = listeners.http.local_addr() {
        tracing::info!(%addr, default_log_via = %settings.downstream.default_log_via, "broker serving");
    }
    lifecycle::status("serving");
    lifecycle::ready();
    let served = switchboard_runtime::service::serve_http_with(
        listeners.http,
        router,
        shutdown.clone(),
        &settings.http,
    )
    .await
    .map_err(Error::Serve);
    background_stop.trigger();
    let _ = background.await;
    if let Some(door) = metrics_door {
        door.close().await;
    }
    served
}

/// The complete HTTP service: routes, the runtime's standard layers (request
/// id, tracing, body limit, health), rate limit on `/handle` and CORS.
pub fn app(
    settings: &Settings,
    downstreams: Arc<clients::Downstreams>,
    shutdown: &Shutdown,
    metrics: &Metrics,
) -> Router {
    let rate_limit = layers::rate_limit(
        settings.limits.rate_per_second,
        settings.limits.rate_burst,
        shutdown,
    );
    let (router, document) = api::api_router(rate_limit, &settings.admin).split_for_parts();
    let state = api::AppState {
        downstreams: Arc::clone(&downstreams),
        default_via: settings.downstream.default_log_via,
        log_limits: settings.limits.log_limits(),
        document: api::Document::new(&document),
    };
    let router = router.with_state(state);
    let readiness: ReadinessCheck = Arc::new(move || {
        let downstreams = Arc::clone(&downstreams);
        Box::pin(async move { api::readiness(&downstreams).await })
    });
    // CORS in front of the router: preflights are answered before routing and
    // rate limiting, as go-chi/cors did in front of the original's router.
    standard_service_with(
        router,
        readiness,
        settings.limits.max_body_bytes,
        metrics,
        layers::cors(),
    )
}
