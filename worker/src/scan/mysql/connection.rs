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
/// counts the statements (two on MariaDB, three on MySQL).
pub(super) async fn begin_read_only<'c>(
    conn: &'c mut MySqlConnection,
    limits: ScanLimits,
    statements: &mut u64,
) -> Result<Transaction<'c, MySql>, JobError> {
    // MariaDB's variable first: MySQL does not know it, and says so with its own error number,
    // which picks MySQL's. The handshake's server version would tell them apart too, but sqlx
    // does not expose it.
    let what = "setting the statement timeout";
    let mut flavour = Flavour::MariaDb;
    loop {
        let sql = statement_timeout_sql(flavour, limits.statement_timeout);
        let set = scan::answered(limits, what, async {
            Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await)
        })
        .await?;
        *statements += 1;
        match (set, flavour) {
            (Ok(_), _) => break,
            (Err(e), Flavour::MariaDb) if is_unknown_variable(&e) => flavour = Flavour::MySql,
            (Err(e), _) => return Err(JobError::from_source(what, &e)),
        }
    }
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

/// Which server's variable bounds a statement's run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    MariaDb,
    MySql,
}

/// The statement that bounds every later statement of the session to `timeout`: MariaDB's
/// `max_statement_time` is in seconds (fractions allowed), MySQL's `max_execution_time` in
/// whole milliseconds (it bounds SELECTs, which is all a scan runs; 0 would mean no limit).
fn statement_timeout_sql(flavour: Flavour, timeout: std::time::Duration) -> String {
    match flavour {
        Flavour::MariaDb => format!("set session max_statement_time = {}", timeout.as_secs_f64()),
        Flavour::MySql => format!(
            "set session max_execution_time = {}",
            timeout.as_millis().clamp(1, u32::MAX as u128)
        ),
    }
}

/// Whether the server does not know the variable (`ER_UNKNOWN_SYSTEM_VARIABLE`, 1193).
fn is_unknown_variable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|e| e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|e| e.number() == 1193)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_server_gets_its_own_variable_in_its_own_unit() {
        let timeout = Duration::from_millis(2_500);
        assert_eq!(
            statement_timeout_sql(Flavour::MariaDb, timeout),
            "set session max_statement_time = 2.5"
        );
        assert_eq!(
            statement_timeout_sql(Flavour::MySql, timeout),
            "set session max_execution_time = 2500"
        );
        // Below a millisecond MySQL would read 0 as "no limit".
        assert_eq!(
            statement_timeout_sql(Flavour::MySql, Duration::from_micros(10)),
            "set session max_execution_time = 1"
        );
    }
}
