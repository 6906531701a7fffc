//! The outbound batch processor: platform lead changes → HubSpot contacts
//! (design.md §1 "worker", §2.2, §2.3, §2.5).
//!
//! A queued change only says *which* lead changed; the processor pushes the
//! lead's current state, so every change of a lead in a batch costs one
//! write. Per integration it reads the batch's leads in one query and then:
//!
//! - leads without a contact are written with **batch upserts keyed by
//!   email** (≤ 100 per call). HubSpot answers with the contact ids, which
//!   link the leads (`crm_id`); a contact that already had the address is
//!   linked, never duplicated. Contacts created get `lead_source_system`.
//!   A 409 "Contact already exists. Existing ID: N" links the lead to N, and
//!   it is pushed as a linked lead below. An upsert that matched an
//!   existing contact (`new: false`) has overwritten its values: those
//!   contacts are read once with property history, each written field is
//!   decided as for a never-synced linked lead against HubSpot's value
//!   before the write, and where HubSpot wins its value is restored (one
//!   batch update) and written to the lead;
//! - linked leads are **read first** (one batch read per 100) and decided
//!   field by field against the merge base ([`decide_outbound`]): a field
//!   only the platform changed is written, one only HubSpot changed is left
//!   for the inbound side, one both changed follows the integration's
//!   conflict policy. The values to write are recorded in the echo ledger
//!   *before* the **batch update** (≤ 100 per call), so the webhooks HubSpot
//!   sends back for them are recognised as our echo;
//! - a linked contact the read finds **deleted or merged away** had its
//!   webhook lost (reconciliation's search never sees deleted contacts):
//!   the push does what that webhook would have done (`apply_missing`) —
//!   the integration's `deletion_mode` for a deleted contact, after which
//!   the change that found it is skipped (`contact_deleted`, as are all
//!   changes made while the lead was linked to that contact; later changes
//!   of the unlinked lead are pushed as for any lead without a contact), or
//!   the re-pointing of a merge and the surviving contact's values applied
//!   to the lead, after which the lead is pushed to that contact (a merge
//!   involving another lead is dead-lettered, `merged_into_linked_contact`).
//!
//! The bookkeeping — `crm_id`, merge base, sync status, audit entries, dead
//! letters, counters — is written in one transaction after the calls. It
//! changes no synced column, so it does not re-enter the outbox
//! (docs/adr/0005). A transient HubSpot or database error fails the whole
//! batch, which the queue retries; pushing current state makes that safe.
//! A permanent error is narrowed to the leads that cause it (a refused batch
//! is split in halves until the culprits are alone) and those are
//! dead-lettered with the reason.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use leadsync_domain::{
    ConflictPolicy, ContactId, FieldMapping, LeadField, PortalId, SyncPolicy, ValueHash,
};
use leadsync_hubspot::{
    BatchRead, Client, Contact, ContactInput, ContactUpdate, HubSpotError, MAX_BATCH,
};
use leadsync_queue::{OutboundLetter, PushLeadChange};
use leadsync_store::audit::{self, AuditAction, AuditEntry, Direction, FieldChange};
use leadsync_store::dead_letters::{self, DeadLetterKind, NewDeadLetter};
use leadsync_store::integrations::{self, DeletionMode, PlatformDeletion};
use leadsync_store::leads::{self, CrmSyncStatus, SyncDirection, SyncUpdate};
use leadsync_store::ledger::{self, LedgerEntry, LedgerWrite};
use leadsync_store::stats::{self, StatsDelta};
use leadsync_store::{Integration, Lead, LeadColumn, Store, StoreError};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::inbound::{apply_contact_deletion, apply_contact_merge};
use crate::tokens::Credentials;

mod decide;

pub(crate) use decide::hash_of;
pub use decide::{HubSpotSide, PlatformSide, PushDecision, canonical, decide_outbound};

/// The custom contact property naming the system that created a contact.
pub const SOURCE_SYSTEM_PROPERTY: &str = "lead_source_system";

/// HubSpot's contact property listing the ids merged into a contact,
/// `;`-separated. A batch read of a merged-away id answers with the
/// surviving contact under its own id; this property says which input it
/// answers.
pub const MERGED_IDS_PROPERTY: &str = "hs_merged_object_ids";

/// What the processor needs.
#[derive(Debug, Clone)]
pub struct OutboundDeps {
    /// The platform's database.
    pub store: Store,
    /// The HubSpot client.
    pub hubspot: Client,
    /// The value written to [`SOURCE_SYSTEM_PROPERTY`] on contacts leadsync
    /// creates (`hubspot.source_system_value`).
    pub source_system: String,
    /// When given, makes sure a portal has credentials on the client before
    /// its first call (an account connected since the last reload).
    pub credentials: Option<Arc<Credentials>>,
}

/// What one batch did, for logs, metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Jobs (outbox rows) handed in.
    pub jobs: usize,
    /// Distinct leads they name.
    pub leads: usize,
    /// Contacts created for leads.
    pub created: usize,
    /// Leads linked to a contact that already had their address.
    pub linked: usize,
    /// Contacts updated.
    pub updated: usize,
    /// Leads whose change went to the dead letters.
    pub dead_lettered: usize,
    /// Leads (or fields, for conflicts) left unwritten, by reason.
    pub skipped: BTreeMap<String, usize>,
    /// Batch upsert calls.
    pub upsert_calls: usize,
    /// Batch update calls.
    pub update_calls: usize,
    /// Batch read calls (linked leads are read before they are updated).
    pub read_calls: usize,
    /// Contacts archived for leads deleted on the platform.
    pub archived: usize,
    /// Leads unlinked because their contact was found deleted in HubSpot
    /// (`deletion_mode = unlink`), its webhook lost.
    pub unlinked: usize,
    /// Leads soft-deleted because their contact was found deleted in
    /// HubSpot (`deletion_mode = soft_delete`), its webhook lost.
    pub deleted: usize,
    /// Merges found (linked contacts merged away in HubSpot, their webhook
    /// lost) and applied to the leads.
    pub merged: usize,
    /// Batch archive calls.
    pub archive_calls: usize,
}

impl PushReport {
    /// HubSpot calls made, of every kind.
    pub fn calls(&self) -> usize {
        self.upsert_calls + self.update_calls + self.read_calls + self.archive_calls
    }
}

/// Why a batch must be retried as a whole. Permanent failures never come
/// back as an error: they are dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The database failed (connection, deadlock, ...).
    #[error("database error: {0}")]
    Store(#[from] StoreError),
    /// HubSpot failed in a way that may pass (network, 5xx, 429).
    #[error("transient HubSpot error: {0}")]
    HubSpot(#[from] HubSpotError),
}

impl From<sqlx::Error> for OutboundError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(err.into())
    }
}

impl From<crate::inbound::InboundError> for OutboundError {
    fn from(err: crate::inbound::InboundError) -> Self {
        match err {
            crate::inbound::InboundError::Store(e) => Self::Store(e),
            crate::inbound::InboundError::HubSpot(e) => Self::HubSpot(e),
        }
    }
}

impl OutboundError {
    /// A stable snake_case cause: `database` or a HubSpot error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Store(_) => "database",
            Self::HubSpot(e) => e.code(),
        }
    }
}

// ---------------------------------------------------------------------------
// The batch
// ---------------------------------------------------------------------------

