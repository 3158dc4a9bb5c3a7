//! Every job state transition of `shared/src/db/jobs.rs`, one small database test each, called
//! directly (no API, no worker, no Redis). Each test gets its own migrated catalog database.
//! These are the guarded statements the lifecycle rests on: what each one does from the state
//! it expects, and what it refuses from any other.

use std::time::Duration;

use chrono::Utc;
use metasync_shared::db::job_reads;
use metasync_shared::db::jobs::{
    self, Cancelled, Claim, ClaimRefused, ClaimedJob, Enqueued, FailureOutcome, Job,
};
use metasync_shared::domain::{ErrorClass, SyncStats};
use metasync_shared::ids::{JobId, ResourceId, TenantId};
use metasync_tests::{assert_job, catalog_database};
use sqlx::PgPool;
use uuid::Uuid;

const TENANT: &str = "acme";

fn tenant() -> TenantId {
    TenantId::new(TENANT)
}
const LEASE: Duration = Duration::from_secs(60);

/// Inserts a resource the way the API stores one; jobs only need it to exist.
async fn resource(db: &PgPool) -> ResourceId {
    let id = ResourceId::new_v7();
    sqlx::query(
        "insert into resources (id, tenant_id, name, kind, host, port, database, username,
                                password_sealed, password_key_id, password_format)
         values ($1, $2, $3, 'postgres', '127.0.0.1', 5432, 'postgres', 'root', '\\x00', 'test', 2)",
    )
    .bind(id)
    .bind(TENANT)
    .bind(format!("src-{}", id.uuid().simple()))
    .execute(db)
    .await
    .unwrap();
    id
}

/// A new queued job with `max_attempts`.
async fn queued(db: &PgPool, max_attempts: i32) -> Job {
    let rid = resource(db).await;
    match jobs::enqueue(db, &tenant(), rid, max_attempts, None)
        .await
        .unwrap()
    {
        Some(Enqueued::Created(job)) => job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

async fn claim(db: &PgPool, job: &Job, worker: &str, lease: Duration) -> ClaimedJob {
    jobs::claim(db, job.id, worker, lease)
        .await
        .unwrap()
        .unwrap_or_else(|refused| panic!("claim refused: {refused:?}"))
}

async fn refused(db: &PgPool, job: &Job, worker: &str) -> ClaimRefused {
    match jobs::claim(db, job.id, worker, LEASE).await.unwrap() {
        Ok(claimed) => panic!("claimed unexpectedly: {:?}", claimed.claim),
        Err(refused) => refused,
    }
}

async fn reload(db: &PgPool, job: &Job) -> Job {
    job_reads::get(db, &tenant(), job.id)
        .await
        .unwrap()
        .expect("job")
}

/// Lets a running job's lease lapse, as if its worker died a while ago.
async fn lapse(db: &PgPool, job: &Job) {
    sqlx::query("update jobs set lease_expires_at = now() - interval '1 second' where id = $1")
        .bind(job.id)
        .execute(db)
        .await
        .unwrap();
}

/// `(attempt, finished, error)` of every attempt recorded for the job.
async fn attempt_rows(db: &PgPool, job: &Job) -> Vec<(i32, bool, Option<String>)> {
    job_reads::attempts(db, job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.attempt, a.finished_at.is_some(), a.error))
        .collect()
}

fn one_table() -> SyncStats {
    SyncStats {
        tables: 1,
        ..SyncStats::default()
    }
}

async fn succeed(db: &PgPool, claim: &Claim) -> Result<(), jobs::Fenced> {
    let mut tx = db.begin().await.unwrap();
    let done = jobs::succeed(&mut tx, claim, &one_table(), &[])
        .await
        .unwrap();
    if done.is_ok() {
        tx.commit().await.unwrap();
    }
    done
}

fn stale(claim: &Claim) -> Claim {
    Claim {
        lease_token: Uuid::now_v7(),
        ..claim.clone()
    }
}

// enqueue

#[tokio::test]
async fn enqueue_creates_a_queued_job() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    assert_job(&job).queued().attempts(0);
    assert_eq!(job.max_attempts, 5);
    assert!(!job.cancel_requested);
    assert!(job.started_at.is_none() && job.finished_at.is_none());
}

