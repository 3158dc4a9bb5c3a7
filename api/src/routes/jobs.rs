//! `/v1/jobs`: job state by id (with optional long-poll) and job listings.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metasync_shared::db::jobs::{self, Attempt, Job, JobFilter};
use metasync_shared::domain::JobState;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppPath, AppQuery};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", get(list))
        .route("/v1/jobs/{id}", get(read))
}

/// A job as the API returns it.
#[derive(Debug, Serialize)]
pub struct JobDocument {
    #[serde(flatten)]
    pub job: Job,
    #[serde(skip_serializing_if = "Option::is_none", rename = "attempt_history")]
    pub attempt_history: Option<Vec<Attempt>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deduplicated: Option<bool>,
}

/// Pushes deliveries for new jobs. A Redis failure is logged, not returned: the job is safe in
/// PostgreSQL and the workers' reconciler pushes any queued job whose delivery is missing.
pub async fn deliver(state: &AppState, job_ids: &[Uuid]) {
    if let Err(e) = state.queue.push(job_ids).await {
        tracing::warn!(error = %e, jobs = job_ids.len(), "delivery push failed; reconciler will retry");
        metrics::counter!("metasync_delivery_push_failures_total").increment(1);
    }
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    /// Long-poll: wait up to this many seconds (max 60) for the job's state to change.
    wait: Option<u64>,
}

/// How often a long-poll re-reads the job row.
const WAIT_POLL: Duration = Duration::from_millis(50);
const MAX_WAIT: Duration = Duration::from_secs(60);

async fn read(
    State(state): State<AppState>,
    tenant: Tenant,
    AppPath(id): AppPath<Uuid>,
    AppQuery(query): AppQuery<ReadQuery>,
) -> ApiResult<Response> {
    let mut job = jobs::get(&state.db, tenant.id(), id)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    if let Some(wait) = query.wait {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait).min(MAX_WAIT);
        let seen = (job.state, job.attempts);
        while !job.state.is_terminal() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(WAIT_POLL).await;
            job = jobs::get(&state.db, tenant.id(), id)
                .await?
                .ok_or(ApiError::NotFound("job"))?;
            if (job.state, job.attempts) != seen {
                break;
            }
        }
    }
    let attempt_history = Some(jobs::attempts(&state.db, id).await?);
    Ok(axum::Json(JobDocument {
        job,
        attempt_history,
        deduplicated: None,
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    resource_id: Option<Uuid>,
    state: Option<String>,
    cursor: Option<Uuid>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(query): AppQuery<ListQuery>,
) -> ApiResult<Response> {
    let job_state = query
        .state
        .as_deref()
        .map(|s| {
            JobState::parse(s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "unknown state `{s}`: expected queued, running, retrying, succeeded, failed or cancelled"
                ))
            })
        })
        .transpose()?;
    let limit = query.limit.unwrap_or(100).clamp(1, 500);
    let filter = JobFilter {
        resource_id: query.resource_id,
        state: job_state,
        before: query.cursor,
        limit,
    };
    let items = jobs::list(&state.db, tenant.id(), &filter).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|j| j.id))
        .flatten();
    Ok(axum::Json(json!({ "items": items, "next_cursor": next_cursor })).into_response())
}
