//! A worker's maintenance. Its own duties, each on its own task so neither ever waits behind
//! other work: the Redis heartbeat (the lease of its claimed deliveries) and the PostgreSQL
//! leases of its in-flight attempts. It also stands for election as maintenance leader and,
//! while it leads, runs the fleet-wide duties (`metasync_shared::maintenance`).

use metasync_shared::db::jobs;
use metasync_shared::maintenance::{Duty, DutyFuture, DutySet, Fleet, Participant};

use crate::in_flight::InFlight;
use crate::pipeline::WorkerContext;

/// Registers the worker before it takes any delivery, so a crash right after its first pickup
/// is still covered by a lease that can lapse.
pub async fn register(ctx: &WorkerContext, concurrency: u16) -> anyhow::Result<()> {
    ctx.queue
        .worker_heartbeat(&ctx.worker_id, ctx.lease, concurrency)
        .await?;
    ctx.readiness.beat();
    Ok(())
}

/// The worker's running maintenance: its own duties and its candidacy for leader.
pub struct Maintenance {
    own: DutySet,
    fleet: Option<Participant>,
}

/// Starts the worker's own duties and, unless turned off, its candidacy for leader.
/// `in_flight` holds the attempts whose PostgreSQL leases the heartbeat renews.
pub fn spawn(ctx: WorkerContext, in_flight: InFlight, concurrency: u16) -> Maintenance {
    let heartbeat_every = ctx.lease / 3;
    let mut own = DutySet::default();
    // Per worker, not the leader's: only this process knows which attempts it holds.
    own.spawn(
        Duty::new("claimed_audit", heartbeat_every),
        ctx.clone(),
        crate::audit::claimed_audit(in_flight.clone()),
    );
    let renew = move |ctx: WorkerContext| -> DutyFuture {
        let attempts = in_flight.leases();
        Box::pin(async move {
            if !attempts.is_empty() {
                jobs::renew_leases(&ctx.db, &attempts, ctx.lease).await?;
            }
            Ok(())
        })
    };
    own.spawn(
        Duty::new("lease_renewal", heartbeat_every).renewing("attempts"),
        ctx.clone(),
        renew,
    );
    own.spawn(
        Duty::new("redis_heartbeat", heartbeat_every).renewing("worker"),
        ctx.clone(),
        move |ctx: WorkerContext| -> DutyFuture {
            Box::pin(async move {
                ctx.queue
                    .worker_heartbeat(&ctx.worker_id, ctx.lease, concurrency)
                    .await?;
                ctx.readiness.beat();
                Ok(())
            })
        },
    );
    let fleet = ctx.maintenance.stand_for_leader.then(|| {
        let fleet = Fleet {
            db: ctx.db.clone(),
            queue: ctx.queue.clone(),
            submitter: ctx.submitter.clone(),
            settings: ctx.maintenance.settings(),
        };
        Participant::start(fleet, ctx.worker_id.clone())
    });
    Maintenance { own, fleet }
}

impl Maintenance {
    /// Resigns the maintenance lease if held, then stops every duty and waits until none
    /// runs, so that a heartbeat in flight cannot renew the worker's lease after shutdown has
    /// released it.
    pub async fn stop(self) {
        if let Some(fleet) = self.fleet {
            fleet.stop().await;
        }
        self.own.stop().await;
    }
}
