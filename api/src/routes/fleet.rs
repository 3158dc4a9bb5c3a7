//! `/v1/workers` and `/v1/queue`: the fleet's state, for the `fleet` role only. Neither names a
//! tenant, so neither shows a job, resource or tenant id.

use axum::extract::State;
use chrono::{DateTime, Utc};
use metasync_shared::db::job_reads::{self, Backlog};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::FleetReader;
use crate::error::ApiResult;
use crate::openapi::Authed;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(workers))
        .routes(routes!(queue))
}

#[derive(Debug, Serialize, ToSchema)]
struct WorkerItem {
    id: String,
    /// Whether its lease is current; a lapsed worker's deliveries go back to the queue
    /// when the reaper next runs.
    live: bool,
    /// When its Redis lease lapses unless its heartbeat renews it.
    lease_expires_at: Option<DateTime<Utc>>,
    /// Deliveries it holds.
    in_flight: u64,
    /// Jobs it runs at once (`null` until it announces it).
    concurrency: Option<u16>,
}

/// The workers' list.
#[derive(Debug, Serialize, ToSchema)]
struct Workers {
    items: Vec<WorkerItem>,
}

/// Every worker with a lease in Redis, live or lapsed-but-not-yet-reaped (`fleet` role).
#[utoipa::path(
    get,
    path = "/v1/workers",
    operation_id = "listWorkers",
    tag = "fleet",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The workers", body = Workers),
        Authed,
    ),
)]
async fn workers(
    State(state): State<AppState>,
    _caller: FleetReader,
) -> ApiResult<axum::Json<Workers>> {
    let items: Vec<WorkerItem> = state
        .queue
        .workers()
        .await?
        .into_iter()
        .map(|w| WorkerItem {
            id: w.worker,
            live: w.live,
            lease_expires_at: DateTime::from_timestamp_millis(w.lease_expires_ms),
            in_flight: w.in_flight,
            concurrency: w.concurrency,
        })
        .collect();
    Ok(axum::Json(Workers { items }))
}

#[derive(Debug, Serialize, ToSchema)]
struct QueueState {
    /// Deliveries waiting for a worker now.
    ready: u64,
    /// Deliveries waiting for their time (retries with backoff, deferred jobs).
    delayed: u64,
    /// Deliveries claimed by workers and not yet acked.
    in_flight: u64,
    /// Unfinished jobs by state, from PostgreSQL.
    jobs: Backlog,
}

/// The queue's depth from Redis and the jobs behind it from PostgreSQL (`fleet` role).
#[utoipa::path(
    get,
    path = "/v1/queue",
    operation_id = "readQueue",
    tag = "fleet",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The queue", body = QueueState),
        Authed,
    ),
)]
async fn queue(
    State(state): State<AppState>,
    _caller: FleetReader,
) -> ApiResult<axum::Json<QueueState>> {
    let (ready, delayed) = state.queue.depth().await?;
    let in_flight = state
        .queue
        .workers()
        .await?
        .iter()
        .map(|w| w.in_flight)
        .sum();
    let jobs = job_reads::backlog(&state.db).await?;
    Ok(axum::Json(QueueState {
        ready,
        delayed,
        in_flight,
        jobs,
    }))
}
