//! Scanning a source's catalog. Each engine reads a whole database in a small, fixed number of
//! set-based statements (never one per table) on a READ ONLY session (PostgreSQL: one statement,
//! hence one snapshot; MySQL/MariaDB: one READ ONLY transaction), on a connection
//! with connect and statement timeouts that lives at most seconds past its job ([`reuse`]).

pub mod filters;
pub mod mysql;
pub mod permits;
pub mod postgres;
pub mod reuse;
mod sniff;

use std::future::Future;
use std::time::Duration;

use metasync_shared::catalog::Snapshot;
use metasync_shared::connection_test::{FailureCode, MissingGrant};
use metasync_shared::db::resources::Resource;
use metasync_shared::domain::{JobWarning, ResourceKind, WarningCode};
use metasync_shared::scan_options::Filters;

use crate::error::{JobError, Reason};
use reuse::{Parking, SourceConnections, SourceKey, Taken};

/// Where and how to scan. Holds the decrypted password, so it is deliberately not `Debug`.
pub struct ScanTarget<'a> {
    pub resource: &'a Resource,
    /// The resource's filter patterns, compiled ([`filters::FilterCache`]).
    pub filters: &'a Filters,
    /// The address to dial, checked by the outbound policy (never the name again).
    pub address: std::net::IpAddr,
    pub password: &'a str,
}

impl ScanTarget<'_> {
    /// The server as the tenant registered it, for error messages: `host:port`, an IPv6
    /// literal in brackets. Never the resolved address, which the tenant did not write.
    fn server_name(&self) -> String {
        let host = &self.resource.host;
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.resource.port)
        } else {
            format!("{host}:{}", self.resource.port)
        }
    }

    fn engine_name(&self) -> &'static str {
        match self.resource.kind {
            ResourceKind::Postgres => "PostgreSQL",
            ResourceKind::Mysql => "MySQL/MariaDB",
        }
    }

    /// What, besides the address and credentials, a parked connection must share with a new
    /// one to stand in for it: the TLS settings and the name the certificate was checked for.
    pub fn tls_session(&self) -> String {
        let tls = &self.resource.tls.0;
        format!(
            "{}|{}|{}",
            tls.mode.as_str(),
            self.resource.host,
            tls.ca.as_deref().unwrap_or_default()
        )
    }
}

/// Time limits for talking to a source.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

/// How long past its statement timeout a source may stay silent before the worker gives up on
/// it. The statement timeout is enforced by the server; a server that accepts the connection
/// and then never answers (a tarpit, a frozen host) is caught by this client-side limit.
pub const READ_GRACE: Duration = Duration::from_secs(2);

impl ScanLimits {
    /// The longest one statement's answer may take, streamed rows included.
    pub fn read_timeout(&self) -> Duration {
        self.statement_timeout + READ_GRACE
    }
}

/// Awaits one statement on a source (or a streamed one to its last row). A source silent past
/// [`ScanLimits::read_timeout`] fails the attempt as transient, and its connection is dropped
/// by the caller (a failed scan never parks it).
async fn answered<T>(
    limits: ScanLimits,
    what: &str,
    statement: impl Future<Output = Result<T, JobError>>,
) -> Result<T, JobError> {
    match tokio::time::timeout(limits.read_timeout(), statement).await {
        Ok(result) => result,
        Err(_) => Err(JobError::transient(format!(
            "{what}: the source did not answer within {:?} (its statement timeout plus {:?})",
            limits.read_timeout(),
            READ_GRACE
        ))
        .because(Reason::Timeout)),
    }
}

/// Why a scan produced no snapshot.
#[derive(Debug)]
pub enum ScanError {
    /// The attempt failed, transiently or for good.
    Failed(JobError),
    /// Every connection the fleet may open to the source server is taken (the per-server cap)
    /// and none freed up within [`PERMIT_WAIT`]: run the job later, without counting an attempt.
    ServerBusy,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(e) => e.fmt(f),
            Self::ServerBusy => {
                f.write_str("every connection allowed to the source server is in use")
            }
        }
    }
}

