//! `leadsync api-token`: bearer tokens of the REST API (docs/api.md).
//!
//! A token is scoped to one integration and printed once, on creation; only
//! its SHA-256 is stored, so a lost token is revoked and replaced, never
//! shown again.

use anyhow::Context as _;
use leadsync_runtime::Settings;
use leadsync_store::api_tokens::{self, ApiToken, IssuedToken};
use leadsync_store::{Integration, Store, integrations};
use secrecy::ExposeSecret as _;
use uuid::Uuid;

/// `leadsync api-token …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Issues a token for an integration and prints it, once, on stdout.
    Create {
        /// The integration's name.
        #[arg(long)]
        integration: String,
        /// What the token is for (e.g. "crm-dashboard"); shown by `list`.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revokes a token: requests with it get 401 from then on.
    Revoke {
        /// The integration's name.
        #[arg(long)]
        integration: String,
        /// The token's id, as `create` and `list` print it.
        id: Uuid,
    },
    /// Lists an integration's tokens (their ids and first characters, never
    /// the tokens).
    List {
        /// The integration's name.
        #[arg(long)]
        integration: String,
    },
}

/// Runs one `api-token` command against the configured database.
pub async fn run(settings: &Settings, command: Command) -> anyhow::Result<()> {
    let store = Store::connect(&settings.database)
        .await
        .context("connecting to Postgres (database.url)")?;
    match command {
        Command::Create { integration, label } => {
            let issued = create(&store, &integration, &label).await?;
            let id = issued.record.id;
            // The token alone on stdout, so `> token.txt` captures just it.
            eprintln!("API token {id} for integration `{integration}`; it is shown only now:");
            println!("{}", issued.token.expose_secret());
            eprintln!(
                "Send it as `Authorization: Bearer <token>`. Revoke it with \
                 `leadsync api-token revoke --integration {integration} {id}`."
            );
        }
        Command::Revoke { integration, id } => {
            revoke(&store, &integration, id).await?;
            println!("API token {id} of integration `{integration}` revoked");
        }
        Command::List { integration } => {
            let tokens = list(&store, &integration).await?;
            if tokens.is_empty() {
                println!("integration `{integration}` has no API token");
            }
            for token in tokens {
                println!("{}", describe(&token));
            }
        }
    }
    store.close().await;
    Ok(())
}

async fn integration(store: &Store, name: &str) -> anyhow::Result<Integration> {
    integrations::by_name(store.pool(), name)
        .await?
        .with_context(|| format!("no integration named `{name}` (see `leadsync connect`)"))
}

/// Issues a token for the integration named `integration`.
pub async fn create(
    store: &Store,
    integration_name: &str,
    label: &str,
) -> anyhow::Result<IssuedToken> {
    let integration = integration(store, integration_name).await?;
    let issued = api_tokens::issue(store.pool(), integration.id, label)
        .await
        .context("issuing the token")?;
    Ok(issued)
}

/// Revokes token `id` of the integration named `integration`.
pub async fn revoke(store: &Store, integration_name: &str, id: Uuid) -> anyhow::Result<()> {
    let integration = integration(store, integration_name).await?;
    let revoked = api_tokens::revoke(store.pool(), integration.id, id).await?;
    anyhow::ensure!(
        revoked,
        "integration `{integration_name}` has no active API token {id}"
    );
    Ok(())
}

/// The tokens of the integration named `integration`, oldest first.
pub async fn list(store: &Store, integration_name: &str) -> anyhow::Result<Vec<ApiToken>> {
    let integration = integration(store, integration_name).await?;
    Ok(api_tokens::list(store.pool(), integration.id).await?)
}

/// One line about a token: id, first characters, label, dates, state.
pub fn describe(token: &ApiToken) -> String {
    let state = match token.revoked_at {
        Some(at) => format!("revoked {}", at.to_rfc3339()),
        None => "active".to_owned(),
    };
    let used = token.last_used_at.map_or_else(
        || "never used".to_owned(),
        |at| format!("last used {}", at.to_rfc3339()),
    );
    format!(
        "{}  {}…  {:?}  created {}  {used}  {state}",
        token.id,
        token.token_prefix,
        token.label,
        token.created_at.to_rfc3339(),
    )
}

#[cfg(test)]
mod tests {
    use leadsync_domain::PortalId;
    use leadsync_store::IntegrationSettings;
    use leadsync_store::integrations::{AuthMode, NewIntegration};
    use leadsync_store::testing::TestDb;
    use secrecy::ExposeSecret as _;

    use super::*;

    #[tokio::test]
    async fn a_created_token_verifies_until_it_is_revoked() {
        // Arrange
        let db = TestDb::create().await.unwrap();
        let acme = integrations::create(
            db.store.pool(),
            &NewIntegration {
                name: "acme".to_owned(),
                portal_id: PortalId::new(1001),
                app_id: None,
                auth_mode: AuthMode::PrivateApp,
                settings: IntegrationSettings::default(),
            },
        )
        .await
        .unwrap();

        // Act
        let issued = create(&db.store, "acme", "dashboard").await.unwrap();
        let verified = api_tokens::verify(db.store.pool(), &issued.token)
            .await
            .unwrap();
        let listed = list(&db.store, "acme").await.unwrap();
        revoke(&db.store, "acme", issued.record.id).await.unwrap();
        let twice = revoke(&db.store, "acme", issued.record.id).await;
        let after = api_tokens::verify(db.store.pool(), &issued.token)
            .await
            .unwrap();
        let unknown = create(&db.store, "globex", "").await;

        // Assert
        assert!(
            issued
                .token
                .expose_secret()
                .starts_with(api_tokens::TOKEN_PREFIX)
        );
        assert_eq!(verified.map(|v| v.integration_id), Some(acme.id));
        assert_eq!(listed.len(), 1);
        let line = describe(&listed[0]);
        assert!(line.contains("dashboard") && line.contains("active"));
        assert!(
            !line.contains(issued.token.expose_secret()),
            "never the token"
        );
        assert!(twice.is_err(), "a token is revoked once");
        assert_eq!(after, None);
        assert!(unknown.unwrap_err().to_string().contains("globex"));
        db.cleanup().await.unwrap();
    }
}
