//! Webhook delivery the way HubSpot does it (docs/hubspot-sim.md, "Webhook delivery"): pending events
//! of an account are POSTed in batches of up to 100, at most
//! `maxConcurrentRequests` requests in flight per account, every request signed
//! (v1 + v3). A connection failure, a timeout or any non-2xx answer fails the
//! whole batch; each of its events is retried on its own, up to ten times over
//! about 24 hours with randomised delays, then dropped and counted.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use leadsync_hubspot::signature::{
    HEADER_REQUEST_TIMESTAMP, HEADER_SIGNATURE, HEADER_SIGNATURE_V3, HEADER_SIGNATURE_VERSION,
    decode_uri, sign_v1, sign_v3,
};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::WebhookEvent;
use crate::auth::{lock, read, write};
use crate::config::{DeliveryConfig, FaultConfig};
use crate::crm::now_ms;

/// The User-Agent of real deliveries (docs/hubspot-sim.md, "Webhook delivery").
pub const USER_AGENT: &str = "HubSpot Connect 2.0 (http://dev.hubspot.com/) (namespace: webhooks-nio-http-client) - WebhooksExecutorDaemon-executor";

/// Base delay before retry n (1-based), in seconds: ten retries spread over
/// about 24 hours (85,680 s before jitter). HubSpot publishes no schedule.
const RETRY_SCHEDULE_SECS: [f64; 10] = [
    60.0, 120.0, 300.0, 600.0, 1_200.0, 2_400.0, 4_800.0, 9_600.0, 21_600.0, 45_000.0,
];

/// Where deliveries go, from the app's webhook settings.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) url: String,
    /// The URI the v3 signature covers: the URL with HubSpot's decode table applied.
    signed_uri: String,
    pub(crate) max_in_flight: usize,
}

