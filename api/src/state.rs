//! What every handler shares.

use std::sync::Arc;

use metasync_shared::crypto::SecretBox;
use metasync_shared::queue::Queue;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth::JwtKeys;

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub queue: Queue,
    pub secrets: SecretBox,
    pub jwt: Arc<JwtKeys>,
    /// Attempts a new job gets before it ends `failed`.
    pub max_attempts: i32,
    pub metrics: Option<PrometheusHandle>,
}