#[tokio::test]
async fn enqueue_returns_the_active_job_instead_of_a_second_one() {
    let db = catalog_database().await.unwrap();
    let first = queued(&db, 5).await;
    let again = jobs::enqueue(&db, &tenant(), first.resource_id, 5, None)
        .await
        .unwrap();
    match again {
        Some(Enqueued::Deduplicated(job)) => assert_eq!(job.id, first.id),
        other => panic!("expected the active job, got {other:?}"),
    }
    // Once it finished, a new one is created.
    let claimed = claim(&db, &first, "w", LEASE).await;
    succeed(&db, &claimed.claim).await.unwrap();
    let next = jobs::enqueue(&db, &tenant(), first.resource_id, 5, None)
        .await
        .unwrap();
    assert!(
        matches!(&next, Some(Enqueued::Created(job)) if job.id != first.id),
        "{next:?}"
    );
}

#[tokio::test]
async fn enqueue_for_an_unknown_or_foreign_resource_is_none() {
    let db = catalog_database().await.unwrap();
    let unknown = jobs::enqueue(&db, &tenant(), ResourceId::new_v7(), 5, None)
        .await
        .unwrap();
    assert!(unknown.is_none(), "{unknown:?}");
    let rid = resource(&db).await;
    let foreign = jobs::enqueue(&db, &TenantId::new("someone-else"), rid, 5, None)
        .await
        .unwrap();
    assert!(foreign.is_none(), "{foreign:?}");
}

#[tokio::test]
async fn enqueue_takes_max_attempts_from_the_resource_override() {
    let db = catalog_database().await.unwrap();
    let rid = resource(&db).await;
    sqlx::query("update resources set retry_policy = '{\"max_attempts\": 2}' where id = $1")
        .bind(rid)
        .execute(&db)
        .await
        .unwrap();
    let Some(Enqueued::Created(job)) = jobs::enqueue(&db, &tenant(), rid, 5, None).await.unwrap()
    else {
        panic!("expected a new job");
    };
    assert_eq!(job.max_attempts, 2);
}

// claim

#[tokio::test]
async fn claim_takes_a_queued_job_to_running() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    let claimed = claim(&db, &job, "w1", LEASE).await;
    assert_eq!(claimed.claim.job_id, job.id);
    assert_eq!(claimed.claim.attempt, 1);
    assert_eq!(claimed.resource.resource.id, job.resource_id);
    let now = reload(&db, &job).await;
    assert_job(&now).running().attempts(1);
    assert!(now.started_at.is_some());
    assert_eq!(attempt_rows(&db, &job).await, [(1, false, None)]);
    // A second delivery of the same job finds it leased.
    assert!(matches!(
        refused(&db, &job, "w2").await,
        ClaimRefused::LeasedUntil(_)
    ));
}

#[tokio::test]
async fn claim_takes_a_due_retrying_job() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    let first = claim(&db, &job, "w1", LEASE).await;
    jobs::fail_attempt(
        &db,
        &first.claim,
        ErrorClass::Transient,
        "boom",
        FailureOutcome::RetryAfter(Duration::ZERO),
    )
    .await
    .unwrap()
    .unwrap();
    let second = claim(&db, &job, "w2", LEASE).await;
    assert_eq!(second.claim.attempt, 2);
    assert_ne!(second.claim.lease_token, first.claim.lease_token);
    let now = reload(&db, &job).await;
    assert_job(&now).running().attempts(2);
    assert!(now.next_attempt_at.is_none());
}

