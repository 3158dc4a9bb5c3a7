//! `JobError`: the one error type of a sync attempt. Each error is classified as transient or
//! permanent where it is created, from the driver's error kind or SQLSTATE, never by
//! matching message text later.

use std::fmt;

use metasync_shared::connection_test::FailureCode;
use metasync_shared::domain::ErrorClass;

/// Longest error message stored with a job, in bytes; a longer one is cut at a character
/// boundary and marked with `…`.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Passwords shorter than this are not searched for in error text: a one- to three-character
/// string occurs in ordinary messages by chance, and dropping those would lose the error while
/// protecting nothing that guessing would not find.
const MIN_GUARDED_SECRET: usize = 4;

/// Why an attempt failed, for `metasync_job_failures_total{reason}`: a fixed set, so the label
/// never carries error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Opening the source connection (refused, unreachable, timed out, TLS, wrong engine).
    Connect,
    /// The source's own error while scanning.
    Source,
    /// The job or a statement ran out of time.
    Timeout,
    /// The attempt panicked.
    Panic,
    /// The catalog database failed mid-attempt.
    Catalog,
    /// The sealed password could not be opened.
    Credentials,
    /// The outbound policy refused the source's address.
    Policy,
    Other,
}

impl Reason {
    /// The label value (one of `metasync_shared::telemetry::FAILURE_REASONS`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Source => "source",
            Self::Timeout => "timeout",
            Self::Panic => "panic",
            Self::Catalog => "catalog",
            Self::Credentials => "credentials",
            Self::Policy => "policy",
            Self::Other => "other",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobError {
    pub class: ErrorClass,
    /// Why, for the failure metrics.
    pub reason: Reason,
    /// Printable, at most [`MAX_MESSAGE_BYTES`]: safe to store, log and return.
    pub message: String,
    /// What we were doing when a source's error arrived (`from_source`), kept so that
    /// [`JobError::guarded`] can drop the source's text and still say what failed.
    context: Option<String>,
    /// For a failure to connect (or to get as far as connecting), its class, which
    /// test-connection reports with a hint.
    pub failure: Option<FailureCode>,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JobError {}

impl JobError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Transient, message.into(), None)
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Permanent, message.into(), None)
    }

    fn new(class: ErrorClass, message: String, context: Option<String>) -> Self {
        let reason = if context.is_some() {
            Reason::Source
        } else {
            Reason::Other
        };
        Self {
            class,
            reason,
            message: printable(&message, MAX_MESSAGE_BYTES),
            context,
            failure: None,
        }
    }

    /// The same error, with why it happened.
    pub fn because(self, reason: Reason) -> Self {
        Self { reason, ..self }
    }

    /// The same error, classified as a failure to connect of class `code`.
    pub fn with_failure(mut self, code: FailureCode) -> Self {
        self.failure = Some(code);
        self
    }

    /// Classifies an error from a source database. `what` says what we were doing; the
    /// source's own text follows it, made printable and bounded (a hostile server chooses it).
    pub fn from_source(what: &str, e: &sqlx::Error) -> Self {
        Self::new(
            classify(e),
            format!("{what}: {}", describe(e)),
            Some(what.to_owned()),
        )
    }

    /// A failed connection to `server` (the host and port as registered), in one generic
    /// message per class: refused, unreachable, timed out, or not a database of that kind. No
    /// driver detail and no text from whatever answered, so the worker is no port scanner and
    /// a banner is never stored. An error the server sent in its own protocol (bad password,
    /// unknown database) proves it is a database of that kind, and is kept.
    pub fn from_connect(server: &str, engine: &str, e: &sqlx::Error) -> Self {
        Self::connect_failure(server, engine, e).because(Reason::Connect)
    }

    fn connect_failure(server: &str, engine: &str, e: &sqlx::Error) -> Self {
        use std::io::ErrorKind;
        let what = format!("connecting to {server}");
        // rustls reports a failed handshake (a certificate that does not verify) as I/O.
        if let sqlx::Error::Io(io) = e
            && let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return Self::new(
                ErrorClass::Permanent,
                format!("{what}: {}", tls_failure(tls)),
                Some(what),
            )
            .with_failure(FailureCode::Tls);
        }
        let (class, code, why) = match e {
            sqlx::Error::Database(_) => {
                return Self::from_source(&what, e).with_failure(server_refusal(e));
            }
            sqlx::Error::Configuration(_) => {
                return Self::from_source(&what, e).with_failure(FailureCode::Tls);
            }
            sqlx::Error::Io(io) => match io.kind() {
                ErrorKind::ConnectionRefused => (
                    ErrorClass::Transient,
                    FailureCode::ConnectionRefused,
                    "the connection was refused".to_owned(),
                ),
                ErrorKind::TimedOut => (
                    ErrorClass::Transient,
                    FailureCode::TimedOut,
                    "timed out".to_owned(),
                ),
                ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::InvalidData => (
                    ErrorClass::Transient,
                    FailureCode::WrongProtocol,
                    format!(
                        "the server closed the connection during the handshake (is it a {engine} server?)"
                    ),
                ),
                _ => (
                    ErrorClass::Transient,
                    FailureCode::Unreachable,
                    "the server is unreachable".to_owned(),
                ),
            },
            // Our own words (sqlx's, or our patch's: a cleartext password refused), never the
            // server's: a server without TLS where it is required, a bad CA in the settings.
            sqlx::Error::Tls(tls) => (
                ErrorClass::Permanent,
                FailureCode::Tls,
                format!("TLS: {tls}"),
            ),
            // Anything else is the driver failing to make sense of what answered.
            _ => (
                ErrorClass::Permanent,
                FailureCode::WrongProtocol,
                format!("the server did not answer like a {engine} server"),
            ),
        };
        Self::new(class, format!("{what}: {why}"), Some(what)).with_failure(code)
    }

    /// The last guard before an error leaves the attempt: if the message contains the
    /// password (in any case, or reversed), the whole message is dropped for one that says
    /// what failed and why its text is withheld. Never masks inside a message: a masked
    /// message tells its reader where the password was, and by elimination what it is.
    pub fn guarded(mut self, secret: &str) -> Self {
        if secret.chars().count() < MIN_GUARDED_SECRET {
            return self;
        }
        let haystack = self.message.to_lowercase();
        let secret = secret.to_lowercase();
        let reversed: String = secret.chars().rev().collect();
        if haystack.contains(&secret) || haystack.contains(&reversed) {
            let what = self.context.as_deref().unwrap_or("the attempt failed");
            self.message = format!(
                "{what}: the source's error message is withheld because it contained the password"
            );
        }
        self
    }
}

