//! The worker's Prometheus metrics, served at `GET /metrics`.

use leadsync_hubspot::HubSpotMetrics;
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::inbound::BatchReport;
use crate::outbound::PushReport;
use crate::reconcile::PageTally;

/// Batch sizes, in jobs or contacts.
const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0, 1000.0,
];

/// End-to-end lag, in seconds: from the ingester's acceptance to the commit.
const LAG_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

/// Batch durations, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Every collector the worker updates. Cloning shares them.
#[derive(Clone)]
pub struct WorkerMetrics {
    /// The registry served at `/metrics`.
    pub registry: Registry,
    /// Events applied (with an effect or a decided no-op).
    pub processed: IntCounter,
    /// Jobs whose batch failed; they are retried.
    pub failed: IntCounter,
    /// Contacts or fields left unwritten, by reason (echo, no_change, ...).
    pub skipped: IntCounterVec,
    /// Events dead-lettered.
    pub dead_lettered: IntCounter,
    /// Events already processed (redeliveries).
    pub duplicates: IntCounter,
    /// Lead changes by action (created, linked, updated, ...).
    pub leads: IntCounterVec,
    /// Batches by outcome (`committed`, `failed`).
    pub batches: IntCounterVec,
    /// HubSpot batch reads issued by batches.
    pub batch_reads: IntCounter,
    /// Jobs per batch.
    pub batch_jobs: Histogram,
    /// Distinct contacts per batch.
    pub batch_contacts: Histogram,
    /// Time to process one batch (HubSpot read and Postgres transaction).
    pub batch_seconds: Histogram,
    /// From the ingester accepting an event to its batch committing.
    pub lag_seconds: Histogram,
    /// Jobs waiting in the queue (scheduled or ready).
    pub queue_waiting: IntGauge,
    /// Age of the oldest job ready to be fetched.
    pub queue_oldest_age_seconds: Gauge,
    /// Tasks moved from the scheduled set to the ready list by the promoter.
    pub promoted: IntCounter,
    /// Finished tasks whose payload the janitor dropped (their ids stay
    /// remembered for deduplication).
    pub retired: IntCounter,
    /// Restarts of the apalis worker after its stream failed.
    pub restarts: IntCounter,
    /// The HubSpot client's and rate limiter's instruments.
    pub hubspot: HubSpotMetrics,
    /// Outbox rows the relay queued.
    pub relayed: IntCounter,
    /// Outbox rows whose job was already queued when relayed again.
    pub relay_duplicates: IntCounter,
    /// Outbox rows waiting for the relay.
    pub outbox_pending: IntGauge,
    /// Age of the oldest outbox row waiting for the relay.
    pub outbox_oldest_age_seconds: Gauge,
    /// Leads written to HubSpot, by action (created, linked, updated).
    pub pushed: IntCounterVec,
    /// Leads (or fields, for conflicts) not written to HubSpot, by reason.
    pub push_skipped: IntCounterVec,
    /// Lead changes dead-lettered.
    pub push_dead_lettered: IntCounter,
    /// Lead-change jobs whose batch failed; they are retried.
    pub push_failed: IntCounter,
    /// Outbound batches by outcome (`committed`, `failed`).
    pub push_batches: IntCounterVec,
    /// HubSpot calls made by outbound batches, by operation.
    pub push_calls: IntCounterVec,
    /// Distinct leads per outbound batch.
    pub push_batch_leads: Histogram,
    /// Time to process one outbound batch.
    pub push_batch_seconds: Histogram,
    /// From a lead change committing to its push committing.
    pub push_lag_seconds: Histogram,
    /// Reconciliation runs by outcome (`completed`, `failed`, `busy`).
    pub reconcile_runs: IntCounterVec,
    /// Contacts reconciliation compared with their lead.
    pub reconcile_scanned: IntCounter,
    /// Contacts whose HubSpot state the platform had missed (drift found).
    pub reconcile_drift_found: IntCounter,
    /// Of which reconciliation wrote to the platform (drift repaired).
    pub reconcile_drift_repaired: IntCounter,
}

