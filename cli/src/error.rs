//! The CLI's one error type, and the exit code each kind of failure has. The codes are a
//! contract (scripts branch on them): add new ones, never renumber.

use std::fmt;
use std::process::ExitCode;

/// Why a command did not succeed.
#[derive(Debug)]
pub enum CliError {
    /// A sync (or a job waited on) ended `failed`. Exit 1.
    Failed(String),
    /// Bad arguments, a bad file, an unknown name, or a request the API refused as invalid
    /// (`400`, `404`, `422`). Exit 2, like clap's own usage errors.
    BadInput(String),
    /// No token, or the API refused it (`401`, `403`). Exit 3.
    Auth(String),
    /// No answer from the API (refused, reset, DNS, TLS, time-out). Exit 4.
    Unreachable(String),
    /// A job waited on ended `cancelled`. Exit 5.
    Cancelled(String),
    /// `--timeout` passed before the jobs finished. Exit 6.
    TimedOut(String),
    /// Any other error answer of the API (`409`, `429`, `5xx`). Exit 7.
    Api(String),
}

impl CliError {
    /// The process exit code of this error.
    pub fn code(&self) -> u8 {
        match self {
            Self::Failed(_) => 1,
            Self::BadInput(_) => 2,
            Self::Auth(_) => 3,
            Self::Unreachable(_) => 4,
            Self::Cancelled(_) => 5,
            Self::TimedOut(_) => 6,
            Self::Api(_) => 7,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, message) = match self {
            Self::Failed(m) => ("failed", m),
            Self::BadInput(m) => ("bad input", m),
            Self::Auth(m) => ("not authorized", m),
            Self::Unreachable(m) => ("server unreachable", m),
            Self::Cancelled(m) => ("cancelled", m),
            Self::TimedOut(m) => ("timed out", m),
            Self::Api(m) => ("API error", m),
        };
        write!(f, "{what}: {message}")
    }
}

impl std::error::Error for CliError {}

pub type CliResult<T> = Result<T, CliError>;

/// The exit codes, for `--help` and docs/ci.md (which a test compares with [`CliError::code`]).
pub const EXIT_CODES: &str = "\
Exit codes:
  0  succeeded
  1  failed: a job waited on ended `failed`
  2  bad input: arguments, the file, an unknown name, or a request the API refused (400/404/422)
  3  auth: no token, or the API refused it (401/403)
  4  server unreachable: no answer from the API
  5  cancelled: a job waited on ended `cancelled`
  6  timed out: --timeout passed before the jobs finished
  7  API error: any other error answer (409, 429, 5xx)";