/// Processes one batch of lead-change jobs; see the module documentation.
///
/// # Errors
/// [`OutboundError`] when the batch should be retried whole (database or
/// transient HubSpot failure). Writes already made to HubSpot stand; the
/// retry pushes the same current state again.
pub async fn process_push_batch(
    deps: &OutboundDeps,
    jobs: Vec<PushLeadChange>,
) -> Result<PushReport, OutboundError> {
    let mut report = PushReport {
        jobs: jobs.len(),
        ..PushReport::default()
    };
    let mut by_integration: BTreeMap<Uuid, BTreeMap<Uuid, Vec<PushLeadChange>>> = BTreeMap::new();
    for job in jobs {
        by_integration
            .entry(job.integration_id)
            .or_default()
            .entry(job.lead_id)
            .or_default()
            .push(job);
    }
    let mut outcomes = Vec::with_capacity(by_integration.len());
    for (id, changes) in by_integration {
        report.leads += changes.len();
        let mut out = Outcome::new(id, changes);
        push_integration(deps, &mut out, &mut report).await?;
        outcomes.push(out);
    }

    // Marked inbound: the bookkeeping changes no synced column, and the
    // HubSpot values an upsert had overwritten and that were restored are
    // written back to their leads as a change from HubSpot (no outbox row).
    let mut tx = deps.store.begin_inbound().await?;
    for mut out in outcomes {
        out.write(&mut tx, &mut report).await?;
    }
    tx.commit().await?;
    tracing::debug!(
        jobs = report.jobs,
        leads = report.leads,
        created = report.created,
        linked = report.linked,
        updated = report.updated,
        dead_lettered = report.dead_lettered,
        "Outbound batch committed"
    );
    Ok(report)
}

/// One integration's share of a batch: the changes, and everything to
/// record once HubSpot has been written.
struct Outcome {
    integration: Uuid,
    portal: Option<PortalId>,
    /// The jobs of each lead (for dead letters and counters).
    changes: BTreeMap<Uuid, Vec<PushLeadChange>>,
    /// Bookkeeping per lead, merged when a lead is written twice (a 409 link
    /// followed by its update).
    syncs: BTreeMap<Uuid, SyncUpdate>,
    audit: Vec<AuditEntry>,
    dead: Vec<NewDeadLetter>,
    failed_leads: Vec<Uuid>,
    delta: StatsDelta,
}

impl Outcome {
    fn new(integration: Uuid, changes: BTreeMap<Uuid, Vec<PushLeadChange>>) -> Self {
        Self {
            integration,
            portal: None,
            changes,
            syncs: BTreeMap::new(),
            audit: Vec::new(),
            dead: Vec::new(),
            failed_leads: Vec::new(),
            // The inbound side's `processed` and processing time stay about
            // webhook events; pushes count as `to_hubspot_*`.
            delta: StatsDelta::new(),
        }
    }

    fn entry(
        &self,
        action: AuditAction,
        lead: Uuid,
        contact: Option<ContactId>,
        reason: Option<&str>,
    ) -> AuditEntry {
        let mut entry = AuditEntry::new(Direction::Outbound, action);
        entry.integration_id = self.known();
        entry.lead_id = Some(lead);
        entry.contact_id = contact;
        entry.event_key = self.last_change(lead).map(PushLeadChange::task_id_of);
        entry.reason = reason.map(str::to_owned);
        entry
    }

    /// The integration id once the integration was found (rows referring
    /// to an unknown one would violate their foreign keys).
    fn known(&self) -> Option<Uuid> {
        self.portal.map(|_| self.integration)
    }

    /// When the oldest change of `lead` being pushed was committed: no write
    /// of this push (or of an earlier try of it) is older.
    fn first_change_ms(&self, lead: Uuid) -> i64 {
        self.changes
            .get(&lead)
            .and_then(|c| c.iter().map(|j| j.changed_at_ms).filter(|ms| *ms > 0).min())
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis())
    }

    /// Whether every change of `lead` in the batch was made while it was
    /// linked to `contact` (its outbox row names that contact).
    fn all_addressed_to(&self, lead: Uuid, contact: ContactId) -> bool {
        self.changes
            .get(&lead)
            .is_some_and(|jobs| jobs.iter().all(|j| j.crm_id == Some(contact)))
    }

    /// The contact a `delete` change of `lead` names (the lead row may be
    /// gone).
    fn deleted_contact(&self, lead: Uuid) -> Option<ContactId> {
        self.changes
            .get(&lead)?
            .iter()
            .filter(|j| j.operation == "delete")
            .find_map(|j| j.crm_id)
    }

    fn last_change(&self, lead: Uuid) -> Option<i64> {
        self.changes
            .get(&lead)
            .and_then(|c| c.iter().map(|j| j.change_id).max())
    }

    /// Counts a lead (or field) left unwritten and audits it.
    fn skip(
        &mut self,
        report: &mut PushReport,
        reason: &str,
        lead: Uuid,
        contact: Option<ContactId>,
    ) {
        count_skip(report, &mut self.delta, reason);
        let entry = self.entry(AuditAction::Skipped, lead, contact, Some(reason));
        self.audit.push(entry);
    }

    /// Dead-letters a lead's changes with `reason`; its sync status becomes
    /// `failed`.
    fn dead_letter(
        &mut self,
        report: &mut PushReport,
        lead: Uuid,
        contact: Option<ContactId>,
        reason: &str,
    ) {
        let jobs = self.changes.get(&lead).cloned().unwrap_or_default();
        let last = jobs.iter().map(|j| j.change_id).max().unwrap_or_default();
        self.dead.push(NewDeadLetter {
            integration_id: self.known(),
            portal_id: self.portal,
            event_key: PushLeadChange::task_id_of(last),
            kind: DeadLetterKind::OutboundChange,
            reason: reason.to_owned(),
            payload: OutboundLetter::of(self.integration, lead, &jobs).to_json(),
        });
        let entry = self.entry(AuditAction::DeadLettered, lead, contact, Some(reason));
        self.audit.push(entry);
        // A link already learnt (a 409) stays recorded; the status says failed.
        self.failed_leads.push(lead);
        self.delta.to_hubspot(false, 1);
        report.dead_lettered += 1;
        tracing::warn!(
            integration.id = %self.integration,
            lead.id = %lead,
            reason,
            "Lead {lead} could not be pushed to HubSpot ({reason}); dead-lettered"
        );
    }

    /// Records bookkeeping for a lead, merged with what was recorded before.
    fn sync(&mut self, lead: Uuid, update: SyncUpdate) {
        match self.syncs.get_mut(&lead) {
            Some(existing) => {
                // HubSpot's values written back to the lead make it a sync
                // from HubSpot.
                if !update.values.is_empty() {
                    existing.direction = update.direction;
                }
                existing.values.extend(update.values);
                existing.synced_values.extend(update.synced_values);
                existing.link_crm_id = update.link_crm_id.or(existing.link_crm_id);
                existing.last_modified_in_crm = update
                    .last_modified_in_crm
                    .or(existing.last_modified_in_crm);
            }
            None => {
                self.syncs.insert(lead, update);
            }
        }
    }

    /// Writes the bookkeeping inside the batch transaction.
    async fn write(
        &mut self,
        conn: &mut PgConnection,
        report: &mut PushReport,
    ) -> Result<(), OutboundError> {
        let syncs = std::mem::take(&mut self.syncs);
        for (lead, update) in syncs {
            // A savepoint: a contact another lead is linked to must not
            // abort the whole batch's transaction.
            let mut sp = conn.begin().await?;
            match leads::apply_sync(&mut *sp, self.integration, lead, &update).await {
                Ok(_) => sp.commit().await?,
                Err(StoreError::DuplicateCrmId | StoreError::DuplicateEmail) => {
                    sp.rollback().await?;
                    self.dead_letter(report, lead, update.link_crm_id, "contact_linked_elsewhere");
                }
                Err(err) => return Err(err.into()),
            }
        }
        if !self.failed_leads.is_empty() {
            leads::set_sync_status(
                &mut *conn,
                self.integration,
                &self.failed_leads,
                CrmSyncStatus::Failed,
            )
            .await?;
        }
        for letter in &self.dead {
            dead_letters::record(&mut *conn, letter).await?;
        }
        audit::record_many(&mut *conn, &self.audit).await?;
        if self.known().is_some() {
            stats::increment(&mut *conn, self.integration, &self.delta).await?;
        }
        Ok(())
    }
}

