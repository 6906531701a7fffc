//! The inbound batch processor: HubSpot webhook events → lead rows
//! (design.md §1 "worker", §2.1–§2.3, §2.6).
//!
//! Events are *dirty signals*: the processor coalesces them per contact,
//! reads the current state of every dirty contact with one batch read per
//! portal, decides field by field ([`decide_inbound`]) and writes the whole
//! batch — leads, audit entries, processed keys, counters, dead letters — in
//! one inbound transaction. The caller acknowledges the jobs only after
//! [`process_batch`] returned `Ok`; an `Err` means "retry the whole batch",
//! which is safe because processed keys are recorded in the same transaction.
//!
//! When the database refuses the data of an event (a data exception or an
//! integrity violation, [`StoreError::rejected_sqlstate`]), retrying the
//! batch cannot help: it is split in halves, each in its own transaction,
//! until the events refused on their own are found; those are dead-lettered
//! with the SQLSTATE and their batch-mates commit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Instant;

use leadsync_domain::{
    ContactId, Current, FieldDecision, FieldMapping, Incoming, KeepReason, LeadField, PortalId,
    SyncPolicy, ValueHash, decide_inbound,
};
use leadsync_hubspot::{BatchRead, Client, Contact, HubSpotError};
use leadsync_queue::InboundEvent;
use leadsync_store::audit::{self, AuditAction, AuditEntry, Direction, FieldChange};
use leadsync_store::dead_letters::{self, DeadLetterKind, NewDeadLetter};
use leadsync_store::integrations::{self, DeletionMode};
use leadsync_store::leads::{
    self, FieldValues, InboundLead, LeadFields, LinkOutcome, SyncDirection, SyncUpdate,
};
use leadsync_store::ledger::{self, LedgerEntry};
use leadsync_store::outbox;
use leadsync_store::stats::{self, StatsDelta};
use leadsync_store::{Integration, Lead, LeadColumn, Store, StoreError};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::contact_event::{self, ContactEvent, ContactEventKind};
use crate::outbound::hash_of;

/// What the processor needs.
#[derive(Debug, Clone)]
pub struct InboundDeps {
    /// The platform's database.
    pub store: Store,
    /// The HubSpot client (tokens per portal already configured).
    pub hubspot: Client,
}

/// What one batch did, for logs, metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Jobs handed in.
    pub jobs: usize,
    /// Jobs whose event was already processed (or repeated in the batch).
    pub duplicates: usize,
    /// Jobs dead-lettered.
    pub dead_lettered: usize,
    /// Events applied (with an effect or a decided no-op).
    pub processed: usize,
    /// Leads created from contacts.
    pub created: usize,
    /// Existing leads linked to contacts.
    pub linked: usize,
    /// Leads whose fields were updated.
    pub updated: usize,
    /// Leads unlinked from deleted contacts.
    pub unlinked: usize,
    /// Leads soft-deleted with their contacts.
    pub deleted: usize,
    /// Leads restored with their contacts.
    pub restored: usize,
    /// Leads erased by a privacy deletion.
    pub erased: usize,
    /// Merges applied.
    pub merged: usize,
    /// Contacts (or fields, for echoes and conflicts) left unwritten, by reason.
    pub skipped: BTreeMap<String, usize>,
    /// Batch reads issued (one per portal with dirty contacts).
    pub batch_reads: usize,
}

impl BatchReport {
    /// Adds the counts of `other`, a part of the same batch.
    fn absorb(&mut self, other: BatchReport) {
        self.jobs += other.jobs;
        self.duplicates += other.duplicates;
        self.dead_lettered += other.dead_lettered;
        self.processed += other.processed;
        self.created += other.created;
        self.linked += other.linked;
        self.updated += other.updated;
        self.unlinked += other.unlinked;
        self.deleted += other.deleted;
        self.restored += other.restored;
        self.erased += other.erased;
        self.merged += other.merged;
        for (reason, n) in other.skipped {
            *self.skipped.entry(reason).or_default() += n;
        }
        self.batch_reads += other.batch_reads;
    }
}

/// Where one integration's share of a batch is tallied: the batch report,
/// the integration's counters and its audit entries.
struct Tally<'a> {
    report: &'a mut BatchReport,
    delta: &'a mut StatsDelta,
    audit: &'a mut Vec<AuditEntry>,
}

impl Tally<'_> {
    fn skip(&mut self, reason: &str) {
        *self.report.skipped.entry(reason.to_owned()).or_default() += 1;
        self.delta.skipped(reason, 1);
    }

    /// Counts a skip and records it in the audit log with the same reason.
    fn skip_audited(
        &mut self,
        reason: &str,
        integration: Uuid,
        lead: Option<Uuid>,
        contact: ContactId,
        key: Option<&str>,
    ) {
        self.skip(reason);
        self.audit.push(audit_entry(
            integration,
            lead,
            contact,
            key,
            AuditAction::Skipped,
            Some(reason),
        ));
    }
}

/// Why a batch must be retried as a whole. Permanent failures never come
/// back as an error: they are dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The database failed (connection, deadlock, ...).
    #[error("database error: {0}")]
    Store(#[from] StoreError),
    /// HubSpot failed in a way that may pass (network, 5xx, 429).
    #[error("transient HubSpot error: {0}")]
    HubSpot(#[from] HubSpotError),
}

impl From<sqlx::Error> for InboundError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(err.into())
    }
}

/// One event routed to its integration.
struct Routed<'a> {
    job: &'a InboundEvent,
    event: ContactEvent,
}

/// The events of one integration in this batch, and the state read for them.
struct IntegrationWork<'a> {
    integration: Integration,
    mapping: FieldMapping,
    events: Vec<Routed<'a>>,
    read: Option<BatchRead>,
}

