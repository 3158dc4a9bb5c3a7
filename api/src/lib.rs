//! The metasync REST API. Thin by design: it validates input, writes PostgreSQL, pushes job
//! deliveries to Redis and reads state back. It never connects to a customer database.

pub mod auth;
pub mod config;
pub mod edge;
pub mod error;
pub mod extract;
pub mod pagination;
pub mod routes;
pub mod startup;
pub mod state;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use std::future::Future;
use tokio::net::TcpListener;

use crate::error::ApiError;
pub use crate::state::AppState;

/// The whole HTTP surface, testable with `oneshot` and no socket.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(routes::resources::router())
        .merge(routes::jobs::router())
        .merge(routes::catalog::router())
        .merge(routes::health::router())
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(edge::MAX_BODY_BYTES))
        .layer(middleware::from_fn(edge::guard))
        .layer(middleware::from_fn(edge::record_request))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