/// Counts a lead (or field) left unwritten: in the report by `reason`, in
/// the integration's counters as `skipped.to_hubspot.{reason}` (the inbound
/// side's reasons have no prefix).
fn count_skip(report: &mut PushReport, delta: &mut StatsDelta, reason: &str) {
    *report.skipped.entry(reason.to_owned()).or_default() += 1;
    delta.skipped(&format!("{STATS_SKIP_PREFIX}{reason}"), 1);
}

/// Prefix of the outbound skip reasons in the integration's counters.
pub const STATS_SKIP_PREFIX: &str = "to_hubspot.";

/// What every step of one integration needs.
struct Ctx<'a> {
    deps: &'a OutboundDeps,
    integration: &'a Integration,
    mapping: FieldMapping,
    policy: SyncPolicy,
}

impl Ctx<'_> {
    fn portal(&self) -> PortalId {
        self.integration.portal_id
    }
}

async fn push_integration(
    deps: &OutboundDeps,
    out: &mut Outcome,
    report: &mut PushReport,
) -> Result<(), OutboundError> {
    let pool = deps.store.pool();
    let lead_ids: Vec<Uuid> = out.changes.keys().copied().collect();
    let Some(integration) = integrations::get(pool, out.integration).await? else {
        for lead in lead_ids {
            out.dead_letter(report, lead, None, "unknown_integration");
        }
        return Ok(());
    };
    out.portal = Some(integration.portal_id);
    if !integration.settings.directions.outbound {
        for lead in lead_ids {
            out.skip(report, "outbound_disabled", lead, None);
        }
        return Ok(());
    }
    let Ok(mapping) = integration.settings.mapping() else {
        for lead in lead_ids {
            out.dead_letter(report, lead, None, "invalid_field_mapping");
        }
        return Ok(());
    };
    if let Some(credentials) = &deps.credentials {
        credentials.ensure([integration.portal_id]).await;
    }
    let ctx = Ctx {
        deps,
        integration: &integration,
        mapping,
        policy: integration.settings.sync_policy(),
    };

    let found: HashMap<Uuid, Lead> = leads::by_ids(pool, integration.id, &lead_ids)
        .await?
        .into_iter()
        .map(|l| (l.id, l))
        .collect();
    let archive = integration.settings.platform_deletion == PlatformDeletion::Archive;
    let mut linked = Vec::new();
    let mut unlinked = Vec::new();
    let mut deleted = Vec::new();
    for id in lead_ids {
        match found.get(&id) {
            // Deleted with SQL: the outbox row kept its contact.
            None => match out.deleted_contact(id) {
                Some(contact) if archive => deleted.push((id, contact)),
                contact => out.skip(report, "lead_not_found", id, contact),
            },
            // Archived only for a deletion on the platform (an outbox
            // `delete` in this batch): a lead soft-deleted by HubSpot's own
            // deletion (`deletion_mode = soft_delete`) is not archived
            // again. A lead HubSpot's deletion webhook unlinked after an
            // archive whose commit failed is archived (again) by its outbox
            // row's contact, so that the archive is recorded.
            Some(lead) if lead.deleted_at.is_some() => {
                let deletion = out.deleted_contact(id);
                match (deletion, lead.crm_id.or(deletion)) {
                    (Some(_), Some(contact)) if archive => deleted.push((id, contact)),
                    // By default deleting contacts is left to people in HubSpot.
                    (_, contact) => out.skip(report, "lead_deleted", id, contact),
                }
            }
            Some(lead) if lead.crm_id.is_some() => linked.push(lead.clone()),
            // Changes made while the lead was linked to a contact HubSpot
            // has since deleted (the deletion unlinked it): they were meant
            // for that contact, which is not created again for them; a
            // retried batch whose first try found the deletion lands here
            // too. A change made after the unlink is pushed below.
            Some(lead)
                if lead
                    .unlinked_crm_id
                    .is_some_and(|c| out.all_addressed_to(id, c)) =>
            {
                out.skip(report, "contact_deleted", id, lead.unlinked_crm_id);
            }
            Some(lead) if email_of(lead).is_some() => unlinked.push(lead.clone()),
            Some(_) => out.skip(report, "no_email", id, None),
        }
    }
    archive_deleted(&ctx, &deleted, out, report).await?;
    let unlinked = without_blocked_emails(&ctx, unlinked, out, report).await?;
    let relinked = create_or_link(&ctx, unlinked, out, report).await?;
    linked.extend(relinked);
    update_linked(&ctx, linked, out, report).await?;
    Ok(())
}

