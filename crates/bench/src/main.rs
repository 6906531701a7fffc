//! `leadsync-bench`: benchmark commands. Each prints what it measured.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "leadsync benchmarks (run with --release)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The webhook ingester against the queue's and a bare endpoint's ceilings.
    Ingest(leadsync_bench::ingest::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ingest(options) => leadsync_bench::ingest::run(&options),
    }
}
