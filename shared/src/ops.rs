//! The operations listener: `/metrics`, `/healthz` and `/readyz` on an address of their own,
//! apart from the public API (`METASYNC_METRICS_ADDR`), so scrapes and probes need no token and
//! the internet-facing port exposes neither. Every other path is a 404.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::Value;

/// Whether the process can take traffic or work, with a JSON body saying why (or why not).
pub type ReadinessCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = (bool, Value)> + Send>> + Send + Sync>;

/// Where the operations listener listens, if anywhere (`METASYNC_METRICS_ADDR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub Option<SocketAddr>);

/// `METASYNC_METRICS_ADDR`: an address, or `off` (or empty) for no listener.
pub fn parse_listen_addr(value: &str) -> Result<ListenAddr, String> {
    match value.trim() {
        "" | "off" => Ok(ListenAddr(None)),
        addr => addr
            .parse()
            .map(|addr| ListenAddr(Some(addr)))
            .map_err(|e| format!("`{addr}` is not HOST:PORT or `off`: {e}")),
    }
}

/// Serves the operations routes on `listener` until the process ends.
pub fn spawn(listener: tokio::net::TcpListener, metrics: PrometheusHandle, ready: ReadinessCheck) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || async move {
                crate::telemetry::refresh();
                metrics.render()
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    let (ok, body) = ready().await;
                    let status = if ok {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, axum::Json(body)).into_response()
                }
            }),
        )
        .fallback(|| async { not_found() });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the operations listener stopped");
        }
    });
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: /metrics, /healthz and /readyz are served here\n",
    )
        .into_response()
}

/// A worker's readiness: registered, its Redis heartbeat current (within a lease), and not
/// draining. Cheap to clone; the heartbeat and the shutdown path update it.
#[derive(Debug, Clone)]
pub struct Readiness {
    inner: Arc<ReadinessState>,
}

#[derive(Debug)]
struct ReadinessState {
    lease: Duration,
    /// When the last heartbeat succeeded (ms since the epoch); 0 before the first.
    heartbeat_ms: AtomicI64,
    draining: AtomicBool,
}

impl Readiness {
    /// Not ready until the first heartbeat; a heartbeat older than `lease` is not current.
    pub fn new(lease: Duration) -> Self {
        Self {
            inner: Arc::new(ReadinessState {
                lease,
                heartbeat_ms: AtomicI64::new(0),
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// A heartbeat reached Redis.
    pub fn beat(&self) {
        self.inner
            .heartbeat_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// Shutdown began: no new work, so no longer ready.
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// Whether ready, and the facts behind it.
    pub fn check(&self) -> (bool, Value) {
        let last = self.inner.heartbeat_ms.load(Ordering::Relaxed);
        let age_ms = chrono::Utc::now().timestamp_millis() - last;
        let registered = last > 0;
        let current = registered && age_ms < self.inner.lease.as_millis() as i64;
        let draining = self.inner.draining.load(Ordering::Relaxed);
        let body = serde_json::json!({
            "registered": registered,
            "heartbeat_current": current,
            "draining": draining,
        });
        (current && !draining, body)
    }

    /// As a [`ReadinessCheck`] for [`spawn`].
    pub fn as_check(&self) -> ReadinessCheck {
        let readiness = self.clone();
        Arc::new(move || {
            let result = readiness.check();
            Box::pin(async move { result })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_or_turn_off() {
        assert_eq!(parse_listen_addr("off"), Ok(ListenAddr(None)));
        assert_eq!(parse_listen_addr(""), Ok(ListenAddr(None)));
        assert_eq!(
            parse_listen_addr("127.0.0.1:9091"),
            Ok(ListenAddr(Some("127.0.0.1:9091".parse().unwrap())))
        );
        assert!(parse_listen_addr("9091").is_err());
    }

    #[test]
    fn ready_only_while_beating_and_not_draining() {
        let readiness = Readiness::new(Duration::from_secs(15));
        assert!(!readiness.check().0, "not registered yet");
        readiness.beat();
        assert!(readiness.check().0);
        readiness.drain();
        let (ready, body) = readiness.check();
        assert!(!ready);
        assert_eq!(body["draining"], true);
        let stale = Readiness::new(Duration::from_millis(0));
        stale.beat();
        assert!(!stale.check().0, "a heartbeat older than the lease");
    }
}
