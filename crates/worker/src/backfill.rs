//! Backfill: bringing both sides of a newly connected account up to date
//! (design.md §1, "backfill").
//!
//! A run for one integration has two phases:
//!
//! 1. **Contacts → leads.** It pages through every contact of the portal with
//!    HubSpot's list endpoint (`page_size` per page, 100 at most, the
//!    properties the field mapping reads) and applies each page in one
//!    inbound transaction through [`apply_contacts`], the decision path of
//!    webhook batches and reconciliation: echo ledger, no-op, conflict
//!    policy, create or link by address, audit (`event_key`
//!    `backfill:{run id}`, reason `backfill`). One call per page; only an
//!    integration with a `last_write_wins` field re-reads each page with its
//!    property history (one batch read more per page), because that policy
//!    compares HubSpot's change times and the list endpoint has none.
//! 2. **Leads → contacts.** It walks the integration's leads (oldest first)
//!    and pushes every live lead that has no contact, an address and the
//!    status `not_synced` or `pending` through [`process_push_batch`], the
//!    function the push batcher calls: batches of 100 leads, one batch
//!    upsert by email each, links, echo ledger and audit as for outbox
//!    changes. Leads whose push failed for good (`failed`) are left to their
//!    dead letters; `unlinked` ones lost their contact in HubSpot on purpose.
//!    These pushes are not outbox rows: their change id is negative, derived
//!    from the lead id, so their audit entries and dead letters
//!    (`lead-change:-N`) stay one per lead and apart from the outbox's.
//!
//! - **Resumable.** The position — the list's `after` token, or the last
//!   lead pushed — and the totals so far are saved in the integration's
//!   `backfill` cursor (`sync_cursors`): with each page's transaction in
//!   phase 1, after each push batch in phase 2. An interrupted run (an
//!   error, a cancellation, [`BackfillOptions::max_pages`]) continues from
//!   there. A completed run records completion; the next run then does
//!   nothing ([`BackfillOutcome::AlreadyComplete`], no call) unless asked to
//!   [`restart`](BackfillOptions::restart), which goes through everything
//!   again and changes only what differs (unchanged contacts write nothing,
//!   only leads still unsynced are pushed).
//! - **Low priority.** Every call takes its permit of the fleet-wide limiter
//!   at [`Priority::Background`], capped at `max_quota_share` of the portal's
//!   quota: a backfill call waits while the calls of the whole fleet in the
//!   rolling window (live ones included) reach that share, so live sync
//!   always keeps the rest.
//! - **One at a time.** The integration's advisory lock ([`RunLock`], kind
//!   `backfill`) keeps two backfills of one portal from running at once;
//!   the loser gets [`BackfillError::AlreadyRunning`].
//! - **Progress** goes to a callback after every page and push batch
//!   ([`BackfillProgress`]); the library knows nothing of terminals.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use leadsync_domain::{ConflictPolicy, FieldMapping, MappingError};
use leadsync_hubspot::{Client, Contact, HubSpotError, PortalQuota, Priority};
use leadsync_queue::PushLeadChange;
use leadsync_runtime::Settings;
use leadsync_runtime::config::BackfillSettings;
use leadsync_store::cursors::{self, CursorKind, RunLock};
use leadsync_store::leads::{self, CrmSyncStatus, ListCursor, ListLeads};
use leadsync_store::stats::{self, StatsDelta};
use leadsync_store::{Integration, Lead, LeadColumn, Store, StoreError, integrations};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::error::StartupError;
use crate::inbound::{ContactOutcome, InboundError, ScanOrigin, apply_contacts};
use crate::metrics::WorkerMetrics;
use crate::outbound::{OutboundDeps, OutboundError, PushReport, process_push_batch};
use crate::startup::{self, Connected};

/// The audit reason of leads a backfill created or updated.
pub const AUDIT_REASON: &str = "backfill";
/// Per-integration counter (`sync_stats`) of completed backfills.
pub const STAT_RUNS: &str = "backfill.runs";
/// Leads pushed per batch: one batch upsert.
pub const PUSH_BATCH: usize = leadsync_hubspot::MAX_BATCH;
/// Leads read per query while looking for unsynced ones.
const LEAD_PAGE: i64 = 1000;

