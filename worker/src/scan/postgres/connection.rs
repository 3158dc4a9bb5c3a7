//! The connection a scan reads one database on: a parked one for the same credentials if it
//! is alive, else a new one whose session is set up at connect time (in the startup packet,
//! so no extra statement): READ ONLY by default and a statement timeout.

use metasync_shared::tls::{self, TlsMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions as _, PgConnection};

use crate::scan::reuse::{SourceConnections, SourceKey, Taken};
use crate::scan::{self, ScanError, ScanLimits, ScanTarget};

/// A connection to `database`, with the key to give it back under; `reuse`: a parked one if
/// there is one.
pub(super) async fn open(
    target: &ScanTarget<'_>,
    database: &str,
    limits: ScanLimits,
    sources: &SourceConnections,
    reuse: bool,
) -> Result<(SourceKey, Taken<PgConnection>), ScanError> {
    let resource = target.resource;
    let key = sources.key(
        &target.address.to_string(),
        resource.port as u16,
        database,
        &resource.username,
        target.password,
        &target.tls_session(),
    );
    let taken = scan::open(
        target,
        sources,
        reuse.then_some(&sources.postgres),
        &key,
        || connect_options(target, database, limits),
        limits,
    )
    .await?;
    Ok((key, taken))
}

fn connect_options(
    target: &ScanTarget<'_>,
    database: &str,
    limits: ScanLimits,
) -> PgConnectOptions {
    let resource = target.resource;
    let tls = &resource.tls.0;
    let ssl_mode = match tls.mode {
        TlsMode::Disable => PgSslMode::Disable,
        TlsMode::Prefer => PgSslMode::Prefer,
        TlsMode::Require => PgSslMode::Require,
        TlsMode::VerifyCa => PgSslMode::VerifyCa,
        TlsMode::VerifyFull => PgSslMode::VerifyFull,
    };
    // `host` is the name as registered, for the certificate (verify-full) and SNI; the
    // connection goes to the checked address (`host_addr`, our sqlx patch: see vendor/).
    let options = PgConnectOptions::new()
        .host(tls::server_name(&resource.host))
        .host_addr(target.address)
        .refuse_cleartext_password_without_tls(true)
        .ssl_mode(ssl_mode)
        .port(resource.port as u16)
        .database(database)
        .username(&resource.username)
        .password(target.password)
        .application_name("metasync")
        .options([
            (
                "statement_timeout",
                format!("{}ms", limits.statement_timeout.as_millis()),
            ),
            ("default_transaction_read_only", "on".to_owned()),
            // The scan is one large statement over small catalogs: a server with JIT compiles
            // it (some 260 functions) for longer than it runs (2,000 tables: ~860 ms with JIT
            // against ~560 ms without). `jit` exists from PostgreSQL 11 on.
            ("jit", "off".to_owned()),
        ])
        .disable_statement_logging();
    match &tls.ca {
        Some(ca) => options.ssl_root_cert_from_pem(ca.as_bytes().to_vec()),
        None => options,
    }
}
