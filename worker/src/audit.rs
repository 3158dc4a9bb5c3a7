//! The audit of this worker's claimed deliveries: a delivery in its claimed list whose job is
//! not running under one of its in-flight attempts is handed back to its ready list, so no
//! delivery can hide a job. Such deliveries appear when Redis restarts from disk (its claimed
//! lists are restored with deliveries acknowledged after the last write it kept), or when an
//! acknowledgement fails for longer than its retries. The reconciler cannot see them (their
//! jobs are `pending`) and the reaper does not touch them (their worker is alive).
//!
//! A delivery is handed back only when two runs in a row saw it unheld, since a delivery spends
//! a moment between its pickup and its claim, and between its attempt's end and its
//! acknowledgement, outside the in-flight attempts. With a run every heartbeat, a stale
//! delivery is back in its ready list within two heartbeats (2 × lease / 3). Handing back a
//! delivery that was still being handled after all costs one redundant pickup, never a second
//! run: the job's PostgreSQL lease fences it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use metasync_shared::ids::JobId;
use metasync_shared::maintenance::DutyFuture;
use metasync_shared::queue::Delivery;

use crate::in_flight::InFlight;
use crate::pipeline::WorkerContext;

/// The audit as a maintenance duty: each call runs it once. The deliveries seen unheld on the
/// previous run carry over from call to call.
pub fn claimed_audit(in_flight: InFlight) -> impl FnMut(WorkerContext) -> DutyFuture + Send {
    let unheld_before: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    move |ctx| {
        let in_flight = in_flight.clone();
        let unheld_before = unheld_before.clone();
        Box::pin(async move {
            let claimed = ctx.queue.claimed(&ctx.worker_id).await?;
            let held: HashSet<JobId> = in_flight.leases().into_iter().map(|(j, _)| j).collect();
            let unheld = unheld_deliveries(&claimed, &held);
            let stale = {
                let mut before = unheld_before.lock().unwrap_or_else(PoisonError::into_inner);
                let stale = seen_twice(&before, &unheld);
                *before = unheld;
                stale
            };
            if stale.is_empty() {
                return Ok(());
            }
            let moved = ctx.queue.requeue(&ctx.worker_id, &stale).await?;
            if moved > 0 {
                tracing::warn!(
                    deliveries = moved,
                    "handed back claimed deliveries that no attempt of this worker holds"
                );
                metrics::counter!("metasync_deliveries_audited_total").increment(moved as u64);
            }
            Ok(())
        })
    }
}

/// The claimed deliveries (as stored, with their multiplicity) whose job is not held.
fn unheld_deliveries(claimed: &[String], held: &HashSet<JobId>) -> HashMap<String, usize> {
    let mut unheld = HashMap::new();
    for payload in claimed {
        let is_held = Delivery::parse(payload).is_some_and(|d| held.contains(&d.job_id));
        if !is_held {
            *unheld.entry(payload.clone()).or_insert(0) += 1;
        }
    }
    unheld
}

/// The deliveries unheld on both runs, each as many times as it was on both.
fn seen_twice(before: &HashMap<String, usize>, now: &HashMap<String, usize>) -> Vec<String> {
    let mut stale = Vec::new();
    for (payload, n) in now {
        let times = before.get(payload).copied().unwrap_or(0).min(*n);
        stale.extend(std::iter::repeat_n(payload.clone(), times));
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;
    use metasync_shared::ids::TenantId;

    #[test]
    fn only_deliveries_unheld_on_two_runs_are_stale() {
        let running = Delivery::manual(JobId::new_v7(), TenantId::new("t"));
        let lost = Delivery::manual(JobId::new_v7(), TenantId::new("t"));
        let fresh = Delivery::manual(JobId::new_v7(), TenantId::new("t"));
        let held = HashSet::from([running.job_id]);
        let first = unheld_deliveries(&[running.payload(), lost.payload(), lost.payload()], &held);
        assert!(seen_twice(&HashMap::new(), &first).is_empty());
        let second =
            unheld_deliveries(&[running.payload(), lost.payload(), fresh.payload()], &held);
        assert_eq!(seen_twice(&first, &second), vec![lost.payload()]);
    }
}