/// Processes one batch of inbound jobs; see the module documentation.
///
/// # Errors
/// [`InboundError`] when the batch should be retried whole (database or
/// transient HubSpot failure). Parts split off after the database refused
/// an event's data may have committed then; their processed keys make the
/// retry skip them.
pub async fn process_batch(
    deps: &InboundDeps,
    jobs: Vec<InboundEvent>,
) -> Result<BatchReport, InboundError> {
    let mut report = BatchReport::default();
    let mut pending = VecDeque::from([jobs]);
    while let Some(chunk) = pending.pop_front() {
        let sqlstate = match process_part(deps, &chunk).await {
            Ok(part) => {
                report.absorb(part);
                continue;
            }
            Err(InboundError::Store(err)) => match err.rejected_sqlstate() {
                Some(code) => code,
                None => return Err(err.into()),
            },
            Err(err) => return Err(err),
        };
        let mut groups = by_contact(chunk);
        if groups.len() > 1 {
            tracing::info!(
                sqlstate = %sqlstate,
                contacts = groups.len(),
                "The database refused part of an inbound batch; retrying it in halves"
            );
            let second = groups.split_off(groups.len() / 2);
            pending.push_front(second.into_iter().flatten().collect());
            pending.push_front(groups.into_iter().flatten().collect());
            continue;
        }
        let alone = groups.into_iter().flatten().collect::<Vec<_>>();
        report.absorb(dead_letter_refused(deps, &alone, &sqlstate).await?);
    }
    Ok(report)
}

/// The jobs grouped by the contact they make dirty (the surviving contact
/// of a merge), in order of first appearance; a job whose event does not
/// parse is a group of its own. Splitting between groups keeps every
/// contact's events together.
fn by_contact(jobs: Vec<InboundEvent>) -> Vec<Vec<InboundEvent>> {
    let mut groups: Vec<Vec<InboundEvent>> = Vec::new();
    let mut index: HashMap<(PortalId, ContactId), usize> = HashMap::new();
    for job in jobs {
        let Ok(event) = contact_event::parse(&job.event) else {
            groups.push(vec![job]);
            continue;
        };
        let contact = match &event.kind {
            ContactEventKind::Merge { primary, .. } => *primary,
            _ => event.contact,
        };
        match index.get(&(event.portal, contact)) {
            Some(&i) => groups[i].push(job),
            None => {
                index.insert((event.portal, contact), groups.len());
                groups.push(vec![job]);
            }
        }
    }
    groups
}

/// Dead-letters the events of one contact that the database refused on
/// their own, with the SQLSTATE as the reason (never the value: it may be
/// personal data), counts them as failed and audits them, in a transaction
/// of their own.
async fn dead_letter_refused(
    deps: &InboundDeps,
    jobs: &[InboundEvent],
    sqlstate: &str,
) -> Result<BatchReport, InboundError> {
    let reason = format!("database_rejected: {sqlstate}");
    let pool = deps.store.pool();
    let mut letters = Vec::with_capacity(jobs.len());
    let mut failed: BTreeMap<Uuid, i64> = BTreeMap::new();
    let mut entries = Vec::new();
    for job in jobs {
        let event = contact_event::parse(&job.event).ok();
        let portal = event.as_ref().map(|e| e.portal).or(job.portal_id);
        let integration = match (&job.integration, portal) {
            (Some(name), _) => integrations::by_name(pool, name).await,
            (None, Some(portal)) => integrations::by_portal(pool, portal).await,
            (None, None) => Ok(None),
        };
        // The lookup itself may be what the database refuses (a name it
        // cannot take): the letter is then recorded without an integration.
        let integration = match integration {
            Ok(found) => found.filter(|i| Some(i.portal_id) == portal),
            Err(err) if err.rejected_sqlstate().is_some() => None,
            Err(err) => return Err(err.into()),
        };
        let id = integration.map(|i| i.id);
        if let Some(id) = id {
            *failed.entry(id).or_default() += 1;
            if let Some(event) = &event {
                entries.push(audit_entry(
                    id,
                    None,
                    event.contact,
                    Some(job.key.as_str()),
                    AuditAction::DeadLettered,
                    Some(&reason),
                ));
            }
        }
        tracing::warn!(
            event.key = %job.key.as_str(),
            integration.id = id.map(tracing::field::display),
            portal.id = portal.map(PortalId::get),
            sqlstate = %sqlstate,
            "The database refused event {} on its own; it was dead-lettered",
            job.key.as_str()
        );
        letters.push(letter(job, id, portal, &reason));
    }
    let mut tx = deps.store.begin_inbound().await?;
    for letter in &letters {
        dead_letters::record(&mut *tx, letter).await?;
    }
    audit::record_many(&mut *tx, &entries).await?;
    for (id, n) in failed {
        let mut delta = StatsDelta::new();
        delta.failed(n);
        stats::increment(&mut *tx, id, &delta).await?;
    }
    tx.commit().await?;
    Ok(BatchReport {
        jobs: jobs.len(),
        dead_lettered: jobs.len(),
        ..BatchReport::default()
    })
}

