//! The metasync REST API. Thin by design: it validates input, writes PostgreSQL, pushes job
//! deliveries to Redis and reads state back. It never connects to a customer database.

pub mod auth;
pub mod config;
pub mod edge;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod pagination;
pub mod quotas;
pub mod routes;
pub mod startup;
pub mod state;
pub mod wake;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
pub use crate::state::AppState;

/// The whole HTTP surface, testable with `oneshot` and no socket. Outermost: the request id
/// (the caller's if usable, else a new one; returned on every response) and the access log.
pub fn app(state: AppState) -> Router {
    let (router, _) = openapi::routes().split_for_parts();
    router
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(edge::known_query_parameters))
        .layer(DefaultBodyLimit::max(edge::MAX_BODY_BYTES))
        .layer(middleware::from_fn(edge::guard))
        .layer(middleware::from_fn(edge::record_request))
        .layer(PropagateRequestIdLayer::new(edge::REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(edge::request_span)
                .on_request(())
                .on_response(edge::log_response)
                // The access line has the status; the error itself is logged where it arose.
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(edge::REQUEST_ID, edge::NewRequestId))
        .layer(middleware::map_request(edge::drop_unusable_request_id))
        .with_state(state)
}

/// Most time given to open connections (long-polls included) once shutdown has begun.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves until `shutdown` resolves, then drains in-flight requests (for at most [`DRAIN`]).
/// Each connection has `header_timeout` to send a request's headers, when it opens and again
/// after every response, so slow-header and idle connections cannot be held open.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app(state);
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only: the header timeout must run from the first byte, and version sniffing
    // (hyper-util's auto builder) would wait for a silent client without one.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone().map_request(
            |request: axum::http::Request<Incoming>| request.map(axum::body::Body::new),
        ));
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(drain = ?DRAIN, "connections still open after the drain time; closing them");
    }
    Ok(())
}
