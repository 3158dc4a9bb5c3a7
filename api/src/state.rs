//! What every handler shares.

use metasync_shared::crypto::SecretBox;
use metasync_shared::queue::Queue;
use metasync_shared::submit::Submitter;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth::JwtVerifier;

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub queue: Queue,
    pub secrets: SecretBox,
    pub jwt: JwtVerifier,
    /// Creates jobs and pushes their deliveries.
    pub submitter: Submitter,
    pub metrics: Option<PrometheusHandle>,
}