/// One attempt at `jobs` in one transaction.
async fn process_part(
    deps: &InboundDeps,
    jobs: &[InboundEvent],
) -> Result<BatchReport, InboundError> {
    let started = Instant::now();
    let mut report = BatchReport {
        jobs: jobs.len(),
        ..BatchReport::default()
    };
    let pool = deps.store.pool();
    let mut dead: Vec<(NewDeadLetter, Option<Uuid>)> = Vec::new();
    let mut work: BTreeMap<Uuid, IntegrationWork<'_>> = BTreeMap::new();
    let mut by_portal: HashMap<PortalId, Option<Integration>> = HashMap::new();
    let mut by_name: HashMap<String, Option<Integration>> = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::new();

    // 1–2. Parse, drop duplicates, route each event to its integration.
    let keys: Vec<&str> = jobs.iter().map(|j| j.key.as_str()).collect();
    let processed = leadsync_store::events::processed_among(pool, &keys).await?;
    for job in jobs {
        if !seen.insert(job.key.as_str()) || processed.contains(job.key.as_str()) {
            report.duplicates += 1;
            continue;
        }
        let event = match contact_event::parse(&job.event) {
            Ok(event) => event,
            Err(err) => {
                dead.push((letter(job, None, job.portal_id, err.reason()), None));
                continue;
            }
        };
        let integration = match &job.integration {
            Some(name) => match by_name.get(name) {
                Some(found) => found.clone(),
                None => {
                    let found = integrations::by_name(pool, name).await?;
                    by_name.insert(name.clone(), found.clone());
                    found
                }
            },
            None => match by_portal.get(&event.portal) {
                Some(found) => found.clone(),
                None => {
                    let found = integrations::by_portal(pool, event.portal).await?;
                    by_portal.insert(event.portal, found.clone());
                    found
                }
            },
        };
        let Some(integration) = integration else {
            dead.push((
                letter(job, None, Some(event.portal), "unknown_portal"),
                None,
            ));
            continue;
        };
        if integration.portal_id != event.portal {
            dead.push((
                letter(
                    job,
                    Some(integration.id),
                    Some(event.portal),
                    "portal_mismatch",
                ),
                Some(integration.id),
            ));
            continue;
        }
        let id = integration.id;
        let w = match work.entry(id) {
            std::collections::btree_map::Entry::Occupied(slot) => slot.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => {
                let Ok(mapping) = integration.settings.mapping() else {
                    dead.push((
                        letter(job, Some(id), Some(event.portal), "invalid_field_mapping"),
                        Some(id),
                    ));
                    continue;
                };
                slot.insert(IntegrationWork {
                    integration,
                    mapping,
                    events: Vec::new(),
                    read: None,
                })
            }
        };
        w.events.push(Routed { job, event });
    }

    // 3. One batch read per portal for every dirty contact.
    let mut failed_reads = Vec::new();
    for (id, w) in &mut work {
        if !w.integration.settings.directions.inbound {
            continue;
        }
        let erased: HashSet<ContactId> = w
            .events
            .iter()
            .filter(|r| r.event.kind == ContactEventKind::PrivacyDeletion)
            .map(|r| r.event.contact)
            .collect();
        let dirty: BTreeSet<ContactId> = w
            .events
            .iter()
            .map(|r| match &r.event.kind {
                ContactEventKind::Merge { primary, .. } => *primary,
                _ => r.event.contact,
            })
            .filter(|c| !erased.contains(c))
            .collect();
        if dirty.is_empty() {
            continue;
        }
        let ids: Vec<ContactId> = dirty.into_iter().collect();
        let properties = w.mapping.properties();
        report.batch_reads += 1;
        match deps
            .hubspot
            .batch_read(w.integration.portal_id, &ids, &properties, &properties)
            .await
        {
            Ok(read) => w.read = Some(read),
            Err(err) if err.is_retryable() => return Err(err.into()),
            Err(err) => {
                tracing::warn!(
                    integration.id = %id,
                    error.code = err.code(),
                    "Permanent HubSpot error on batch read; dead-lettering the portal's events"
                );
                failed_reads.push((*id, format!("hubspot_{}", err.code())));
            }
        }
    }
    for (id, reason) in failed_reads {
        if let Some(w) = work.remove(&id) {
            for r in w.events {
                dead.push((
                    letter(r.job, Some(id), Some(r.event.portal), &reason),
                    Some(id),
                ));
            }
        }
    }

    // 4. One inbound transaction for the whole batch.
    let mut tx = deps.store.begin_inbound().await?;
    let mut failed_by_integration: BTreeMap<Uuid, i64> = BTreeMap::new();
    for (letter, integration) in &dead {
        dead_letters::record(&mut *tx, letter).await?;
        if let Some(id) = integration {
            *failed_by_integration.entry(*id).or_default() += 1;
        }
    }
    report.dead_lettered = dead.len();
    for (id, w) in &work {
        let mut delta = StatsDelta::new();
        if let Some(n) = failed_by_integration.remove(id) {
            delta.failed(n);
        }
        let mut entries = Vec::new();
        let mut out = Tally {
            report: &mut report,
            delta: &mut delta,
            audit: &mut entries,
        };
        apply_integration(&mut tx, w, &mut out).await?;
        audit::record_many(&mut *tx, &entries).await?;
        delta.processing_time(started.elapsed());
        stats::increment(&mut *tx, *id, &delta).await?;
    }
    for (id, n) in failed_by_integration {
        let mut delta = StatsDelta::new();
        delta.failed(n);
        stats::increment(&mut *tx, id, &delta).await?;
    }
    tx.commit().await?;
    tracing::debug!(
        jobs = report.jobs,
        processed = report.processed,
        duplicates = report.duplicates,
        dead_lettered = report.dead_lettered,
        "Inbound batch committed"
    );
    Ok(report)
}

fn letter(
    job: &InboundEvent,
    integration_id: Option<Uuid>,
    portal_id: Option<PortalId>,
    reason: &str,
) -> NewDeadLetter {
    NewDeadLetter {
        integration_id,
        portal_id,
        event_key: job.key.as_str().to_owned(),
        kind: DeadLetterKind::InboundEvent,
        reason: reason.to_owned(),
        payload: payload_of(job),
    }
}

/// The event of `job` as a dead letter's payload. Postgres cannot store a
/// NUL character in `jsonb`, so any is replaced by U+FFFD: the letter of an
/// event refused for such a character must still be recordable.
pub(crate) fn payload_of(job: &InboundEvent) -> serde_json::Value {
    let raw = job.event.get();
    let mut payload =
        serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()));
    without_nul(&mut payload);
    payload
}

