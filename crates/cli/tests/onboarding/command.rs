//! The `leadsync` binary: its log lines go to standard error, its results
//! to standard output.

use leadsync_cli::connect;
use leadsync_domain::PortalId;
use leadsync_store::cursors::{self, CursorKind};
use secrecy::{ExposeSecret as _, SecretString};

use crate::helpers::{Env, PORTAL, PRIVATE_TOKEN};

#[tokio::test]
async fn a_commands_warnings_are_logged_on_stderr_and_its_result_alone_on_stdout() {
    // Arrange
    let env = Env::new().await;
    let integration = connect::private_app(
        &env.settings,
        "acme",
        Some(PortalId::new(PORTAL)),
        SecretString::from(PRIVATE_TOKEN),
    )
    .await
    .expect("connected")
    .integration;
    // A cursor the backfill cannot read: it warns and starts over.
    cursors::save(
        env.db.store.pool(),
        integration.id,
        CursorKind::Backfill,
        Some("not a cursor"),
    )
    .await
    .expect("saved");
    let settings = &env.settings;

    // Act
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadsync"))
        .args(["backfill", "--integration", "acme", "--max-pages", "0"])
        .env_remove("LEADSYNC_CONFIG")
        .env(
            "LEADSYNC__DATABASE__URL",
            settings.database.url.expose_secret(),
        )
        .env("LEADSYNC__REDIS__URL", settings.redis.url.expose_secret())
        .env("LEADSYNC__REDIS__KEY_PREFIX", &settings.redis.key_prefix)
        .env(
            "LEADSYNC__HUBSPOT__API_BASE_URL",
            &settings.hubspot.api_base_url,
        )
        .env(
            "LEADSYNC__HUBSPOT__TOKEN_ENCRYPTION_KEY",
            settings.hubspot.token_encryption_key.expose_secret(),
        )
        .env("LEADSYNC__TELEMETRY__LOG_FORMAT", "json")
        .env("LEADSYNC__TELEMETRY__LOG_FILTER", "warn")
        .output()
        .await
        .expect("leadsync runs");

    // Assert
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("Unreadable backfill cursor; starting from the beginning"),
        "{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the summary: {stdout}");
    assert!(lines[0].starts_with("acme: "), "{stdout}");
    env.finish().await;
}
