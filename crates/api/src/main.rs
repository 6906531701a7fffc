//! `leadsync-api`: loads the configuration, starts telemetry, serves.

use anyhow::Context as _;
use leadsync_api::Application;
use leadsync_runtime::{Settings, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading configuration")?;
    let _telemetry = telemetry::init(&settings.telemetry)?;
    let app = Application::build(&settings).await?;
    app.run_until_stopped().await.context("running the API")
}