impl WorkerMetrics {
    /// Creates the collectors in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::with_opts(Opts::new(name, help))?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter_vec =
            |name: &str, help: &str, label: &str| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let histogram =
            |name: &str, help: &str, buckets: &[f64]| -> prometheus::Result<Histogram> {
                let h =
                    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let processed = counter(
            "leadsync_worker_events_processed_total",
            "Inbound events applied (with an effect or a decided no-op)",
        )?;
        let failed = counter(
            "leadsync_worker_events_failed_total",
            "Inbound events whose batch failed and will be retried",
        )?;
        let skipped = counter_vec(
            "leadsync_worker_events_skipped_total",
            "Contacts or fields left unwritten, by reason",
            "reason",
        )?;
        let dead_lettered = counter(
            "leadsync_worker_events_dead_lettered_total",
            "Inbound events dead-lettered",
        )?;
        let duplicates = counter(
            "leadsync_worker_events_duplicate_total",
            "Inbound events already processed (redeliveries)",
        )?;
        let leads = counter_vec(
            "leadsync_worker_leads_total",
            "Lead changes made from HubSpot, by action",
            "action",
        )?;
        let batches = counter_vec(
            "leadsync_worker_batches_total",
            "Inbound batches by outcome",
            "outcome",
        )?;
        let batch_reads = counter(
            "leadsync_worker_batch_reads_total",
            "HubSpot batch reads issued by inbound batches",
        )?;
        let batch_jobs = histogram(
            "leadsync_worker_batch_jobs",
            "Jobs per inbound batch",
            SIZE_BUCKETS,
        )?;
        let batch_contacts = histogram(
            "leadsync_worker_batch_contacts",
            "Distinct contacts per inbound batch",
            SIZE_BUCKETS,
        )?;
        let batch_seconds = histogram(
            "leadsync_worker_batch_seconds",
            "Time to process one inbound batch",
            DURATION_BUCKETS,
        )?;
        let lag_seconds = histogram(
            "leadsync_worker_event_lag_seconds",
            "From the ingester accepting an event to its batch committing",
            LAG_BUCKETS,
        )?;
        let queue_waiting = IntGauge::with_opts(Opts::new(
            "leadsync_worker_queue_waiting",
            "Inbound jobs waiting in the queue (scheduled or ready)",
        ))?;
        registry.register(Box::new(queue_waiting.clone()))?;
        let queue_oldest_age_seconds = Gauge::with_opts(Opts::new(
            "leadsync_worker_queue_oldest_age_seconds",
            "Age of the oldest inbound job ready to be fetched",
        ))?;
        registry.register(Box::new(queue_oldest_age_seconds.clone()))?;
        let promoted = counter(
            "leadsync_worker_promoted_total",
            "Due tasks promoted from the scheduled set to the ready list",
        )?;
        let retired = counter(
            "leadsync_worker_retired_total",
            "Finished tasks retired: payload dropped, id remembered for deduplication",
        )?;
        let restarts = counter(
            "leadsync_worker_restarts_total",
            "Restarts of the queue consumer after its stream failed",
        )?;
        let hubspot = HubSpotMetrics::register(&registry)?;
        let relayed = counter(
            "leadsync_worker_outbox_relayed_total",
            "Outbox rows (platform lead changes) queued by the relay",
        )?;
        let relay_duplicates = counter(
            "leadsync_worker_outbox_relay_duplicates_total",
            "Outbox rows whose job was already queued when relayed again",
        )?;
        let outbox_pending = IntGauge::with_opts(Opts::new(
            "leadsync_worker_outbox_pending",
            "Outbox rows waiting for the relay",
        ))?;
        registry.register(Box::new(outbox_pending.clone()))?;
        let outbox_oldest_age_seconds = Gauge::with_opts(Opts::new(
            "leadsync_worker_outbox_oldest_age_seconds",
            "Age of the oldest outbox row waiting for the relay",
        ))?;
        registry.register(Box::new(outbox_oldest_age_seconds.clone()))?;
        let pushed = counter_vec(
            "leadsync_worker_push_leads_total",
            "Leads written to HubSpot, by action",
            "action",
        )?;
        let push_skipped = counter_vec(
            "leadsync_worker_push_skipped_total",
            "Leads or fields not written to HubSpot, by reason",
            "reason",
        )?;
        let push_dead_lettered = counter(
            "leadsync_worker_push_dead_lettered_total",
            "Lead changes dead-lettered",
        )?;
        let push_failed = counter(
            "leadsync_worker_push_failed_total",
            "Lead-change jobs whose batch failed and will be retried",
        )?;
        let push_batches = counter_vec(
            "leadsync_worker_push_batches_total",
            "Outbound batches by outcome",
            "outcome",
        )?;
        let push_calls = counter_vec(
            "leadsync_worker_push_calls_total",
            "HubSpot calls made by outbound batches, by operation",
            "operation",
        )?;
        let push_batch_leads = histogram(
            "leadsync_worker_push_batch_leads",
            "Distinct leads per outbound batch",
            SIZE_BUCKETS,
        )?;
        let push_batch_seconds = histogram(
            "leadsync_worker_push_batch_seconds",
            "Time to process one outbound batch",
            DURATION_BUCKETS,
        )?;
        let push_lag_seconds = histogram(
            "leadsync_worker_push_lag_seconds",
            "From a lead change committing to its push committing",
            LAG_BUCKETS,
        )?;
        let reconcile_runs = counter_vec(
            "leadsync_worker_reconcile_runs_total",
            "Reconciliation runs of an integration, by outcome",
            "outcome",
        )?;
        let reconcile_scanned = counter(
            "leadsync_worker_reconcile_scanned_total",
            "Contacts reconciliation compared with their lead",
        )?;
        let reconcile_drift_found = counter(
            "leadsync_worker_reconcile_drift_found_total",
            "Contacts whose HubSpot state the platform had missed, found by reconciliation",
        )?;
        let reconcile_drift_repaired = counter(
            "leadsync_worker_reconcile_drift_repaired_total",
            "Drifted contacts reconciliation wrote to the platform",
        )?;
        Ok(Self {
            registry,
            processed,
            failed,
            skipped,
            dead_lettered,
            duplicates,
            leads,
            batches,
            batch_reads,
            batch_jobs,
            batch_contacts,
            batch_seconds,
            lag_seconds,
            queue_waiting,
            queue_oldest_age_seconds,
            promoted,
            retired,
            restarts,
            hubspot,
            relayed,
            relay_duplicates,
            outbox_pending,
            outbox_oldest_age_seconds,
            pushed,
            push_skipped,
            push_dead_lettered,
            push_failed,
            push_batches,
            push_calls,
            push_batch_leads,
            push_batch_seconds,
            push_lag_seconds,
            reconcile_runs,
            reconcile_scanned,
            reconcile_drift_found,
            reconcile_drift_repaired,
        })
    }

