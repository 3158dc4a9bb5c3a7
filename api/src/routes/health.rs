//! Liveness and readiness: no authentication, for probes. Served on the public port and on the
//! operations listener (`metasync_shared::ops`), which also serves `/metrics`.

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
}

/// Ready when both PostgreSQL and Redis answer.
pub async fn readiness(state: &AppState) -> (bool, serde_json::Value) {
    let db = sqlx::query("select 1").execute(&state.db).await.is_ok();
    let redis = state.queue.depth().await.is_ok();
    (
        db && redis,
        serde_json::json!({ "postgres": db, "redis": redis }),
    )
}

async fn ready(State(state): State<AppState>) -> Response {
    let (ok, body) = readiness(&state).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