#[tokio::test]
async fn claim_refuses_a_retrying_job_that_is_not_due() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    let first = claim(&db, &job, "w1", LEASE).await;
    jobs::fail_attempt(
        &db,
        &first.claim,
        ErrorClass::Transient,
        "boom",
        FailureOutcome::RetryAfter(Duration::from_secs(3600)),
    )
    .await
    .unwrap()
    .unwrap();
    match refused(&db, &job, "w2").await {
        ClaimRefused::NotDueUntil(due) => {
            assert!(due > Utc::now() + chrono::TimeDelta::minutes(59));
        }
        other => panic!("expected not due, got {other:?}"),
    }
    assert_job(&reload(&db, &job).await).retrying().attempts(1);
}

#[tokio::test]
async fn claim_takes_over_a_running_job_whose_lease_lapsed() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    let first = claim(&db, &job, "dead", LEASE).await;
    lapse(&db, &job).await;
    let second = claim(&db, &job, "rescuer", LEASE).await;
    assert_eq!(second.claim.attempt, 2);
    assert_ne!(second.claim.lease_token, first.claim.lease_token);
    let rows = attempt_rows(&db, &job).await;
    assert_eq!(rows.len(), 2);
    assert!(rows[0].1, "the lost attempt is closed: {rows:?}");
    assert!(rows[0].2.as_deref().unwrap().contains("lost"), "{rows:?}");
    assert_eq!(rows[1], (2, false, None));
    // The lost attempt can no longer write.
    assert!(succeed(&db, &first.claim).await.is_err());
}

#[tokio::test]
async fn claim_refuses_a_running_job_under_a_live_lease() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    claim(&db, &job, "w1", LEASE).await;
    match refused(&db, &job, "w2").await {
        ClaimRefused::LeasedUntil(until) => assert!(until > Utc::now()),
        other => panic!("expected a live lease, got {other:?}"),
    }
    assert_job(&reload(&db, &job).await).running().attempts(1);
}

#[tokio::test]
async fn claim_fails_a_poison_job_lost_on_its_last_attempt() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 1).await;
    claim(&db, &job, "victim", LEASE).await;
    lapse(&db, &job).await;
    assert_eq!(refused(&db, &job, "next").await, ClaimRefused::NotRunnable);
    let now = reload(&db, &job).await;
    assert_job(&now)
        .failed_transiently()
        .attempts(1)
        .error_contains("lost");
    assert!(now.finished_at.is_some());
    assert!(attempt_rows(&db, &job).await[0].1, "the attempt is closed");
}

#[tokio::test]
async fn claim_refuses_finished_cancelled_and_missing_jobs() {
    let db = catalog_database().await.unwrap();
    let done = queued(&db, 5).await;
    let claimed = claim(&db, &done, "w", LEASE).await;
    succeed(&db, &claimed.claim).await.unwrap();
    assert_eq!(refused(&db, &done, "w").await, ClaimRefused::NotRunnable);

    let cancelled = queued(&db, 5).await;
    jobs::cancel(&db, &tenant(), cancelled.id).await.unwrap();
    assert_eq!(
        refused(&db, &cancelled, "w").await,
        ClaimRefused::NotRunnable
    );

    let missing = Job {
        id: JobId::new_v7(),
        ..done
    };
    assert_eq!(refused(&db, &missing, "w").await, ClaimRefused::NotRunnable);
}

// succeed

#[tokio::test]
async fn succeed_with_the_lease_token_ends_succeeded() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    let claimed = claim(&db, &job, "w", LEASE).await;
    succeed(&db, &claimed.claim).await.unwrap();
    let now = reload(&db, &job).await;
    assert_job(&now).succeeded().attempts(1);
    assert_eq!(now.stats.map(|s| s.0), Some(one_table()));
    assert!(now.finished_at.is_some() && now.error.is_none());
    assert_eq!(attempt_rows(&db, &job).await, [(1, true, None)]);
}