/// How a backfill runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackfillConfig {
    /// Contacts per list page (1–100).
    pub page_size: u32,
    /// The share of the portal's quota the run may take (see the module
    /// documentation).
    pub max_quota_share: f64,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        Self {
            page_size: leadsync_hubspot::MAX_BATCH as u32,
            max_quota_share: 0.5,
        }
    }
}

impl BackfillConfig {
    /// The `[backfill]` settings.
    pub fn from_settings(settings: &BackfillSettings) -> Self {
        Self {
            page_size: settings.page_size,
            max_quota_share: settings.max_quota_share,
        }
    }
}

/// What a run needs.
#[derive(Clone)]
pub struct BackfillDeps {
    /// The platform's database.
    pub store: Store,
    /// The HubSpot client (credentials registered). Runs use it at
    /// [`Priority::Background`] and set the portal's background share on its
    /// limiter to `config.max_quota_share`: a limiter is per process, and
    /// backfill runs in a process of its own (`leadsync backfill`).
    pub hubspot: Client,
    /// The value written to `lead_source_system` on contacts created
    /// (`hubspot.source_system_value`).
    pub source_system: String,
    /// How to run.
    pub config: BackfillConfig,
    /// Where pages and pushes are counted, if anywhere.
    pub metrics: Option<WorkerMetrics>,
}

/// What a caller may ask of one run.
#[derive(Debug, Clone, Default)]
pub struct BackfillOptions {
    /// Start from the beginning, even when a previous backfill completed or
    /// stopped half-way.
    pub restart: bool,
    /// Stop, resumably, after this many steps in this run (a step is a list
    /// page of contacts or a push batch of leads).
    pub max_pages: Option<u64>,
    /// Stop, resumably, after the step under way once cancelled.
    pub cancel: CancellationToken,
}

/// Which phase a backfill is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillPhase {
    /// Importing contacts as leads.
    Contacts,
    /// Pushing unsynced leads as contacts.
    Leads,
    /// Finished.
    Done,
}

impl BackfillPhase {
    /// `contacts`, `leads` or `done`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contacts => "contacts",
            Self::Leads => "leads",
            Self::Done => "done",
        }
    }
}

/// What a backfill did since it (re)started, across interrupted runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackfillTotals {
    /// Contact pages listed and applied.
    pub pages: u64,
    /// Contacts seen.
    pub contacts: u64,
    /// Leads created from contacts.
    pub created: u64,
    /// Leads linked to their contact by address.
    pub linked: u64,
    /// Leads updated from their contact.
    pub updated: u64,
    /// Contacts the platform was already up to date with.
    pub unchanged: u64,
    /// Contacts that could not be applied, by reason (`duplicate_email`,
    /// `conflict_platform_wins`, `tombstoned`, ...).
    pub not_applied: BTreeMap<String, u64>,
    /// Push batches sent.
    pub push_batches: u64,
    /// Unsynced leads handed to the push.
    pub leads: u64,
    /// Of which now have a contact (created or linked in HubSpot).
    pub pushed: u64,
    /// Of which got a new contact.
    pub contacts_created: u64,
    /// Of which were dead-lettered.
    pub push_failed: u64,
    /// Of which were skipped, by reason (`tombstoned`, `duplicate_email`, ...).
    pub push_skipped: BTreeMap<String, u64>,
    /// HubSpot calls made (list, batch read, batch upsert/update).
    pub calls: u64,
}

impl BackfillTotals {
    fn add_page(&mut self, contacts: usize, outcomes: impl Iterator<Item = ContactOutcome>) {
        self.pages += 1;
        self.contacts += contacts as u64;
        for outcome in outcomes {
            match outcome {
                ContactOutcome::Created => self.created += 1,
                ContactOutcome::Linked => self.linked += 1,
                ContactOutcome::Updated | ContactOutcome::Restored => self.updated += 1,
                ContactOutcome::Echo | ContactOutcome::Unchanged | ContactOutcome::Superseded => {
                    self.unchanged += 1;
                }
                ContactOutcome::Kept(reason) | ContactOutcome::Skipped(reason) => {
                    *self.not_applied.entry(reason.to_owned()).or_default() += 1;
                }
            }
        }
    }

