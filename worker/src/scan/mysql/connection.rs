//! The connection a scan reads the server on (a parked one for the same credentials if it is
//! alive, else a new one), and the session it reads in: a statement timeout, then a READ ONLY
//! transaction, one statement each.

use metasync_shared::tls::{self, TlsMode};
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::{ConnectOptions as _, Connection as _, MySql, MySqlConnection, Transaction};

use crate::error::JobError;
use crate::scan::reuse::{SourceConnections, SourceKey, Taken};
use crate::scan::{self, ScanError, ScanLimits, ScanTarget};

/// A connection to the resource's server, with the key to give it back under; `reuse`: a
/// parked one if there is one.
pub(super) async fn open(
    target: &ScanTarget<'_>,
    limits: ScanLimits,
    sources: &SourceConnections,
    reuse: bool,
) -> Result<(SourceKey, Taken<MySqlConnection>), ScanError> {
    let resource = target.resource;
    let key = sources.key(
        &target.address.to_string(),
        resource.port as u16,
        &resource.database,
        &resource.username,
        target.password,
        &target.tls_session(),
    );
    let taken = scan::open(
        target,
        sources,
        reuse.then_some(&sources.mysql),
        &key,
        || connect_options(target),
        limits,
    )
    .await?;
    Ok((key, taken))
}

fn connect_options(target: &ScanTarget<'_>) -> MySqlConnectOptions {
    let resource = target.resource;
    let tls = &resource.tls.0;
    let ssl_mode = match tls.mode {
        TlsMode::Disable => MySqlSslMode::Disabled,
        TlsMode::Prefer => MySqlSslMode::Preferred,
        TlsMode::Require => MySqlSslMode::Required,
        TlsMode::VerifyCa => MySqlSslMode::VerifyCa,
        TlsMode::VerifyFull => MySqlSslMode::VerifyIdentity,
    };
    // `host` is the name as registered, for the certificate (verify-full) and SNI; the
    // connection goes to the checked address (`host_addr`, our sqlx patch: see vendor/).
    // mysql_clear_password only where TLS is certain; sqlx refuses it otherwise, also as the
    // server's first choice (our patch). The full caching_sha2_password exchange sends the
    // password over TLS only: without TLS it would need RSA, which is not built in, so it fails.
    let options = MySqlConnectOptions::new()
        .host(tls::server_name(&resource.host))
        .host_addr(target.address)
        .port(resource.port as u16)
        .database(&resource.database)
        .username(&resource.username)
        .ssl_mode(ssl_mode)
        .enable_cleartext_plugin(tls.mode.requires_tls())
        .disable_statement_logging();
    let options = match &tls.ca {
        Some(ca) => options.ssl_ca_from_pem(ca.as_bytes().to_vec()),
        None => options,
    };
    // An empty password means "none": sending an empty one fails where none is expected.
    if target.password.is_empty() {
        options
    } else {
        options.password(target.password)
    }
}

/// Sets the statement timeout, then starts the READ ONLY transaction the catalog is read in;
/// counts both statements.
pub(super) async fn begin_read_only<'c>(
    conn: &'c mut MySqlConnection,
    limits: ScanLimits,
    statements: &mut u64,
) -> Result<Transaction<'c, MySql>, JobError> {
    // MariaDB's max_statement_time is in seconds; MySQL's max_execution_time in milliseconds.
    // A server without the variable rejects the `set`, and the scan goes on without it.
    let timeout_secs = limits.statement_timeout.as_secs_f64();
    scan::answered(limits, "setting the statement timeout", async {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "set session max_statement_time = {timeout_secs}"
        )))
        .execute(&mut *conn)
        .await;
        Ok(())
    })
    .await?;
    *statements += 1;
    let what = "starting a read-only transaction";
    let tx = scan::answered(limits, what, async {
        conn.begin_with("start transaction read only")
            .await
            .map_err(|e| JobError::from_source(what, &e))
    })
    .await?;
    *statements += 1;
    Ok(tx)
}
