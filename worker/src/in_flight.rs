//! The attempts this process is running, each by job id and lease token. The heartbeat renews
//! the PostgreSQL leases of exactly these, so an attempt that ends without recording its
//! outcome (its write failed, or it panicked) stops being renewed the moment it ends, and its
//! job is taken over once the lease lapses while this process lives on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use metasync_shared::ids::JobId;
use uuid::Uuid;

/// The registry of in-flight attempts. Cheap to clone; every clone is the same registry.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<HashMap<JobId, Uuid>>>);

impl InFlight {
    /// Registers an attempt until the returned guard is dropped (however the attempt ends:
    /// returned, failed, panicked or cancelled by shutdown).
    pub fn hold(&self, job: JobId, lease_token: Uuid) -> Held {
        self.entries().insert(job, lease_token);
        Held {
            in_flight: self.clone(),
            job,
            lease_token,
        }
    }

    /// The attempts to renew: `(job id, lease token)`.
    pub fn leases(&self) -> Vec<(JobId, Uuid)> {
        self.entries().iter().map(|(j, t)| (*j, *t)).collect()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Uuid>> {
        // Nothing panics while holding the lock, so a poisoned map is still consistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An attempt's place in [`InFlight`]; dropping it ends the renewal of its lease.
#[derive(Debug)]
pub struct Held {
    in_flight: InFlight,
    job: JobId,
    lease_token: Uuid,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut entries = self.in_flight.entries();
        // A later attempt of the same job in this process holds a newer token: leave it.
        if entries.get(&self.job) == Some(&self.lease_token) {
            entries.remove(&self.job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_is_renewed_only_while_held() {
        let in_flight = InFlight::default();
        let job = JobId::new_v7();
        let first = in_flight.hold(job, Uuid::now_v7());
        assert_eq!(in_flight.leases().len(), 1);
        let token = Uuid::now_v7();
        let second = in_flight.hold(job, token);
        drop(first);
        assert_eq!(in_flight.leases(), vec![(job, token)]);
        drop(second);
        assert!(in_flight.leases().is_empty());
    }

    #[test]
    fn a_panicking_attempt_drops_out() {
        let in_flight = InFlight::default();
        let held = in_flight.clone();
        let _ = std::panic::catch_unwind(move || {
            let _attempt = held.hold(JobId::new_v7(), Uuid::now_v7());
            panic!("the attempt panics");
        });
        assert!(in_flight.leases().is_empty());
    }
}
