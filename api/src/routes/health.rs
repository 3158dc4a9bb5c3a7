//! Liveness, readiness and metrics: no authentication, for probes and Prometheus.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
}

/// Ready when both PostgreSQL and Redis answer.
async fn ready(State(state): State<AppState>) -> Response {
    let db = sqlx::query("select 1").execute(&state.db).await.is_ok();
    let redis = state.queue.depth().await.is_ok();
    let status = if db && redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({ "postgres": db, "redis": redis })),
    )
        .into_response()
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => handle.render().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
