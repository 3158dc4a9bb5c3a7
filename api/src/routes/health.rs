//! Liveness, readiness and metrics: no authentication, for probes and Prometheus.

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
        .routes(routes!(render_metrics))
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

/// Which dependencies answer.
#[derive(Serialize, ToSchema)]
struct Readiness {
    postgres: bool,
    redis: bool,
}

/// Readiness: both PostgreSQL and Redis answer.
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
    let db = sqlx::query("select 1").execute(&state.db).await.is_ok();
    let redis = state.queue.depth().await.is_ok();
    let status = if db && redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(Readiness {
            postgres: db,
            redis,
        }),
    )
        .into_response()
}

/// Prometheus metrics (see `docs/metrics.md`).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics in Prometheus text format", body = String, content_type = "text/plain"),
        Edge,
        (status = 404, response = problem::NotFound),
    ),
)]
async fn render_metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => handle.render().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