#[tokio::test]
async fn succeed_with_a_stale_token_is_fenced() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    let claimed = claim(&db, &job, "w", LEASE).await;
    assert!(succeed(&db, &stale(&claimed.claim)).await.is_err());
    assert_job(&reload(&db, &job).await).running();
    // The fence at the start of the catalog transaction refuses it too.
    let mut tx = db.begin().await.unwrap();
    assert!(
        jobs::fence(&mut tx, &stale(&claimed.claim))
            .await
            .unwrap()
            .is_err()
    );
    assert!(jobs::fence(&mut tx, &claimed.claim).await.unwrap().is_ok());
}

#[tokio::test]
async fn succeed_after_a_cancel_request_is_fenced() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    let claimed = claim(&db, &job, "w", LEASE).await;
    jobs::cancel(&db, &tenant(), job.id).await.unwrap();
    assert!(succeed(&db, &claimed.claim).await.is_err());
    let now = reload(&db, &job).await;
    assert_job(&now).running();
    assert!(now.cancel_requested);
}

// fail_attempt

#[tokio::test]
async fn a_transient_failure_becomes_retrying_with_its_next_attempt_time() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    let claimed = claim(&db, &job, "w", LEASE).await;
    let before = Utc::now();
    jobs::fail_attempt(
        &db,
        &claimed.claim,
        ErrorClass::Transient,
        "connection refused",
        FailureOutcome::RetryAfter(Duration::from_secs(10)),
    )
    .await
    .unwrap()
    .unwrap();
    let now = reload(&db, &job).await;
    assert_job(&now)
        .retrying()
        .attempts(1)
        .error_class(ErrorClass::Transient)
        .error_contains("connection refused");
    let next = now.next_attempt_at.expect("a next attempt time");
    assert!(next >= before + chrono::TimeDelta::seconds(9), "{next}");
    assert!(
        next <= Utc::now() + chrono::TimeDelta::seconds(11),
        "{next}"
    );
    assert!(now.finished_at.is_none());
    assert_eq!(
        attempt_rows(&db, &job).await,
        [(1, true, Some("connection refused".to_owned()))]
    );
}

#[tokio::test]
async fn a_failure_on_the_last_attempt_ends_failed() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 1).await;
    let claimed = claim(&db, &job, "w", LEASE).await;
    assert_eq!(claimed.claim.attempt, claimed.claim.max_attempts);
    jobs::fail_attempt(
        &db,
        &claimed.claim,
        ErrorClass::Transient,
        "timed out",
        FailureOutcome::Failed,
    )
    .await
    .unwrap()
    .unwrap();
    let now = reload(&db, &job).await;
    assert_job(&now).failed_transiently().attempts(1);
    assert!(now.finished_at.is_some());
}

#[tokio::test]
async fn a_permanent_failure_ends_failed_at_once() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    let claimed = claim(&db, &job, "w", LEASE).await;
    jobs::fail_attempt(
        &db,
        &claimed.claim,
        ErrorClass::Permanent,
        "password authentication failed",
        FailureOutcome::Failed,
    )
    .await
    .unwrap()
    .unwrap();
    let now = reload(&db, &job).await;
    assert_job(&now)
        .failed_permanently()
        .attempts(1)
        .error_contains("authentication");
    assert!(now.finished_at.is_some() && now.next_attempt_at.is_none());
}

#[tokio::test]
async fn a_failure_under_a_stale_token_is_fenced() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    let claimed = claim(&db, &job, "w", LEASE).await;
    let fenced = jobs::fail_attempt(
        &db,
        &stale(&claimed.claim),
        ErrorClass::Permanent,
        "late",
        FailureOutcome::Failed,
    )
    .await
    .unwrap();
    assert!(fenced.is_err());
    assert_job(&reload(&db, &job).await).running();
}

// cancel and mark_cancelled

#[tokio::test]
async fn cancel_ends_a_queued_job_at_once() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    match jobs::cancel(&db, &tenant(), job.id).await.unwrap() {
        Some(Cancelled::Now(job)) => {
            assert_job(&job).cancelled().attempts(0);
            assert!(job.finished_at.is_some());
        }
        other => panic!("expected an immediate cancel, got {other:?}"),
    }
}

