//! Reconciliation: repairing what webhooks missed (design.md §1, "an outage
//! longer than that is repaired only by reconciliation").
//!
//! HubSpot drops a webhook delivery after ten failed attempts over about a
//! day, and the simulator (or HubSpot) may lose one outright. A run of
//! [`run_once`] for one integration searches the contacts whose
//! `lastmodifieddate` lies between its cursor (the first run: a configurable
//! lookback) and now minus a safety lag, reads them with their history in
//! batch reads, and hands them to the inbound decision path
//! ([`apply_contacts`]): the echo ledger, the no-op check, the conflict
//! policy, the audit log and create-or-link by address are those of webhook
//! events. A contact whose state the platform lacked is *drift*; the report
//! says how much was found and how much repaired.
//!
//! - **Windows.** HubSpot pages one search through at most 10,000 results
//!   (`total` says how many match). A window with more is split into
//!   `ceil(total / cap)` equal parts (from its first result on: nothing
//!   before it was modified), again as needed, down to one millisecond;
//!   windows run oldest first.
//! - **Paging.** Pages follow `after` offsets. A contact modified during the
//!   run leaves its (past) window and shifts the ones behind it forward;
//!   when `total` shrinks the next page starts that many results earlier
//!   (contacts seen twice are applied once).
//! - **Commits.** One inbound transaction per search page; the cursor moves
//!   to a window's end once all its pages are committed, so an interrupted
//!   run resumes at the first window it did not finish.
//! - **Budget.** Searches and batch reads take permits at
//!   [`Priority::Background`], so live traffic keeps its headroom.
//! - **One at a time.** A Postgres advisory lock per integration
//!   ([`RunLock`]) keeps two replicas (or the CLI and a replica) from
//!   reconciling one account at once; the loser reports
//!   [`ReconcileError::AlreadyRunning`].
//! - **Schedule.** [`run_periodically`] runs an integration once its last
//!   run ended `interval` ago (the cursor's `completed_at`), so the fleet
//!   reconciles each account about once per interval, across restarts.

mod window;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use leadsync_domain::{ContactId, FieldMapping, MappingError};
use leadsync_hubspot::{Client, Contact, HubSpotError, Priority, SearchPage};
use leadsync_runtime::Settings;
use leadsync_runtime::config::ReconcileSettings;
use leadsync_store::cursors::{self, CursorKind, RunLock};
use leadsync_store::stats::{self, StatsDelta};
use leadsync_store::{Integration, Store, StoreError, integrations};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::error::StartupError;
use crate::inbound::{ContactOutcome, InboundError, ScanOrigin, apply_contacts};
use crate::metrics::WorkerMetrics;
use crate::startup::{self, Connected};
use crate::tokens::Credentials;

pub use window::Window;

/// The audit reason of leads reconciliation created or updated.
pub const AUDIT_REASON: &str = "reconciliation";
/// Per-integration counters (`sync_stats`): contacts compared…
pub const STAT_SCANNED: &str = "reconciliation.scanned";
/// …of which had drifted…
pub const STAT_DRIFTED: &str = "reconciliation.drifted";
/// …of which were repaired.
pub const STAT_REPAIRED: &str = "reconciliation.repaired";
/// Completed runs.
pub const STAT_RUNS: &str = "reconciliation.runs";
/// HubSpot pages one search through at most this many results ("limited
/// to 10,000 total results for any given query").
pub const HUBSPOT_SEARCH_CAP: u64 = 10_000;

/// How reconciliation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// Time between two periodic runs.
    pub interval: Duration,
    /// How far back the first run of an integration looks.
    pub first_lookback: Duration,
    /// Changes younger than this are left to the webhooks in flight (and to
    /// HubSpot's search index, which lags behind writes).
    pub safety_lag: Duration,
    /// Most results one search may page through; a window with more is
    /// split (HubSpot: [`HUBSPOT_SEARCH_CAP`]).
    pub search_result_cap: u64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(900),
            first_lookback: Duration::from_secs(86_400),
            safety_lag: Duration::from_secs(300),
            search_result_cap: HUBSPOT_SEARCH_CAP,
        }
    }
}

impl ReconcileConfig {
    /// The `[reconcile]` settings.
    pub fn from_settings(settings: &ReconcileSettings) -> Self {
        Self {
            interval: settings.interval(),
            first_lookback: settings.first_lookback(),
            safety_lag: settings.safety_lag(),
            search_result_cap: settings.search_result_cap,
        }
    }
}

