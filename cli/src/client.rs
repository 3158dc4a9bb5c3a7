//! The API over HTTP: every answer is JSON (the API's own shape, passed through untouched), and
//! every failure becomes a [`CliError`] whose kind decides the exit code.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::error::{CliError, CliResult};

/// How long a request that is not a long-poll may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
    /// Whether the server knows `GET /v1/jobs/{id}?until=finished` (cleared by the first
    /// `400` that names it: older servers only return on any change).
    until_finished: AtomicBool,
}

impl Client {
    pub fn new(base: &str, token: String) -> CliResult<Self> {
        let base = Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                CliError::BadInput(format!(
                    "the API URL `{base}` is not an http:// or https:// URL"
                ))
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("metasync-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Unreachable(format!("setting up HTTP: {e}")))?;
        Ok(Self {
            http,
            base,
            token,
            until_finished: AtomicBool::new(true),
        })
    }

    /// The URL of `segments` under the base URL, each percent-encoded (a resource name may
    /// hold `/`, `?` or spaces).
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (k, v.as_str())));
        }
        url
    }

    /// Sends a request and returns the status and JSON body (`null` for an empty one); an
    /// error answer (`4xx`, `5xx`) is a [`CliError`].
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        timeout: Duration,
    ) -> CliResult<(StatusCode, Value)> {
        let what = format!("{method} {}", url.path());
        let mut tries = 0;
        let response = loop {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(&self.token)
                .timeout(timeout);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| unreachable(&what, &e))?;
            // The per-tenant rate limits answer 429 with when to come back: a script applying
            // many resources waits rather than fails.
            let retry_after = (response.status() == StatusCode::TOO_MANY_REQUESTS)
                .then(|| response.headers().get(reqwest::header::RETRY_AFTER))
                .flatten()
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .filter(|&s| s <= 60);
            match retry_after {
                Some(seconds) if tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_secs(seconds.max(1))).await;
                }
                _ => break response,
            }
        };
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| unreachable(&what, &e))?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| {
                CliError::Api(format!(
                    "{what} answered {status} with a body that is not JSON"
                ))
            })?
        };
        if status.is_success() {
            return Ok((status, body));
        }
        Err(classify(&what, status, &body))
    }

    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> CliResult<Value> {
        let url = self.url(segments, query);
        Ok(self.send(Method::GET, url, None, REQUEST_TIMEOUT).await?.1)
    }

    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> CliResult<(StatusCode, Value)> {
        let url = self.url(segments, &[]);
        self.send(method, url, body, REQUEST_TIMEOUT).await
    }

    /// Every item of a listing, following `next_cursor`.
    pub async fn list_all(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> CliResult<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            q.push(("limit", "1000".into()));
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            let page = self.get(segments, &q).await?;
            if let Some(Value::Array(page_items)) = page.get("items") {
                items.extend(page_items.iter().cloned());
            }
            match page.get("next_cursor").and_then(Value::as_str) {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
    }

    /// The resource named `name`, or a bad-input error naming it.
    pub async fn resource_by_name(&self, name: &str) -> CliResult<Value> {
        self.find_resource(name)
            .await?
            .ok_or_else(|| CliError::BadInput(format!("no resource is named `{name}`")))
    }

    pub async fn find_resource(&self, name: &str) -> CliResult<Option<Value>> {
        let page = self
            .get(&["v1", "resources"], &[("name", name.to_owned())])
            .await?;
        Ok(page
            .get("items")
            .and_then(Value::as_array)
            .and_then(|items| items.first().cloned()))
    }

    /// The job, once it is finished or after about `wait` (the server's long-poll): with
    /// `until=finished` where the server has it, else returning on any change.
    pub async fn wait_job(&self, id: &str, wait: Duration) -> CliResult<Value> {
        let seconds = wait.as_secs().max(1).to_string();
        let timeout = wait + REQUEST_TIMEOUT;
        if self.until_finished.load(Ordering::Relaxed) {
            let query = [("wait", seconds.clone()), ("until", "finished".into())];
            let url = self.url(&["v1", "jobs", id], &query);
            match self.send(Method::GET, url, None, timeout).await {
                Err(CliError::BadInput(message)) if message.contains("until") => {
                    self.until_finished.store(false, Ordering::Relaxed);
                }
                other => return other.map(|(_, body)| body),
            }
        }
        let url = self.url(&["v1", "jobs", id], &[("wait", seconds)]);
        Ok(self.send(Method::GET, url, None, timeout).await?.1)
    }
}

fn unreachable(what: &str, e: &reqwest::Error) -> CliError {
    // The source chain says why (refused, DNS, TLS); reqwest's own message alone does not.
    let mut message = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    CliError::Unreachable(message)
}

/// An error answer as a [`CliError`], with the problem's `detail` (or `title`).
fn classify(what: &str, status: StatusCode, body: &Value) -> CliError {
    let detail = body
        .get("detail")
        .or_else(|| body.get("title"))
        .and_then(Value::as_str)
        .map_or_else(|| status.to_string(), str::to_owned);
    let message = format!("{what} answered {}: {detail}", status.as_u16());
    match status.as_u16() {
        401 | 403 => CliError::Auth(message),
        400 | 404 | 405 | 413 | 415 | 422 => CliError::BadInput(message),
        _ => CliError::Api(message),
    }
}
