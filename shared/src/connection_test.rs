//! Test-connection: what a worker found when it tried a source's definition
//! ([`ConnectionTestResult`]), as the API returns it. The request and its result travel through
//! PostgreSQL (`db::connection_tests`); Redis carries only the request's id.

use serde::{Deserialize, Serialize};

/// What a worker found when it connected to a source with a definition, as a scan would.
/// A failed connection is a result too (`reachable` or `authenticated` false, `error` set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConnectionTestResult {
    /// Connected, authenticated, and no grant the scan needs is missing.
    pub ok: bool,
    /// A server of the resource's kind answered (whether or not it let us in).
    pub reachable: bool,
    /// The login succeeded; `null` when the test stopped before it could tell.
    pub authenticated: Option<bool>,
    /// The engine that answered: `postgresql`, `mariadb` or `mysql`; `null` when none did.
    pub engine: Option<String>,
    /// The server's version as it reports it (e.g. `15.4`, `10.11.6-MariaDB`).
    pub server_version: Option<String>,
    /// Whether the session is encrypted (TLS); `null` when no session was opened.
    pub tls: Option<bool>,
    /// Grants the user lacks that a scan needs (empty when none, or when not checked).
    pub missing_grants: Vec<MissingGrant>,
    /// Why the test failed, classified; `null` when it did not.
    pub error: Option<TestFailure>,
    /// How long the worker took, connecting included, in milliseconds.
    pub duration_ms: u64,
}

/// A privilege the scan needs and the user lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MissingGrant {
    /// The privilege, e.g. `SELECT` or `SHOW VIEW`.
    pub privilege: String,
    /// What it is needed on, e.g. `pg_catalog.pg_class` or the database `shop`.
    pub on: String,
    /// What a scan misses without it.
    pub effect: String,
}

/// A classified failure: a stable code, the message a sync would have stored, and a hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestFailure {
    /// The class of failure.
    pub code: FailureCode,
    /// What failed, in the words a sync's job error would use; never a driver's internals,
    /// never the password.
    pub message: String,
    /// What to check or change.
    pub hint: String,
    /// Whether a sync would retry it (a transient failure) or fail at once.
    pub transient: bool,
}

/// The classes of a failed test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// The outbound host policy refuses every address of the host.
    RefusedByPolicy,
    /// The host name did not resolve.
    Unresolved,
    /// Nothing listens on the port (connection refused).
    ConnectionRefused,
    /// No answer within the connect timeout.
    TimedOut,
    /// No route to the server.
    Unreachable,
    /// What answered is not a server of the resource's kind.
    WrongProtocol,
    /// TLS failed: a certificate that does not verify, or no TLS where the mode requires it.
    Tls,
    /// The server refused the user name or password.
    AuthenticationFailed,
    /// The database does not exist on the server.
    UnknownDatabase,
    /// The user may not connect to the database.
    PermissionDenied,
    /// Every connection the fleet may open to the server is in use.
    ServerBusy,
    /// The stored password cannot be opened by the workers' keys.
    Credentials,
    /// Another error from the server.
    ServerError,
}

impl FailureCode {
    /// The code as JSON spells it (and the metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RefusedByPolicy => "refused_by_policy",
            Self::Unresolved => "unresolved",
            Self::ConnectionRefused => "connection_refused",
            Self::TimedOut => "timed_out",
            Self::Unreachable => "unreachable",
            Self::WrongProtocol => "wrong_protocol",
            Self::Tls => "tls",
            Self::AuthenticationFailed => "authentication_failed",
            Self::UnknownDatabase => "unknown_database",
            Self::PermissionDenied => "permission_denied",
            Self::ServerBusy => "server_busy",
            Self::Credentials => "credentials",
            Self::ServerError => "server_error",
        }
    }

    /// What to check or change for this class of failure.
    pub fn hint(self) -> &'static str {
        match self {
            Self::RefusedByPolicy => {
                "the host resolves only to addresses the outbound policy denies (loopback, \
                 private, link-local, metadata); an operator can allow private ranges with \
                 METASYNC_OUTBOUND_ALLOW"
            }
            Self::Unresolved => "check the host name: the workers could not resolve it",
            Self::ConnectionRefused => {
                "nothing accepts connections on that port: check the port and that the server \
                 is running and listening on that address"
            }
            Self::TimedOut => {
                "the server did not answer in time: check firewalls and security groups \
                 between the workers and the server"
            }
            Self::Unreachable => "check the host and the network route from the workers",
            Self::WrongProtocol => {
                "something else answered on that port: check the port and the resource's `kind`"
            }
            Self::Tls => {
                "check `tls.mode` and `tls.ca`, and that the server's certificate names the host \
                 as registered"
            }
            Self::AuthenticationFailed => {
                "check the user name and password, and that the server allows this user to log \
                 in from the workers' addresses (pg_hba.conf, the user's host)"
            }
            Self::UnknownDatabase => "check the database name",
            Self::PermissionDenied => {
                "grant the user CONNECT on the database (PostgreSQL) or a privilege on it \
                 (MySQL/MariaDB)"
            }
            Self::ServerBusy => {
                "syncs hold every connection allowed to this server \
                 (METASYNC_SOURCE_CONNECTIONS_PER_SERVER): try again shortly"
            }
            Self::Credentials => "set the password again (PATCH with `password`)",
            Self::ServerError => "see the server's message",
        }
    }
}