fn without_nul(value: &mut serde_json::Value) {
    const NUL: char = '\u{0}';
    match value {
        serde_json::Value::String(s) if s.contains(NUL) => *s = s.replace(NUL, "\u{fffd}"),
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_nul),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| k.contains(NUL)) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (k.replace(NUL, "\u{fffd}"), v))
                    .collect();
            }
            map.values_mut().for_each(without_nul);
        }
        _ => {}
    }
}

fn audit_entry(
    integration: Uuid,
    lead: Option<Uuid>,
    contact: ContactId,
    key: Option<&str>,
    action: AuditAction,
    reason: Option<&str>,
) -> AuditEntry {
    let mut entry = AuditEntry::new(Direction::Inbound, action);
    entry.integration_id = Some(integration);
    entry.lead_id = lead;
    entry.contact_id = Some(contact);
    entry.event_key = key.map(str::to_owned);
    entry.reason = reason.map(str::to_owned);
    entry
}

/// What the batch's events say about one contact.
#[derive(Default)]
struct ContactSignals {
    /// The key of the latest event (for the audit trail).
    last_key: Option<String>,
    events: usize,
    restore: bool,
}

/// Applies one integration's events inside the batch transaction.
async fn apply_integration(
    conn: &mut PgConnection,
    w: &IntegrationWork<'_>,
    out: &mut Tally<'_>,
) -> Result<(), InboundError> {
    let integration = &w.integration;
    let id = integration.id;
    // The Postgres side of the dedupe: only keys new in this transaction
    // take effect, so a concurrent or retried batch never applies twice.
    let keys: Vec<&str> = w.events.iter().map(|r| r.job.key.as_str()).collect();
    let new = leadsync_store::events::mark_processed_many(&mut *conn, Some(id), &keys).await?;
    let events: Vec<&ContactEvent> = w
        .events
        .iter()
        .filter(|r| new.contains(r.job.key.as_str()))
        .map(|r| &r.event)
        .collect();
    out.report.duplicates += w.events.len() - events.len();
    if events.is_empty() {
        return Ok(());
    }
    out.report.processed += events.len();
    out.delta
        .processed(i64::try_from(events.len()).unwrap_or(i64::MAX));
    if !integration.settings.directions.inbound {
        for _ in &events {
            out.skip("inbound_disabled");
        }
        return Ok(());
    }

    // Privacy deletions first: they win over anything else about the contact.
    let mut erased: HashSet<ContactId> = HashSet::new();
    for e in events
        .iter()
        .filter(|e| e.kind == ContactEventKind::PrivacyDeletion)
    {
        if !erased.insert(e.contact) {
            continue;
        }
        let erasure = leads::erase(&mut *conn, id, Some(e.contact), None).await?;
        out.report.erased += 1;
        out.audit.push(audit_entry(
            id,
            erasure.lead_id,
            e.contact,
            Some(e.key.as_str()),
            AuditAction::Erased,
            Some("privacy_deletion"),
        ));
    }
    // Merges next, so the surviving contact's read below lands on the right lead.
    for e in &events {
        if let ContactEventKind::Merge { primary, merged } = &e.kind {
            let merge =
                apply_contact_merge(&mut *conn, id, merged, *primary, Some(e.key.as_str())).await?;
            out.report.merged += 1;
            out.audit.push(merge.entry);
        }
    }

    let mut signals: BTreeMap<ContactId, ContactSignals> = BTreeMap::new();
    for e in &events {
        let contact = match &e.kind {
            ContactEventKind::PrivacyDeletion => continue,
            ContactEventKind::Merge { primary, .. } => *primary,
            _ => e.contact,
        };
        if erased.contains(&contact) {
            continue;
        }
        let s = signals.entry(contact).or_default();
        s.last_key = Some(e.key.as_str().to_owned());
        s.events += 1;
        s.restore |= e.kind == ContactEventKind::Restore;
    }
    let Some(read) = &w.read else {
        return Ok(());
    };

    let contacts: BTreeMap<ContactId, &Contact> = read
        .contacts
        .iter()
        .filter(|c| !erased.contains(&c.id))
        .map(|c| (c.id, c))
        .collect();
    apply_read(
        &mut *conn,
        integration,
        &w.mapping,
        &contacts,
        &signals,
        None,
        out,
    )
    .await?;

    // Contacts gone from HubSpot (deleted meanwhile, or the event said so).
    let gone: BTreeSet<ContactId> = read
        .not_found
        .iter()
        .copied()
        .filter(|c| signals.contains_key(c) && !erased.contains(c))
        .collect();
    for contact_id in gone {
        let key = signals.get(&contact_id).and_then(|s| s.last_key.as_deref());
        match apply_contact_deletion(&mut *conn, integration, contact_id, key).await? {
            Some(deletion) => {
                match deletion.mode {
                    DeletionMode::Unlink => out.report.unlinked += 1,
                    DeletionMode::SoftDelete => out.report.deleted += 1,
                }
                out.audit.push(deletion.entry);
            }
            None => {
                out.skip_audited("no_linked_lead", id, None, contact_id, key);
            }
        }
    }
    Ok(())
}

/// What a contact's deletion in HubSpot did to the lead linked to it.
#[derive(Debug, Clone)]
pub(crate) struct ContactDeletion {
    /// The integration's deletion mode that was applied.
    pub(crate) mode: DeletionMode,
    /// The audit entry recording it (direction `inbound`, action `unlinked`
    /// with reason `contact_deleted`, or `updated` with `soft_deleted`).
    pub(crate) entry: AuditEntry,
}