    fn add_push(&mut self, leads: usize, report: &PushReport) {
        self.push_batches += 1;
        self.leads += leads as u64;
        self.pushed += (report.created + report.linked) as u64;
        self.contacts_created += report.created as u64;
        self.push_failed += report.dead_lettered as u64;
        for (reason, n) in &report.skipped {
            *self.push_skipped.entry(reason.clone()).or_default() += *n as u64;
        }
        self.calls += report.calls() as u64;
    }
}

/// Where a backfill stands, handed to the progress callback after every
/// step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillProgress {
    /// The integration.
    pub integration_id: Uuid,
    /// The phase under way.
    pub phase: BackfillPhase,
    /// Totals since the backfill (re)started, earlier interrupted runs
    /// included.
    pub totals: BackfillTotals,
    /// HubSpot calls of this run.
    pub calls_this_run: u64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillOutcome {
    /// Everything was imported and pushed; completion is recorded.
    Completed,
    /// Stopped before the end (cancelled, or `max_pages` reached); the next
    /// run resumes.
    Interrupted,
    /// A previous run had completed: nothing was done.
    AlreadyComplete,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillReport {
    /// The integration.
    pub integration_id: Uuid,
    /// How the run ended.
    pub outcome: BackfillOutcome,
    /// Whether it continued an interrupted backfill.
    pub resumed: bool,
    /// Where it stopped ([`BackfillPhase::Done`] once complete).
    pub phase: BackfillPhase,
    /// Totals since the backfill (re)started.
    pub totals: BackfillTotals,
    /// HubSpot calls of this run.
    pub calls: u64,
    /// Steps (contact pages and push batches) of this run.
    pub steps: u64,
    /// Phase 1 was left out: HubSpot → platform sync is off.
    pub inbound_disabled: bool,
    /// Phase 2 was left out: platform → HubSpot sync is off.
    pub outbound_disabled: bool,
}

impl std::fmt::Display for BackfillReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.totals;
        match self.outcome {
            BackfillOutcome::AlreadyComplete => {
                return write!(
                    f,
                    "already complete: nothing to do (0 HubSpot calls; --restart runs it again)"
                );
            }
            BackfillOutcome::Completed => write!(f, "completed")?,
            BackfillOutcome::Interrupted => write!(
                f,
                "interrupted in the {} phase (run it again to resume)",
                self.phase.as_str()
            )?,
        }
        if self.resumed {
            write!(f, ", resumed")?;
        }
        if self.inbound_disabled {
            write!(
                f,
                "; contacts not imported: HubSpot -> platform sync is off"
            )?;
        } else {
            write!(
                f,
                "; {} contacts in {} pages: {} leads created, {} linked, {} updated, {} unchanged",
                t.contacts, t.pages, t.created, t.linked, t.updated, t.unchanged
            )?;
            write_reasons(f, "not applied", &t.not_applied)?;
        }
        if self.outbound_disabled {
            write!(f, "; leads not pushed: platform -> HubSpot sync is off")?;
        } else {
            write!(
                f,
                "; {} unsynced leads pushed in {} batches: {} now in HubSpot ({} contacts created), {} dead-lettered",
                t.leads, t.push_batches, t.pushed, t.contacts_created, t.push_failed
            )?;
            write_reasons(f, "skipped", &t.push_skipped)?;
        }
        write!(
            f,
            "; {} HubSpot calls ({} in this run)",
            t.calls, self.calls
        )
    }
}