    /// Counts what a committed reconciliation page found and repaired.
    pub fn record_reconcile_page(&self, page: &PageTally) {
        self.reconcile_scanned.inc_by(page.scanned as u64);
        self.reconcile_drift_found.inc_by(page.drifted as u64);
        self.reconcile_drift_repaired.inc_by(page.repaired as u64);
    }

    /// Counts what a committed outbound batch did.
    pub fn record_push(&self, report: &PushReport) {
        self.push_dead_lettered.inc_by(report.dead_lettered as u64);
        for (reason, n) in &report.skipped {
            self.push_skipped
                .with_label_values(&[reason])
                .inc_by(*n as u64);
        }
        for (action, n) in [
            ("created", report.created),
            ("linked", report.linked),
            ("updated", report.updated),
            ("archived", report.archived),
        ] {
            if n > 0 {
                self.pushed.with_label_values(&[action]).inc_by(n as u64);
            }
        }
        // Deletions and merges whose webhooks were lost, found and applied
        // by the push: counted with the inbound side's, which they stand for.
        for (action, n) in [
            ("unlinked", report.unlinked),
            ("deleted", report.deleted),
            ("merged", report.merged),
        ] {
            if n > 0 {
                self.leads.with_label_values(&[action]).inc_by(n as u64);
            }
        }
        for (operation, n) in [
            ("batch_upsert", report.upsert_calls),
            ("batch_update", report.update_calls),
            ("batch_read", report.read_calls),
            ("batch_archive", report.archive_calls),
        ] {
            if n > 0 {
                self.push_calls
                    .with_label_values(&[operation])
                    .inc_by(n as u64);
            }
        }
    }

    /// Counts what a committed batch did.
    pub fn record(&self, report: &BatchReport) {
        self.processed.inc_by(report.processed as u64);
        self.duplicates.inc_by(report.duplicates as u64);
        self.dead_lettered.inc_by(report.dead_lettered as u64);
        self.batch_reads.inc_by(report.batch_reads as u64);
        for (reason, n) in &report.skipped {
            self.skipped.with_label_values(&[reason]).inc_by(*n as u64);
        }
        for (action, n) in [
            ("created", report.created),
            ("linked", report.linked),
            ("updated", report.updated),
            ("unlinked", report.unlinked),
            ("deleted", report.deleted),
            ("restored", report.restored),
            ("erased", report.erased),
            ("merged", report.merged),
        ] {
            if n > 0 {
                self.leads.with_label_values(&[action]).inc_by(n as u64);
            }
        }
    }
}
