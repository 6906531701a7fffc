//! `leadsync`: operator commands.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use leadsync_runtime::Settings;

#[derive(Parser)]
#[command(about = "leadsync: two-way lead sync between the platform and HubSpot")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the HubSpot simulator and leadsync in one process and shows a sync.
    Demo,
    /// Repairs what webhooks missed: searches the contacts modified since the
    /// last run and prints the drift found and repaired.
    Reconcile {
        /// Only this integration (its name); all of them by default.
        #[arg(long)]
        integration: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load().context("loading configuration")?;
    match cli.command {
        Command::Demo => leadsync_cli::demo::run(settings).await.map(drop),
        Command::Reconcile { integration } => {
            leadsync_cli::reconcile::run(&settings, integration.as_deref())
                .await
                .map(drop)
        }
    }
}
