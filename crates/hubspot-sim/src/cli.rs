//! The `hubspot-sim` command line: serve (the default) or `bench`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser, Subcommand};
use secrecy::SecretString;

use crate::bench::BenchArgs;
use crate::config::{
    AppConfig, DEFAULT_PORTAL_ID, DeliveryConfig, FaultConfig, PortalConfig, RateLimitConfig,
    SimConfig, SubscriptionSpec, Tier,
};

/// A faithful HubSpot simulator for tests, benchmarks and the demo.
#[derive(Debug, Parser)]
#[command(name = "hubspot-sim", version, about)]
pub struct Cli {
    /// Log filter (tracing-subscriber `EnvFilter` syntax), e.g. `info` or
    /// `leadsync_hubspot_sim=debug`.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    /// What to do; serving is the default.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Serving flags.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure API requests/s and webhook events/s, and print both.
    Bench(BenchArgs),
}

/// Flags of `hubspot-sim` (serve).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8090)]
    pub port: u16,
    /// Seed of every random choice (ids, tokens, faults, retry jitter).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// The public app's id.
    #[arg(long, default_value_t = 1_160_452)]
    pub app_id: u64,
    /// OAuth client id.
    #[arg(long, default_value = "sim-client-id")]
    pub client_id: String,
    /// OAuth client secret, also the webhook signing key.
    #[arg(long, default_value = "sim-client-secret")]
    pub client_secret: String,
    /// Developer API key for `/webhooks/v3/{appId}/…?hapikey=`.
    #[arg(long, default_value = "sim-developer-key")]
    pub developer_api_key: String,
    /// A portal (HubSpot account) to create; repeatable. Default: 62515.
    #[arg(long = "portal")]
    pub portals: Vec<u64>,
    /// A private-app token: `TOKEN` (first portal) or `PORTAL=TOKEN`; repeatable.
    #[arg(long = "private-app-token")]
    pub private_app_tokens: Vec<String>,
    /// Webhook target URL (the app's settings); none: no deliveries until set.
    #[arg(long)]
    pub target_url: Option<String>,
    /// `throttling.maxConcurrentRequests` (must be greater than 5).
    #[arg(long, default_value_t = 10)]
    pub max_concurrent_requests: u32,
    /// Subscriptions to create, comma-separated:
    /// `contact.creation,contact.propertyChange:email`.
    #[arg(long = "subscribe", value_delimiter = ',')]
    pub subscriptions: Vec<String>,
    /// Turn every rate limit off (no 429s, no rate-limit headers).
    #[arg(long)]
    pub no_rate_limit: bool,
    /// Rate-limit tier of every portal.
    #[arg(long, value_enum, default_value = "free")]
    pub tier: Tier,
    /// Requests per rolling window (overrides the tier).
    #[arg(long)]
    pub rate_limit_max: Option<u32>,
    /// The rolling window in milliseconds.
    #[arg(long)]
    pub rate_limit_window_ms: Option<u64>,
    /// Requests per day (overrides the tier).
    #[arg(long)]
    pub daily_limit: Option<u64>,
    /// Search requests per second per token.
    #[arg(long)]
    pub search_per_second: Option<u32>,
    /// OAuth access-token lifetime (`expires_in`), seconds.
    #[arg(long, default_value_t = 1800)]
    pub access_token_ttl_secs: u64,
    /// Webhook POST timeout, milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub delivery_timeout_ms: u64,
    /// Retries after the first delivery attempt.
    #[arg(long, default_value_t = 10)]
    pub max_retries: u32,
    /// Divides the retry schedule (86400: 24 h become about 1 s).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Fault: probability that an event is delivered twice.
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_rate: f64,
    /// Fault: probability that an event is moved behind later ones.
    #[arg(long, default_value_t = 0.0)]
    pub reorder_rate: f64,
    /// Fault: probability that an event is held back up to `--max-delay-ms`.
    #[arg(long, default_value_t = 0.0)]
    pub delay_rate: f64,
    /// Fault: upper bound of an injected delay.
    #[arg(long, default_value_t = 1000)]
    pub max_delay_ms: u64,
    /// Fault: probability that an event is lost.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// How long new contacts stay invisible to search, milliseconds.
    #[arg(long, default_value_t = 0)]
    pub search_index_lag_ms: u64,
    /// Whether a creation also fires propertyChange for the properties it sets.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub property_changes_on_create: bool,
}

