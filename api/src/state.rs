//! What every handler shares.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use metasync_shared::custody::{Fingerprinter, SealingKey};
use metasync_shared::outbound::HostPolicy;
use metasync_shared::queue::Queue;
use metasync_shared::submit::Submitter;
use sqlx::PgPool;

use crate::auth::{InternalKeys, JwtVerifier};
use crate::quotas::Quotas;
use crate::wake::JobEvents;

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub queue: Queue,
    /// Wakes long-polls when a job changes.
    pub job_events: JobEvents,
    /// Seals passwords; cannot open them (only workers hold the private keys).
    pub sealing_key: SealingKey,
    /// Fingerprints passwords, to compare a re-sent one with the stored one.
    pub fingerprinter: Fingerprinter,
    pub jwt: JwtVerifier,
    /// The keys of `/internal/*` (empty: those routes accept nothing).
    pub internal_keys: InternalKeys,
    /// Creates jobs and pushes their deliveries.
    pub submitter: Submitter,
    /// Per-tenant buckets and caps.
    pub quotas: Quotas,
    /// Which hosts a resource may name.
    pub outbound: HostPolicy,
    /// How long a test-connection request waits for a worker's answer.
    pub connection_test_timeout: std::time::Duration,
    /// Set once shutdown begins: `/readyz` answers 503 while requests drain.
    pub draining: Arc<AtomicBool>,
}