impl Target {
    pub(crate) fn new(url: String, max_in_flight: usize) -> Self {
        let signed_uri = decode_uri(&url).into_owned();
        Self {
            url,
            signed_uri,
            max_in_flight: max_in_flight.max(1),
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    event: WebhookEvent,
    /// Faults apply once per event, so a duplicate is not duplicated again.
    faulted: bool,
}

#[derive(Debug)]
struct Delayed {
    due: Instant,
    seq: u64,
    portal_id: u64,
    item: Pending,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// (portal, epoch, events) of one POST.
type Batch = (u64, u64, Vec<Pending>);

#[derive(Debug, Default)]
struct PortalQueue {
    ready: VecDeque<Pending>,
    in_flight: usize,
}

#[derive(Debug)]
struct State {
    paused: bool,
    /// Bumped by a reset, so requests still in flight from before are ignored.
    epoch: u64,
    queues: BTreeMap<u64, PortalQueue>,
    delayed: BinaryHeap<Reverse<Delayed>>,
    seq: u64,
    rng: SmallRng,
    faults: FaultConfig,
    cfg: DeliveryConfig,
    max_in_flight_seen: usize,
}

#[derive(Debug, Default)]
struct Counters {
    events_enqueued: AtomicU64,
    requests: AtomicU64,
    failed_requests: AtomicU64,
    events_delivered: AtomicU64,
    events_retried: AtomicU64,
    events_dropped: AtomicU64,
    events_lost: AtomicU64,
    events_duplicated: AtomicU64,
    events_delayed: AtomicU64,
    events_reordered: AtomicU64,
}

/// Delivery counters and queue state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStats {
    /// Events queued for delivery (one per change and matching subscription).
    pub events_enqueued: u64,
    /// POSTs sent (or attempted).
    pub requests: u64,
    /// POSTs that failed: connection error, timeout or a non-2xx answer.
    pub failed_requests: u64,
    /// Events in POSTs answered 2xx (an injected duplicate counts twice).
    pub events_delivered: u64,
    /// Event retries scheduled.
    pub events_retried: u64,
    /// Events given up after the last retry.
    pub events_dropped: u64,
    /// Events lost by fault injection (never sent).
    pub events_lost: u64,
    /// Extra copies made by fault injection.
    pub events_duplicated: u64,
    /// Events held back by fault injection.
    pub events_delayed: u64,
    /// Events moved behind later ones by fault injection.
    pub events_reordered: u64,
    /// Events waiting: ready, delayed or scheduled for retry.
    pub pending: u64,
    /// POSTs in flight now.
    pub in_flight: u64,
    /// Most POSTs ever in flight at once for one account.
    pub max_in_flight: u64,
    /// Whether delivery is paused.
    pub paused: bool,
}

/// The delivery engine.
#[derive(Debug)]
pub(crate) struct Delivery {
    state: Mutex<State>,
    wake: Notify,
    http: reqwest::Client,
    secret: String,
    seed: u64,
    target: RwLock<Option<Target>>,
    counters: Counters,
}

fn rng_for(seed: u64) -> SmallRng {
    // A distinct stream from the id generator's.
    SmallRng::seed_from_u64(crate::ids::mix(seed ^ 0xDE11_7E57))
}

impl Delivery {
    pub(crate) fn new(
        secret: String,
        seed: u64,
        cfg: DeliveryConfig,
        faults: FaultConfig,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .http1_only()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .connect_timeout(cfg.timeout())
            .build()?;
        Ok(Self {
            state: Mutex::new(State {
                paused: false,
                epoch: 0,
                queues: BTreeMap::new(),
                delayed: BinaryHeap::new(),
                seq: 0,
                rng: rng_for(seed),
                faults,
                cfg,
                max_in_flight_seen: 0,
            }),
            wake: Notify::new(),
            http,
            secret,
            seed,
            target: RwLock::new(None),
            counters: Counters::default(),
        })
    }

    pub(crate) fn set_target(&self, target: Option<Target>) {
        *write(&self.target) = target;
        self.wake.notify_one();
    }

    /// Queues events of one account for delivery.
    pub(crate) fn enqueue(&self, portal_id: u64, events: Vec<WebhookEvent>) {
        if events.is_empty() {
            return;
        }
        self.counters
            .events_enqueued
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        {
            let mut st = lock(&self.state);
            let q = st.queues.entry(portal_id).or_default();
            q.ready.extend(events.into_iter().map(|event| Pending {
                event,
                faulted: false,
            }));
        }
        self.wake.notify_one();
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        lock(&self.state).paused = paused;
        self.wake.notify_one();
    }

    pub(crate) fn set_faults(&self, faults: FaultConfig) {
        lock(&self.state).faults = faults;
    }

    pub(crate) fn faults(&self) -> FaultConfig {
        lock(&self.state).faults
    }

    pub(crate) fn set_config(&self, cfg: DeliveryConfig) {
        lock(&self.state).cfg = cfg;
        self.wake.notify_one();
    }

    pub(crate) fn config(&self) -> DeliveryConfig {
        lock(&self.state).cfg
    }

    /// Makes every scheduled retry and injected delay due now.
    pub(crate) fn retry_now(&self) {
        {
            let mut st = lock(&self.state);
            let now = Instant::now();
            let delayed = std::mem::take(&mut st.delayed);
            st.delayed = delayed
                .into_iter()
                .map(|Reverse(mut d)| {
                    d.due = now;
                    Reverse(d)
                })
                .collect();
        }
        self.wake.notify_one();
    }

    /// Drops everything queued and every counter; in-flight requests finish
    /// but their outcome is ignored.
    pub(crate) fn reset(&self, cfg: DeliveryConfig, faults: FaultConfig) {
        {
            let mut st = lock(&self.state);
            st.epoch += 1;
            st.paused = false;
            st.queues.clear();
            st.delayed.clear();
            st.seq = 0;
            st.rng = rng_for(self.seed);
            st.faults = faults;
            st.cfg = cfg;
            st.max_in_flight_seen = 0;
        }
        self.reset_counters();
        self.wake.notify_one();
    }

    pub(crate) fn reset_counters(&self) {
        let c = &self.counters;
        for a in [
            &c.events_enqueued,
            &c.requests,
            &c.failed_requests,
            &c.events_delivered,
            &c.events_retried,
            &c.events_dropped,
            &c.events_lost,
            &c.events_duplicated,
            &c.events_delayed,
            &c.events_reordered,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        lock(&self.state).max_in_flight_seen = 0;
    }

    pub(crate) fn stats(&self) -> DeliveryStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let st = lock(&self.state);
        let ready: usize = st.queues.values().map(|q| q.ready.len()).sum();
        let in_flight: usize = st.queues.values().map(|q| q.in_flight).sum();
        DeliveryStats {
            events_enqueued: get(&c.events_enqueued),
            requests: get(&c.requests),
            failed_requests: get(&c.failed_requests),
            events_delivered: get(&c.events_delivered),
            events_retried: get(&c.events_retried),
            events_dropped: get(&c.events_dropped),
            events_lost: get(&c.events_lost),
            events_duplicated: get(&c.events_duplicated),
            events_delayed: get(&c.events_delayed),
            events_reordered: get(&c.events_reordered),
            pending: (ready + st.delayed.len()) as u64,
            in_flight: in_flight as u64,
            max_in_flight: st.max_in_flight_seen as u64,
            paused: st.paused,
        }
    }

    /// Nothing queued, scheduled or in flight.
    pub(crate) fn is_idle(&self) -> bool {
        let st = lock(&self.state);
        st.delayed.is_empty()
            && st
                .queues
                .values()
                .all(|q| q.ready.is_empty() && q.in_flight == 0)
    }

    /// The dispatcher: runs until `cancel` fires.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let (batches, next_due) = self.dispatch();
            for (portal_id, epoch, batch) in batches {
                tokio::spawn(Arc::clone(&self).post(portal_id, epoch, batch));
            }
            let sleep = match next_due {
                Some(due) => tokio::time::sleep_until(tokio::time::Instant::from_std(due)),
                None => tokio::time::sleep(Duration::from_secs(3600)),
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = self.wake.notified() => {}
                () = sleep => {}
            }
        }
    }