#[tokio::test]
async fn cancel_ends_a_retrying_job_at_once() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    let claimed = claim(&db, &job, "w", LEASE).await;
    jobs::fail_attempt(
        &db,
        &claimed.claim,
        ErrorClass::Transient,
        "boom",
        FailureOutcome::RetryAfter(Duration::from_secs(3600)),
    )
    .await
    .unwrap()
    .unwrap();
    match jobs::cancel(&db, &tenant(), job.id).await.unwrap() {
        Some(Cancelled::Now(job)) => {
            assert_job(&job).cancelled();
            assert!(job.next_attempt_at.is_none());
        }
        other => panic!("expected an immediate cancel, got {other:?}"),
    }
}

#[tokio::test]
async fn cancel_flags_a_running_job_which_then_marks_itself_cancelled() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    let claimed = claim(&db, &job, "w", LEASE).await;
    assert!(!jobs::cancel_requested(&db, &claimed.claim).await.unwrap());
    match jobs::cancel(&db, &tenant(), job.id).await.unwrap() {
        Some(Cancelled::Requested(job)) => {
            assert_job(&job).running();
            assert!(job.cancel_requested);
        }
        other => panic!("expected a cancel request, got {other:?}"),
    }
    assert!(jobs::cancel_requested(&db, &claimed.claim).await.unwrap());
    // A stale attempt cannot end it; the current one can.
    assert!(
        !jobs::mark_cancelled(&db, &stale(&claimed.claim))
            .await
            .unwrap()
    );
    assert!(jobs::mark_cancelled(&db, &claimed.claim).await.unwrap());
    let now = reload(&db, &job).await;
    assert_job(&now).cancelled().attempts(1);
    assert!(now.finished_at.is_some());
    assert_eq!(
        attempt_rows(&db, &job).await,
        [(1, true, Some("cancelled".to_owned()))]
    );
    // Marking twice does nothing more.
    assert!(!jobs::mark_cancelled(&db, &claimed.claim).await.unwrap());
}

#[tokio::test]
async fn cancel_refuses_a_finished_job_and_ignores_other_tenants() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    let claimed = claim(&db, &job, "w", LEASE).await;
    succeed(&db, &claimed.claim).await.unwrap();
    match jobs::cancel(&db, &tenant(), job.id).await.unwrap() {
        Some(Cancelled::AlreadyFinished(job)) => assert_job(&job).succeeded(),
        other => panic!("expected already finished, got {other:?}"),
    };
    let other = queued(&db, 5).await;
    assert!(
        jobs::cancel(&db, &TenantId::new("someone-else"), other.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        jobs::cancel(&db, &tenant(), JobId::new_v7())
            .await
            .unwrap()
            .is_none()
    );
    assert_job(&reload(&db, &other).await).queued();
}

// leases

#[tokio::test]
async fn renew_leases_extends_only_the_attempts_named() {
    let db = catalog_database().await.unwrap();
    let mine = queued(&db, 5).await;
    let theirs = queued(&db, 5).await;
    let held = claim(&db, &mine, "me", Duration::from_secs(1)).await;
    claim(&db, &theirs, "me", Duration::from_secs(1)).await;
    let attempt = [(held.claim.job_id, held.claim.lease_token)];
    assert_eq!(jobs::renew_leases(&db, &attempt, LEASE).await.unwrap(), 1);
    let leases: Vec<(JobId, bool)> = sqlx::query_as(
        "select id, lease_expires_at > now() + interval '50 seconds' from jobs order by id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(leases, [(mine.id, true), (theirs.id, false)]);
    // A stale token (the attempt was taken over) renews nothing.
    let stale = [(held.claim.job_id, Uuid::now_v7())];
    assert_eq!(jobs::renew_leases(&db, &stale, LEASE).await.unwrap(), 0);
    assert_eq!(jobs::renew_leases(&db, &[], LEASE).await.unwrap(), 0);
}

#[tokio::test]
async fn expire_leases_lets_another_worker_take_over_at_once() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 5).await;
    let first = claim(&db, &job, "leaving", LEASE).await;
    assert_eq!(jobs::expire_leases(&db, "leaving").await.unwrap(), 1);
    let second = claim(&db, &job, "staying", LEASE).await;
    assert_eq!(second.claim.attempt, 2);
    // The leaving worker's token no longer writes.
    assert!(succeed(&db, &first.claim).await.is_err());
    succeed(&db, &second.claim).await.unwrap();
    assert_job(&reload(&db, &job).await).succeeded().attempts(2);
    assert_eq!(jobs::expire_leases(&db, "leaving").await.unwrap(), 0);
}

