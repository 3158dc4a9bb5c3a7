//! Liveness and readiness: no authentication, for probes. Served on the public port and on the
//! operations listener (`metasync_shared::ops`), which also serves `/metrics`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::{Edge, problem};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(alive))
        .routes(routes!(ready))
}

/// Liveness: the process serves requests.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain", example = "ok"), Edge),
)]
async fn alive() -> &'static str {
    "ok"
}

/// Which dependencies answer, and whether the process is shutting down.
#[derive(Serialize, ToSchema)]
struct Readiness {
    postgres: bool,
    redis: bool,
    /// Shutdown has begun: in-flight requests drain, new ones belong elsewhere.
    draining: bool,
}

/// Ready when both PostgreSQL and Redis answer and shutdown has not begun; the operations
/// listener's `/readyz` too.
pub async fn readiness(state: &AppState) -> (bool, serde_json::Value) {
    let draining = state.draining.load(Ordering::Relaxed);
    let postgres = sqlx::query("select 1").execute(&state.db).await.is_ok();
    let redis = state.queue.depth().await.is_ok();
    let body = serde_json::to_value(Readiness {
        postgres,
        redis,
        draining,
    })
    .unwrap_or_default();
    (postgres && redis && !draining, body)
}

/// Readiness: both PostgreSQL and Redis answer, and the process is not shutting down.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        Edge,
        (status = 503, response = problem::Unavailable),
    ),
)]
async fn ready(State(state): State<AppState>) -> Response {
    let (ok, body) = readiness(&state).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