/// Applies a contact's deletion in HubSpot to the lead linked to it, by the
/// integration's deletion mode: unlinked (the lead stays, remembering the
/// contact as `unlinked_crm_id`) or soft-deleted (keeping the link, so a
/// restore finds it). The path of `contact.deletion` events, and of pushes
/// that find a linked contact deleted when its webhook was lost. `key`
/// names what found the deletion in the audit entry. `None` when no lead is
/// linked to the contact (any more).
pub(crate) async fn apply_contact_deletion(
    conn: &mut PgConnection,
    integration: &Integration,
    contact: ContactId,
    key: Option<&str>,
) -> Result<Option<ContactDeletion>, StoreError> {
    let id = integration.id;
    let mode = integration.settings.deletion_mode;
    let (lead, action, reason) = match mode {
        DeletionMode::Unlink => (
            leads::unlink(&mut *conn, id, contact).await?,
            AuditAction::Unlinked,
            "contact_deleted",
        ),
        DeletionMode::SoftDelete => (
            leads::soft_delete_by_crm_id(&mut *conn, id, contact).await?,
            AuditAction::Updated,
            "soft_deleted",
        ),
    };
    Ok(lead.map(|lead| ContactDeletion {
        mode,
        entry: audit_entry(id, Some(lead.id), contact, key, action, Some(reason)),
    }))
}

/// What a merge in HubSpot did to the leads of the contacts merged.
#[derive(Debug, Clone)]
pub(crate) struct ContactMerge {
    /// Which lead kept a link (to the primary) and which were unlinked.
    pub(crate) outcome: leads::MergeOutcome,
    /// The audit entry recording it (direction `inbound`, action `merged`,
    /// one `unlinked_lead:{id}` change per lead unlinked).
    pub(crate) entry: AuditEntry,
}

/// Applies a merge in HubSpot to the leads: those of the `merged` contacts
/// move to the `primary` contact ([`leads::repoint_merged`]: a lead already
/// linked to the primary stays, otherwise the oldest takes the primary's
/// id, the rest are unlinked). The path of `contact.merge` events, and of
/// pushes that find a linked contact merged away when its webhook was lost.
/// `key` names what found the merge in the audit entry.
pub(crate) async fn apply_contact_merge(
    conn: &mut PgConnection,
    integration: Uuid,
    merged: &[ContactId],
    primary: ContactId,
    key: Option<&str>,
) -> Result<ContactMerge, StoreError> {
    let outcome = leads::repoint_merged(&mut *conn, integration, merged, primary).await?;
    let mut entry = audit_entry(
        integration,
        outcome.kept,
        primary,
        key,
        AuditAction::Merged,
        None,
    );
    for unlinked in &outcome.unlinked {
        entry
            .changes
            .insert(format!("unlinked_lead:{unlinked}"), FieldChange::default());
    }
    Ok(ContactMerge { outcome, entry })
}

/// Decides and writes contacts already read from HubSpot against their
/// leads (linked ones locked): the per-field path shared by webhook batches
/// and scans. Returns what happened to each contact.
async fn apply_read(
    conn: &mut PgConnection,
    integration: &Integration,
    mapping: &FieldMapping,
    contacts: &BTreeMap<ContactId, &Contact>,
    signals: &BTreeMap<ContactId, ContactSignals>,
    scan: Option<ScanOrigin<'_>>,
    out: &mut Tally<'_>,
) -> Result<BTreeMap<ContactId, ContactOutcome>, InboundError> {
    let id = integration.id;
    let found: Vec<ContactId> = contacts.keys().copied().collect();
    let properties = mapping.properties();
    let ledger = ledger::get(&mut *conn, integration.portal_id, &found, &properties).await?;
    let mut linked: HashMap<ContactId, Lead> = leads::by_crm_ids_for_update(&mut *conn, id, &found)
        .await?
        .into_iter()
        .filter_map(|l| l.crm_id.map(|c| (c, l)))
        .collect();
    let policy = integration.settings.sync_policy();
    let ctx = SyncCtx {
        integration: id,
        mapping,
        policy: &policy,
        ledger: &ledger,
        scan,
    };

    let mut outcomes = BTreeMap::new();
    for (contact_id, contact) in contacts {
        let signal = signals.get(contact_id);
        let key = scan
            .map(|s| s.key)
            .or_else(|| signal.and_then(|s| s.last_key.as_deref()));
        let restore = signal.is_some_and(|s| s.restore);
        let outcome = match linked.remove(contact_id) {
            Some(lead) if lead.deleted_at.is_some() => {
                if !restore {
                    out.skip_audited("lead_deleted", id, Some(lead.id), *contact_id, key);
                    outcomes.insert(*contact_id, ContactOutcome::Skipped("lead_deleted"));
                    continue;
                }
                match restore_lead(&mut *conn, id, *contact_id).await? {
                    Some(lead) => {
                        out.report.restored += 1;
                        out.audit.push(audit_entry(
                            id,
                            Some(lead.id),
                            *contact_id,
                            key,
                            AuditAction::Restored,
                            None,
                        ));
                        sync_lead(&mut *conn, &ctx, &lead, contact, key, out).await?;
                        ContactOutcome::Restored
                    }
                    None => {
                        out.skip_audited("duplicate_email", id, Some(lead.id), *contact_id, key);
                        ContactOutcome::Skipped("duplicate_email")
                    }
                }
            }
            // A scan read the contact before a concurrent batch applied a
            // later state of it: writing the older one would undo that.
            Some(lead)
                if scan.is_some()
                    && matches!(
                        (contact.updated_at, lead.last_modified_in_crm),
                        (Some(read), Some(applied)) if read < applied
                    ) =>
            {
                ContactOutcome::Superseded
            }
            Some(lead) => sync_lead(&mut *conn, &ctx, &lead, contact, key, out).await?,
            None => create_or_link(&mut *conn, &ctx, contact, key, out).await?,
        };
        outcomes.insert(*contact_id, outcome);
    }
    Ok(outcomes)
}