fn write_reasons(
    f: &mut std::fmt::Formatter<'_>,
    what: &str,
    reasons: &BTreeMap<String, u64>,
) -> std::fmt::Result {
    if reasons.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    write!(f, " ({what}: {})", parts.join(", "))
}

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Another process is backfilling the integration.
    #[error("another backfill of integration {0} is running")]
    AlreadyRunning(Uuid),
    /// The integration's field mapping is invalid.
    #[error("the field mapping of integration {0} is invalid: {1}")]
    Mapping(Uuid, #[source] MappingError),
    /// No integration has this name.
    #[error("no integration is named {0:?}")]
    UnknownIntegration(String),
    /// The database failed; what was committed stays, the next run resumes.
    #[error("database error: {0}")]
    Store(#[from] StoreError),
    /// HubSpot failed; what was committed stays, the next run resumes.
    #[error("HubSpot error: {0}")]
    HubSpot(#[from] HubSpotError),
    /// The process could not be set up (CLI).
    #[error(transparent)]
    Startup(#[from] StartupError),
}

impl From<InboundError> for BackfillError {
    fn from(err: InboundError) -> Self {
        match err {
            InboundError::Store(e) => Self::Store(e),
            InboundError::HubSpot(e) => Self::HubSpot(e),
        }
    }
}

impl From<OutboundError> for BackfillError {
    fn from(err: OutboundError) -> Self {
        match err {
            OutboundError::Store(e) => Self::Store(e),
            OutboundError::HubSpot(e) => Self::HubSpot(e),
        }
    }
}

impl From<sqlx::Error> for BackfillError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(err.into())
    }
}

/// A position in the backfill, saved as the cursor's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Position {
    /// Listing contacts from `after` (HubSpot's paging token).
    Contacts { after: Option<String> },
    /// Pushing leads after this one (`created_at`, `id` order).
    Leads {
        after: Option<(DateTime<Utc>, Uuid)>,
    },
}

/// The saved state: where to go on, and the totals so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    position: Position,
    #[serde(default)]
    totals: BackfillTotals,
}

impl Saved {
    fn start() -> Self {
        Self {
            position: Position::Contacts { after: None },
            totals: BackfillTotals::default(),
        }
    }

    fn text(&self) -> String {
        // Serialising plain data cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Backfills one integration: see the module documentation. `progress` is
/// called after every step with the totals so far.
///
/// # Errors
/// [`BackfillError`]; what was committed before the error stays, and the
/// cursor points at the first step not done.
pub async fn run_once(
    deps: &BackfillDeps,
    integration: &Integration,
    options: &BackfillOptions,
    progress: &(dyn Fn(&BackfillProgress) + Send + Sync),
) -> Result<BackfillReport, BackfillError> {
    let id = integration.id;
    let origin_key = format!("{AUDIT_REASON}:{}", Uuid::now_v7());
    let span = tracing::info_span!(
        "backfill.run",
        integration.id = %id,
        origin.key = %origin_key,
    );
    async move {
        let mapping = integration
            .settings
            .mapping()
            .map_err(|e| BackfillError::Mapping(id, e))?;
        let Some(lock) = RunLock::try_acquire(deps.store.pool(), id, CursorKind::Backfill).await?
        else {
            return Err(BackfillError::AlreadyRunning(id));
        };
        if let Some(limiter) = deps.hubspot.limiter() {
            let quota = limiter.quota(integration.portal_id);
            limiter.set_quota(
                integration.portal_id,
                PortalQuota {
                    background_share: deps.config.max_quota_share,
                    ..quota
                },
            );
        }
        let run = Run {
            deps,
            integration,
            mapping: &mapping,
            hubspot: deps.hubspot.with_priority(Priority::Background),
            origin_key,
            options,
            progress,
        };
        let result = run.go().await;
        if let Err(e) = lock.release().await {
            // Its connection is gone, and the lock with it.
            tracing::warn!(integration.id = %id, error = %e, "Releasing the backfill lock failed");
        }
        result
    }
    .instrument(span)
    .await
}

/// One run of one integration, under its lock.
struct Run<'a> {
    deps: &'a BackfillDeps,
    integration: &'a Integration,
    mapping: &'a FieldMapping,
    hubspot: Client,
    /// The `event_key` of the run's audit entries.
    origin_key: String,
    options: &'a BackfillOptions,
    progress: &'a (dyn Fn(&BackfillProgress) + Send + Sync),
}

/// The state of a run under way.
struct State {
    saved: Saved,
    calls: u64,
    steps: u64,
}

impl Run<'_> {
    async fn go(&self) -> Result<BackfillReport, BackfillError> {
        let id = self.integration.id;
        let pool = self.deps.store.pool();
        let stored = cursors::get(pool, id, CursorKind::Backfill).await?;
        let directions = &self.integration.settings.directions;
        let mut report = BackfillReport {
            integration_id: id,
            outcome: BackfillOutcome::Completed,
            resumed: false,
            phase: BackfillPhase::Contacts,
            totals: BackfillTotals::default(),
            calls: 0,
            steps: 0,
            inbound_disabled: !directions.inbound,
            outbound_disabled: !directions.outbound,
        };
        let saved = match stored {
            Some(c) if c.completed_at.is_some() && !self.options.restart => {
                report.outcome = BackfillOutcome::AlreadyComplete;
                report.phase = BackfillPhase::Done;
                if let Some(Ok(saved)) = c.cursor.as_deref().map(serde_json::from_str::<Saved>) {
                    report.totals = saved.totals;
                }
                return Ok(report);
            }
            Some(c) if !self.options.restart => match c.cursor.as_deref().map(serde_json::from_str)
            {
                None => Saved::start(),
                Some(Ok(saved)) => {
                    report.resumed = true;
                    saved
                }
                Some(Err(e)) => {
                    tracing::warn!(integration.id = %id, error = %e, "Unreadable backfill cursor; starting from the beginning");
                    cursors::start(pool, id, CursorKind::Backfill).await?;
                    Saved::start()
                }
            },
            _ => {
                cursors::start(pool, id, CursorKind::Backfill).await?;
                Saved::start()
            }
        };
        let mut state = State {
            saved,
            calls: 0,
            steps: 0,
        };
        tracing::info!(
            integration.id = %id,
            backfill.resumed = report.resumed,
            "Backfill of integration {id} {}",
            if report.resumed { "resumes" } else { "starts" }
        );
        let finished = self.contacts(&mut state).await? && self.leads(&mut state).await?;
        report.totals = state.saved.totals.clone();
        report.calls = state.calls;
        report.steps = state.steps;
        if !finished {
            report.outcome = BackfillOutcome::Interrupted;
            report.phase = match state.saved.position {
                Position::Contacts { .. } => BackfillPhase::Contacts,
                Position::Leads { .. } => BackfillPhase::Leads,
            };
            tracing::info!(integration.id = %id, backfill.calls = state.calls, "Backfill of integration {id} interrupted; the next run resumes");
            return Ok(report);
        }
        let mut tx = self.deps.store.begin().await?;
        save_cursor(&mut *tx, id, &state.saved).await?;
        cursors::complete(&mut *tx, id, CursorKind::Backfill).await?;
        let mut delta = StatsDelta::new();
        delta.add(STAT_RUNS, 1);
        stats::increment(&mut *tx, id, &delta).await?;
        tx.commit().await?;
        report.phase = BackfillPhase::Done;
        self.report_progress(&state, BackfillPhase::Done);
        let t = &report.totals;
        tracing::info!(
            integration.id = %id,
            backfill.contacts = t.contacts,
            backfill.leads_pushed = t.pushed,
            backfill.calls = t.calls,
            "Backfill of integration {id} completed: {} contact(s), {} lead(s) pushed",
            t.contacts,
            t.pushed
        );
        Ok(report)
    }