// prune

#[tokio::test]
async fn prune_deletes_only_finished_jobs_past_retention() {
    let db = catalog_database().await.unwrap();
    let old = queued(&db, 5).await;
    let claimed = claim(&db, &old, "w", LEASE).await;
    succeed(&db, &claimed.claim).await.unwrap();
    sqlx::query("update jobs set finished_at = now() - interval '2 days' where id = $1")
        .bind(old.id)
        .execute(&db)
        .await
        .unwrap();
    let recent = queued(&db, 5).await;
    jobs::cancel(&db, &tenant(), recent.id).await.unwrap();
    let active = queued(&db, 5).await;

    let day = Duration::from_secs(86_400);
    assert_eq!(jobs::prune_finished(&db, day, 100).await.unwrap(), 1);
    assert!(
        job_reads::get(&db, &tenant(), old.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(job_reads::attempts(&db, old.id).await.unwrap().is_empty());
    assert_job(&reload(&db, &recent).await).cancelled();
    assert_job(&reload(&db, &active).await).queued();
    assert_eq!(jobs::prune_finished(&db, day, 100).await.unwrap(), 0);
}

#[tokio::test]
async fn undo_claim_gives_the_attempt_back_and_refuses_a_cancelled_job() {
    let db = catalog_database().await.unwrap();
    let job = queued(&db, 3).await;
    let first = claim(&db, &job, "w1", LEASE).await.claim;
    assert!(
        jobs::undo_claim(&db, &first, Duration::from_secs(1))
            .await
            .unwrap()
    );
    let undone = reload(&db, &job).await;
    assert_job(&undone).queued().attempts(0);
    let rows: i64 = sqlx::query_scalar("select count(*) from job_attempts where job_id = $1")
        .bind(job.id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the undone attempt leaves no row");
    assert!(
        !jobs::undo_claim(&db, &first, Duration::from_secs(1))
            .await
            .unwrap(),
        "the old token undoes nothing twice"
    );

    // After a failed attempt it goes back to `retrying`, due after the delay.
    let second = claim(&db, &job, "w1", LEASE).await.claim;
    assert_eq!(second.attempt, 1);
    jobs::fail_attempt(
        &db,
        &second,
        ErrorClass::Transient,
        "boom",
        FailureOutcome::RetryAfter(Duration::ZERO),
    )
    .await
    .unwrap()
    .unwrap();
    let third = claim(&db, &job, "w1", LEASE).await.claim;
    assert!(
        jobs::undo_claim(&db, &third, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_job(&reload(&db, &job).await).retrying().attempts(1);
    assert!(matches!(
        refused(&db, &job, "w2").await,
        ClaimRefused::NotDueUntil(_)
    ));

    // A cancel requested while it waited: not undone (the caller records the cancel).
    sqlx::query("update jobs set next_attempt_at = now() where id = $1")
        .bind(job.id)
        .execute(&db)
        .await
        .unwrap();
    let fourth = claim(&db, &job, "w1", LEASE).await.claim;
    jobs::cancel(&db, &tenant(), job.id).await.unwrap();
    assert!(
        !jobs::undo_claim(&db, &fourth, Duration::from_secs(1))
            .await
            .unwrap()
    );
}