/// What a run needs.
#[derive(Clone)]
pub struct ReconcileDeps {
    /// The platform's database.
    pub store: Store,
    /// The HubSpot client (credentials registered); runs use it at
    /// [`Priority::Background`].
    pub hubspot: Client,
    /// How to run.
    pub config: ReconcileConfig,
    /// Where drift is counted, if anywhere.
    pub metrics: Option<WorkerMetrics>,
}

/// What one committed search page found, for the report and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageTally {
    /// Contacts compared with their lead.
    pub scanned: usize,
    /// Contacts whose HubSpot state the platform lacked.
    pub drifted: usize,
    /// Of which are now applied (`created + linked + updated`).
    pub repaired: usize,
    /// Contacts the platform was up to date with (echoes of leadsync's own
    /// writes included).
    pub unchanged: usize,
    /// Leads created from contacts that had none.
    pub created: usize,
    /// Leads linked to their contact by address.
    pub linked: usize,
    /// Leads updated.
    pub updated: usize,
    /// Drift left as it is, by reason (`conflict_platform_wins`,
    /// `duplicate_email`, `lead_deleted`, `tombstoned`, ...), and contacts
    /// HubSpot refused to read (`read_error`, not counted as scanned).
    pub unrepaired: BTreeMap<String, usize>,
    /// Contacts found by the search but gone by the batch read.
    pub vanished: usize,
}

impl PageTally {
    fn count(&mut self, outcome: ContactOutcome) {
        self.scanned += 1;
        if !outcome.is_drift() {
            self.unchanged += 1;
            return;
        }
        self.drifted += 1;
        match outcome {
            ContactOutcome::Created => self.created += 1,
            ContactOutcome::Linked => self.linked += 1,
            ContactOutcome::Updated | ContactOutcome::Restored => self.updated += 1,
            ContactOutcome::Kept(reason) | ContactOutcome::Skipped(reason) => {
                *self.unrepaired.entry(reason.to_owned()).or_default() += 1;
            }
            ContactOutcome::Echo | ContactOutcome::Unchanged | ContactOutcome::Superseded => {}
        }
        if outcome.is_repair() {
            self.repaired += 1;
        }
    }

    fn add(&mut self, other: &Self) {
        self.scanned += other.scanned;
        self.drifted += other.drifted;
        self.repaired += other.repaired;
        self.unchanged += other.unchanged;
        self.created += other.created;
        self.linked += other.linked;
        self.updated += other.updated;
        self.vanished += other.vanished;
        for (reason, n) in &other.unrepaired {
            *self.unrepaired.entry(reason.clone()).or_default() += n;
        }
    }

    fn stats(&self) -> StatsDelta {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        let mut delta = StatsDelta::new();
        delta
            .add(STAT_SCANNED, n(self.scanned))
            .add(STAT_DRIFTED, n(self.drifted))
            .add(STAT_REPAIRED, n(self.repaired));
        delta
    }
}

/// What one run of one integration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// The integration.
    pub integration_id: Uuid,
    /// Start of the modification times covered: the cursor, or the first
    /// run's lookback.
    pub from: DateTime<Utc>,
    /// Their end (exclusive), now minus the safety lag: the new cursor.
    pub until: DateTime<Utc>,
    /// What the pages found, added up.
    pub found: PageTally,
    /// Contacts compared with their lead (`found.scanned`).
    pub scanned: usize,
    /// Contacts whose HubSpot state the platform lacked (`found.drifted`).
    pub drifted: usize,
    /// Of which are now applied (`found.repaired`).
    pub repaired: usize,
    /// Contacts the platform was up to date with (`found.unchanged`).
    pub unchanged: usize,
    /// Time windows searched through (after splitting).
    pub windows: usize,
    /// Windows split because they held more than the result cap.
    pub splits: usize,
    /// One-millisecond windows that still held more than the cap: only the
    /// first `cap` results of each were seen.
    pub truncated: usize,
    /// HubSpot calls: `searches + batch_reads`.
    pub calls: usize,
    /// Search calls.
    pub searches: usize,
    /// Batch-read calls.
    pub batch_reads: usize,
}

impl ReconcileReport {
    fn add_page(&mut self, page: &PageTally) {
        self.found.add(page);
        self.scanned = self.found.scanned;
        self.drifted = self.found.drifted;
        self.repaired = self.found.repaired;
        self.unchanged = self.found.unchanged;
    }

    fn add_searches(&mut self, n: usize) {
        self.searches += n;
        self.calls += n;
    }