    /// Whether the run may take one more step.
    fn may_continue(&self, state: &State) -> bool {
        !self.options.cancel.is_cancelled()
            && self.options.max_pages.is_none_or(|max| state.steps < max)
    }

    fn report_progress(&self, state: &State, phase: BackfillPhase) {
        (self.progress)(&BackfillProgress {
            integration_id: self.integration.id,
            phase,
            totals: state.saved.totals.clone(),
            calls_this_run: state.calls,
        });
    }

    /// Phase 1; `false` when the run stopped before its end.
    async fn contacts(&self, state: &mut State) -> Result<bool, BackfillError> {
        let Position::Contacts { after } = &state.saved.position else {
            return Ok(true);
        };
        let mut after = after.clone();
        if self.integration.settings.directions.inbound {
            let portal = self.integration.portal_id;
            let properties = self.mapping.properties();
            // Only this policy compares change times, which the list lacks.
            let needs_history = self.mapping.entries().iter().any(|e| {
                self.integration.settings.policy_for(e.field) == ConflictPolicy::LastWriteWins
            });
            loop {
                if !self.may_continue(state) {
                    return Ok(false);
                }
                let page = self
                    .hubspot
                    .list_contacts(
                        portal,
                        after.as_deref(),
                        self.deps.config.page_size,
                        &properties,
                    )
                    .await?;
                state.calls += 1;
                state.saved.totals.calls += 1;
                let listed = page.contacts.len();
                let contacts = if needs_history && !page.contacts.is_empty() {
                    let ids: Vec<_> = page.contacts.iter().map(|c| c.id).collect();
                    let read = self
                        .hubspot
                        .batch_read(portal, &ids, &properties, &properties)
                        .await?;
                    let calls = ids.len().div_ceil(leadsync_hubspot::MAX_BATCH) as u64;
                    state.calls += calls;
                    state.saved.totals.calls += calls;
                    read.contacts
                } else {
                    page.contacts
                };
                let next = match page.next_after {
                    Some(next) => Position::Contacts { after: Some(next) },
                    None => Position::Leads { after: None },
                };
                self.apply_page(state, listed, &contacts, next).await?;
                state.steps += 1;
                self.report_progress(state, BackfillPhase::Contacts);
                match &state.saved.position {
                    Position::Contacts { after: next } => after.clone_from(next),
                    Position::Leads { .. } => return Ok(true),
                }
            }
        }
        state.saved.position = Position::Leads { after: None };
        save_cursor(self.deps.store.pool(), self.integration.id, &state.saved).await?;
        Ok(true)
    }