impl std::error::Error for ScanError {}

impl From<JobError> for ScanError {
    fn from(e: JobError) -> Self {
        Self::Failed(e)
    }
}

/// How long a job waits for a connection permit before it is deferred.
pub const PERMIT_WAIT: Duration = Duration::from_secs(2);

/// Reads the source's catalog, as the resource's `options` ask (databases, filters, depth).
/// Options are read fresh from the resource on every attempt, like the rest of it.
pub async fn scan(
    target: &ScanTarget<'_>,
    limits: ScanLimits,
    sources: &SourceConnections,
) -> Result<Snapshot, ScanError> {
    let options = &target.resource.options.0;
    let result = match target.resource.kind {
        ResourceKind::Postgres => postgres::scan(target, options, limits, sources).await,
        ResourceKind::Mysql => mysql::scan(target, options, limits, sources).await,
    };
    result.map_err(|e| match e {
        ScanError::Failed(e) => ScanError::Failed(e.guarded(target.password)),
        busy @ ScanError::ServerBusy => busy,
    })
}

/// The rule for databases to scan that the server does not have, the same on both engines: a
/// `database_not_found` warning each when another database was read, a permanent failure when
/// none was. `hidden` adds what else hides a database on the engine.
fn databases_not_found(
    server: &str,
    missing: &[String],
    read: usize,
    hidden: &str,
) -> Result<Vec<JobWarning>, JobError> {
    let quoted = |name: &String| format!("\"{name}\"");
    if read == 0 && !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(quoted).collect();
        let message = match names.as_slice() {
            [one] => format!("the database {one} does not exist on {server}{hidden}"),
            many => format!(
                "none of the databases to scan exists on {server}{hidden}: {}",
                many.join(", ")
            ),
        };
        return Err(JobError::permanent(message)
            .with_failure(FailureCode::UnknownDatabase)
            .because(Reason::Source));
    }
    Ok(missing
        .iter()
        .map(|name| {
            let message = format!(
                "the database {} does not exist on {server}{hidden}: it was not read, the \
                 others were",
                quoted(name)
            );
            JobWarning::about(
                WarningCode::DatabaseNotFound,
                message,
                Some(name.clone()),
                Vec::new(),
            )
        })
        .collect())
}

/// What test-connection learns from a session it opened the way a scan does.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `postgresql`, `mariadb` or `mysql`.
    pub engine: &'static str,
    /// The version the server reports.
    pub version: String,
    /// Whether the session is encrypted.
    pub tls: bool,
    /// Grants a scan needs that the user lacks.
    pub missing_grants: Vec<MissingGrant>,
}

/// Test-connection: opens a new connection to the resource as a scan would (the checked
/// address, its TLS mode, under a permit of the server's cap; never a parked connection, and
/// the new one is closed after), and asks the server what [`Probe`] reports, in one or two
/// cheap statements.
pub async fn probe(
    target: &ScanTarget<'_>,
    limits: ScanLimits,
    sources: &SourceConnections,
) -> Result<Probe, ScanError> {
    let result = match target.resource.kind {
        ResourceKind::Postgres => postgres::probe(target, limits, sources).await,
        ResourceKind::Mysql => mysql::probe(target, limits, sources).await,
    };
    result.map_err(|e| match e {
        ScanError::Failed(e) => ScanError::Failed(e.guarded(target.password)),
        busy @ ScanError::ServerBusy => busy,
    })
}

