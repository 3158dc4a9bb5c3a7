//! What every request passes through around the handlers: its request id and access log line,
//! the request metrics, the limits on URIs and headers, the refusal of NUL characters (PostgreSQL cannot store them in text, so
//! they would otherwise surface as a database error), `Cache-Control` on tenant data, and
//! problem+json for every error response, including the framework's own rejections.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::error::ApiError;

/// Longest request target (path and query) served; longer is a 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest total size of the request's headers; larger is a 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest request body; larger is a 413 (bodies are small JSON documents).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The header that carries a request's id, in and out.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest request id taken from a caller; a longer one is replaced.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Drops a caller's `x-request-id` unless it is one short token (RFC 9110 `tchar`s, at most
/// [`MAX_REQUEST_ID_BYTES`]), so that what goes into every log line is bounded and inert; a
/// new one is made in its place ([`NewRequestId`]).
pub async fn drop_unusable_request_id(mut request: Request) -> Request {
    let mut given = request.headers().get_all(&REQUEST_ID).iter();
    let usable = match (given.next(), given.next()) {
        (Some(id), None) => usable_request_id(id.as_bytes()),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !usable {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

fn usable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_BYTES).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

/// A new request id: a UUID v7, so ids sort by time.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = uuid::Uuid::now_v7().to_string();
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// The route template a request matched (never the raw path, which holds ids), or
/// `unmatched`.
fn route_template<B>(request: &axum::http::Request<B>) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned())
}

/// The span of one request: every event logged while it is served carries its method, route
/// template and request id. Its level is `error` so that it is enabled whenever any event is
/// (under `RUST_LOG=warn`, a 500's error line still carries the request id).
pub fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    tracing::error_span!(
        "request",
        method = %request.method(),
        route = %route_template(request),
        request_id,
    )
}

/// The access log: one line per request, in its span.
pub fn log_response<B>(response: &axum::http::Response<B>, latency: Duration, _: &tracing::Span) {
    tracing::info!(
        status = response.status().as_u16(),
        latency_seconds = latency.as_secs_f64(),
        "request served"
    );
}

/// Request count and latency by route template and a fixed set of methods (never an id or
/// anything else a caller chooses: labels stay low-cardinality).
pub async fn record_request(request: Request, next: Next) -> Response {
    let route = route_template(&request);
    let method = method_label(request.method());
    // A long-poll lasts as long as its caller asked: counted, but kept out of the latency.
    let long_poll = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "wait" || p.starts_with("wait=")));
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("metasync_http_requests_total", "method" => method, "route" => route.clone(), "status" => status).increment(1);
    if !long_poll {
        metrics::histogram!("metasync_http_request_duration_seconds", "method" => method, "route" => route)
            .record(started.elapsed().as_secs_f64());
    }
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Refuses a query parameter the route does not take, with a 400 that names it and lists the
/// ones it does, instead of ignoring it (a misspelt filter would otherwise answer everything).
/// What a route takes is what the OpenAPI document says it takes, so the two cannot differ.
/// Values are checked by the route's own query type (an unknown `state` is a 400 that lists
/// the valid ones).
pub async fn known_query_parameters(request: Request, next: Next) -> Response {
    let (Some(route), Some(query)) = (
        request.extensions().get::<MatchedPath>(),
        request.uri().query(),
    ) else {
        return next.run(request).await;
    };
    let key = (
        request.method().as_str().to_ascii_lowercase(),
        route.as_str().to_owned(),
    );
    if let Some(taken) = documented_query_parameters().get(&key)
        && let Some((unknown, _)) = form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| !taken.iter().any(|t| t == name))
    {
        let unknown: String = unknown.chars().take(64).collect();
        let detail = if taken.is_empty() {
            format!("unknown query parameter `{unknown}`: this route takes none")
        } else {
            let taken: Vec<String> = taken.iter().map(|t| format!("`{t}`")).collect();
            format!(
                "unknown query parameter `{unknown}`: this route takes {}",
                taken.join(", ")
            )
        };
        return ApiError::BadRequest(detail).into_response();
    }
    next.run(request).await
}