/// The lead's address as HubSpot keys it: trimmed; `None` when empty.
fn email_of(lead: &Lead) -> Option<&str> {
    lead.fields
        .get(LeadColumn::Email)
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

/// The lead's value of a synced field, trimmed (`""` = unset).
fn value_of(lead: &Lead, field: LeadField) -> &str {
    lead.fields
        .get(LeadColumn::from(field))
        .map_or("", str::trim)
}

fn non_empty(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

/// Drops leads whose address a privacy deletion tombstoned (re-creating the
/// contact is forbidden) or that another lead of the batch already uses in
/// HubSpot's eyes (addresses are compared trimmed and case-insensitively,
/// and a batch upsert refuses the same address twice).
async fn without_blocked_emails(
    ctx: &Ctx<'_>,
    leads: Vec<Lead>,
    out: &mut Outcome,
    report: &mut PushReport,
) -> Result<Vec<Lead>, OutboundError> {
    if leads.is_empty() {
        return Ok(leads);
    }
    let emails: Vec<&str> = leads.iter().filter_map(email_of).collect();
    let tombstoned: HashSet<String> =
        leads::tombstoned_emails(ctx.deps.store.pool(), ctx.integration.id, &emails)
            .await?
            .into_iter()
            .map(str::to_lowercase)
            .collect();
    let mut seen = HashSet::new();
    let mut kept = Vec::with_capacity(leads.len());
    for lead in leads {
        let email = email_of(&lead).unwrap_or_default().to_lowercase();
        if tombstoned.contains(&email) {
            out.skip(report, "tombstoned", lead.id, None);
        } else if !seen.insert(email) {
            out.skip(report, "duplicate_email", lead.id, None);
        } else {
            kept.push(lead);
        }
    }
    Ok(kept)
}

/// Whether a permanent error is about the input (so splitting the batch
/// finds the culprit) rather than the account (credentials, configuration).
fn input_specific(err: &HubSpotError) -> bool {
    matches!(
        err,
        HubSpotError::Validation { .. }
            | HubSpotError::NotFound
            | HubSpotError::Permanent { .. }
            | HubSpotError::Conflict { .. }
            | HubSpotError::Decode { .. }
    )
}

fn hubspot_reason(err: &HubSpotError) -> String {
    format!("hubspot_{}", err.code())
}

/// Archives the contacts of leads deleted on the platform, ≤ 100 per call
/// (under `platform_deletion = archive`). The lead keeps its link: the
/// `contact.deletion` webhook that follows is handled like any other, by
/// the integration's `deletion_mode`.
async fn archive_deleted(
    ctx: &Ctx<'_>,
    deleted: &[(Uuid, ContactId)],
    out: &mut Outcome,
    report: &mut PushReport,
) -> Result<(), OutboundError> {
    for chunk in deleted.chunks(MAX_BATCH) {
        let ids: Vec<ContactId> = chunk.iter().map(|(_, contact)| *contact).collect();
        report.archive_calls += 1;
        match ctx.deps.hubspot.batch_archive(ctx.portal(), &ids).await {
            Ok(()) => {
                for (lead, contact) in chunk {
                    let entry = out.entry(AuditAction::Archived, *lead, Some(*contact), None);
                    out.audit.push(entry);
                    out.delta.to_hubspot(true, 1);
                    report.archived += 1;
                }
            }
            Err(err) if err.is_retryable() => return Err(err.into()),
            // HubSpot answers 204 for unknown ids: what fails here fails for
            // the whole call (scopes, credentials), so every lead keeps it.
            Err(err) => {
                let reason = hubspot_reason(&err);
                for (lead, contact) in chunk {
                    out.dead_letter(report, *lead, Some(*contact), &reason);
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Leads without a contact: batch upsert by email
// ---------------------------------------------------------------------------

/// The upsert input of a lead: its address, its non-empty mapped values (an
/// empty lead field never clears a property of a contact matched by
/// address) and the source system.
fn upsert_input(ctx: &Ctx<'_>, lead: &Lead) -> ContactInput {
    let values: leadsync_domain::LeadValues = LeadField::ALL
        .into_iter()
        .map(|f| (f, value_of(lead, f).to_owned()))
        .collect();
    let present: Vec<LeadField> = LeadField::ALL
        .into_iter()
        .filter(|f| !value_of(lead, *f).is_empty())
        .collect();
    let mut properties = ctx.mapping.to_hubspot(&values, &present);
    properties.insert(
        SOURCE_SYSTEM_PROPERTY.to_owned(),
        ctx.deps.source_system.clone(),
    );
    ContactInput {
        email: email_of(lead).unwrap_or_default().to_owned(),
        properties,
    }
}

/// Upserts the leads by address, ≤ 100 per call; returns the leads a 409
/// linked to an existing contact (to be pushed as linked leads).
async fn create_or_link(
    ctx: &Ctx<'_>,
    leads: Vec<Lead>,
    out: &mut Outcome,
    report: &mut PushReport,
) -> Result<Vec<Lead>, OutboundError> {
    let mut pending: VecDeque<Vec<Lead>> = leads.chunks(MAX_BATCH).map(<[Lead]>::to_vec).collect();
    let mut relinked = Vec::new();
    while let Some(mut chunk) = pending.pop_front() {
        let inputs: Vec<ContactInput> = chunk.iter().map(|l| upsert_input(ctx, l)).collect();
        report.upsert_calls += 1;
        let err = match ctx
            .deps
            .hubspot
            .batch_upsert_by_email(ctx.portal(), &inputs)
            .await
        {
            Ok(results) => {
                let matched = record_upserts(ctx, &chunk, &inputs, results, out, report).await?;
                restore_overwritten(ctx, matched, out, report).await?;
                continue;
            }
            Err(err) if err.is_retryable() => return Err(err.into()),
            Err(err) => err,
        };
        if let HubSpotError::Conflict { existing_id } = err
            && let Some(i) = holder_of(ctx, &chunk, existing_id, report).await?
        {
            // "Contact already exists": that contact is the lead's.
            let mut lead = chunk.remove(i);
            link_existing(ctx, &lead, existing_id, out);
            report.linked += 1;
            lead.crm_id = Some(existing_id);
            relinked.push(lead);
            if !chunk.is_empty() {
                pending.push_front(chunk);
            }
            continue;
        }
        split_or_dead_letter(chunk, &err, &mut pending, out, report);
    }
    Ok(relinked)
}

/// After a permanent error: halves of a larger batch are tried again; a
/// single lead (or any lead, when the account rather than the input is at
/// fault) is dead-lettered with the reason.
fn split_or_dead_letter(
    mut chunk: Vec<Lead>,
    err: &HubSpotError,
    pending: &mut VecDeque<Vec<Lead>>,
    out: &mut Outcome,
    report: &mut PushReport,
) {
    if chunk.len() > 1 && input_specific(err) {
        let second = chunk.split_off(chunk.len() / 2);
        pending.push_front(second);
        pending.push_front(chunk);
        return;
    }
    let reason = hubspot_reason(err);
    for lead in chunk {
        out.dead_letter(report, lead.id, lead.crm_id, &reason);
    }
}

/// Which lead of `chunk` has the address of contact `existing` (a 409 names
/// the contact, not the input): one batch read of that contact.
async fn holder_of(
    ctx: &Ctx<'_>,
    chunk: &[Lead],
    existing: ContactId,
    report: &mut PushReport,
) -> Result<Option<usize>, OutboundError> {
    let email_property = ctx.mapping.property_of(LeadField::Email).unwrap_or("email");
    let properties = [email_property, "hs_additional_emails"];
    report.read_calls += 1;
    let read = match ctx
        .deps
        .hubspot
        .batch_read(ctx.portal(), &[existing], &properties, &[])
        .await
    {
        Ok(read) => read,
        Err(err) if err.is_retryable() => return Err(err.into()),
        Err(_) => return Ok(None),
    };
    let Some(contact) = read.contacts.first() else {
        return Ok(None);
    };
    let mut addresses: HashSet<String> = HashSet::new();
    for property in properties {
        for address in contact.property(property).unwrap_or_default().split(';') {
            let address = address.trim().to_lowercase();
            if !address.is_empty() {
                addresses.insert(address);
            }
        }
    }
    Ok(chunk
        .iter()
        .position(|lead| email_of(lead).is_some_and(|e| addresses.contains(&e.to_lowercase()))))
}

/// Links a lead to the contact a 409 named. The two sides never agreed, so
/// no merge base is set: the update that follows goes through the policy.
fn link_existing(ctx: &Ctx<'_>, lead: &Lead, contact: ContactId, out: &mut Outcome) {
    out.sync(
        lead.id,
        SyncUpdate {
            direction: SyncDirection::ToCrm,
            values: BTreeMap::new(),
            synced_values: BTreeMap::new(),
            last_modified_in_crm: None,
            link_crm_id: Some(contact),
        },
    );
    let entry = out.entry(
        AuditAction::Linked,
        lead.id,
        Some(contact),
        Some("contact_exists"),
    );
    out.audit.push(entry);
    out.delta.to_hubspot(true, 1);
    tracing::debug!(
        integration.id = %ctx.integration.id,
        lead.id = %lead.id,
        contact.id = %contact,
        "HubSpot already has lead {}'s address (409): linked to contact {contact}",
        lead.id
    );
}

/// Records a successful upsert: ledger entries, links, merge bases, audit.
/// Returns the leads whose upsert matched an existing contact.
async fn record_upserts(
    ctx: &Ctx<'_>,
    chunk: &[Lead],
    inputs: &[ContactInput],
    results: Vec<leadsync_hubspot::UpsertResult>,
    out: &mut Outcome,
    report: &mut PushReport,
) -> Result<Vec<Matched>, OutboundError> {
    let email_property = ctx.mapping.property_of(LeadField::Email).unwrap_or("email");
    // HubSpot does not promise the input order: match results by address.
    let mut by_email: HashMap<String, leadsync_hubspot::UpsertResult> = HashMap::new();
    let mut unnamed = VecDeque::new();
    for result in results {
        match result.contact.property(email_property) {
            Some(email) => {
                by_email.insert(email.trim().to_lowercase(), result);
            }
            None => unnamed.push_back(result),
        }
    }
    let mut writes = Vec::new();
    let mut matched = Vec::new();
    for (lead, input) in chunk.iter().zip(inputs) {
        let Some(result) = by_email
            .remove(&input.email.to_lowercase())
            .or_else(|| unnamed.pop_front())
        else {
            out.dead_letter(report, lead.id, None, "hubspot_no_result");
            continue;
        };
        for (property, value) in &input.properties {
            if let Some(field) = ctx.mapping.field_of(property) {
                writes.push(LedgerWrite {
                    contact: result.id,
                    property: property.clone(),
                    value_hash: hash_of(field, value),
                });
            }
        }
        // Fields both sides now hold are the new merge base.
        let mut synced = BTreeMap::new();
        let mut changes = BTreeMap::new();
        for entry in ctx.mapping.entries() {
            let ours = value_of(lead, entry.field);
            let theirs = ctx.mapping.inbound_value(
                entry.field,
                result.contact.property(&entry.property).unwrap_or(""),
            );
            if canonical(entry.field, &theirs) == canonical(entry.field, ours) {
                synced.insert(entry.field, hash_of(entry.field, ours));
            }
            if let Some(sent) = input.properties.get(&entry.property) {
                changes.insert(
                    entry.field.name().to_owned(),
                    FieldChange {
                        before: None,
                        after: non_empty(sent),
                        losing_value: None,
                    },
                );
            }
        }
        out.sync(
            lead.id,
            SyncUpdate {
                direction: SyncDirection::ToCrm,
                values: BTreeMap::new(),
                synced_values: synced,
                last_modified_in_crm: result.contact.updated_at,
                link_crm_id: Some(result.id),
            },
        );
        let (action, reason) = if result.new {
            report.created += 1;
            (AuditAction::Created, None)
        } else {
            report.linked += 1;
            matched.push(Matched {
                lead: lead.clone(),
                contact: result.id,
                written: input.properties.clone(),
            });
            (AuditAction::Linked, Some("email_match"))
        };
        let mut entry = out.entry(action, lead.id, Some(result.id), reason);
        entry.changes = changes;
        out.audit.push(entry);
        out.delta.to_hubspot(true, 1);
    }
    // The contacts' ids are known only now; their echoes are recognised from
    // here on (until then a webhook finds the values equal to the lead's).
    ledger::record_many(ctx.deps.store.pool(), ctx.portal(), &writes).await?;
    Ok(matched)
}

/// A lead an upsert linked to a contact HubSpot already had.
struct Matched {
    lead: Lead,
    contact: ContactId,
    /// The properties the upsert wrote.
    written: BTreeMap<String, String>,
}

/// How far HubSpot's clock may run behind ours when a property version is
/// compared with the time a lead's change was committed.
const CLOCK_SKEW_ALLOWANCE_MS: i64 = 2 * 60 * 1000;

/// A field whose value before the upsert goes back to HubSpot and to the lead.
struct Restore {
    field: LeadField,
    property: String,
    /// HubSpot's value before the upsert, as HubSpot held it.
    hubspot: String,
    /// The same value in the platform's form.
    value: String,
    /// The lead's value that loses.
    losing: String,
    reason: &'static str,
}

/// Gives contacts an upsert matched by address back the values HubSpot had
/// before the write wherever the conflict policy says HubSpot wins: one
/// batch read with history (the values before the write), one batch update,
/// and the restored values written to the leads as a change from HubSpot.
async fn restore_overwritten(
    ctx: &Ctx<'_>,
    matched: Vec<Matched>,
    out: &mut Outcome,
    report: &mut PushReport,
) -> Result<(), OutboundError> {
    // Under platform_wins for every field the lead's values stand: no read.
    let hubspot_can_win = ctx.mapping.entries().iter().any(|e| {
        e.field != LeadField::Email && ctx.policy.for_field(e.field) != ConflictPolicy::PlatformWins
    });
    if matched.is_empty() || !hubspot_can_win {
        return Ok(());
    }
    let properties = ctx.mapping.properties();
    let ids: Vec<ContactId> = matched.iter().map(|m| m.contact).collect();
    report.read_calls += ids.len().div_ceil(MAX_BATCH);
    let read = match ctx
        .deps
        .hubspot
        .batch_read(ctx.portal(), &ids, &properties, &properties)
        .await
    {
        Ok(read) => read,
        Err(err) if err.is_retryable() => return Err(err.into()),
        Err(err) => {
            // The lead's values stay in HubSpot; the link stands.
            let reason = hubspot_reason(&err);
            for m in &matched {
                out.skip(report, &reason, m.lead.id, Some(m.contact));
            }
            return Ok(());
        }
    };
    let contacts: HashMap<ContactId, &Contact> = read.contacts.iter().map(|c| (c.id, c)).collect();
    let mut restores = Vec::new();
    for m in matched {
        let Some(contact) = contacts.get(&m.contact) else {
            continue;
        };
        let since_ms = out.first_change_ms(m.lead.id) - CLOCK_SKEW_ALLOWANCE_MS;
        let fields = overwritten_fields(ctx, &m, contact, since_ms);
        if !fields.is_empty() {
            restores.push((m, fields));
        }
    }
    if restores.is_empty() {
        return Ok(());
    }
    let updates: Vec<ContactUpdate> = restores
        .iter()
        .map(|(m, fields)| ContactUpdate {
            id: m.contact,
            properties: fields
                .iter()
                .map(|r| (r.property.clone(), r.hubspot.clone()))
                .collect(),
        })
        .collect();
    // The echo ledger first, as for every write.
    let writes: Vec<LedgerWrite> = restores
        .iter()
        .flat_map(|(m, fields)| {
            fields.iter().map(|r| LedgerWrite {
                contact: m.contact,
                property: r.property.clone(),
                value_hash: hash_of(r.field, &r.hubspot),
            })
        })
        .collect();
    ledger::record_many(ctx.deps.store.pool(), ctx.portal(), &writes).await?;
    report.update_calls += updates.len().div_ceil(MAX_BATCH);
    let updated = match ctx.deps.hubspot.batch_update(ctx.portal(), &updates).await {
        Ok(updated) => updated,
        Err(err) if err.is_retryable() => return Err(err.into()),
        Err(err) => {
            let reason = hubspot_reason(&err);
            for (m, _) in &restores {
                out.skip(report, &reason, m.lead.id, Some(m.contact));
            }
            return Ok(());
        }
    };
    let modified: HashMap<ContactId, Option<chrono::DateTime<chrono::Utc>>> =
        updated.iter().map(|c| (c.id, c.updated_at)).collect();
    for (m, fields) in restores {
        let mut values = leads::FieldValues::new();
        let mut synced = BTreeMap::new();
        let mut by_reason: BTreeMap<&'static str, BTreeMap<String, FieldChange>> = BTreeMap::new();
        for r in fields {
            values.insert(LeadColumn::from(r.field), non_empty(&r.value));
            synced.insert(r.field, hash_of(r.field, &r.value));
            by_reason.entry(r.reason).or_default().insert(
                r.field.name().to_owned(),
                FieldChange {
                    before: non_empty(&r.losing),
                    after: non_empty(&r.value),
                    losing_value: non_empty(&r.losing),
                },
            );
        }
        out.sync(
            m.lead.id,
            SyncUpdate {
                direction: SyncDirection::FromCrm,
                values,
                synced_values: synced,
                last_modified_in_crm: modified.get(&m.contact).copied().flatten(),
                link_crm_id: None,
            },
        );
        for (reason, changes) in by_reason {
            count_skip(report, &mut out.delta, reason);
            let mut entry = out.entry(
                AuditAction::Conflict,
                m.lead.id,
                Some(m.contact),
                Some(reason),
            );
            entry.changes = changes;
            out.audit.push(entry);
        }
    }
    Ok(())
}

/// The fields of a matched contact where the upsert overwrote a value
/// HubSpot keeps: each written field is decided as for a linked lead never
/// synced (no merge base), against HubSpot's value before the write.
fn overwritten_fields(
    ctx: &Ctx<'_>,
    m: &Matched,
    contact: &Contact,
    since_ms: i64,
) -> Vec<Restore> {
    let mut restores = Vec::new();
    for entry in ctx.mapping.entries() {
        let field = entry.field;
        // The address is the key the contact was matched by.
        if field == LeadField::Email {
            continue;
        }
        let Some(sent) = m.written.get(&entry.property) else {
            continue;
        };
        // Newest first, and only when the push's own write is still the
        // newest version: a later edit in HubSpot is the inbound side's.
        // HubSpot's value is the newest version that is not one of the
        // push's writes: the value sent, by this app, no older than the
        // lead's change. A retried push re-sends the same upsert (the failed
        // try's link was never committed) and HubSpot records no version for
        // an unchanged value, so the failed try's version must count too.
        // Versions another app wrote stay HubSpot's (with the app unknown,
        // any app's write of another value).
        let Some(versions) = contact.properties_with_history.get(&entry.property) else {
            continue;
        };
        let app = ctx.integration.app_id;
        let is_ours = |v: &leadsync_hubspot::PropertyVersion| {
            v.timestamp.timestamp_millis() >= since_ms
                && v.written_by_app(app)
                && canonical(field, &v.value) == canonical(field, sent)
        };
        if !versions.first().is_some_and(is_ours) {
            continue;
        }
        let Some(before) = versions.iter().find(|v| !is_ours(v)) else {
            continue;
        };
        let value = value_of(&m.lead, field).to_owned();
        let platform = PlatformSide {
            value: value.clone(),
            base: None,
            changed_at_ms: m
                .lead
                .field_updated_at
                .get(&field)
                .map(chrono::DateTime::timestamp_millis),
        };
        let theirs = ctx.mapping.inbound_value(field, &before.value);
        let hubspot = HubSpotSide {
            value: theirs.clone(),
            changed_at_ms: Some(before.timestamp.timestamp_millis()),
            last_written: None,
        };
        if let PushDecision::Keep { reason } =
            decide_outbound(field, &platform, &hubspot, &ctx.policy)
        {
            restores.push(Restore {
                field,
                property: entry.property.clone(),
                hubspot: before.value.clone(),
                value: theirs,
                losing: value,
                reason,
            });
        }
    }
    restores
}

// ---------------------------------------------------------------------------
// Linked leads: batch read, decide, batch update
// ---------------------------------------------------------------------------

/// One field of a planned update.
struct PushedField {
    /// HubSpot's value before.
    before: String,
    /// The value written.
    after: String,
    /// HubSpot's value the platform overrode in a conflict, and why.
    overridden: Option<(String, &'static str)>,
}

/// One linked lead's planned update.
struct Planned {
    lead: Lead,
    update: ContactUpdate,
    /// The fields written.
    pushed: BTreeMap<LeadField, PushedField>,
    /// Merge bases of the fields both sides already agree on.
    agreed: BTreeMap<LeadField, ValueHash>,
}

async fn update_linked(
    ctx: &Ctx<'_>,
    leads: Vec<Lead>,
    out: &mut Outcome,
    report: &mut PushReport,
) -> Result<(), OutboundError> {
    let with_history = ctx
        .mapping
        .entries()
        .iter()
        .any(|e| ctx.policy.for_field(e.field) == ConflictPolicy::LastWriteWins);
    let properties = ctx.mapping.properties();
    let history: Vec<&str> = if with_history {
        properties.clone()
    } else {
        Vec::new()
    };
    let mut read_properties = properties.clone();
    if !read_properties.contains(&MERGED_IDS_PROPERTY) {
        read_properties.push(MERGED_IDS_PROPERTY);
    }
    // Without the inbound direction no HubSpot change reaches the leads,
    // deletions and merges included: their webhooks would do nothing.
    let inbound = ctx.integration.settings.directions.inbound;
    for chunk in leads.chunks(MAX_BATCH) {
        let ids: Vec<ContactId> = chunk.iter().filter_map(|l| l.crm_id).collect();
        report.read_calls += 1;
        let read = match ctx
            .deps
            .hubspot
            .batch_read(ctx.portal(), &ids, &read_properties, &history)
            .await
        {
            Ok(read) => read,
            Err(err) if err.is_retryable() => return Err(err.into()),
            Err(err) => {
                let reason = hubspot_reason(&err);
                for lead in chunk {
                    out.dead_letter(report, lead.id, lead.crm_id, &reason);
                }
                continue;
            }
        };
        let answer = ReadAnswer::new(&read);
        let mut targets: Vec<(Lead, &Contact)> = Vec::new();
        let mut gone = Vec::new();
        let mut moved = Vec::new();
        for lead in chunk {
            let Some(contact_id) = lead.crm_id else {
                continue;
            };
            match answer.of(contact_id) {
                Answered::Contact(contact) => targets.push((lead.clone(), contact)),
                Answered::MergedInto(primary) if inbound => moved.push((lead, primary)),
                Answered::NotFound if inbound => gone.push((lead.id, contact_id)),
                // HubSpot answered neither with the contact, nor that it is
                // gone, nor which contact it was merged into; or the
                // integration applies no HubSpot change to its leads.
                _ => out.dead_letter(report, lead.id, Some(contact_id), "contact_not_found"),
            }
        }
        targets.extend(apply_missing(ctx, &gone, &moved, out, report).await?);

        let contact_ids: Vec<ContactId> = targets.iter().map(|(_, c)| c.id).collect();
        let ledger = ledger::get(
            ctx.deps.store.pool(),
            ctx.portal(),
            &contact_ids,
            &properties,
        )
        .await?;
        let mut planned = Vec::new();
        for (lead, contact) in &targets {
            if let Some(plan) = plan_update(ctx, lead, contact, &ledger, out, report) {
                planned.push(plan);
            }
        }
        if planned.is_empty() {
            continue;
        }
        // The echo ledger first: a webhook for these values may arrive
        // before the update call returns.
        let writes: Vec<LedgerWrite> = planned
            .iter()
            .flat_map(|p| {
                p.update
                    .properties
                    .iter()
                    .map(|(property, value)| LedgerWrite {
                        contact: p.update.id,
                        property: property.clone(),
                        value_hash: ctx
                            .mapping
                            .field_of(property)
                            .map_or_else(|| ValueHash::of(value), |f| hash_of(f, value)),
                    })
            })
            .collect();
        ledger::record_many(ctx.deps.store.pool(), ctx.portal(), &writes).await?;
        send_updates(ctx, planned, out, report).await?;
    }
    Ok(())
}

/// The entries of a lead's merge base that `contact` still holds: the values
/// the lead last agreed on with the contact merged into `contact`, which
/// the merge left in place. Re-pointing clears the merge base, as for
/// `contact.merge`; these entries are provably still agreed, so they are
/// kept (a value the merge carried over stays the lead's to change, rather
/// than becoming a conflict).
fn still_agreed(ctx: &Ctx<'_>, lead: &Lead, contact: &Contact) -> BTreeMap<LeadField, ValueHash> {
    ctx.mapping
        .entries()
        .iter()
        .filter_map(|e| {
            let base = *lead.synced_values.get(&e.field)?;
            let theirs = ctx
                .mapping
                .inbound_value(e.field, contact.property(&e.property).unwrap_or(""));
            (base == ValueHash::of(&canonical(e.field, &theirs))).then_some((e.field, base))
        })
        .collect()
}

/// How a batch read answered for one id asked for.
enum Answered<'a> {
    /// With the contact itself.
    Contact(&'a Contact),
    /// With the contact it was merged into, under that contact's id (the id
    /// asked for is in its [`MERGED_IDS_PROPERTY`]).
    MergedInto(&'a Contact),
    /// That it does not exist (`OBJECT_NOT_FOUND`): deleted.
    NotFound,
    /// Not at all.
    Unanswered,
}

/// A batch read's answer, by the id asked for.
struct ReadAnswer<'a> {
    by_id: HashMap<ContactId, &'a Contact>,
    merged_into: HashMap<ContactId, &'a Contact>,
    not_found: HashSet<ContactId>,
}

impl<'a> ReadAnswer<'a> {
    fn new(read: &'a BatchRead) -> Self {
        let mut merged_into = HashMap::new();
        for contact in &read.contacts {
            let listed = contact.property(MERGED_IDS_PROPERTY).unwrap_or_default();
            for id in listed.split(';').filter_map(|s| s.trim().parse().ok()) {
                if id != contact.id {
                    merged_into.insert(id, contact);
                }
            }
        }
        Self {
            by_id: read.contacts.iter().map(|c| (c.id, c)).collect(),
            merged_into,
            not_found: read.not_found.iter().copied().collect(),
        }
    }

    fn of(&self, id: ContactId) -> Answered<'a> {
        if let Some(contact) = self.by_id.get(&id) {
            Answered::Contact(contact)
        } else if let Some(primary) = self.merged_into.get(&id) {
            Answered::MergedInto(primary)
        } else if self.not_found.contains(&id) {
            Answered::NotFound
        } else {
            Answered::Unanswered
        }
    }
}

/// Does for linked contacts the batch read found deleted (`gone`: lead,
/// contact) or merged away (`moved`: lead, surviving contact) what their
/// lost webhooks would have done, through the inbound side's own functions,
/// in an inbound transaction of its own committed before the push goes on:
///
/// - a deleted contact gets the integration's `deletion_mode` (the lead is
///   unlinked or soft-deleted, audited as for `contact.deletion`) and the
///   change that found it is skipped as `contact_deleted`;
/// - a merge of one lead's contact into a contact no other lead holds
///   re-points the lead as `contact.merge` does (audited `merged`); it gets
///   back the part of its merge base the surviving contact still holds
///   ([`still_agreed`]), then the surviving contact's values by the
///   conflict policy (as a scan applies a contact,
///   [`crate::inbound::apply_contacts`]), and is returned as it now stands
///   with that contact, to be pushed to it. If the merge's webhook moved
///   the lead meanwhile, nothing is applied again. Any other merge (another
///   lead holds the surviving contact, or several leads' contacts merged)
///   has its changes dead-lettered (`merged_into_linked_contact`) and
///   nothing written: which lead is the person is for someone to decide,
///   and an unlinked lead would be pushed as a new contact.
///
/// Committing this first leaves the push's retry, should its calls fail,
/// with the lead as the webhook would have left it; a later webhook finds
/// the lead already unlinked or re-pointed.
async fn apply_missing<'a>(
    ctx: &Ctx<'_>,
    gone: &[(Uuid, ContactId)],
    moved: &[(&Lead, &'a Contact)],
    out: &mut Outcome,
    report: &mut PushReport,
) -> Result<Vec<(Lead, &'a Contact)>, OutboundError> {
    if gone.is_empty() && moved.is_empty() {
        return Ok(Vec::new());
    }
    let integration = ctx.integration.id;
    let mut tx = ctx.deps.store.begin_inbound().await?;
    let mut entries = Vec::new();
    for &(lead, contact) in gone {
        let key = out.last_change(lead).map(PushLeadChange::task_id_of);
        // `None`: its webhook arrived meanwhile and did the same.
        if let Some(deletion) =
            apply_contact_deletion(&mut tx, ctx.integration, contact, key.as_deref()).await?
        {
            match deletion.mode {
                DeletionMode::Unlink => report.unlinked += 1,
                DeletionMode::SoftDelete => report.deleted += 1,
            }
            entries.push(deletion.entry);
        }
        tracing::info!(
            integration.id = %integration,
            lead.id = %lead,
            contact.id = %contact,
            "Contact {contact} of lead {lead} was deleted in HubSpot; applied the deletion mode"
        );
        out.skip(report, "contact_deleted", lead, Some(contact));
    }

    // Leads whose contacts were merged into the same contact, by that contact.
    let mut survivors: HashMap<ContactId, &'a Contact> = HashMap::new();
    let mut by_primary: BTreeMap<ContactId, Vec<(&Lead, ContactId)>> = BTreeMap::new();
    for &(lead, primary) in moved {
        if let Some(merged) = lead.crm_id {
            survivors.insert(primary.id, primary);
            by_primary
                .entry(primary.id)
                .or_default()
                .push((lead, merged));
        }
    }
    let mut kept: Vec<(Uuid, &'a Contact)> = Vec::new();
    let mut vanished = Vec::new();
    for (primary_id, leads) in by_primary {
        // Only the plain case is applied here: one lead, and no other lead
        // holding the surviving contact. Otherwise `contact.merge` would
        // unlink a lead, whose next push would create the merged person's
        // contact again; which lead is the person is for someone to decide,
        // so the change waits in the dead letters, and nothing is written
        // (a retried batch finds the same).
        let holders = leads::by_crm_ids(&mut *tx, integration, &[primary_id]).await?;
        let (lead, merged) = match leads.as_slice() {
            [(lead, merged)] if holders.iter().all(|h| h.id == lead.id) => (*lead, *merged),
            _ => {
                for (lead, merged) in leads {
                    out.dead_letter(report, lead.id, Some(merged), "merged_into_linked_contact");
                }
                continue;
            }
        };
        let key = out.last_change(lead.id).map(PushLeadChange::task_id_of);
        let merge =
            apply_contact_merge(&mut tx, integration, &[merged], primary_id, key.as_deref())
                .await?;
        if merge.outcome.kept != Some(lead.id) {
            // The lead is no longer linked to the merged contact (a
            // webhook moved it meanwhile): what it is now decides.
            vanished.push(lead.id);
            continue;
        }
        let primary = survivors[&primary_id];
        if merge.outcome.repointed {
            tracing::info!(
                integration.id = %integration,
                lead.id = %lead.id,
                contact.id = %merged,
                "Contact {merged} of lead {} was merged into contact {primary_id} in HubSpot; \
                 applied the merge",
                lead.id
            );
            report.merged += 1;
            entries.push(merge.entry);
            let rebase = SyncUpdate {
                direction: SyncDirection::FromCrm,
                values: BTreeMap::new(),
                synced_values: still_agreed(ctx, lead, primary),
                last_modified_in_crm: primary.updated_at,
                link_crm_id: None,
            };
            leads::apply_sync(&mut *tx, integration, lead.id, &rebase).await?;
            // Then what `contact.merge` does next: the surviving contact's
            // values are applied to the lead now linked to it, per field
            // (conflict policy, echo ledger), as a scan applies a contact.
            crate::inbound::apply_contacts(
                &mut tx,
                ctx.integration,
                &ctx.mapping,
                std::slice::from_ref(primary),
                crate::inbound::ScanOrigin {
                    reason: "merge",
                    key: key.as_deref().unwrap_or_default(),
                },
            )
            .await?;
        }
        // Not re-pointed: the merge's webhook did it after the read, with
        // the contact as it then was; the read's older state must not
        // overwrite that. The push goes on from the lead as it stands.
        kept.push((lead.id, primary));
    }
    audit::record_many(&mut *tx, &entries).await?;
    tx.commit().await?;
    let kept_ids: Vec<Uuid> = kept.iter().map(|(id, _)| *id).collect();
    let refreshed = leads::by_ids(ctx.deps.store.pool(), integration, &kept_ids).await?;
    let mut pushed = Vec::new();
    for lead in refreshed {
        match kept.iter().find(|(_, c)| Some(c.id) == lead.crm_id) {
            Some((_, primary)) if lead.deleted_at.is_none() => pushed.push((lead, *primary)),
            _ => vanished.push(lead.id),
        }
    }
    // A concurrent webhook changed these leads' links after the merge: their
    // changes are audited as skipped; a later change pushes them as they are.
    for lead in vanished {
        out.skip(report, "link_changed", lead, None);
    }
    Ok(pushed)
}

/// Decides every mapped field of a linked lead; `None` when nothing is to
/// be written (the merge base and the audit log are updated anyway).
fn plan_update(
    ctx: &Ctx<'_>,
    lead: &Lead,
    contact: &Contact,
    ledger: &HashMap<(ContactId, String), LedgerEntry>,
    out: &mut Outcome,
    report: &mut PushReport,
) -> Option<Planned> {
    let mut properties = BTreeMap::new();
    let mut pushed = BTreeMap::new();
    let mut agreed = BTreeMap::new();
    let mut kept: BTreeMap<&'static str, BTreeMap<String, FieldChange>> = BTreeMap::new();
    for entry in ctx.mapping.entries() {
        let field = entry.field;
        let value = value_of(lead, field).to_owned();
        let base = lead.synced_values.get(&field).copied();
        let theirs = ctx
            .mapping
            .inbound_value(field, contact.property(&entry.property).unwrap_or(""));
        let platform = PlatformSide {
            value: value.clone(),
            base,
            changed_at_ms: lead
                .field_updated_at
                .get(&field)
                .map(chrono::DateTime::timestamp_millis),
        };
        let hubspot = HubSpotSide {
            value: theirs.clone(),
            changed_at_ms: contact
                .properties_with_history
                .get(&entry.property)
                .and_then(|versions| {
                    versions
                        .iter()
                        .map(|v| v.timestamp.timestamp_millis())
                        .max()
                }),
            last_written: ledger
                .get(&(contact.id, entry.property.clone()))
                .map(|e| e.value_hash),
        };
        match decide_outbound(field, &platform, &hubspot, &ctx.policy) {
            PushDecision::NoChange => {
                let hash = hash_of(field, &value);
                if base != Some(hash) {
                    agreed.insert(field, hash);
                }
            }
            PushDecision::Leave => {}
            PushDecision::Push { overriding, reason } => {
                let one: leadsync_domain::LeadValues =
                    std::iter::once((field, value.clone())).collect();
                let written = ctx
                    .mapping
                    .to_hubspot(&one, &[field])
                    .remove(&entry.property)
                    .unwrap_or_default();
                properties.insert(entry.property.clone(), written);
                pushed.insert(
                    field,
                    PushedField {
                        before: theirs,
                        after: value,
                        overridden: overriding.zip(reason),
                    },
                );
            }
            PushDecision::Keep { reason } => {
                kept.entry(reason).or_default().insert(
                    field.name().to_owned(),
                    FieldChange {
                        before: non_empty(&theirs),
                        after: non_empty(&theirs),
                        losing_value: non_empty(&value),
                    },
                );
            }
        }
    }
    let conflicts = !kept.is_empty();
    for (reason, changes) in kept {
        count_skip(report, &mut out.delta, reason);
        let mut entry = out.entry(
            AuditAction::Conflict,
            lead.id,
            Some(contact.id),
            Some(reason),
        );
        entry.changes = changes;
        out.audit.push(entry);
    }
    if properties.is_empty() {
        if !agreed.is_empty() {
            out.sync(
                lead.id,
                SyncUpdate {
                    direction: SyncDirection::ToCrm,
                    values: BTreeMap::new(),
                    synced_values: agreed,
                    last_modified_in_crm: contact.updated_at,
                    link_crm_id: None,
                },
            );
        }
        if !conflicts {
            out.skip(report, "no_change", lead.id, Some(contact.id));
        }
        return None;
    }
    Some(Planned {
        lead: lead.clone(),
        update: ContactUpdate {
            id: contact.id,
            properties,
        },
        pushed,
        agreed,
    })
}

/// Sends planned updates, ≤ 100 per call, narrowing permanent failures down
/// to the leads that cause them.
async fn send_updates(
    ctx: &Ctx<'_>,
    planned: Vec<Planned>,
    out: &mut Outcome,
    report: &mut PushReport,
) -> Result<(), OutboundError> {
    let mut pending: VecDeque<Vec<Planned>> = VecDeque::new();
    let mut rest = planned;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(MAX_BATCH));
        pending.push_back(rest);
        rest = tail;
    }
    while let Some(mut chunk) = pending.pop_front() {
        let inputs: Vec<ContactUpdate> = chunk.iter().map(|p| p.update.clone()).collect();
        report.update_calls += 1;
        let err = match ctx.deps.hubspot.batch_update(ctx.portal(), &inputs).await {
            Ok(contacts) => {
                record_updates(chunk, &contacts, out, report);
                continue;
            }
            Err(err) if err.is_retryable() => return Err(err.into()),
            Err(err) => err,
        };
        if let HubSpotError::Conflict { existing_id } = err
            && let Some(i) = new_address_holder(ctx, &chunk, existing_id, report).await?
        {
            // The lead's new address belongs to another HubSpot contact:
            // merging them is a person's decision.
            let p = chunk.remove(i);
            out.dead_letter(report, p.lead.id, p.lead.crm_id, "email_conflict");
            if !chunk.is_empty() {
                pending.push_front(chunk);
            }
            continue;
        }
        if chunk.len() > 1 && input_specific(&err) {
            let second = chunk.split_off(chunk.len() / 2);
            pending.push_front(second);
            pending.push_front(chunk);
            continue;
        }
        let reason = hubspot_reason(&err);
        for p in chunk {
            out.dead_letter(report, p.lead.id, p.lead.crm_id, &reason);
        }
    }
    Ok(())
}

/// Which planned update writes the address contact `existing` holds (a 409
/// on update names the contact, not the input).
async fn new_address_holder(
    ctx: &Ctx<'_>,
    chunk: &[Planned],
    existing: ContactId,
    report: &mut PushReport,
) -> Result<Option<usize>, OutboundError> {
    let email_property = ctx.mapping.property_of(LeadField::Email).unwrap_or("email");
    let writing: Vec<usize> = chunk
        .iter()
        .enumerate()
        .filter(|(_, p)| p.update.properties.contains_key(email_property))
        .map(|(i, _)| i)
        .collect();
    if writing.len() <= 1 {
        return Ok(writing.first().copied());
    }
    report.read_calls += 1;
    let read = match ctx
        .deps
        .hubspot
        .batch_read(ctx.portal(), &[existing], &[email_property], &[])
        .await
    {
        Ok(read) => read,
        Err(err) if err.is_retryable() => return Err(err.into()),
        Err(_) => return Ok(None),
    };
    let Some(held) = read
        .contacts
        .first()
        .and_then(|c| c.property(email_property))
        .map(|e| e.trim().to_lowercase())
    else {
        return Ok(None);
    };
    Ok(writing.into_iter().find(|i| {
        chunk[*i]
            .update
            .properties
            .get(email_property)
            .is_some_and(|e| e.trim().to_lowercase() == held)
    }))
}

/// Records a successful update: merge bases and audit entries.
fn record_updates(
    chunk: Vec<Planned>,
    contacts: &[Contact],
    out: &mut Outcome,
    report: &mut PushReport,
) {
    let modified: HashMap<ContactId, Option<chrono::DateTime<chrono::Utc>>> =
        contacts.iter().map(|c| (c.id, c.updated_at)).collect();
    for p in chunk {
        let mut synced = p.agreed;
        let mut changes = BTreeMap::new();
        let mut won = None;
        for (field, pushed) in p.pushed {
            synced.insert(field, hash_of(field, &pushed.after));
            if let Some((_, reason)) = &pushed.overridden {
                won = Some(*reason);
            }
            changes.insert(
                field.name().to_owned(),
                FieldChange {
                    before: non_empty(&pushed.before),
                    after: non_empty(&pushed.after),
                    losing_value: pushed.overridden.and_then(|(losing, _)| non_empty(&losing)),
                },
            );
        }
        out.sync(
            p.lead.id,
            SyncUpdate {
                direction: SyncDirection::ToCrm,
                values: BTreeMap::new(),
                synced_values: synced,
                last_modified_in_crm: modified.get(&p.update.id).copied().flatten(),
                link_crm_id: None,
            },
        );
        let action = if won.is_some() {
            AuditAction::Conflict
        } else {
            AuditAction::Updated
        };
        let mut entry = out.entry(action, p.lead.id, Some(p.update.id), won);
        entry.changes = changes;
        out.audit.push(entry);
        out.delta.to_hubspot(true, 1);
        report.updated += 1;
    }
}
