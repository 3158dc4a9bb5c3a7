//! Assertions that read like the domain: `assert_job(&job).succeeded().attempts(1)`. Each
//! check panics with the whole job in the message, so a failing test says what happened.

use metasync_shared::db::jobs::Job;
use metasync_shared::domain::{ErrorClass, JobState, SyncStats};

/// Starts a chain of checks on a job as the API returned it.
pub fn assert_job(job: &Job) -> JobAssert<'_> {
    JobAssert { job }
}

/// Checks on one job; every method returns `self` so they chain.
pub struct JobAssert<'a> {
    job: &'a Job,
}

impl JobAssert<'_> {
    #[track_caller]
    pub fn state(self, expected: JobState) -> Self {
        assert_eq!(self.job.state, expected, "job state: {:#?}", self.job);
        self
    }

    #[track_caller]
    pub fn queued(self) -> Self {
        self.state(JobState::Queued)
    }

    #[track_caller]
    pub fn running(self) -> Self {
        self.state(JobState::Running)
    }

    #[track_caller]
    pub fn retrying(self) -> Self {
        self.state(JobState::Retrying)
    }

    #[track_caller]
    pub fn succeeded(self) -> Self {
        self.state(JobState::Succeeded)
    }

    #[track_caller]
    pub fn failed(self) -> Self {
        self.state(JobState::Failed)
    }

    #[track_caller]
    pub fn cancelled(self) -> Self {
        self.state(JobState::Cancelled)
    }

    /// Ended `failed` with an error retrying cannot help.
    #[track_caller]
    pub fn failed_permanently(self) -> Self {
        self.failed().error_class(ErrorClass::Permanent)
    }

    /// Ended `failed` after transient errors used up its attempts.
    #[track_caller]
    pub fn failed_transiently(self) -> Self {
        self.failed().error_class(ErrorClass::Transient)
    }

    #[track_caller]
    pub fn attempts(self, expected: i32) -> Self {
        assert_eq!(self.job.attempts, expected, "attempts: {:#?}", self.job);
        self
    }

    #[track_caller]
    pub fn error_class(self, expected: ErrorClass) -> Self {
        assert_eq!(
            self.job.error_class,
            Some(expected),
            "error class: {:#?}",
            self.job
        );
        self
    }

    #[track_caller]
    pub fn error_contains(self, needle: &str) -> Self {
        let error = self.job.error.as_deref().unwrap_or_default();
        assert!(
            error.contains(needle),
            "error should contain {needle:?}: {:#?}",
            self.job
        );
        self
    }

    /// The job's text, wherever it appears, never contains `secret`.
    #[track_caller]
    pub fn never_mentions(self, secret: &str) -> Self {
        let text = serde_json::to_string(self.job).expect("serializable");
        assert!(!text.contains(secret), "the job leaks a secret: {text}");
        self
    }

    /// The stats of a succeeded job, for checks of their own.
    #[track_caller]
    pub fn stats(self) -> SyncStats {
        stats(self.job)
    }
}

/// A finished job's `stats`, decoded.
#[track_caller]
pub fn stats(job: &Job) -> SyncStats {
    match &job.stats {
        Some(stats) => stats.0.clone(),
        None => panic!("the job has no stats: {job:#?}"),
    }
}
