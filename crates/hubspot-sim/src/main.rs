//! `hubspot-sim`: serve the HubSpot simulator, or benchmark it.

use clap::Parser as _;
use leadsync_hubspot_sim::cli::{Cli, init_tracing};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    cli.run().await
}
