//! The simulator's whole state. Each portal has its own locks, so portals never
//! contend; the per-portal CRM lock is held for microseconds (no I/O under it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use secrecy::ExposeSecret;

use crate::api_faults::ApiFaults;
use crate::auth::{AuthStore, lock, read, write};
use crate::config::{PortalConfig, RateLimitConfig, SimConfig};
use crate::crm::{Change, CrmStore, now_ms};
use crate::error::SimError;
use crate::ids::Ids;
use crate::limiter::Limiter;
use crate::stats::{Counters, PortalStats, SimStats};
use crate::webhooks::delivery::Target;
use crate::webhooks::{Delivery, WebhookApp, WebhookEvent};

/// One HubSpot account.
#[derive(Debug)]
pub(crate) struct Portal {
    pub(crate) id: u64,
    pub(crate) crm: Mutex<CrmStore>,
    pub(crate) limiter: Mutex<Limiter>,
    pub(crate) api_calls: AtomicU64,
    pub(crate) search_calls: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
}

impl Portal {
    fn new(id: u64, rate_limit: RateLimitConfig, property_changes_on_create: bool) -> Self {
        Self {
            id,
            crm: Mutex::new(CrmStore::new(property_changes_on_create)),
            limiter: Mutex::new(Limiter::new(rate_limit)),
            api_calls: AtomicU64::new(0),
            search_calls: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        }
    }

    fn stats(&self) -> PortalStats {
        let limiter = lock(&self.limiter);
        PortalStats {
            api_calls: self.api_calls.load(Ordering::Relaxed),
            search_calls: self.search_calls.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            max_calls_in_10s: limiter.max_observed,
            daily_used: limiter.daily_used,
            contacts: lock(&self.crm).contacts.len() as u64,
        }
    }

    fn reset_counters(&self) {
        self.api_calls.store(0, Ordering::Relaxed);
        self.search_calls.store(0, Ordering::Relaxed);
        self.rate_limited.store(0, Ordering::Relaxed);
        lock(&self.limiter).reset_counts();
    }
}

/// The simulator.
#[derive(Debug)]
pub(crate) struct Sim {
    pub(crate) config: SimConfig,
    pub(crate) ids: Ids,
    pub(crate) auth: AuthStore,
    portals: RwLock<HashMap<u64, Arc<Portal>>>,
    pub(crate) webhooks: RwLock<WebhookApp>,
    pub(crate) delivery: Arc<Delivery>,
    pub(crate) counters: Counters,
    /// Errors to answer instead of serving matching API calls.
    pub(crate) api_faults: ApiFaults,
    default_rate_limit: RwLock<RateLimitConfig>,
}

impl Sim {
    pub(crate) fn new(config: SimConfig) -> Result<Arc<Self>, SimError> {
        let now = now_ms();
        let webhooks = WebhookApp::new(
            config.app.target_url.as_deref(),
            config.app.max_concurrent_requests,
            &config.subscriptions,
            now,
        )
        .map_err(SimError::Config)?;
        let delivery = Delivery::new(
            config.app.client_secret.expose_secret().to_owned(),
            config.seed,
            config.delivery,
            config.faults,
        )
        .map_err(SimError::HttpClient)?;
        let sim = Arc::new(Self {
            ids: Ids::new(config.seed),
            auth: AuthStore::default(),
            portals: RwLock::new(HashMap::new()),
            webhooks: RwLock::new(webhooks),
            delivery: Arc::new(delivery),
            counters: Counters::default(),
            api_faults: ApiFaults::default(),
            default_rate_limit: RwLock::new(config.rate_limit),
            config,
        });
        sim.install_config_portals()?;
        sim.sync_target();
        Ok(sim)
    }

    fn install_config_portals(&self) -> Result<(), SimError> {
        for portal in &self.config.portals {
            self.add_portal(portal)
                .map_err(|id| SimError::Config(format!("portal {id} is configured twice")))?;
        }
        Ok(())
    }

    /// Adds a portal; `Err(id)` if it exists.
    pub(crate) fn add_portal(&self, cfg: &PortalConfig) -> Result<Arc<Portal>, u64> {
        let mut portals = write(&self.portals);
        if portals.contains_key(&cfg.id) {
            return Err(cfg.id);
        }
        let limits = cfg.rate_limit.unwrap_or(*read(&self.default_rate_limit));
        let portal = Arc::new(Portal::new(
            cfg.id,
            limits,
            self.config.property_changes_on_create,
        ));
        portals.insert(cfg.id, Arc::clone(&portal));
        for app in &cfg.private_app_tokens {
            self.auth
                .add_private_app(app.token.expose_secret(), cfg.id, app.app_id);
        }
        Ok(portal)
    }

