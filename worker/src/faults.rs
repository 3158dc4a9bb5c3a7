//! Faults injected by tests into a real worker process, named in `METASYNC_TEST_FAULTS`
//! (comma-separated); each fires once per process. Compiled only with the `test-faults`
//! feature, which the test crate enables: a worker built on its own (`-p metasync-worker`)
//! has no such hooks.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// A point where a test can make an attempt misbehave.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The attempt panics while running (caught and recorded as a transient failure).
    PanicInAttempt,
    /// The delivery's handling panics after the claim, outside the attempt: nothing records
    /// an outcome.
    PanicAfterClaim,
    /// The attempt ends without recording its outcome, as when that write fails.
    LoseOutcome,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Self::PanicInAttempt => "panic-in-attempt",
            Self::PanicAfterClaim => "panic-after-claim",
            Self::LoseOutcome => "lose-outcome",
        }
    }
}

/// Whether the fault fires now (true at most once per process and fault).
pub fn hit(fault: Fault) -> bool {
    static ARMED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        let names = std::env::var("METASYNC_TEST_FAULTS").unwrap_or_default();
        Mutex::new(
            names
                .split(',')
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect(),
        )
    });
    armed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(fault.name())
}
