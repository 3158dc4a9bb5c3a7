//! `JobError`: the one error type of a sync attempt. Each error is classified as transient or
//! permanent where it is created, from the driver's error kind or SQLSTATE, never by
//! matching message text later.

use std::fmt;

use metasync_shared::domain::ErrorClass;

#[derive(Debug, Clone)]
pub struct JobError {
    pub class: ErrorClass,
    pub message: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JobError {}

impl JobError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Transient,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Permanent,
            message: message.into(),
        }
    }

    /// Classifies an error from a source database. `what` says what we were doing.
    pub fn from_source(what: &str, e: &sqlx::Error) -> Self {
        let class = classify(e);
        Self {
            class,
            message: format!("{what}: {}", describe(e)),
        }
    }

    /// Removes every occurrence of `secret` from the message. Drivers do not echo passwords,
    /// but a message must never carry one, so this is enforced at the one place errors leave.
    pub fn scrubbed(mut self, secret: &str) -> Self {
        if !secret.is_empty() && self.message.contains(secret) {
            self.message = self.message.replace(secret, "***");
        }
        self
    }
}

fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            match db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                Some(mysql) => format!("{} (error {})", db.message(), mysql.number()),
                None => match db.code() {
                    Some(code) => format!("{} (SQLSTATE {code})", db.message()),
                    None => db.message().to_owned(),
                },
            }
        }
        sqlx::Error::Io(io) => format!("network error: {io}"),
        sqlx::Error::PoolTimedOut => "timed out waiting for a connection".to_owned(),
        other => other.to_string(),
    }
}

/// SQLSTATEs (PostgreSQL) and error numbers (MySQL/MariaDB) that retrying cannot fix.
fn classify(e: &sqlx::Error) -> ErrorClass {
    match e {
        sqlx::Error::Database(db) => {
            // MySQL's SQLSTATEs are too coarse (42000 is both "unknown database" and a syntax
            // error); its error numbers are precise.
            let code = match db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                Some(mysql) => mysql.number().to_string().into(),
                None => db.code().unwrap_or_default(),
            };
            let permanent = matches!(
                code.as_ref(),
                // PostgreSQL: auth failed, unknown database, privileges, unsupported feature.
                "28P01" | "28000" | "3D000" | "42501" | "0A000" | "42883" | "42P01"
                // MySQL/MariaDB: access denied (user, db, table), unknown database.
                | "1045" | "1044" | "1142" | "1049" | "1227" | "1698"
            );
            if permanent {
                ErrorClass::Permanent
            } else {
                // Too many connections (53300, 1040), shutting down (57P0x), serialization
                // (40001), statement timeout (57014), and anything unknown: worth a retry.
                ErrorClass::Transient
            }
        }
        sqlx::Error::Configuration(_) => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_removes_the_secret() {
        let e = JobError::transient("failed with s3cret inside").scrubbed("s3cret");
        assert_eq!(e.message, "failed with *** inside");
    }

    #[test]
    fn io_errors_are_transient() {
        let e = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(
            JobError::from_source("connecting", &e).class,
            ErrorClass::Transient
        );
    }
}
