//! `leadsync backfill --integration NAME`: imports every contact of the
//! account and pushes every lead not yet in HubSpot, with a progress bar
//! (plain lines when stderr is not a terminal), and prints a summary.
//! Interrupted (Ctrl-C, `--max-pages`), it resumes where it stopped on the
//! next run (`leadsync_worker::backfill`; docs/configuration.md, `[backfill]`).

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use leadsync_runtime::Settings;
use leadsync_worker::backfill::{self, BackfillPhase};
use leadsync_worker::{BackfillOptions, BackfillProgress, BackfillReport};
use tokio_util::sync::CancellationToken;

/// How often plain progress lines are printed at most.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// Flags of `leadsync backfill`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The integration (its name).
    pub integration: String,
    /// Start again from the beginning, even after a completed backfill.
    pub restart: bool,
    /// Stop (resumably) after this many steps: list pages of contacts and
    /// push batches of leads.
    pub max_pages: Option<u64>,
}

/// Runs the backfill, showing its progress on stderr, and prints the
/// summary on stdout. Ctrl-C stops it after the step under way; the next
/// run resumes.
///
/// # Errors
/// When the backfill fails (another one is running, a connection or
/// HubSpot failure: what was committed stays and the next run resumes).
pub async fn run(settings: &Settings, options: &Options) -> anyhow::Result<BackfillReport> {
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    let signal = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping after the current step; run the backfill again to resume");
            on_signal.cancel();
        }
    });
    let display = Display::new(std::io::stderr().is_terminal());
    let result = backfill::run_from_settings(
        settings,
        &options.integration,
        &BackfillOptions {
            restart: options.restart,
            max_pages: options.max_pages,
            cancel,
        },
        &|p| display.update(p),
    )
    .await;
    signal.abort();
    display.finish();
    let report = result.with_context(|| format!("backfilling {}", options.integration))?;
    println!("{}: {report}", options.integration);
    Ok(report)
}

/// A spinner on a terminal, throttled plain lines elsewhere.
enum Display {
    Bar(ProgressBar),
    Plain(Mutex<Option<(Instant, BackfillPhase)>>),
}

impl Display {
    fn new(terminal: bool) -> Self {
        if !terminal {
            return Self::Plain(Mutex::new(None));
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message("starting");
        Self::Bar(bar)
    }

    fn update(&self, progress: &BackfillProgress) {
        let line = progress_line(progress);
        match self {
            Self::Bar(bar) => bar.set_message(line),
            Self::Plain(last) => {
                let mut last = last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let due = last.is_none_or(|(at, phase)| {
                    phase != progress.phase || at.elapsed() >= PLAIN_EVERY
                });
                if due {
                    eprintln!("{line}");
                    *last = Some((Instant::now(), progress.phase));
                }
            }
        }
    }

    fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// One line of progress: the phase, then what each phase did so far.
pub fn progress_line(progress: &BackfillProgress) -> String {
    let t = &progress.totals;
    let phase = match progress.phase {
        BackfillPhase::Contacts => "importing contacts",
        BackfillPhase::Leads => "pushing leads",
        BackfillPhase::Done => "done",
    };
    format!(
        "{phase}: {} contacts in {} pages ({} leads created, {} linked, {} updated); \
         {} of {} unsynced leads pushed in {} batches; {} HubSpot calls",
        t.contacts,
        t.pages,
        t.created,
        t.linked,
        t.updated,
        t.pushed,
        t.leads,
        t.push_batches,
        t.calls
    )
}

#[cfg(test)]
mod tests {
    use leadsync_worker::backfill::BackfillTotals;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn a_progress_line_says_the_phase_and_the_totals() {
        let progress = BackfillProgress {
            integration_id: Uuid::nil(),
            phase: BackfillPhase::Leads,
            totals: BackfillTotals {
                pages: 3,
                contacts: 250,
                created: 249,
                linked: 1,
                leads: 2,
                pushed: 2,
                push_batches: 1,
                calls: 4,
                ..BackfillTotals::default()
            },
            calls_this_run: 4,
        };

        let line = progress_line(&progress);

        assert_eq!(
            line,
            "pushing leads: 250 contacts in 3 pages (249 leads created, 1 linked, 0 updated); \
             2 of 2 unsynced leads pushed in 1 batches; 4 HubSpot calls"
        );
    }
}
