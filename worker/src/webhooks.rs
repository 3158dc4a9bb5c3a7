//! Webhook deliveries on the worker (docs/webhooks.md). The outbox (`webhook_deliveries`) is
//! filled in the transactions that end jobs; each worker serves it on a task of its own, apart
//! from the job slots, polling PostgreSQL every [`POLL`] for due deliveries and claiming one at
//! a time with `for update skip locked`. At most [`MAX_CONCURRENT_DELIVERIES`] are in flight
//! per worker and each request has [`REQUEST_TIMEOUT`], so a receiver that never answers holds
//! a few tasks and nothing else: never a sync's slot, never a connection of the pool while it
//! waits.
//!
//! A delivery is signed as the Standard Webhooks spec says (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), sent to the address
//! the outbound policy checked right now (the name is resolved once, here, and never again, so
//! DNS rebinding cannot slip past), and never redirected. A 2xx delivers it; a 410 Gone turns
//! its webhook off; anything else is retried with the deployment's [`RetryPolicy`] backoff.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::Utc;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::Request;
use hyper::http::uri::Scheme;
use hyper_util::rt::TokioIo;
use metasync_shared::db::webhooks::{self, AttemptOutcome, AttemptRecord, Claimed};
use metasync_shared::warnings::Warnings;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::pipeline::WorkerContext;

/// Deliveries one worker sends at once.
pub const MAX_CONCURRENT_DELIVERIES: usize = 8;
/// How long one request (connect, TLS, send, status line) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle lane looks for due deliveries.
pub const POLL: Duration = Duration::from_millis(500);
/// A claimed delivery whose worker died is sent again after this (well past the timeout).
const LEASE: Duration = Duration::from_secs(60);

