//! `hubspot-sim bench`: measures the two figures that say the simulator is
//! never the bottleneck — API requests/s and webhook events delivered/s —
//! over real HTTP, against an in-process simulator or a running one (`--url`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::config::{RateLimitConfig, SimConfig};
use crate::control::ControlClient;
use crate::model::ImportRequest;
use crate::receiver::Receiver;

/// Flags of `hubspot-sim bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Benchmark the simulator running at this URL (its rate limits are
    /// switched off and its webhook settings pointed at the bench). Default:
    /// start one in this process.
    #[arg(long)]
    pub url: Option<String>,
    /// That simulator's developer API key.
    #[arg(long, default_value = "sim-developer-key")]
    pub developer_api_key: String,
    /// Seconds of API load.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent keep-alive API clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Contacts imported for the webhook phase (1 creation + 5 propertyChange each).
    #[arg(long, default_value_t = 20_000)]
    pub contacts: u32,
}

/// The measured figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchReport {
    /// API requests answered 2xx.
    pub api_requests: u64,
    /// API requests that failed.
    pub api_errors: u64,
    /// Length of the API phase.
    pub api_seconds: f64,
    /// Events delivered and acknowledged by the receiver.
    pub events: u64,
    /// POSTs that carried them.
    pub event_posts: u64,
    /// From resuming delivery to the last event acknowledged.
    pub event_seconds: f64,
}

impl BenchReport {
    /// API requests per second.
    pub fn api_per_second(&self) -> f64 {
        self.api_requests as f64 / self.api_seconds.max(f64::EPSILON)
    }

    /// Webhook events delivered per second.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.event_seconds.max(f64::EPSILON)
    }
}

/// Runs the benchmark and prints the figures.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let report = measure(args).await?;
    println!(
        "API:      {} requests in {:.2} s = {:.0} req/s ({} keep-alive clients; batch read of 100, batch upsert of 10, get by id), {} errors",
        report.api_requests,
        report.api_seconds,
        report.api_per_second(),
        args.clients,
        report.api_errors
    );
    println!(
        "Webhooks: {} events in {:.2} s = {:.0} events/s ({} signed POSTs, {:.1} events per POST)",
        report.events,
        report.event_seconds,
        report.events_per_second(),
        report.event_posts,
        report.events as f64 / report.event_posts.max(1) as f64
    );
    Ok(())
}

/// Runs both phases and returns the figures.
pub async fn measure(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let local = match &args.url {
        Some(_) => None,
        None => Some(
            crate::spawn(SimConfig::without_rate_limits())
                .await
                .context("failed to start the simulator")?,
        ),
    };
    let base = match (&args.url, &local) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(sim)) => sim.base_url(),
        (None, None) => bail!("no simulator to benchmark"),
    };
    let developer_key = match &local {
        Some(sim) => sim
            .config()
            .app
            .developer_api_key
            .expose_secret()
            .to_owned(),
        None => args.developer_api_key.clone(),
    };
    let control = ControlClient::new(base.clone());
    let info = control
        .info()
        .await
        .context("the control API did not answer")?;
    let portal = *info
        .portals
        .first()
        .context("the simulator has no portal")?;
    control
        .set_rate_limit(None, &RateLimitConfig::disabled())
        .await?;
    let token = control.add_private_app_token(portal, None).await?.token;

    let (api_requests, api_errors, api_seconds) = api_phase(&base, &token, args).await?;
    let (events, event_posts, event_seconds) = webhook_phase(
        &base,
        &control,
        info.app_id,
        &developer_key,
        portal,
        args.contacts,
    )
    .await?;
    if let Some(sim) = local {
        sim.stop().await;
    }
    Ok(BenchReport {
        api_requests,
        api_errors,
        api_seconds,
        events,
        event_posts,
        event_seconds,
    })
}

