//! `leadsync`: operator commands.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use leadsync_runtime::Settings;
use leadsync_runtime::telemetry::{self, LogOutput};

#[derive(Parser)]
#[command(about = "leadsync: two-way lead sync between the platform and HubSpot")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connects a HubSpot account to an integration (docs/setup.md).
    Connect {
        #[command(subcommand)]
        how: leadsync_cli::connect::Command,
    },
    /// Creates the contact property, the webhook target URL and the
    /// subscriptions a connected account needs; a second run changes nothing.
    Setup {
        /// The integration's name.
        #[arg(long)]
        integration: String,
        /// Use the app-wide `/webhooks/hubspot` URL (routes by portal id), for
        /// an app installed by several accounts.
        #[arg(long)]
        app_wide_url: bool,
    },
    /// Issues, lists and revokes bearer tokens of the REST API (docs/api.md).
    ApiToken {
        #[command(subcommand)]
        command: leadsync_cli::api_token::Command,
    },
    /// Runs the HubSpot simulator and leadsync in one process and shows a sync.
    Demo,
    /// Applies the database migrations not yet applied.
    Migrate,
    /// Repairs what webhooks missed: searches the contacts modified since the
    /// last run and prints the drift found and repaired.
    Reconcile {
        /// Only this integration (its name); all of them by default.
        #[arg(long)]
        integration: Option<String>,
    },
    /// Imports every contact of an account and pushes every lead not yet in
    /// HubSpot, at low priority; resumes where an interrupted run stopped.
    Backfill {
        /// The integration's name.
        #[arg(long)]
        integration: String,
        /// Start again from the beginning, even after a completed backfill.
        #[arg(long)]
        restart: bool,
        /// Stop (resumably) after this many steps: contact pages and lead
        /// push batches.
        #[arg(long)]
        max_pages: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load().context("loading configuration")?;
    // Logs go to standard error: standard output carries the commands'
    // results (a new API token, reports). Kept until the command ends. The
    // demo narrates what it shows, which the log lines of the ingester and
    // worker it runs in process would drown.
    let _telemetry = match cli.command {
        Command::Demo => None,
        _ => Some(telemetry::init_with_output(
            &settings.telemetry,
            LogOutput::Stderr,
        )?),
    };
    match cli.command {
        Command::Connect { how } => leadsync_cli::connect::run(&settings, how).await,
        Command::Setup {
            integration,
            app_wide_url,
        } => leadsync_cli::setup::run(
            &settings,
            &integration,
            leadsync_cli::setup::SetupOptions { app_wide_url },
        )
        .await
        .map(drop),
        Command::ApiToken { command } => leadsync_cli::api_token::run(&settings, command).await,
        Command::Demo => leadsync_cli::demo::run(settings).await.map(drop),
        Command::Migrate => leadsync_cli::migrate::run(&settings).await,
        Command::Reconcile { integration } => {
            leadsync_cli::reconcile::run(&settings, integration.as_deref())
                .await
                .map(drop)
        }
        Command::Backfill {
            integration,
            restart,
            max_pages,
        } => leadsync_cli::backfill::run(
            &settings,
            &leadsync_cli::backfill::Options {
                integration,
                restart,
                max_pages,
            },
        )
        .await
        .map(drop),
    }
}