/// The worker's webhook lane, running until [`WebhookLane::stop`].
pub struct WebhookLane {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl WebhookLane {
    /// Starts sending.
    pub fn spawn(ctx: WorkerContext) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(ctx, stopped));
        Self { stop, task }
    }

    /// Stops claiming (deliveries in flight end within their timeout; one cut short is sent
    /// again once its lease lapses).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn serve(ctx: WorkerContext, mut stopped: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES));
    let tls = tls_connector();
    let mut warnings = Warnings::new("webhook lane: catalog database failed");
    while !*stopped.borrow() {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = stopped.changed() => break,
        };
        match webhooks::claim_due(&ctx.db, LEASE).await {
            Ok(Some(claimed)) => {
                warnings.succeeded();
                let (ctx, tls) = (ctx.clone(), tls.clone());
                tokio::spawn(async move {
                    deliver(&ctx, &tls, claimed).await;
                    drop(slot);
                });
            }
            Ok(None) => {
                warnings.succeeded();
                drop(slot);
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    _ = stopped.changed() => break,
                }
            }
            Err(e) => {
                warnings.failed(&e);
                drop(slot);
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// Sends one claimed delivery and records the attempt.
#[tracing::instrument(skip_all, fields(delivery_id = %claimed.id, webhook_id = %claimed.hook.webhook_id, attempt = claimed.attempt))]
async fn deliver(ctx: &WorkerContext, tls: &tokio_rustls::TlsConnector, claimed: Claimed) {
    let started_at = Utc::now();
    let started = Instant::now();
    let sent = match ctx
        .keys
        .open_webhook_secret(&claimed.hook.sealed_secret(), &claimed.hook.target())
    {
        Ok(secret) => {
            match tokio::time::timeout(REQUEST_TIMEOUT, send(ctx, tls, &claimed, &secret)).await {
                Ok(sent) => sent,
                Err(_) => Err(SendError::retry(format!(
                    "no answer within {}s",
                    REQUEST_TIMEOUT.as_secs()
                ))),
            }
        }
        Err(_) => Err(SendError {
            message: "the signing secret cannot be opened with this worker's keys".into(),
            permanent: true,
        }),
    };
    let (status_code, error, next) = match sent {
        Ok(status) if (200..300).contains(&status) => {
            (Some(status), None, AttemptOutcome::Succeeded)
        }
        Ok(410) => (
            Some(410),
            Some("410 Gone: the webhook is turned off".to_owned()),
            AttemptOutcome::Gone,
        ),
        Ok(status) => (
            Some(status),
            Some(format!("the receiver answered {status}")),
            retry_or_fail(ctx, claimed.attempt, false),
        ),
        Err(e) => (
            None,
            Some(e.message),
            retry_or_fail(ctx, claimed.attempt, e.permanent),
        ),
    };
    tracing::debug!(status = ?status_code, error = ?error, outcome = ?next, "webhook attempt");
    let record = AttemptRecord {
        started_at,
        duration: started.elapsed(),
        status_code,
        error,
        next,
    };
    if let Err(e) = webhooks::record_attempt(&ctx.db, &claimed, &record).await {
        // The lease lapses and another attempt sends it again (at least once).
        tracing::warn!(error = %e, "webhook attempt not recorded");
    }
}

fn retry_or_fail(ctx: &WorkerContext, attempt: i32, permanent: bool) -> AttemptOutcome {
    if permanent || attempt >= ctx.retry.max_attempts {
        AttemptOutcome::Failed
    } else {
        AttemptOutcome::RetryAfter(ctx.retry.delay(attempt))
    }
}

/// Why an attempt got no status. Never carries the secret or the body.
#[derive(Debug)]
struct SendError {
    message: String,
    /// Retrying cannot help.
    permanent: bool,
}

impl SendError {
    fn retry(message: String) -> Self {
        Self {
            message,
            permanent: false,
        }
    }
}

/// POSTs the delivery; returns the receiver's status.
async fn send(
    ctx: &WorkerContext,
    tls: &tokio_rustls::TlsConnector,
    claimed: &Claimed,
    secret: &str,
) -> Result<u16, SendError> {
    let uri: hyper::Uri = claimed.hook.url.parse().map_err(|_| SendError {
        message: "the URL does not parse".into(),
        permanent: true,
    })?;
    let https = uri.scheme() == Some(&Scheme::HTTPS);
    let host = uri.host().unwrap_or_default();
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let address = ctx
        .outbound
        .connect_address(bare_host, port)
        .await
        .map_err(|e| SendError::retry(e.to_string()))?;

    let body = serde_json::to_vec(&claimed.payload.0).expect("JSON values serialize");
    let id = claimed.id.to_string();
    let timestamp = Utc::now().timestamp().to_string();
    let signature = sign(secret, &id, &timestamp, &body);
    let authority = uri
        .authority()
        .map(hyper::http::uri::Authority::as_str)
        .unwrap_or(host);
    let request = Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "metasync-webhooks/1")
        .header("webhook-id", &id)
        .header("webhook-timestamp", &timestamp)
        .header("webhook-signature", signature)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| SendError {
            message: format!("building the request: {e}"),
            permanent: true,
        })?;

    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| SendError::retry(format!("connecting to the receiver: {}", e.kind())))?;
    let _ = stream.set_nodelay(true);
    if https {
        let name = rustls::pki_types::ServerName::try_from(bare_host.to_owned()).map_err(|_| {
            SendError {
                message: "the URL's host is not a valid TLS name".into(),
                permanent: true,
            }
        })?;
        let stream = tls
            .connect(name, stream)
            .await
            .map_err(|e| SendError::retry(format!("TLS with the receiver failed: {e}")))?;
        exchange(stream, request, address).await
    } else {
        exchange(stream, request, address).await
    }
}

/// One HTTP/1.1 request on `io`; the status of its answer (the body is not read).
async fn exchange<S>(
    io: S,
    request: Request<Full<Bytes>>,
    address: SocketAddr,
) -> Result<u16, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| SendError::retry(format!("HTTP with the receiver failed: {e}")))?;
    let driver = tokio::spawn(connection);
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| SendError::retry(format!("sending to {address} failed: {e}")));
    driver.abort();
    Ok(answer?.status().as_u16())
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`. A `whsec_` secret is a base64 key (the
/// Standard Webhooks form); any other is used as its bytes.
pub fn sign(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|k| STANDARD.decode(k).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// TLS to receivers, verified against the public web's roots (webpki-roots).
fn tls_connector() -> tokio_rustls::TlsConnector {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // The process's provider: ring (`tls::install_crypto_provider`).
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