/// The class of an error a server sent while we connected, by SQLSTATE (PostgreSQL) or error
/// number (MySQL/MariaDB).
fn server_refusal(e: &sqlx::Error) -> FailureCode {
    let sqlx::Error::Database(db) = e else {
        return FailureCode::ServerError;
    };
    let code = match db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        Some(mysql) => mysql.number().to_string().into(),
        None => db.code().unwrap_or_default(),
    };
    match code.as_ref() {
        "28P01" | "28000" | "1045" | "1698" => FailureCode::AuthenticationFailed,
        "3D000" | "1049" => FailureCode::UnknownDatabase,
        "42501" | "1044" => FailureCode::PermissionDenied,
        _ => FailureCode::ServerError,
    }
}

/// A failed TLS handshake in our own words, one per class: a certificate's names and issuer
/// are whatever answered, so they are not repeated (the worker is no scanner of certificates).
fn tls_failure(e: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => {
            "TLS: the server's certificate is not valid for the host name (verify-full checks \
             the name as registered)"
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "TLS: the server's certificate is not signed by a trusted CA (`tls.ca`, or the \
             public roots without it)"
        }
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "TLS: the server's certificate has expired or is not valid yet",
        rustls::Error::InvalidCertificate(_) => "TLS: the server's certificate is not valid",
        _ => "the TLS handshake failed",
    }
}

