//! A minimal webhook receiver that records what the simulator delivers and
//! answers as told (200, an error status, or slowly). For tests and the
//! delivery benchmark; the project's real receiver is the ingester.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;

use crate::auth::lock;

/// One request as received.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// The full URL as the receiver saw it (`http://host:port/path?query`).
    pub url: String,
    /// Headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: web::Bytes,
    /// The status the receiver answered.
    pub status: u16,
}

impl ReceivedRequest {
    /// A header by name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body parsed as the JSON array of events (empty if it is not one).
    pub fn events(&self) -> Vec<Value> {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct State {
    requests: Mutex<Vec<ReceivedRequest>>,
    record: bool,
    request_count: AtomicU64,
    /// Events in requests answered 2xx.
    accepted_events: AtomicU64,
    fail_next: AtomicU32,
    fail_status: AtomicU32,
    status: AtomicU32,
    delay_ms: AtomicU64,
}

/// A running receiver.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    path: String,
    state: Arc<State>,
    server: ServerHandle,
}

async fn receive(state: web::Data<State>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let failing = state
        .fail_next
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    let status = if failing {
        state.fail_status.load(Ordering::Relaxed)
    } else {
        state.status.load(Ordering::Relaxed)
    };
    let status = StatusCode::from_u16(u16::try_from(status).unwrap_or(500))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // Counting needs no full parse: skip over each element.
    let events = if status.is_success() {
        serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body).map_or(0, |v| v.len())
    } else {
        0
    };
    // Record before counting, so whoever sees a count also sees the request.
    if state.record {
        let host = req.connection_info().host().to_owned();
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        lock(&state.requests).push(ReceivedRequest {
            url: format!("http://{host}{}", req.uri()),
            headers,
            body,
            status: status.as_u16(),
        });
    }
    state.request_count.fetch_add(1, Ordering::Relaxed);
    state
        .accepted_events
        .fetch_add(events as u64, Ordering::Relaxed);
    HttpResponse::build(status).finish()
}

impl Receiver {
    /// Starts a receiver on 127.0.0.1 (any free port) accepting POSTs on any
    /// path; `record` keeps every request (turn it off for benchmarks).
    pub async fn spawn(record: bool) -> std::io::Result<Self> {
        Self::spawn_with(record, 2).await
    }

    /// [`Receiver::spawn`] with a chosen number of worker threads.
    pub async fn spawn_with(record: bool, workers: usize) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            record,
            status: AtomicU32::new(200),
            fail_status: AtomicU32::new(503),
            ..State::default()
        });
        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .default_service(web::to(receive))
        })
        .workers(workers.max(1))
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "webhook receiver failed");
            }
        });
        Ok(Self {
            addr,
            path: "/webhooks/hubspot".to_owned(),
            state,
            server: handle,
        })
    }

    /// The URL to configure as the app's `targetUrl`.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }

    /// Every recorded request, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.state.requests).clone()
    }

    /// Every event of every request answered 2xx, in arrival order.
    pub fn accepted_events(&self) -> Vec<Value> {
        lock(&self.state.requests)
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(ReceivedRequest::events)
            .collect()
    }

    /// Requests received.
    pub fn request_count(&self) -> u64 {
        self.state.request_count.load(Ordering::Relaxed)
    }

    /// Events in requests answered 2xx.
    pub fn accepted_event_count(&self) -> u64 {
        self.state.accepted_events.load(Ordering::Relaxed)
    }

    /// Answers every request with `status` from now on.
    pub fn respond_with(&self, status: u16) {
        self.state
            .status
            .store(u32::from(status), Ordering::Relaxed);
    }

    /// Answers the next `n` requests with `status`, then as before.
    pub fn fail_next(&self, n: u32, status: u16) {
        self.state
            .fail_status
            .store(u32::from(status), Ordering::Relaxed);
        self.state.fail_next.store(n, Ordering::Relaxed);
    }

    /// Waits this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Waits until at least `n` events were accepted; false on timeout.
    pub async fn wait_for_events(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.accepted_event_count() < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    /// Stops the receiver.
    pub async fn stop(self) {
        self.server.stop(false).await;
    }
}
