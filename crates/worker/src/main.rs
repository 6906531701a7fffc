//! `leadsync-worker`: loads the configuration, starts telemetry, consumes the
//! inbound queue until SIGTERM.

use anyhow::Context as _;
use leadsync_runtime::{Settings, telemetry};
use leadsync_worker::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading configuration")?;
    let _telemetry = telemetry::init(&settings.telemetry)?;
    let app = Application::build(&settings)
        .await
        .context("starting the worker")?;
    app.run_until_stopped().await.context("running the worker")
}
