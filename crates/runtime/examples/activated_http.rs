//! A minimal service used by the socket-activation test: it serves `/healthz`
//! and `/socket` (which says whether the `http` socket was inherited) on the
//! socket named `http`, or on 127.0.0.1:0 when none was passed.

use axum::Router;
use axum::routing::get;
use switchboard_runtime::http::{always_ready, standard_service};
use switchboard_runtime::{Listeners, Shutdown, lifecycle};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listeners = Listeners::from_env()?;
    let inherited = listeners.has("http");
    let listener = listeners.tcp("http", "127.0.0.1:0".parse()?).await?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals()?;
    let mode = if inherited { "inherited" } else { "bound" };
    let router = Router::new().route("/socket", get(move || async move { mode }));
    lifecycle::ready();
    switchboard_runtime::service::serve_http(
        listener,
        standard_service(router, always_ready(), 1024),
        shutdown,
    )
    .await?;
    Ok(())
}