/// Where contacts applied without an event of their own come from (a
/// reconciliation or backfill run): the audit trail names the run instead
/// of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOrigin<'a> {
    /// The `reason` of audit entries that have no more specific one (a
    /// created or updated lead), e.g. `reconciliation`.
    pub reason: &'a str,
    /// The `event_key` of every audit entry, naming the run, e.g.
    /// `reconciliation:{run id}`.
    pub key: &'a str,
}

/// What applying one contact did to its lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactOutcome {
    /// A lead was created from the contact.
    Created,
    /// A lead with the contact's address was linked to it (and its fields
    /// merged).
    Linked,
    /// At least one of HubSpot's values was written to the lead.
    Updated,
    /// A soft-deleted lead was restored with its contact (events only).
    Restored,
    /// The lead kept values HubSpot's differ from, for this reason (audited
    /// as `conflict`): `conflict_platform_wins`, `conflict_platform_newer`,
    /// `empty_never_overwrites`.
    Kept(&'static str),
    /// The only differences were leadsync's own writes coming back.
    Echo,
    /// Both sides already held the same values.
    Unchanged,
    /// The lead already reflects a later state of the contact than the one
    /// read (scans only).
    Superseded,
    /// Nothing could be written, for this reason (audited as `skipped`):
    /// `lead_deleted`, `duplicate_email`, `email_linked_elsewhere`,
    /// `tombstoned`, or `platform_ahead` (the lead holds newer values than
    /// HubSpot; a push of them is requested).
    Skipped(&'static str),
}

impl ContactOutcome {
    /// Whether HubSpot's state of the contact was missing from the platform:
    /// the lead was created, linked or updated from it, or could not be.
    pub fn is_drift(self) -> bool {
        !matches!(self, Self::Echo | Self::Unchanged | Self::Superseded)
    }

    /// Whether the lead now holds HubSpot's state.
    pub fn is_repair(self) -> bool {
        matches!(
            self,
            Self::Created | Self::Linked | Self::Updated | Self::Restored
        )
    }
}

/// What [`apply_contacts`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedContacts {
    /// Per contact, its outcome.
    pub outcomes: BTreeMap<ContactId, ContactOutcome>,
    /// The totals, counted as for a webhook batch.
    pub report: BatchReport,
}

/// Applies contacts already read from HubSpot (with the integration's
/// mapped properties and their history, as [`Client::batch_read`] returns
/// them) to the integration's leads, through the same per-field decisions as
/// webhook events: echo ledger, no-op, conflict policy, create or link by
/// address. Writes the leads, their audit entries and the integration's
/// counters on `conn`, which the caller commits; the transaction is marked
/// inbound so these writes stay out of the outbox.
///
/// Unlike events, unchanged contacts and echoes are neither audited nor
/// counted as skips (a scan sees mostly those), and a contact read before a
/// concurrent batch applied a later state of it is left alone.
///
/// # Errors
/// [`InboundError::Store`] when the database fails; roll back then.
pub async fn apply_contacts(
    conn: &mut PgConnection,
    integration: &Integration,
    mapping: &FieldMapping,
    contacts: &[Contact],
    origin: ScanOrigin<'_>,
) -> Result<AppliedContacts, InboundError> {
    leadsync_store::mark_inbound(&mut *conn).await?;
    let mut report = BatchReport::default();
    let mut delta = StatsDelta::new();
    let mut entries = Vec::new();
    let by_id: BTreeMap<ContactId, &Contact> = contacts.iter().map(|c| (c.id, c)).collect();
    let mut out = Tally {
        report: &mut report,
        delta: &mut delta,
        audit: &mut entries,
    };
    let outcomes = apply_read(
        &mut *conn,
        integration,
        mapping,
        &by_id,
        &BTreeMap::new(),
        Some(origin),
        &mut out,
    )
    .await?;
    audit::record_many(&mut *conn, &entries).await?;
    // Not timed: the processing-time average is the webhook batches'.
    stats::increment(&mut *conn, integration.id, &delta).await?;
    Ok(AppliedContacts { outcomes, report })
}

