//! `leadsync migrate`: brings the database schema up to date, once per
//! deployment, before any replica starts (deploy/ runs it as a job).

use anyhow::Context as _;
use leadsync_runtime::Settings;
use leadsync_store::Store;

/// Applies every migration not yet applied; applying none is not an error.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let store = Store::connect(&settings.database)
        .await
        .context("configuration key `database.url`: connecting to Postgres")?;
    store.migrate().await.context("applying migrations")?;
    println!("database schema is up to date");
    store.close().await;
    Ok(())
}