    fn add_batch_reads(&mut self, n: usize) {
        self.batch_reads += n;
        self.calls += n;
    }
}

impl std::fmt::Display for ReconcileReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let found = &self.found;
        write!(
            f,
            "{} contacts modified from {} until {}: {} drifted, {} repaired \
             ({} created, {} linked, {} updated), {} unchanged",
            self.scanned,
            window::format_cursor(self.from),
            window::format_cursor(self.until),
            self.drifted,
            self.repaired,
            found.created,
            found.linked,
            found.updated,
            self.unchanged,
        )?;
        if !found.unrepaired.is_empty() {
            let reasons: Vec<String> = found
                .unrepaired
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            write!(f, "; not repaired: {}", reasons.join(", "))?;
        }
        if found.vanished > 0 {
            write!(f, "; {} gone from HubSpot meanwhile", found.vanished)?;
        }
        write!(
            f,
            "; {} window(s), {} split(s), {} HubSpot call(s) ({} search, {} batch read)",
            self.windows, self.splits, self.calls, self.searches, self.batch_reads
        )?;
        if self.truncated > 0 {
            write!(
                f,
                "; {} window(s) over the result cap within one millisecond",
                self.truncated
            )?;
        }
        Ok(())
    }
}

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Another process holds the integration's reconciliation lock.
    #[error("another reconciliation of integration {0} is running")]
    AlreadyRunning(Uuid),
    /// HubSpot → platform sync is switched off for the integration.
    #[error("HubSpot → platform sync is switched off for integration {0}")]
    InboundDisabled(Uuid),
    /// The integration's field mapping is invalid.
    #[error("the field mapping of integration {0} is invalid: {1}")]
    Mapping(Uuid, #[source] MappingError),
    /// No integration has this name.
    #[error("no integration is named {0:?}")]
    UnknownIntegration(String),
    /// The database failed; committed pages stay, the next run resumes.
    #[error("database error: {0}")]
    Store(#[from] StoreError),
    /// HubSpot failed; committed pages stay, the next run resumes.
    #[error("HubSpot error: {0}")]
    HubSpot(#[from] HubSpotError),
    /// The process could not be set up (CLI).
    #[error(transparent)]
    Startup(#[from] StartupError),
}

impl From<InboundError> for ReconcileError {
    fn from(err: InboundError) -> Self {
        match err {
            InboundError::Store(e) => Self::Store(e),
            InboundError::HubSpot(e) => Self::HubSpot(e),
        }
    }
}

/// Reconciles one integration: see the module documentation. `now` is the
/// run's clock (the window ends at `now` minus the safety lag).
///
/// # Errors
/// [`ReconcileError`]; what was committed before the error stays, and the
/// cursor points at the first window not finished.
pub async fn run_once(
    deps: &ReconcileDeps,
    integration: &Integration,
    now: DateTime<Utc>,
) -> Result<ReconcileReport, ReconcileError> {
    let report = run_locked(deps, integration, now, false).await?;
    Ok(report.unwrap_or_default())
}

/// [`run_once`], or nothing (`None`) when `only_if_due` and the last run
/// ended less than `config.interval` ago (checked under the lock, so that
/// replicas that all found it due run it once).
async fn run_locked(
    deps: &ReconcileDeps,
    integration: &Integration,
    now: DateTime<Utc>,
    only_if_due: bool,
) -> Result<Option<ReconcileReport>, ReconcileError> {
    let id = integration.id;
    let origin_key = format!("{AUDIT_REASON}:{}", Uuid::now_v7());
    let span = tracing::info_span!(
        "reconcile.run",
        integration.id = %id,
        origin.key = %origin_key,
    );
    async move {
        if !integration.settings.directions.inbound {
            return Err(ReconcileError::InboundDisabled(id));
        }
        let mapping = integration
            .settings
            .mapping()
            .map_err(|e| ReconcileError::Mapping(id, e))?;
        let Some(lock) =
            RunLock::try_acquire(deps.store.pool(), id, CursorKind::Reconciliation).await?
        else {
            count_run(deps, "busy");
            return Err(ReconcileError::AlreadyRunning(id));
        };
        let run = Run {
            deps,
            integration,
            mapping: &mapping,
            hubspot: deps.hubspot.with_priority(Priority::Background),
            origin_key,
        };
        let due = if only_if_due {
            is_due(deps, integration, now).await
        } else {
            Ok(true)
        };
        let result = match due {
            Ok(true) => run.scan(now).await.map(Some),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        };
        if let Err(e) = lock.release().await {
            // Its connection is gone, and the lock with it.
            tracing::warn!(integration.id = %id, error = %e, "Releasing the reconciliation lock failed");
        }
        match &result {
            Ok(None) => {}
            Ok(Some(_)) => count_run(deps, "completed"),
            Err(_) => count_run(deps, "failed"),
        }
        result
    }
    .instrument(span)
    .await
}

/// Whether `config.interval` has passed since the integration's last run
/// ended (or last made progress, if it failed), or since it was connected.
/// Kept in Postgres, so that restarts neither skip nor repeat runs.
async fn is_due(
    deps: &ReconcileDeps,
    integration: &Integration,
    now: DateTime<Utc>,
) -> Result<bool, ReconcileError> {
    let cursor = cursors::get(
        deps.store.pool(),
        integration.id,
        CursorKind::Reconciliation,
    )
    .await?;
    let last = cursor.map_or(integration.created_at, |c| {
        c.completed_at.unwrap_or(c.updated_at)
    });
    Ok(last + deps.config.interval <= now)
}

fn count_run(deps: &ReconcileDeps, outcome: &str) {
    if let Some(m) = &deps.metrics {
        m.reconcile_runs.with_label_values(&[outcome]).inc();
    }
}

/// How a window's scan ended.
enum WindowEnd {
    /// Every page committed.
    Done,
    /// Over the cap: these parts instead.
    Split(Vec<Window>),
    /// It grew past HubSpot's own cap while being paged: the rest, from
    /// this modification time on, is a window of its own.
    Resume(i64),
}

/// One run of one integration, under its lock.
struct Run<'a> {
    deps: &'a ReconcileDeps,
    integration: &'a Integration,
    mapping: &'a FieldMapping,
    hubspot: Client,
    /// The `event_key` of the run's audit entries.
    origin_key: String,
}

impl Run<'_> {
    async fn scan(&self, now: DateTime<Utc>) -> Result<ReconcileReport, ReconcileError> {
        let id = self.integration.id;
        let pool = self.deps.store.pool();
        let config = &self.deps.config;
        let stored = cursors::get(pool, id, CursorKind::Reconciliation).await?;
        let saved = stored.as_ref().and_then(|c| c.cursor.as_deref());
        let since = match saved.map(|text| (text, window::parse_cursor(text))) {
            Some((_, Some(at))) => at,
            Some((text, None)) => {
                tracing::warn!(integration.id = %id, cursor = text, "Unreadable reconciliation cursor; starting from the lookback");
                now - config.first_lookback
            }
            None => now - config.first_lookback,
        };
        let whole = Window::new(since, now - config.safety_lag);
        let mut report = ReconcileReport {
            integration_id: id,
            from: whole.from(),
            until: whole.to().max(whole.from()),
            ..ReconcileReport::default()
        };
        let mut pending = vec![whole];
        while let Some(w) = pending.pop() {
            if w.is_empty() {
                continue;
            }
            match self.scan_window(w, &mut report).await? {
                WindowEnd::Done => {
                    let at = window::format_cursor(w.to());
                    cursors::save(pool, id, CursorKind::Reconciliation, Some(&at)).await?;
                }
                WindowEnd::Split(parts) => {
                    report.splits += 1;
                    pending.extend(parts.into_iter().rev());
                }
                WindowEnd::Resume(from_ms) => {
                    let rest = Window {
                        from_ms,
                        to_ms: w.to_ms,
                    };
                    let at = window::format_cursor(rest.from());
                    cursors::save(pool, id, CursorKind::Reconciliation, Some(&at)).await?;
                    pending.push(rest);
                }
            }
        }
        let mut delta = StatsDelta::new();
        delta.add(STAT_RUNS, 1);
        stats::increment(pool, id, &delta).await?;
        cursors::complete(pool, id, CursorKind::Reconciliation).await?;
        tracing::info!(
            integration.id = %id,
            reconcile.scanned = report.scanned,
            reconcile.drifted = report.drifted,
            reconcile.repaired = report.repaired,
            reconcile.calls = report.calls,
            "Reconciled integration {id}: {} drifted contact(s) of {} scanned, {} repaired",
            report.drifted,
            report.scanned,
            report.repaired
        );
        Ok(report)
    }

    async fn search(
        &self,
        w: Window,
        after: Option<&str>,
        report: &mut ReconcileReport,
    ) -> Result<SearchPage, ReconcileError> {
        report.add_searches(1);
        Ok(self
            .hubspot
            .search_modified_since(self.integration.portal_id, w.from(), w.to(), after)
            .await?)
    }

    async fn scan_window(
        &self,
        w: Window,
        report: &mut ReconcileReport,
    ) -> Result<WindowEnd, ReconcileError> {
        let cap = self.deps.config.search_result_cap.max(1);
        let mut page = self.search(w, None, report).await?;
        if page.total > cap {
            // Results come oldest first: nothing was modified before the
            // first one, so only the rest of the window needs splitting.
            let first = page
                .contacts
                .first()
                .and_then(|c| c.updated_at)
                .map(|t| t.timestamp_millis())
                .filter(|ms| (w.from_ms..w.to_ms).contains(ms));
            let occupied = Window {
                from_ms: first.unwrap_or(w.from_ms),
                to_ms: w.to_ms,
            };
            if let Some(parts) = occupied.split(page.total.div_ceil(cap).max(2)) {
                return Ok(WindowEnd::Split(parts));
            }
            report.truncated += 1;
            tracing::warn!(
                integration.id = %self.integration.id,
                search.total = page.total,
                "{} contacts share one millisecond of lastmodifieddate; only the first {cap} can be searched",
                page.total
            );
        }
        report.windows += 1;
        let mut seen: HashSet<ContactId> = HashSet::new();
        let mut total = page.total;
        loop {
            let last_modified = page
                .contacts
                .iter()
                .filter_map(|c| c.updated_at)
                .map(|t| t.timestamp_millis())
                .max();
            self.apply_page(&page.contacts, &mut seen, report).await?;
            if page.capped {
                // More than HubSpot lets one query page through arrived
                // since the first page: go on from the last time seen.
                return Ok(match last_modified {
                    Some(ms) if ms > w.from_ms => WindowEnd::Resume(ms),
                    _ => WindowEnd::Done,
                });
            }
            let Some(mut after) = page.next_after.clone() else {
                return Ok(WindowEnd::Done);
            };
            loop {
                page = self.search(w, Some(&after), report).await?;
                // Contacts modified since the last page left this window and
                // moved the rest forward: read again from that much earlier
                // (what is seen twice is applied once). `total` only shrinks,
                // so this ends.
                let shrunk = total.saturating_sub(page.total);
                total = page.total;
                let back = after
                    .parse::<u64>()
                    .ok()
                    .filter(|_| shrunk > 0)
                    .map(|offset| offset.saturating_sub(shrunk));
                match back {
                    Some(back) if back < total => after = back.to_string(),
                    _ => break,
                }
            }
        }
    }

    /// Reads a page's new contacts and applies them in one transaction.
    async fn apply_page(
        &self,
        found: &[Contact],
        seen: &mut HashSet<ContactId>,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        let ids: Vec<ContactId> = found
            .iter()
            .map(|c| c.id)
            .filter(|id| seen.insert(*id))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let properties = self.mapping.properties();
        report.add_batch_reads(ids.len().div_ceil(leadsync_hubspot::MAX_BATCH));
        let read = self
            .hubspot
            .batch_read(self.integration.portal_id, &ids, &properties, &properties)
            .await?;
        let mut tally = PageTally {
            vanished: read.not_found.len(),
            ..PageTally::default()
        };
        if !read.errors.is_empty() {
            tracing::warn!(
                integration.id = %self.integration.id,
                errors = read.errors.len(),
                "HubSpot refused part of a reconciliation batch read"
            );
            *tally.unrepaired.entry("read_error".to_owned()).or_default() += read.errors.len();
        }
        let mut tx = self.deps.store.begin_inbound().await?;
        let applied = apply_contacts(
            &mut tx,
            self.integration,
            self.mapping,
            &read.contacts,
            ScanOrigin {
                reason: AUDIT_REASON,
                key: &self.origin_key,
            },
        )
        .await?;
        for outcome in applied.outcomes.values() {
            tally.count(*outcome);
        }
        stats::increment(&mut *tx, self.integration.id, &tally.stats()).await?;
        tx.commit().await.map_err(StoreError::from)?;
        if let Some(m) = &self.deps.metrics {
            m.record(&applied.report);
            m.record_reconcile_page(&tally);
        }
        report.add_page(&tally);
        Ok(())
    }
}

/// One integration's run in [`run_all`].
#[derive(Debug)]
pub struct IntegrationRun {
    /// The integration.
    pub integration: Integration,
    /// What its run did.
    pub result: Result<ReconcileReport, ReconcileError>,
}

/// Reconciles every integration, or the one named `only`, one after the
/// other, making sure each portal's credentials are on the client first.
///
/// # Errors
/// [`ReconcileError::UnknownIntegration`] when `only` names none, or
/// [`ReconcileError::Store`] when the integrations cannot be read. Each
/// integration's own failure is in its [`IntegrationRun::result`].
pub async fn run_all(
    deps: &ReconcileDeps,
    credentials: Option<&Credentials>,
    only: Option<&str>,
) -> Result<Vec<IntegrationRun>, ReconcileError> {
    let pool = deps.store.pool();
    let targets = match only {
        Some(name) => vec![
            integrations::by_name(pool, name)
                .await?
                .ok_or_else(|| ReconcileError::UnknownIntegration(name.to_owned()))?,
        ],
        None => integrations::list(pool).await?,
    };
    let mut runs = Vec::with_capacity(targets.len());
    for integration in targets {
        if let Some(credentials) = credentials {
            credentials.ensure([integration.portal_id]).await;
        }
        let result = run_once(deps, &integration, Utc::now()).await;
        runs.push(IntegrationRun {
            integration,
            result,
        });
    }
    Ok(runs)
}

/// Reconciles each integration whose last run ended `config.interval` ago
/// (or that was connected that long ago), looking every
/// [`DUE_CHECK_EVERY`] at most, until `shutdown`. The schedule lives in
/// Postgres: however many replicas run this, and however often they
/// restart, an integration is reconciled about once per interval. A run cut
/// short by `shutdown` loses nothing: its transaction rolls back and its
/// lock goes with its connection.
pub async fn run_periodically(
    deps: ReconcileDeps,
    credentials: Option<Arc<Credentials>>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(deps.config.interval.min(DUE_CHECK_EVERY));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed_at = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = run_due(&deps, credentials.as_deref(), &mut failed_at) => {}
        }
    }
}