/// Restores a soft-deleted lead in a savepoint: a live lead that took its
/// address meanwhile must not abort the batch. `None` then.
async fn restore_lead(
    conn: &mut PgConnection,
    integration: Uuid,
    contact: ContactId,
) -> Result<Option<Lead>, InboundError> {
    let mut sp = conn.begin().await?;
    match leads::restore_by_crm_id(&mut *sp, integration, contact).await {
        Ok(lead) => {
            sp.commit().await?;
            Ok(lead)
        }
        Err(StoreError::DuplicateEmail) => {
            sp.rollback().await?;
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// What every field decision of an integration needs.
struct SyncCtx<'a> {
    integration: Uuid,
    mapping: &'a FieldMapping,
    policy: &'a SyncPolicy,
    ledger: &'a HashMap<(ContactId, String), LedgerEntry>,
    /// Set when the contacts come from a scan, not from events.
    scan: Option<ScanOrigin<'a>>,
}

impl SyncCtx<'_> {
    /// The reason of an audit entry that has no specific one.
    fn default_reason(&self) -> Option<&str> {
        self.scan.map(|s| s.reason)
    }
}

/// HubSpot's side of every mapped property the contact came back with.
/// Properties absent from the answer (unknown to HubSpot) are left out, so
/// they never clear a lead field.
fn incoming_fields(
    mapping: &FieldMapping,
    contact: &Contact,
) -> Vec<(LeadField, String, Incoming)> {
    mapping
        .entries()
        .iter()
        .filter_map(|e| {
            let raw = contact.properties.get(&e.property)?;
            let value = mapping.inbound_value(e.field, raw.as_deref().unwrap_or(""));
            let changed_at_ms =
                contact
                    .properties_with_history
                    .get(&e.property)
                    .and_then(|versions| {
                        versions
                            .iter()
                            .map(|v| v.timestamp.timestamp_millis())
                            .max()
                    });
            Some((
                e.field,
                e.property.clone(),
                Incoming {
                    value,
                    changed_at_ms,
                },
            ))
        })
        .collect()
}

/// Field decisions for a linked lead, written with one `apply_sync`.
async fn sync_lead(
    conn: &mut PgConnection,
    ctx: &SyncCtx<'_>,
    lead: &Lead,
    contact: &Contact,
    key: Option<&str>,
    out: &mut Tally<'_>,
) -> Result<ContactOutcome, InboundError> {
    let mut values = FieldValues::new();
    let mut synced: BTreeMap<LeadField, ValueHash> = BTreeMap::new();
    let mut applied: BTreeMap<String, FieldChange> = BTreeMap::new();
    let mut overridden = false;
    let mut echoed: BTreeMap<String, FieldChange> = BTreeMap::new();
    let mut kept: Vec<(KeepReason, String, FieldChange)> = Vec::new();
    let mut ahead: Vec<LeadField> = Vec::new();
    let mut ahead_changes: BTreeMap<String, FieldChange> = BTreeMap::new();

    for (field, property, incoming) in incoming_fields(ctx.mapping, contact) {
        let column = LeadColumn::from(field);
        let current_value = lead.fields.get(column).unwrap_or("").to_owned();
        let base = lead.synced_values.get(&field).copied();
        let current = Current {
            value: current_value.clone(),
            base,
            changed_at_ms: lead
                .field_updated_at
                .get(&field)
                .map(chrono::DateTime::timestamp_millis),
        };
        let last_written = ctx
            .ledger
            .get(&(contact.id, property))
            .map(|entry| entry.value_hash);
        match decide_inbound(field, &incoming, &current, last_written, ctx.policy) {
            FieldDecision::Apply {
                value,
                overridden: lost,
            } => {
                synced.insert(field, ValueHash::of(&value));
                overridden |= lost.is_some();
                applied.insert(
                    field.name().to_owned(),
                    FieldChange {
                        before: non_empty(&current_value),
                        after: non_empty(&value),
                        losing_value: lost,
                    },
                );
                values.insert(column, non_empty(&value));
            }
            FieldDecision::NoChange => {
                // Both sides hold this value: it is the new merge base.
                let agreed = ValueHash::of(&current_value);
                if base != Some(agreed) {
                    synced.insert(field, agreed);
                }
            }
            // The platform's newer value must reach HubSpot: the base stays
            // where both sides last agreed, so the push sees a platform change
            // to write, and a push is requested below in case none is pending.
            FieldDecision::PlatformAhead => {
                ahead.push(field);
                ahead_changes.insert(
                    field.name().to_owned(),
                    FieldChange {
                        before: non_empty(&current_value),
                        after: non_empty(&current_value),
                        losing_value: non_empty(&incoming.value),
                    },
                );
            }
            FieldDecision::Echo => {
                if incoming.value.trim() == current_value.trim() {
                    let agreed = ValueHash::of(&current_value);
                    if base != Some(agreed) {
                        synced.insert(field, agreed);
                    }
                }
                echoed.insert(field.name().to_owned(), FieldChange::default());
            }
            FieldDecision::Keep { reason, losing } => {
                kept.push((
                    reason,
                    field.name().to_owned(),
                    FieldChange {
                        before: non_empty(&current_value),
                        after: non_empty(&current_value),
                        losing_value: Some(losing),
                    },
                ));
            }
        }
    }

    if !values.is_empty() || !synced.is_empty() {
        let update = SyncUpdate {
            direction: SyncDirection::FromCrm,
            values,
            synced_values: synced,
            last_modified_in_crm: contact.updated_at,
            link_crm_id: None,
        };
        // A savepoint: an address already used by another lead must not
        // abort the whole batch's transaction.
        let mut sp = conn.begin().await?;
        match leads::apply_sync(&mut *sp, ctx.integration, lead.id, &update).await {
            Ok(_) => sp.commit().await?,
            Err(StoreError::DuplicateEmail | StoreError::DuplicateCrmId) => {
                sp.rollback().await?;
                out.skip_audited(
                    "duplicate_email",
                    ctx.integration,
                    Some(lead.id),
                    contact.id,
                    key,
                );
                return Ok(ContactOutcome::Skipped("duplicate_email"));
            }
            Err(err) => return Err(err.into()),
        }
    }

    if !ahead.is_empty() {
        outbox::request_push(conn, ctx.integration, lead.id, lead.crm_id, &ahead).await?;
        out.skip("platform_ahead");
        let mut entry = audit_entry(
            ctx.integration,
            Some(lead.id),
            contact.id,
            key,
            AuditAction::Skipped,
            Some("platform_ahead"),
        );
        entry.changes = ahead_changes;
        out.audit.push(entry);
    }

    let applied_any = !applied.is_empty();
    if applied_any {
        out.report.updated += 1;
        out.delta.add(stats::FROM_HUBSPOT_SUCCESS, 1);
        let (action, reason) = if overridden {
            (AuditAction::Conflict, Some("conflict_hubspot_wins"))
        } else {
            (AuditAction::Updated, ctx.default_reason())
        };
        let mut entry = audit_entry(
            ctx.integration,
            Some(lead.id),
            contact.id,
            key,
            action,
            reason,
        );
        entry.changes = applied;
        out.audit.push(entry);
    }
    let mut by_reason: BTreeMap<&'static str, BTreeMap<String, FieldChange>> = BTreeMap::new();
    for (reason, field, change) in kept {
        by_reason
            .entry(keep_reason(reason))
            .or_default()
            .insert(field, change);
    }
    let unchanged = !applied_any && by_reason.is_empty() && ahead.is_empty();
    let outcome = if applied_any {
        ContactOutcome::Updated
    } else if let Some(reason) = by_reason.keys().next() {
        ContactOutcome::Kept(reason)
    } else if !ahead.is_empty() {
        ContactOutcome::Skipped("platform_ahead")
    } else if !echoed.is_empty() {
        ContactOutcome::Echo
    } else {
        ContactOutcome::Unchanged
    };
    for (reason, changes) in by_reason {
        out.skip(reason);
        let mut entry = audit_entry(
            ctx.integration,
            Some(lead.id),
            contact.id,
            key,
            AuditAction::Conflict,
            Some(reason),
        );
        entry.changes = changes;
        out.audit.push(entry);
    }
    if ctx.scan.is_some() {
        // A scan meets mostly unchanged contacts: counted by the caller,
        // not audited one by one.
    } else if !echoed.is_empty() {
        out.skip("echo");
        let mut entry = audit_entry(
            ctx.integration,
            Some(lead.id),
            contact.id,
            key,
            AuditAction::Skipped,
            Some("echo"),
        );
        entry.changes = echoed;
        out.audit.push(entry);
    } else if unchanged {
        out.skip_audited("no_change", ctx.integration, Some(lead.id), contact.id, key);
    }
    Ok(outcome)
}

/// How long after a push wrote to a contact that no lead is linked to the
/// push is taken to be still in flight or retried (see [`awaiting_push`]).
const PUSH_IN_FLIGHT: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Whether the contact holds exactly what a push of ours recently wrote to
/// it while no lead is linked to it: the push matched or created it by
/// address and has not committed yet (it is in flight, or a try failed
/// after its upsert and will be retried). The push links the lead itself,
/// and only it can give HubSpot back the values its upsert overwrote (from
/// property history, under `hubspot_wins`): linking here would make the
/// push's values look agreed by both sides and lose HubSpot's.
fn awaiting_push(ctx: &SyncCtx<'_>, contact: &Contact) -> bool {
    let now = chrono::Utc::now();
    let mut written = false;
    for entry in ctx.mapping.entries() {
        let Some(last) = ctx.ledger.get(&(contact.id, entry.property.clone())) else {
            continue;
        };
        // The ledger holds values as written, in HubSpot's form.
        let value = contact.property(&entry.property).unwrap_or("");
        if last.value_hash != hash_of(entry.field, value) || now - last.written_at > PUSH_IN_FLIGHT
        {
            return false;
        }
        written = true;
    }
    written
}

/// A contact no lead is linked to: create the lead, or link the live lead
/// with its address (and then sync its fields).
async fn create_or_link(
    conn: &mut PgConnection,
    ctx: &SyncCtx<'_>,
    contact: &Contact,
    key: Option<&str>,
    out: &mut Tally<'_>,
) -> Result<ContactOutcome, InboundError> {
    if awaiting_push(ctx, contact) {
        out.skip_audited("awaiting_push", ctx.integration, None, contact.id, key);
        return Ok(ContactOutcome::Skipped("awaiting_push"));
    }
    let mut fields = LeadFields::default();
    let mut synced = BTreeMap::new();
    let mut changes = BTreeMap::new();
    for (field, _, incoming) in incoming_fields(ctx.mapping, contact) {
        fields.set(LeadColumn::from(field), non_empty(&incoming.value));
        synced.insert(field, ValueHash::of(&incoming.value));
        if !incoming.value.is_empty() {
            changes.insert(
                field.name().to_owned(),
                FieldChange {
                    before: None,
                    after: Some(incoming.value.clone()),
                    losing_value: None,
                },
            );
        }
    }
    fields.set(LeadColumn::Source, Some("HubSpot CRM".to_owned()));
    let inbound = InboundLead {
        crm_id: contact.id,
        fields,
        synced_values: synced,
        last_modified_in_crm: contact.updated_at,
    };
    let outcome = leads::insert_or_link(&mut *conn, ctx.integration, &inbound).await?;
    let done = match outcome {
        LinkOutcome::Created(lead) => {
            out.report.created += 1;
            out.delta.add(stats::FROM_HUBSPOT_SUCCESS, 1);
            let mut entry = audit_entry(
                ctx.integration,
                Some(lead.id),
                contact.id,
                key,
                AuditAction::Created,
                ctx.default_reason(),
            );
            entry.changes = changes;
            out.audit.push(entry);
            ContactOutcome::Created
        }
        LinkOutcome::Linked(lead) => {
            out.report.linked += 1;
            out.audit.push(audit_entry(
                ctx.integration,
                Some(lead.id),
                contact.id,
                key,
                AuditAction::Linked,
                Some("email_match"),
            ));
            // Linking left the lead's fields untouched; now merge them.
            sync_lead(conn, ctx, &lead, contact, key, out).await?;
            ContactOutcome::Linked
        }
        LinkOutcome::AlreadyLinked(lead) => sync_lead(conn, ctx, &lead, contact, key, out).await?,
        LinkOutcome::EmailLinkedElsewhere(lead) => {
            out.skip_audited(
                "email_linked_elsewhere",
                ctx.integration,
                Some(lead.id),
                contact.id,
                key,
            );
            ContactOutcome::Skipped("email_linked_elsewhere")
        }
        LinkOutcome::Tombstoned => {
            out.skip_audited("tombstoned", ctx.integration, None, contact.id, key);
            ContactOutcome::Skipped("tombstoned")
        }
    };
    Ok(done)
}

fn keep_reason(reason: KeepReason) -> &'static str {
    match reason {
        KeepReason::ConflictPlatformWins => "conflict_platform_wins",
        KeepReason::ConflictPlatformNewer => "conflict_platform_newer",
        KeepReason::EmptyNeverOverwrites => "empty_never_overwrites",
    }
}

fn non_empty(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty()).then(|| v.to_owned())
}