impl ServeArgs {
    /// The simulator configuration these flags describe.
    pub fn config(&self) -> anyhow::Result<SimConfig> {
        let portal_ids = if self.portals.is_empty() {
            vec![DEFAULT_PORTAL_ID]
        } else {
            self.portals.clone()
        };
        let mut portals: Vec<PortalConfig> =
            portal_ids.iter().map(|id| PortalConfig::new(*id)).collect();
        for spec in &self.private_app_tokens {
            let (portal, token) = match spec.split_once('=') {
                Some((p, t)) => (
                    p.parse::<u64>()
                        .with_context(|| format!("bad portal in {spec}"))?,
                    t,
                ),
                None => (portal_ids[0], spec.as_str()),
            };
            let cfg = portals
                .iter_mut()
                .find(|p| p.id == portal)
                .with_context(|| {
                    format!("--private-app-token names portal {portal}, which no --portal creates")
                })?;
            *cfg = cfg.clone().with_private_app_token(token);
        }
        let mut rate_limit = RateLimitConfig::tier(self.tier);
        rate_limit.enabled = !self.no_rate_limit;
        if let Some(v) = self.rate_limit_max {
            rate_limit.window_max = v;
        }
        if let Some(v) = self.rate_limit_window_ms {
            rate_limit.window_ms = v;
        }
        if let Some(v) = self.daily_limit {
            rate_limit.daily_max = v;
        }
        if let Some(v) = self.search_per_second {
            rate_limit.search_per_second = v;
        }
        Ok(SimConfig {
            bind: SocketAddr::new(self.host, self.port),
            seed: self.seed,
            workers: self.workers,
            app: AppConfig {
                app_id: self.app_id,
                client_id: self.client_id.clone(),
                client_secret: SecretString::from(self.client_secret.clone()),
                developer_api_key: SecretString::from(self.developer_api_key.clone()),
                target_url: self.target_url.clone(),
                max_concurrent_requests: self.max_concurrent_requests,
            },
            portals,
            rate_limit,
            access_token_ttl: Duration::from_secs(self.access_token_ttl_secs),
            delivery: DeliveryConfig {
                timeout_ms: self.delivery_timeout_ms,
                max_retries: self.max_retries,
                time_scale: self.time_scale,
                ..DeliveryConfig::default()
            },
            faults: FaultConfig {
                duplicate_rate: self.duplicate_rate,
                reorder_rate: self.reorder_rate,
                delay_rate: self.delay_rate,
                max_delay_ms: self.max_delay_ms,
                drop_rate: self.drop_rate,
            },
            subscriptions: self
                .subscriptions
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| SubscriptionSpec::parse(s))
                .collect(),
            property_changes_on_create: self.property_changes_on_create,
            search_index_lag: Duration::from_millis(self.search_index_lag_ms),
            ..SimConfig::default()
        })
    }
}

/// Installs the global tracing subscriber.
pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second init (e.g. in tests) is harmless; ignore it.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

impl Cli {
    /// Serves until Ctrl-C, or runs the benchmark.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Some(Command::Bench(args)) => crate::bench::run(&args).await,
            None => serve(&self.serve).await,
        }
    }
}

async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let sim = crate::spawn(config)
        .await
        .context("failed to start the simulator")?;
    println!(
        "hubspot-sim listening on {} (control API under {}/_sim)",
        sim.base_url(),
        sim.base_url()
    );
    shutdown_signal().await?;
    sim.stop().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM: as PID 1 in a container nothing else would stop it.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("failed to listen for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("failed to wait for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("failed to wait for Ctrl-C")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_build_the_configuration() {
        let cli = Cli::parse_from([
            "hubspot-sim",
            "--port",
            "0",
            "--seed",
            "7",
            "--portal",
            "1",
            "--portal",
            "2",
            "--private-app-token",
            "pat-a",
            "--private-app-token",
            "2=pat-b",
            "--no-rate-limit",
            "--subscribe",
            "contact.creation,contact.propertyChange:email",
            "--property-changes-on-create",
            "false",
        ]);
        let cfg = cli.serve.config().expect("config");
        assert_eq!(cfg.seed, 7);
        assert_eq!(cfg.portals.len(), 2);
        assert_eq!(cfg.portals[0].private_app_tokens.len(), 1);
        assert_eq!(cfg.portals[1].private_app_tokens.len(), 1);
        assert!(!cfg.rate_limit.enabled);
        assert_eq!(
            cfg.subscriptions[1],
            SubscriptionSpec::property_change("email")
        );
        assert!(!cfg.property_changes_on_create);
        assert!(
            Cli::try_parse_from(["hubspot-sim", "--private-app-token", "9=x"])
                .expect("parse")
                .serve
                .config()
                .is_err()
        );
    }
}