/// How often the worker looks for integrations due for reconciliation.
pub const DUE_CHECK_EVERY: Duration = Duration::from_secs(30);

/// Runs the integrations that are due. A run that failed before saving any
/// progress leaves its schedule as it was, so `failed_at` holds this
/// process back from retrying it before another interval.
async fn run_due(
    deps: &ReconcileDeps,
    credentials: Option<&Credentials>,
    failed_at: &mut HashMap<Uuid, Instant>,
) {
    let all = match integrations::list(deps.store.pool()).await {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %e, "Reconciliation could not list the integrations");
            return;
        }
    };
    failed_at.retain(|_, at| at.elapsed() < deps.config.interval);
    for integration in all.iter().filter(|i| i.settings.directions.inbound) {
        let id = integration.id;
        if failed_at.contains_key(&id) {
            continue;
        }
        // Checked again under the lock; this spares the lock's connection.
        match is_due(deps, integration, Utc::now()).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(integration.id = %id, error = %e, "Reconciliation could not read its schedule");
                continue;
            }
        }
        if let Some(credentials) = credentials {
            credentials.ensure([integration.portal_id]).await;
        }
        match run_locked(deps, integration, Utc::now(), true).await {
            Ok(_) => {}
            Err(e @ ReconcileError::AlreadyRunning(_)) => {
                tracing::debug!(integration.id = %id, "Reconciliation skipped: {e}");
            }
            Err(e) => {
                failed_at.insert(id, Instant::now());
                tracing::warn!(integration.id = %id, error = %e, "Reconciliation of integration {id} failed; the next run resumes from its cursor");
            }
        }
    }
}

/// `leadsync reconcile`: connects to Postgres and Redis as the worker does
/// (the same rate limiter, OAuth token cache and credentials), reconciles
/// every integration or the one named `only`, and returns the runs.
///
/// # Errors
/// [`ReconcileError::Startup`] when a setting or a connection fails, and as
/// for [`run_all`].
pub async fn run_from_settings(
    settings: &Settings,
    only: Option<&str>,
) -> Result<Vec<IntegrationRun>, ReconcileError> {
    let Connected {
        store,
        hubspot,
        credentials,
        metrics,
        ..
    } = startup::connect(settings).await?;
    let deps = ReconcileDeps {
        store: store.clone(),
        hubspot,
        config: ReconcileConfig::from_settings(&settings.reconcile),
        metrics: Some(metrics),
    };
    let runs = run_all(&deps, Some(&credentials), only).await;
    store.close().await;
    runs
}
