//! Webhooks for tests: a receiver on loopback that records every request it gets and answers
//! as told, the signature a receiver computes (Standard Webhooks), and registering a hook.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::TestApp;

/// What the receiver answers.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// 500 to the first two tries of each delivery, then 200.
    FailTwice,
    /// 410 Gone.
    Gone,
    /// 200 to every try.
    Accept,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `webhook-id` header.
    pub id: String,
    /// The `webhook-timestamp` header.
    pub timestamp: String,
    /// The `webhook-signature` header.
    pub signature: String,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

#[derive(Clone)]
struct Receiver {
    mode: Mode,
    got: Arc<Mutex<Vec<Received>>>,
}

/// An axum receiver on 127.0.0.1; returns its URL and what it got.
pub async fn receiver(mode: Mode) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let state = Receiver {
        mode,
        got: got.clone(),
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}/hook"), got)
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let mut got = receiver.got.lock().unwrap();
    let tries = got.iter().filter(|r| r.id == id).count();
    let status = match receiver.mode {
        Mode::FailTwice if tries < 2 => StatusCode::INTERNAL_SERVER_ERROR,
        Mode::FailTwice => StatusCode::OK,
        Mode::Gone => StatusCode::GONE,
        Mode::Accept => StatusCode::OK,
    };
    got.push(Received {
        id,
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        status: status.as_u16(),
    });
    status
}

/// The signature as a receiver computes it (Standard Webhooks).
pub fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Registers a webhook of `tenant` through the API (expects a `201` that does not carry the
/// secret) and returns it.
pub async fn create_hook(
    app: &TestApp,
    tenant: &str,
    url: &str,
    secret: &str,
    events: &[&str],
) -> Value {
    let (status, _, hook) = app
        .call(
            tenant,
            reqwest::Method::POST,
            "/v1/webhooks",
            Some(json!({ "url": url, "events": events, "secret": secret })),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{hook}");
    assert!(!hook.to_string().contains(secret), "{hook}");
    hook
}
