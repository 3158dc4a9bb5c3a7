//! The metasync REST API. Thin by design: it validates input, writes PostgreSQL, pushes job
//! deliveries to Redis and reads state back. It never connects to a customer database.

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod pagination;
pub mod routes;
pub mod startup;
pub mod state;

use std::future::Future;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
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
        .layer(middleware::from_fn(record_request))
        .with_state(state)
}

/// Request count and latency by route template (never by id: labels stay low-cardinality).
async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("metasync_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("metasync_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
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