    /// Applies a listed page in one inbound transaction that also moves the
    /// cursor to `next`.
    async fn apply_page(
        &self,
        state: &mut State,
        listed: usize,
        contacts: &[Contact],
        next: Position,
    ) -> Result<(), BackfillError> {
        let mut tx = self.deps.store.begin_inbound().await?;
        let applied = apply_contacts(
            &mut tx,
            self.integration,
            self.mapping,
            contacts,
            ScanOrigin {
                reason: AUDIT_REASON,
                key: &self.origin_key,
            },
        )
        .await?;
        let mut saved = Saved {
            position: next,
            totals: state.saved.totals.clone(),
        };
        saved
            .totals
            .add_page(listed, applied.outcomes.values().copied());
        save_cursor(&mut *tx, self.integration.id, &saved).await?;
        tx.commit().await?;
        if let Some(m) = &self.deps.metrics {
            m.record(&applied.report);
        }
        state.saved = saved;
        Ok(())
    }

    /// Phase 2; `false` when the run stopped before its end.
    async fn leads(&self, state: &mut State) -> Result<bool, BackfillError> {
        let Position::Leads { after } = &state.saved.position else {
            return Ok(true);
        };
        if !self.integration.settings.directions.outbound {
            return Ok(true);
        }
        let pool = self.deps.store.pool();
        let push = OutboundDeps {
            store: self.deps.store.clone(),
            hubspot: self.hubspot.clone(),
            source_system: self.deps.source_system.clone(),
            credentials: None,
        };
        let mut scanned = after.map(|(created_at, id)| ListCursor { created_at, id });
        let mut batch: Vec<Lead> = Vec::with_capacity(PUSH_BATCH);
        loop {
            let page = leads::list(
                pool,
                self.integration.id,
                &ListLeads {
                    after: scanned,
                    limit: LEAD_PAGE,
                    include_deleted: false,
                },
            )
            .await?;
            let last_page = page.len() < LEAD_PAGE as usize;
            if let Some(last) = page.last() {
                scanned = Some(ListCursor::from(last));
            }
            for lead in page {
                if !is_unsynced(&lead) {
                    continue;
                }
                batch.push(lead);
                if batch.len() == PUSH_BATCH {
                    if !self.may_continue(state) {
                        return Ok(false);
                    }
                    self.push(state, &push, std::mem::take(&mut batch)).await?;
                }
            }
            if last_page {
                break;
            }
        }
        if !batch.is_empty() {
            if !self.may_continue(state) {
                return Ok(false);
            }
            self.push(state, &push, batch).await?;
        }
        Ok(true)
    }

    /// Pushes one batch of unsynced leads as the push batcher would, then
    /// saves the position after its last lead.
    async fn push(
        &self,
        state: &mut State,
        deps: &OutboundDeps,
        batch: Vec<Lead>,
    ) -> Result<(), BackfillError> {
        let Some(last) = batch.last().map(ListCursor::from) else {
            return Ok(());
        };
        let jobs: Vec<PushLeadChange> = batch
            .iter()
            .map(|lead| PushLeadChange {
                change_id: change_id_of(lead.id),
                integration_id: self.integration.id,
                lead_id: lead.id,
                operation: "insert".to_owned(),
                // No outbox row: the lead's last change stands for it (what a
                // restore after an upsert compares HubSpot's history with).
                changed_at_ms: lead.updated_at.timestamp_millis(),
                crm_id: lead.crm_id,
                trace: std::collections::HashMap::new(),
            })
            .collect();
        let report = process_push_batch(deps, jobs).await?;
        let calls = report.calls() as u64;
        state.calls += calls;
        state.saved.totals.add_push(batch.len(), &report);
        state.saved.position = Position::Leads {
            after: Some((last.created_at, last.id)),
        };
        save_cursor(self.deps.store.pool(), self.integration.id, &state.saved).await?;
        if let Some(m) = &self.deps.metrics {
            m.record_push(&report);
        }
        state.steps += 1;
        self.report_progress(state, BackfillPhase::Leads);
        Ok(())
    }
}

