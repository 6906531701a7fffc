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
    /// A bulk import in HubSpot synced to Postgres under the API quota, with 1 and 4 worker replicas.
    Import(leadsync_bench::import::Options),
    /// 100,000 events queued while no worker runs, then drained.
    Backlog(leadsync_bench::backlog::Options),
    /// 10,000 new leads inserted on the platform, pushed to HubSpot under the API quota.
    Platform(leadsync_bench::platform::Options),
    /// Single edits each way on an idle system, and the peak memory of the ingester and worker binaries.
    Latency(leadsync_bench::latency::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ingest(options) => leadsync_bench::ingest::run(&options),
        Command::Import(options) => leadsync_bench::import::run(&options),
        Command::Backlog(options) => leadsync_bench::backlog::run(&options),
        Command::Platform(options) => leadsync_bench::platform::run(&options),
        Command::Latency(options) => leadsync_bench::latency::run(&options),
    }
}
