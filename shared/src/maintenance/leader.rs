//! Leader election for the fleet-wide duties (River's shape): one row in
//! `maintenance_leader`, taken or renewed by one guarded upsert. The leader renews its term every
//! third of the lease on its own task; a follower tries again when the holder's term ends (at
//! most a third of a lease later), so a leader killed with -9 is replaced within one lease. One
//! that stops gracefully resigns: it deletes the row and notifies the followers (channel
//! `metasync_maintenance_resigned`), so one takes over at once (within a third of a lease if
//! the notification is lost). A follower also looks at the lease whenever its listener starts
//! listening, so a resignation sent before it listened (while it started) is not lost either. A leader that cannot renew steps down
//! before its term can have lapsed, so two leaders overlap only briefly, which the duties
//! tolerate (each is safe to run in several processes at once).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::duty::{DutySet, RenewalLag, Warnings};
use super::fleet::{self, Fleet};

/// The one leadership there is today; the column allows more (e.g. per queue).
const LEADERSHIP: &str = "fleet";
/// The PostgreSQL notification channel a resigning leader notifies.
const RESIGNED: &str = "metasync_maintenance_resigned";
/// A follower wakes this long after the holder's term should have ended, so that it finds the
/// row expired rather than a hair before.
const AFTER_EXPIRY: Duration = Duration::from_millis(5);

/// What one election attempt found.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Term {
    /// This process holds the lease (newly elected or renewed).
    Leading,
    /// Another process holds it; its term ends in this long, if known.
    Following(Option<Duration>),
}

/// This process's candidacy for the lease.
struct Elector {
    db: PgPool,
    holder: String,
    lease: Duration,
}

impl Elector {
    /// Elects this process, or renews its term, in one statement: the upsert takes the row only
    /// when it is free (expired) or already ours.
    async fn attempt(&self) -> Result<Term, sqlx::Error> {
        let (elected, expires_in_ms): (bool, Option<f64>) = sqlx::query_as(
            "with attempt as (
                 insert into maintenance_leader as l (name, holder, expires_at)
                 values ($1, $2, now() + $3 * interval '1 millisecond')
                 on conflict (name) do update
                     set holder = excluded.holder,
                         expires_at = excluded.expires_at,
                         elected_at = case when l.holder = excluded.holder
                                           then l.elected_at else now() end
                     where l.expires_at < now() or l.holder = excluded.holder
                 returning 1)
             select exists (select from attempt),
                    (select (extract(epoch from expires_at - now()) * 1000)::float8
                     from maintenance_leader where name = $1)",
        )
        .bind(LEADERSHIP)
        .bind(&self.holder)
        .bind(self.lease.as_millis() as i64)
        .fetch_one(&self.db)
        .await?;
        Ok(if elected {
            Term::Leading
        } else {
            // The row as the statement found it: the holder that kept us out.
            Term::Following(expires_in_ms.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)))
        })
    }

    /// Gives the lease up and tells the followers, so one takes over at once instead of at
    /// expiry.
    async fn resign(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "with resigned as (
                 delete from maintenance_leader where name = $1 and holder = $2 returning name)
             select pg_notify($3, name) from resigned",
        )
        .bind(LEADERSHIP)
        .bind(&self.holder)
        .bind(RESIGNED)
        .execute(&self.db)
        .await?;
        Ok(())
    }
}