    pub(crate) fn portal(&self, id: u64) -> Option<Arc<Portal>> {
        read(&self.portals).get(&id).cloned()
    }

    /// The portal, created on first use (an install creates the account here).
    pub(crate) fn portal_or_create(&self, id: u64) -> Arc<Portal> {
        if let Some(p) = self.portal(id) {
            return p;
        }
        match self.add_portal(&PortalConfig::new(id)) {
            Ok(p) => p,
            // Created concurrently by someone else: use theirs.
            Err(_) => self.portal(id).unwrap_or_else(|| {
                Arc::new(Portal::new(
                    id,
                    RateLimitConfig::default(),
                    self.config.property_changes_on_create,
                ))
            }),
        }
    }

    pub(crate) fn portal_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = read(&self.portals).keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// New limits for one portal, or for all (and future) portals.
    pub(crate) fn set_rate_limit(&self, portal: Option<u64>, cfg: RateLimitConfig) -> bool {
        match portal {
            Some(id) => match self.portal(id) {
                Some(p) => {
                    lock(&p.limiter).set(cfg);
                    true
                }
                None => false,
            },
            None => {
                *write(&self.default_rate_limit) = cfg;
                for p in read(&self.portals).values() {
                    lock(&p.limiter).set(cfg);
                }
                true
            }
        }
    }

    /// Points delivery at the current webhook settings.
    pub(crate) fn sync_target(&self) {
        let target = read(&self.webhooks)
            .target()
            .map(|(url, max)| Target::new(url, max));
        self.delivery.set_target(target);
    }

    /// Turns changes into webhook events for every matching active
    /// subscription and queues them. Without a target URL HubSpot sends
    /// nothing, and neither do we.
    pub(crate) fn emit(&self, portal_id: u64, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let app_id = self.config.app.app_id;
        let events: Vec<WebhookEvent> = {
            let app = read(&self.webhooks);
            if app.settings.is_none() {
                return;
            }
            changes
                .iter()
                .flat_map(|change| {
                    app.matching(&change.kind)
                        .map(|sub| {
                            WebhookEvent::from_change(
                                change,
                                sub,
                                portal_id,
                                app_id,
                                self.ids.event_id(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        self.delivery.enqueue(portal_id, events);
    }

    pub(crate) fn stats(&self) -> SimStats {
        let (api_calls, calls_by_endpoint) = self.counters.by_endpoint();
        let portals: Vec<Arc<Portal>> = read(&self.portals).values().cloned().collect();
        SimStats {
            api_calls,
            rate_limited: self.counters.rate_limited.load(Ordering::Relaxed),
            calls_by_endpoint,
            portals: portals.iter().map(|p| (p.id, p.stats())).collect(),
            delivery: self.delivery.stats(),
            api_faults_served: self.api_faults.served(),
        }
    }

    pub(crate) fn reset_stats(&self) {
        self.counters.reset();
        self.api_faults.reset_counter();
        for p in read(&self.portals).values() {
            p.reset_counters();
        }
        self.delivery.reset_counters();
    }

    /// Back to the state right after start: configured portals and tokens,
    /// webhook settings and subscriptions from the configuration, no contacts,
    /// counters at zero, seeded generators rewound.
    pub(crate) fn reset(&self) -> Result<(), SimError> {
        let now = now_ms();
        let webhooks = WebhookApp::new(
            self.config.app.target_url.as_deref(),
            self.config.app.max_concurrent_requests,
            &self.config.subscriptions,
            now,
        )
        .map_err(SimError::Config)?;
        *write(&self.webhooks) = webhooks;
        write(&self.portals).clear();
        self.auth.clear();
        *write(&self.default_rate_limit) = self.config.rate_limit;
        self.ids.reset();
        self.counters.reset();
        self.api_faults.clear();
        self.api_faults.reset_counter();
        self.delivery
            .reset(self.config.delivery, self.config.faults);
        self.install_config_portals()?;
        self.sync_target();
        Ok(())
    }

    /// Milliseconds-since-epoch day number, for the daily quota.
    pub(crate) fn day(now_ms: i64) -> i64 {
        now_ms.div_euclid(86_400_000)
    }
}