async fn api_phase(base: &str, token: &str, args: &BenchArgs) -> anyhow::Result<(u64, u64, f64)> {
    let contacts_url = format!("{base}/crm/v3/objects/contacts");
    let http = reqwest::Client::new();
    // 1,000 contacts to read, made idempotently so a running simulator can be reused.
    let mut ids: Vec<String> = Vec::with_capacity(1000);
    for chunk in 0..10 {
        let inputs: Vec<Value> = (0..100)
            .map(|i| {
                json!({
                    "id": format!("bench{}@bench.example.com", chunk * 100 + i),
                    "idProperty": "email",
                    "properties": { "firstname": "Bench" },
                })
            })
            .collect();
        let resp: Value = http
            .post(format!("{contacts_url}/batch/upsert"))
            .bearer_auth(token)
            .json(&json!({ "inputs": inputs }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        ids.extend(
            resp["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["id"].as_str().map(str::to_owned)),
        );
    }
    if ids.len() < 1000 {
        bail!("seeding contacts failed: got {} ids", ids.len());
    }
    let ids = Arc::new(ids);
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds.max(1));
    let mut tasks = Vec::with_capacity(args.clients);
    for client in 0..args.clients.max(1) {
        let (ids, ok, errors) = (Arc::clone(&ids), Arc::clone(&ok), Arc::clone(&errors));
        let (url, token) = (contacts_url.clone(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            // One connection per client, kept alive.
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()?;
            let mut n = client;
            while Instant::now() < deadline {
                n += 1;
                let req = match n % 3 {
                    0 => {
                        let start = (n * 37) % 900;
                        let inputs: Vec<Value> = ids[start..start + 100]
                            .iter()
                            .map(|id| json!({ "id": id }))
                            .collect();
                        http.post(format!("{url}/batch/read")).json(
                            &json!({ "inputs": inputs, "properties": ["email", "firstname"] }),
                        )
                    }
                    1 => {
                        let inputs: Vec<Value> = (0..10)
                            .map(|i| {
                                json!({
                                    "id": format!("bench{}@bench.example.com", (n * 10 + i) % 1000),
                                    "idProperty": "email",
                                    "properties": { "firstname": format!("Bench{n}") },
                                })
                            })
                            .collect();
                        http.post(format!("{url}/batch/upsert"))
                            .json(&json!({ "inputs": inputs }))
                    }
                    _ => http.get(format!(
                        "{url}/{}?properties=email,firstname",
                        ids[n % ids.len()]
                    )),
                };
                match req.bearer_auth(&token).send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(resp) => {
                        let _ = resp.bytes().await;
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok::<(), reqwest::Error>(())
        }));
    }
    for task in tasks {
        task.await.context("an API client panicked")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((
        ok.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        seconds,
    ))
}

async fn webhook_phase(
    base: &str,
    control: &ControlClient,
    app_id: u64,
    developer_key: &str,
    portal: u64,
    contacts: u32,
) -> anyhow::Result<(u64, u64, f64)> {
    let receiver = Receiver::spawn_with(false, 2)
        .await
        .context("failed to start the receiver")?;
    let http = reqwest::Client::new();
    let hooks = format!("{base}/webhooks/v3/{app_id}");
    let key = format!("hapikey={developer_key}");
    http.put(format!("{hooks}/settings?{key}"))
        .json(&json!({ "targetUrl": receiver.url(), "throttling": { "maxConcurrentRequests": 10, "period": "SECONDLY" } }))
        .send()
        .await?
        .error_for_status()
        .context("setting the webhook target failed")?;
    let existing: Value = http
        .get(format!("{hooks}/subscriptions?{key}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let wanted = [
        ("contact.creation", None),
        ("contact.propertyChange", Some("firstname")),
        ("contact.propertyChange", Some("lastname")),
        ("contact.propertyChange", Some("phone")),
        ("contact.propertyChange", Some("company")),
        ("contact.propertyChange", Some("jobtitle")),
    ];
    for (event_type, property) in wanted {
        let found = existing["results"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["eventType"] == event_type && s["propertyName"].as_str() == property);
        match found {
            Some(sub) => {
                let id = sub["id"].as_str().unwrap_or_default();
                http.patch(format!("{hooks}/subscriptions/{id}?{key}"))
                    .json(&json!({ "active": true }))
                    .send()
                    .await?
                    .error_for_status()?;
            }
            None => {
                http.post(format!("{hooks}/subscriptions?{key}"))
                    .json(&json!({ "eventType": event_type, "propertyName": property, "active": true }))
                    .send()
                    .await?
                    .error_for_status()?;
            }
        }
    }
    // Queue everything first, so the figure is delivery alone.
    control.pause_delivery().await?;
    let before = control.stats().await?.delivery;
    control
        .import_contacts(
            portal,
            &ImportRequest {
                count: contacts,
                ..ImportRequest::default()
            },
        )
        .await?;
    let queued = control.stats().await?.delivery.events_enqueued - before.events_enqueued;
    let target = receiver.accepted_event_count() + queued;
    let started = Instant::now();
    control.resume_delivery().await?;
    if !receiver
        .wait_for_events(target, Duration::from_secs(300))
        .await
    {
        bail!(
            "only {} of {target} events arrived within 300 s",
            receiver.accepted_event_count()
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let posts = control.stats().await?.delivery.requests - before.requests;
    control
        .wait_for_delivery_idle(Duration::from_secs(10))
        .await?;
    receiver.stop().await;
    Ok((queued, posts, seconds))
}