/// Opens a source connection within the connect timeout. A timeout is transient; other
/// failures are classified by [`JobError::from_connect`] (e.g. bad credentials are permanent,
/// a port that does not speak the engine's protocol too).
async fn connect<C>(
    target: &ScanTarget<'_>,
    options: &C,
    limits: ScanLimits,
) -> Result<C::Connection, JobError>
where
    C: sqlx::ConnectOptions,
    C::Connection: Sized,
{
    let server = target.server_name();
    let started = std::time::Instant::now();
    let connected = tokio::time::timeout(limits.connect_timeout, options.connect()).await;
    metrics::histogram!("metasync_source_connect_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    let (failed, wrong_kind_would_explain) = match connected {
        Ok(Ok(conn)) => return Ok(conn),
        Ok(Err(e)) => (
            JobError::from_connect(&server, target.engine_name(), &e),
            might_be_another_engine(target.resource.kind, Some(&e)),
        ),
        Err(_) => (
            JobError::transient(format!(
                "connecting to {server}: timed out after {:?}",
                limits.connect_timeout
            ))
            .with_failure(FailureCode::TimedOut)
            .because(Reason::Connect),
            might_be_another_engine(target.resource.kind, None),
        ),
    };
    if wrong_kind_would_explain {
        let address = std::net::SocketAddr::new(target.address, target.resource.port as u16);
        if let Some(other) = sniff::protocol_at(address, limits.connect_timeout).await
            && other != target.resource.kind
        {
            return Err(JobError::permanent(format!(
                "connecting to {server}: the server is not a {} server; {}",
                target.engine_name(),
                sniff::suggestion(other)
            ))
            .with_failure(FailureCode::WrongProtocol)
            .because(Reason::Connect));
        }
    }
    Err(failed)
}

/// Whether a failed connect could be a server of the other engine. A PostgreSQL client reads
/// a MySQL greeting as a message it cannot parse (a protocol error, never an I/O error: the
/// greeting arrives whole); a MySQL client waits for a greeting a PostgreSQL server never sends
/// (a timeout). Nothing else is probed: not a refusal or a dropped connection (a probe would
/// dial the server a second time), nor an error the server sent in its own protocol.
fn might_be_another_engine(kind: ResourceKind, failure: Option<&sqlx::Error>) -> bool {
    match (kind, failure) {
        (ResourceKind::Mysql, None) => true,
        (ResourceKind::Postgres, None) => false,
        (_, Some(e)) => !matches!(
            e,
            sqlx::Error::Database(_)
                | sqlx::Error::Configuration(_)
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
        ),
    }
}

/// A parked connection for `key` if one is alive (and `parking` is given: test-connection
/// asks for a new connection every time), else a new one under a permit of the
/// server's connection cap. While the fleet is at the cap, this process's idle connections to
/// that server (other databases or users) are closed to make room, and the job polls for a
/// parked connection or a permit for up to [`PERMIT_WAIT`]; then it is deferred. Redis failing
/// counts as no permit: the job is deferred, not failed.
async fn open<C>(
    target: &ScanTarget<'_>,
    sources: &SourceConnections,
    parking: Option<&Parking<C::Connection>>,
    key: &SourceKey,
    options: impl FnOnce() -> C,
    limits: ScanLimits,
) -> Result<Taken<C::Connection>, ScanError>
where
    C: sqlx::ConnectOptions,
    C::Connection: Sized + 'static,
{
    let (host, port) = key.server();
    let deadline = tokio::time::Instant::now() + PERMIT_WAIT;
    let taken = loop {
        // Another slot may have parked a connection for this key meanwhile.
        if let Some(parking) = parking
            && let Some(taken) = parking.take(key, limits.connect_timeout).await
        {
            break taken;
        }
        match sources.permits.try_acquire(host, port).await {
            Ok(Some(permit)) => {
                break Taken::fresh(connect(target, &options(), limits).await?, permit);
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "no connection permit: redis failed"),
        }
        if sources.evict_one(host, port).await {
            continue;
        }
        if tokio::time::Instant::now() >= deadline {
            metrics::counter!("metasync_source_jobs_deferred_total").increment(1);
            return Err(ScanError::ServerBusy);
        }
        // Jittered, so that waiting slots do not poll in step.
        let pause = Duration::from_millis(25 + rand::random::<u64>() % 50);
        tokio::time::sleep(pause).await;
    };
    metrics::counter!("metasync_source_connections_total", "reused" => if taken.reused { "true" } else { "false" })
        .increment(1);
    Ok(taken)
}