    /// Moves due events to their queues and forms every batch that may be sent
    /// now; returns them with the time the next delayed event falls due.
    fn dispatch(&self) -> (Vec<Batch>, Option<Instant>) {
        let max_in_flight = read(&self.target).as_ref().map_or(10, |t| t.max_in_flight);
        let mut st = lock(&self.state);
        let now = Instant::now();
        let State {
            paused,
            epoch,
            queues,
            delayed,
            seq,
            rng,
            faults,
            cfg,
            max_in_flight_seen,
        } = &mut *st;
        while delayed.peek().is_some_and(|Reverse(d)| d.due <= now) {
            if let Some(Reverse(d)) = delayed.pop() {
                queues
                    .entry(d.portal_id)
                    .or_default()
                    .ready
                    .push_back(d.item);
            }
        }
        let mut batches = Vec::new();
        if !*paused {
            let faulty = faults.drop_rate > 0.0
                || faults.delay_rate > 0.0
                || faults.reorder_rate > 0.0
                || faults.duplicate_rate > 0.0;
            for (portal_id, q) in queues.iter_mut() {
                while q.in_flight < max_in_flight && !q.ready.is_empty() {
                    let mut batch = Vec::with_capacity(cfg.max_batch.min(q.ready.len()));
                    // Reordered events and duplicates go behind what is queued,
                    // never into the batch being formed.
                    let mut behind = Vec::new();
                    while batch.len() < cfg.max_batch.max(1) {
                        let Some(mut item) = q.ready.pop_front() else {
                            break;
                        };
                        if faulty && !item.faulted {
                            item.faulted = true;
                            if rng.random_bool(faults.drop_rate.clamp(0.0, 1.0)) {
                                self.counters.events_lost.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            if rng.random_bool(faults.delay_rate.clamp(0.0, 1.0)) {
                                let ms = rng.random_range(0..=faults.max_delay_ms.max(1));
                                *seq += 1;
                                delayed.push(Reverse(Delayed {
                                    due: now + Duration::from_millis(ms),
                                    seq: *seq,
                                    portal_id: *portal_id,
                                    item,
                                }));
                                self.counters.events_delayed.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            if rng.random_bool(faults.reorder_rate.clamp(0.0, 1.0)) {
                                behind.push(item);
                                self.counters
                                    .events_reordered
                                    .fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            if rng.random_bool(faults.duplicate_rate.clamp(0.0, 1.0)) {
                                behind.push(item.clone());
                                self.counters
                                    .events_duplicated
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        batch.push(item);
                    }
                    q.ready.extend(behind);
                    if batch.is_empty() {
                        continue;
                    }
                    if faults.reorder_rate > 0.0 {
                        batch.shuffle(rng);
                    }
                    q.in_flight += 1;
                    *max_in_flight_seen = (*max_in_flight_seen).max(q.in_flight);
                    batches.push((*portal_id, *epoch, batch));
                }
            }
        }
        let next_due = delayed.peek().map(|Reverse(d)| d.due);
        (batches, next_due)
    }

    /// Sends one batch and books the outcome.
    async fn post(self: Arc<Self>, portal_id: u64, epoch: u64, batch: Vec<Pending>) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let target = read(&self.target).clone();
        let timeout = lock(&self.state).cfg.timeout();
        let ok = match target {
            // No target URL: as unreachable as a dead host.
            None => false,
            Some(target) => self.send(&target, timeout, &batch).await,
        };
        {
            let mut st = lock(&self.state);
            if st.epoch != epoch {
                return;
            }
            if let Some(q) = st.queues.get_mut(&portal_id) {
                q.in_flight = q.in_flight.saturating_sub(1);
            }
            if ok {
                self.counters
                    .events_delivered
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            } else {
                self.counters
                    .failed_requests
                    .fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                let cfg = st.cfg;
                for mut item in batch {
                    if item.event.attempt_number >= cfg.max_retries {
                        self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    item.event.attempt_number += 1;
                    let delay = retry_delay(item.event.attempt_number, cfg.time_scale, &mut st.rng);
                    st.seq += 1;
                    let seq = st.seq;
                    st.delayed.push(Reverse(Delayed {
                        due: now + delay,
                        seq,
                        portal_id,
                        item,
                    }));
                    self.counters.events_retried.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.wake.notify_one();
    }

    async fn send(&self, target: &Target, timeout: Duration, batch: &[Pending]) -> bool {
        let events: Vec<&WebhookEvent> = batch.iter().map(|p| &p.event).collect();
        let body = match serde_json::to_vec(&events) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "failed to serialise a webhook batch");
                return false;
            }
        };
        let timestamp = now_ms().to_string();
        let v1 = sign_v1(&self.secret, &body);
        let v3 = sign_v3(&self.secret, "POST", &target.signed_uri, &body, &timestamp);
        let response = self
            .http
            .post(&target.url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(HEADER_SIGNATURE, v1)
            .header(HEADER_SIGNATURE_VERSION, "v1")
            .header(HEADER_SIGNATURE_V3, v3)
            .header(HEADER_REQUEST_TIMESTAMP, timestamp)
            .header("X-HubSpot-Timeout-Millis", timeout.as_millis().to_string())
            .body(body)
            .send()
            .await;
        match response {
            Ok(resp) => {
                let status = resp.status();
                // Read the body so the connection goes back to the pool.
                let drained = resp.bytes().await.is_ok();
                if !status.is_success() {
                    tracing::debug!(%status, events = batch.len(), "webhook delivery refused");
                }
                status.is_success() && drained
            }
            Err(e) => {
                tracing::debug!(error = %e, events = batch.len(), "webhook delivery failed");
                false
            }
        }
    }
}

/// The delay before retry `attempt` (1-based): the schedule's base, ±25 %
/// jitter, divided by the time scale.
fn retry_delay(attempt: u32, time_scale: f64, rng: &mut SmallRng) -> Duration {
    let idx = (attempt.max(1) as usize - 1).min(RETRY_SCHEDULE_SECS.len() - 1);
    let jitter: f64 = rng.random_range(0.75..1.25);
    let scale = if time_scale.is_finite() && time_scale > 0.0 {
        time_scale
    } else {
        1.0
    };
    Duration::from_secs_f64(RETRY_SCHEDULE_SECS[idx] * jitter / scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_schedule_spans_about_a_day_and_scales() {
        let mut rng = rng_for(1);
        let total: Duration = (1..=10).map(|n| retry_delay(n, 1.0, &mut rng)).sum();
        assert!(
            total > Duration::from_secs(18 * 3600) && total < Duration::from_secs(30 * 3600),
            "{total:?}"
        );
        let fast: Duration = (1..=10).map(|n| retry_delay(n, 86_400.0, &mut rng)).sum();
        assert!(fast < Duration::from_secs(2), "{fast:?}");
    }
}