/// `text` with control characters (newlines, escapes: a forged log line, a terminal
/// sequence) replaced by spaces, cut to at most `max` bytes at a character boundary.
fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max.saturating_sub('…'.len_utf8()) {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
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
        // A certificate that does not verify, a server without TLS where it is required, a
        // cleartext password refused: settings to fix, not to retry.
        sqlx::Error::Configuration(_) | sqlx::Error::Tls(_) => ErrorClass::Permanent,
        // rustls reports a failed handshake (a certificate that does not verify) as I/O.
        sqlx::Error::Io(io) if matches!(io.get_ref(), Some(e) if e.is::<rustls::Error>()) => {
            ErrorClass::Permanent
        }
        _ => ErrorClass::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source_error(message: &str) -> JobError {
        JobError::from_source("connecting", &sqlx::Error::Protocol(message.to_owned()))
    }

    #[test]
    fn a_message_with_the_password_is_dropped_whole_never_masked() {
        for echoed in [
            "user s3cretPW rejected",
            "user S3CRETpw rejected",
            "user WPterc3s",
        ] {
            let e = source_error(echoed).guarded("s3cretPW");
            assert_eq!(
                e.message,
                "connecting: the source's error message is withheld because it contained the password"
            );
        }
    }

    #[test]
    fn short_passwords_leave_errors_intact_and_readable() {
        let text = r#"database "shop_archive" does not exist (SQLSTATE 3D000)"#;
        let intact = source_error(text).message;
        assert!(intact.contains(text), "{intact}");
        for password in ["x", "sh", "exi"] {
            assert_eq!(
                source_error(text).guarded(password).message,
                intact,
                "{password}"
            );
        }
    }

    #[test]
    fn source_text_is_printable_and_bounded() {
        let forged = "oops\n2026-11-30T00:00:00Z INFO forged line\u{1b}[31m";
        let e = source_error(forged);
        assert!(!e.message.chars().any(char::is_control), "{:?}", e.message);
        let huge = "é".repeat(5 * 1024 * 1024);
        let e = source_error(&huge);
        assert!(e.message.len() <= MAX_MESSAGE_BYTES, "{}", e.message.len());
        assert!(e.message.ends_with('…'));
    }

    #[test]
    fn connect_failures_say_one_generic_thing_per_class() {
        let server = "db.example:5432";
        let cases = [
            (
                sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()),
                ErrorClass::Transient,
                "the connection was refused",
            ),
            (
                sqlx::Error::Io(std::io::ErrorKind::HostUnreachable.into()),
                ErrorClass::Transient,
                "the server is unreachable",
            ),
            (
                sqlx::Error::Io(std::io::Error::other("No route to host 10.9.8.7")),
                ErrorClass::Transient,
                "the server is unreachable",
            ),
            (
                sqlx::Error::Io(std::io::ErrorKind::UnexpectedEof.into()),
                ErrorClass::Transient,
                "during the handshake",
            ),
            (
                sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
                )),
                ErrorClass::Permanent,
                "not valid for the host name",
            ),
            (
                sqlx::Error::Tls("the server asked for the password in clear text".into()),
                ErrorClass::Permanent,
                "TLS: the server asked for the password in clear text",
            ),
            (
                sqlx::Error::Protocol("unknown message type: 'H' <script>".into()),
                ErrorClass::Permanent,
                "did not answer like a PostgreSQL server",
            ),
        ];
        let codes = [
            FailureCode::ConnectionRefused,
            FailureCode::Unreachable,
            FailureCode::Unreachable,
            FailureCode::WrongProtocol,
            FailureCode::Tls,
            FailureCode::Tls,
            FailureCode::WrongProtocol,
        ];
        for ((e, class, says), code) in cases.into_iter().zip(codes) {
            let got = JobError::from_connect(server, "PostgreSQL", &e);
            assert_eq!(got.class, class, "{e}");
            assert_eq!(got.failure, Some(code), "{e}");
            assert!(
                got.message.starts_with("connecting to db.example:5432: "),
                "{}",
                got.message
            );
            assert!(got.message.contains(says), "{}", got.message);
            assert!(
                !got.message.contains("script") && !got.message.contains("10.9.8.7"),
                "{}",
                got.message
            );
        }
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
