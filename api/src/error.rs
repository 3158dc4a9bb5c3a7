//! `ApiError`: the one error type of the HTTP boundary. Every variant becomes an RFC 9457
//! `application/problem+json` body. A catalog database that cannot be reached (down, restarting,
//! out of connections) is a 503 with `Retry-After`, warned about at most once per 10 s with a
//! count; any other database or Redis failure is a 500 whose detail is logged, never returned.

use std::sync::Mutex;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metasync_shared::warnings::Warnings;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, bad id, bad query string).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or a token that does not verify.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: a valid token whose role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 403: a tenant quota (e.g. the most resources) is used up.
    #[error("{0}")]
    QuotaExceeded(String),
    /// 429: a rate limit or a cap that frees up over time; `Retry-After` says when.
    #[error("{detail}")]
    TooManyRequests {
        /// Which limit, and its value.
        detail: String,
        /// Seconds until it is worth trying again.
        retry_after: u64,
    },
    /// 404: no such thing in the caller's tenant.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 405: the path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the request conflicts with current state (e.g. a taken name).
    #[error("{0}")]
    Conflict(String),
    /// 413: a body over the limit.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 414: a path and query over the limit.
    #[error("the request URI is longer than {0} bytes")]
    UriTooLong(usize),
    /// 431: headers over the limit.
    #[error("the request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// Any other error status the framework answered with, given our problem+json shape.
    #[error("{detail}")]
    Framework {
        /// The framework's status.
        status: StatusCode,
        /// Its (plain-text) explanation.
        detail: String,
    },
    /// 415: a body that is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but invalid (missing field, unknown kind, out-of-range port).
    #[error("{0}")]
    Unprocessable(String),
    /// 500: our fault; the detail is logged, not returned.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
    /// 503: the catalog database cannot be reached right now; the client should retry after
    /// [`RETRY_AFTER_SECS`]. The cause is logged (rate-limited), not returned.
    #[error("the catalog database is unavailable; retry shortly")]
    Unavailable(sqlx::Error),
    /// 503: Redis cannot be reached right now (only routes that read the queue itself).
    #[error("the queue is unavailable; retry shortly")]
    QueueUnavailable(#[from] metasync_shared::queue::QueueError),
    /// 503: no live worker to run a test-connection, or none took it in time.
    #[error("{detail}")]
    NoWorker {
        /// What was missing.
        detail: String,
        /// Seconds until it is worth trying again.
        retry_after: u64,
    },
    /// 504: a worker took a test-connection and did not answer in time.
    #[error("{0}")]
    WorkerTimeout(String),
}

/// The `Retry-After` of a 503: about how long a database restart or failover takes to notice.
pub const RETRY_AFTER_SECS: u32 = 1;

/// One warning per 10 s for the whole process while the catalog database is unreachable.
static CATALOG_UNAVAILABLE: Mutex<Warnings> = Mutex::new(Warnings::new("catalog database"));
/// Likewise for Redis, on the routes that read the queue.
static QUEUE_UNAVAILABLE: Mutex<Warnings> = Mutex::new(Warnings::new("redis"));

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if !matches!(e, sqlx::Error::RowNotFound) {
            metrics::counter!("metasync_catalog_db_errors_total", "site" => "api").increment(1);
        }
        // Text PostgreSQL cannot store (a NUL character, in `text` or `jsonb`) is the caller's
        // input, whichever door it came through: a 400, exactly for these SQLSTATEs.
        if let sqlx::Error::Database(db) = &e
            && matches!(db.code().as_deref(), Some("22021" | "22P05"))
        {
            return Self::BadRequest("text must not contain NUL characters".into());
        }
        if is_unavailable(&e) {
            Self::Unavailable(e)
        } else {
            Self::Internal(anyhow::Error::new(e).context("catalog database"))
        }
    }
}

/// Whether `e` means the database is unreachable rather than that the request went wrong: no
/// connection within the acquire timeout, a broken connection, or PostgreSQL refusing work
/// while it shuts down, starts up or runs out of connections.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // A deadlock or serialization failure: the same request retried gets past it.
        sqlx::Error::Database(_) if metasync_shared::db::is_transient_conflict(e) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exception; 57P01-57P03: admin/crash shutdown, cannot
            // connect now; 53300: too many connections.
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// An RFC 9457 problem: the body of every error response (`application/problem+json`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    kind: &'static str,
    /// The status's reason phrase.
    #[schema(example = "Not Found")]
    title: &'static str,
    /// The HTTP status.
    #[schema(example = 404)]
    status: u16,
    /// What went wrong, for a person to read; never a secret or an internal detail.
    #[schema(example = "resource not found")]
    detail: String,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::QuotaExceeded(_) => StatusCode::FORBIDDEN,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Framework { status, .. } => *status,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable(_) | Self::QueueUnavailable(_) | Self::NoWorker { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::WorkerTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(e) => tracing::error!(error = format!("{e:#}"), "request failed"),
            Self::Unavailable(e) => {
                // A poisoned lock only means a panic elsewhere mid-warning; keep counting.
                let mut warnings = CATALOG_UNAVAILABLE
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                warnings.failed(e);
            }
            Self::QueueUnavailable(e) => {
                let mut warnings = QUEUE_UNAVAILABLE
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                warnings.failed(e);
            }
            _ => {}
        }
        let problem = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("error"),
            status: status.as_u16(),
            detail: self.to_string(),
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Self::TooManyRequests { retry_after, .. } | Self::NoWorker { retry_after, .. } =
            &self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE
            && !response.headers().contains_key(header::RETRY_AFTER)
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_a_503_with_retry_after_and_other_failures_a_500() {
        let response = ApiError::from(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(
            ApiError::from(sqlx::Error::Io(io)),
            ApiError::Unavailable(_)
        ));
        let response = ApiError::from(sqlx::Error::RowNotFound).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!response.headers().contains_key(header::RETRY_AFTER));
    }
}