/// Saves `saved` as the integration's backfill cursor.
async fn save_cursor(
    exec: impl sqlx::PgExecutor<'_>,
    integration: Uuid,
    saved: &Saved,
) -> Result<(), StoreError> {
    cursors::save(exec, integration, CursorKind::Backfill, Some(&saved.text())).await
}

/// Whether a lead is for phase 2: live, no contact, an address, and never
/// pushed successfully nor given up on.
fn is_unsynced(lead: &Lead) -> bool {
    lead.deleted_at.is_none()
        && lead.crm_id.is_none()
        && matches!(
            lead.crm_sync_status,
            CrmSyncStatus::NotSynced | CrmSyncStatus::Pending
        )
        && lead
            .fields
            .get(LeadColumn::Email)
            .is_some_and(|e| !e.trim().is_empty())
}

/// The change id of a backfill push of `lead`: negative (outbox rows are
/// positive) and one per lead, so that its dead letter stays its own.
pub fn change_id_of(lead: Uuid) -> i64 {
    let low = (lead.as_u128() as u64) & (i64::MAX as u64);
    // `low` ≤ i64::MAX, so this is at least i64::MIN.
    -(low as i64) - 1
}

/// `leadsync backfill`: connects to Postgres and Redis as the worker does
/// (the same rate limiter, OAuth token cache and credentials) and backfills
/// the integration named `name`.
///
/// # Errors
/// [`BackfillError::Startup`] when a setting or a connection fails,
/// [`BackfillError::UnknownIntegration`], and as for [`run_once`].
pub async fn run_from_settings(
    settings: &Settings,
    name: &str,
    options: &BackfillOptions,
    progress: &(dyn Fn(&BackfillProgress) + Send + Sync),
) -> Result<BackfillReport, BackfillError> {
    let Connected {
        store,
        hubspot,
        credentials,
        metrics,
        ..
    } = startup::connect(settings).await?;
    let result = async {
        let integration = integrations::by_name(store.pool(), name)
            .await?
            .ok_or_else(|| BackfillError::UnknownIntegration(name.to_owned()))?;
        credentials.ensure([integration.portal_id]).await;
        let deps = BackfillDeps {
            store: store.clone(),
            hubspot,
            source_system: settings.hubspot.source_system_value.clone(),
            config: BackfillConfig::from_settings(&settings.backfill),
            metrics: Some(metrics),
        };
        run_once(&deps, &integration, options, progress).await
    }
    .await;
    store.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfill_change_ids_are_negative_and_stable() {
        for _ in 0..1000 {
            let lead = Uuid::new_v4();
            let id = change_id_of(lead);
            assert!(id < 0);
            assert_eq!(id, change_id_of(lead));
        }
        assert_eq!(change_id_of(Uuid::from_u128(u128::MAX)), i64::MIN);
        assert_eq!(change_id_of(Uuid::nil()), -1);
    }

    #[test]
    fn the_saved_position_round_trips() {
        let mut saved = Saved {
            position: Position::Leads {
                after: Some((Utc::now(), Uuid::now_v7())),
            },
            totals: BackfillTotals::default(),
        };
        saved.totals.pages = 3;
        saved
            .totals
            .not_applied
            .insert("duplicate_email".to_owned(), 2);
        let back: Saved = serde_json::from_str(&saved.text()).expect("JSON");
        assert_eq!(back, saved);
        let start: Saved =
            serde_json::from_str(r#"{"position":{"phase":"contacts","after":null}}"#)
                .expect("totals default");
        assert_eq!(start, Saved::start());
    }
}