/// (lowercase method, path template) → the names of the query parameters it documents.
fn documented_query_parameters() -> &'static HashMap<(String, String), Vec<String>> {
    static TAKEN: OnceLock<HashMap<(String, String), Vec<String>>> = OnceLock::new();
    TAKEN.get_or_init(|| {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::path::ParameterIn;
        let mut taken = HashMap::new();
        for (path, item) in &crate::openapi::document().paths.paths {
            let operations = [
                ("get", &item.get),
                ("put", &item.put),
                ("post", &item.post),
                ("delete", &item.delete),
                ("patch", &item.patch),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                let names = operation
                    .parameters
                    .iter()
                    .flatten()
                    .filter_map(|p| match p {
                        RefOr::T(p) if p.parameter_in == ParameterIn::Query => Some(p.name.clone()),
                        _ => None,
                    })
                    .collect();
                taken.insert((method.to_owned(), path.clone()), names);
            }
        }
        taken
    })
}

/// Refuses what no handler should see: over-long URIs (414), over-large headers (431) and NUL
/// characters in the path or query (400). Then gives error responses a problem+json body and
/// tenant data `Cache-Control: private, no-cache` (cacheable by the client alone, revalidated
/// with its ETag every time).
pub async fn guard(request: Request, next: Next) -> Response {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return ApiError::UriTooLong(MAX_URI_BYTES).into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return ApiError::HeadersTooLarge(MAX_HEADER_BYTES).into_response();
    }
    if request
        .uri()
        .path_and_query()
        .is_some_and(|pq| has_encoded_nul(pq.as_str()))
    {
        return ApiError::BadRequest("the URL contains a NUL character (%00)".into())
            .into_response();
    }
    let path = request.uri().path();
    let tenant_data = path.starts_with("/v1/") || path.starts_with("/internal/");
    let mut response = next.run(request).await;
    if tenant_data && !response.headers().contains_key(header::CACHE_CONTROL) {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        );
    }
    problem_for_framework_errors(response).await
}

/// An error response that did not come from [`ApiError`] (a body-limit layer, hyper-level
/// rejections that reach us) gets the same problem+json shape as ours.
async fn problem_for_framework_errors(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&text).trim().to_owned();
    let mut rebuilt = ApiError::Framework {
        status,
        detail: if detail.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            detail
        },
    }
    .into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().insert(name, value.clone());
        }
    }
    rebuilt
}

/// Whether a URL (path and query, still percent-encoded) encodes a NUL character.
fn has_encoded_nul(raw: &str) -> bool {
    raw.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
}

/// Whether JSON text contains the escape of a NUL character (`\u0000`), which PostgreSQL cannot
/// store in `text` or `jsonb`. A raw NUL byte is not valid JSON, so this is the only spelling.
pub fn json_has_nul(json: &[u8]) -> bool {
    let mut backslashes = 0usize;
    for (i, &b) in json.iter().enumerate() {
        if b == b'\\' {
            backslashes += 1;
            continue;
        }
        // An odd run of backslashes escapes this character.
        if b == b'u' && backslashes % 2 == 1 && json.get(i + 1..i + 5) == Some(b"0000".as_slice()) {
            return true;
        }
        backslashes = 0;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_tokens() {
        assert!(usable_request_id(b"0193a1b2-7c3d-7e4f-8a5b-6c7d8e9f0a1b"));
        assert!(usable_request_id(b"Root-1-abc.def_ghi~1"));
        assert!(!usable_request_id(b""));
        assert!(!usable_request_id(b"two words"));
        assert!(!usable_request_id(b"{\"json\":1}"));
        assert!(!usable_request_id(&[b'a'; MAX_REQUEST_ID_BYTES + 1]));
    }

    #[test]
    fn nul_characters_are_found_in_every_spelling_and_only_there() {
        assert!(json_has_nul(br#"{"a":"x\u0000y"}"#));
        assert!(json_has_nul(br#"{"a":"\\\u0000"}"#));
        assert!(
            !json_has_nul(br#"{"a":"\\u0000"}"#),
            "an escaped backslash, then text"
        );
        assert!(!json_has_nul(br#"{"a":"\u0001"}"#));
        assert!(has_encoded_nul("/v1/search?q=a%00b"));
        assert!(!has_encoded_nul("/v1/search?q=a%2500"));
    }
}