/// Wakes `resigned` whenever a leader resigns, on a connection of its own (outside the pool,
/// so it never takes a slot from the duties). If listening fails, it tries again every second;
/// meanwhile followers still poll.
///
/// A notification sent before `LISTEN` took effect is never delivered, so `resigned` is also
/// woken each time listening starts (at first, and after the listener reconnected): the
/// follower then looks at the lease once, and a leader that resigned in between (say, while
/// this process was starting, or its TLS handshake ran) is not missed until the next poll.
async fn listen_for_resignations(db: PgPool, resigned: Arc<Notify>) {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with((*db.connect_options()).clone());
    loop {
        if let Ok(mut listener) = PgListener::connect_with(&own).await
            && listener.listen(RESIGNED).await.is_ok()
        {
            resigned.notify_one();
            // `Some`: a resignation; `None`: the connection was lost and made again, listening
            // anew (sqlx's eager reconnect), so anything sent meanwhile is lost: look once.
            while listener.try_recv().await.is_ok() {
                resigned.notify_one();
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// This process's part in the fleet's maintenance: it stands for election, and while it leads
/// it runs the fleet-wide duties. Stop it with [`Participant::stop`] to resign; dropping it
/// stops everything without resigning (the lease then lapses).
pub struct Participant {
    task: tokio::task::JoinHandle<()>,
    resign: Option<oneshot::Sender<()>>,
    lease: Duration,
}

impl Participant {
    /// Stands for election as `holder` (unique per process) and runs the fleet-wide duties
    /// of `fleet` whenever elected.
    pub fn start(fleet: Fleet, holder: String) -> Self {
        let lease = fleet.settings.lease;
        let elector = Elector {
            db: fleet.db.clone(),
            holder,
            lease,
        };
        let (resign, stop) = oneshot::channel();
        Self {
            task: tokio::spawn(campaign(elector, fleet, stop)),
            resign: Some(resign),
            lease,
        }
    }

    /// Stops the duties and resigns the lease if this process holds it. Waits at most a third
    /// of a lease for the resignation (the database may be down; the lease then lapses).
    pub async fn stop(mut self) {
        if let Some(resign) = self.resign.take() {
            let _ = resign.send(());
        }
        if tokio::time::timeout(self.lease / 3, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether this process leads, as `metasync_maintenance_leader` (1 or 0).
fn export_leading(leading: bool) {
    metrics::gauge!("metasync_maintenance_leader").set(if leading { 1.0 } else { 0.0 });
}

/// The election loop: try, lead or follow, until asked to resign.
async fn campaign(elector: Elector, fleet: Fleet, mut stop: oneshot::Receiver<()>) {
    let third = elector.lease / 3;
    let mut duties: Option<DutySet> = None;
    // The latest our term can end, by our own clock: the lease counted from when the last
    // successful renewal was sent (the database's clock started it later).
    let mut term_ends = Instant::now();
    let mut lag = RenewalLag::new("leader");
    let mut warnings = Warnings::new("leader_election");
    let mut due = Instant::now();
    let someone_resigned = Arc::new(Notify::new());
    let _listener = AbortOnDrop(tokio::spawn(listen_for_resignations(
        elector.db.clone(),
        someone_resigned.clone(),
    )));
    export_leading(false);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = someone_resigned.notified(), if duties.is_none() => {}
            _ = &mut stop => break,
        }
        let sent = Instant::now();
        let attempt = elector.attempt().await;
        metrics::counter!("metasync_maintenance_runs_total", "duty" => "leader_election")
            .increment(1);
        if attempt.is_ok() {
            metrics::gauge!("metasync_maintenance_last_success_timestamp_seconds", "duty" => "leader_election")
                .set(super::duty::unix_now());
        }
        match attempt {
            Ok(Term::Leading) => {
                warnings.succeeded();
                if duties.is_none() {
                    tracing::info!(holder = %elector.holder, "elected maintenance leader");
                    duties = Some(fleet::spawn(&fleet));
                    export_leading(true);
                } else {
                    lag.renewed(due.into_std());
                }
                term_ends = sent + elector.lease;
                due = sent + third;
            }
            Ok(Term::Following(expires_in)) => {
                warnings.succeeded();
                if let Some(duties) = duties.take() {
                    tracing::warn!(holder = %elector.holder, "lost the maintenance lease to another process");
                    step_down(duties).await;
                }
                let wait = expires_in.map_or(third, |d| (d + AFTER_EXPIRY).min(third));
                due = Instant::now() + wait;
            }
            Err(e) => {
                metrics::counter!("metasync_maintenance_errors_total", "duty" => "leader_election")
                    .increment(1);
                if duties.is_some() {
                    // Leading: this was a renewal of the leader's lease.
                    metrics::counter!("metasync_lease_renewal_failures_total", "store" => "postgres")
                        .increment(1);
                }
                warnings.failed(&e);
                due = Instant::now() + third;
                // Step down before the term can lapse under us: the next try may be too late.
                if due >= term_ends
                    && let Some(duties) = duties.take()
                {
                    tracing::warn!(holder = %elector.holder, "stepping down: the maintenance lease could not be renewed");
                    step_down(duties).await;
                }
            }
        }
    }
    if let Some(duties) = duties.take() {
        step_down(duties).await;
        match elector.resign().await {
            Ok(()) => tracing::info!(holder = %elector.holder, "resigned the maintenance lease"),
            Err(e) => {
                tracing::warn!(error = %e, "resigning the maintenance lease failed; it will lapse");
            }
        }
    }
}

async fn step_down(duties: DutySet) {
    duties.stop().await;
    crate::telemetry::clear_fleet_gauges();
    export_leading(false);
}
