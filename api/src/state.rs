//! What every handler shares.

use std::sync::Arc;

use metasync_shared::crypto::SecretBox;
use metasync_shared::queue::Queue;
use metasync_shared::submit::Submitter;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth::JwtKeys;

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub queue: Queue,
    pub secrets: SecretBox,
    pub jwt: Arc<JwtKeys>,
    /// Creates jobs and pushes their deliveries.
    pub submitter: Submitter,
    pub metrics: Option<PrometheusHandle>,
}
