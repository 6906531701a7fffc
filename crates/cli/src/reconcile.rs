//! `leadsync reconcile`: repairs what webhooks missed, now, and prints what
//! it found (the worker does the same periodically; docs/ARCHITECTURE.md,
//! "Reconciliation").

use anyhow::Context as _;
use leadsync_runtime::Settings;
use leadsync_worker::ReconcileError;
use leadsync_worker::reconcile::{self, IntegrationRun};

/// Reconciles every integration, or the one named `integration`, prints one
/// line per integration and returns the runs. Fails when any run failed (an
/// integration another process is reconciling, or whose inbound sync is
/// off, is reported but is not a failure).
pub async fn run(
    settings: &Settings,
    integration: Option<&str>,
) -> anyhow::Result<Vec<IntegrationRun>> {
    let runs = reconcile::run_from_settings(settings, integration)
        .await
        .context("reconciling")?;
    let mut failed = 0;
    for run in &runs {
        let name = &run.integration.name;
        match &run.result {
            Ok(report) => println!("{name}: {report}"),
            Err(e @ (ReconcileError::AlreadyRunning(_) | ReconcileError::InboundDisabled(_))) => {
                println!("{name}: skipped: {e}");
            }
            Err(e) => {
                failed += 1;
                println!("{name}: failed: {e}");
            }
        }
    }
    if runs.is_empty() {
        println!("no integration to reconcile");
    }
    anyhow::ensure!(failed == 0, "{failed} reconciliation(s) failed");
    Ok(runs)
}
