//! `leadsync api-token`: bearer tokens of the REST API (docs/api.md).
//!
//! A token is scoped to one integration and printed once, on creation; only
//! its SHA-256 is stored, so a lost token is revoked and replaced, never
//! shown again. Its scope (`read`, `write`, `admin`) says what it may do.

use anyhow::Context as _;
use leadsync_runtime::Settings;
use leadsync_store::api_tokens::{self, ApiToken, IssuedToken, Scope};
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
        /// What the token may do: `read` (GET routes only), `write` (leads
        /// too) or `admin` (also the integration's settings and dead-letter
        /// replay).
        #[arg(long, default_value_t = ScopeArg(Scope::DEFAULT))]
        scope: ScopeArg,
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

/// A token scope on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeArg(pub Scope);

impl std::str::FromStr for ScopeArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(Self).map_err(|_| {
            let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
            format!("expected one of {}", known.join(", "))
        })
    }
}

impl std::fmt::Display for ScopeArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Runs one `api-token` command against the configured database.
pub async fn run(settings: &Settings, command: Command) -> anyhow::Result<()> {
    let store = Store::connect(&settings.database)
        .await
        .context("connecting to Postgres (database.url)")?;
    match command {
        Command::Create {
            integration,
            label,
            scope,
        } => {
            let issued = create(&store, &integration, &label, scope.0).await?;
            let id = issued.record.id;
            let scope = issued.record.scope;
            // The token alone on stdout, so `> token.txt` captures just it.
            eprintln!(
                "API token {id} for integration `{integration}`, scope `{scope}`; it is shown \
                 only now:"
            );
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

/// Issues a token of `scope` for the integration named `integration`.
pub async fn create(
    store: &Store,
    integration_name: &str,
    label: &str,
    scope: Scope,
) -> anyhow::Result<IssuedToken> {
    let integration = integration(store, integration_name).await?;
    let issued = api_tokens::issue_scoped(store.pool(), integration.id, label, scope)
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

/// One line about a token: id, first characters, label, scope, dates, state.
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
        "{}  {}…  {:?}  scope {}  created {}  {used}  {state}",
        token.id,
        token.token_prefix,
        token.label,
        token.scope,
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
        let issued = create(&db.store, "acme", "dashboard", Scope::Read)
            .await
            .unwrap();
        let verified = api_tokens::verify(db.store.pool(), &issued.token)
            .await
            .unwrap();
        let listed = list(&db.store, "acme").await.unwrap();
        revoke(&db.store, "acme", issued.record.id).await.unwrap();
        let twice = revoke(&db.store, "acme", issued.record.id).await;
        let after = api_tokens::verify(db.store.pool(), &issued.token)
            .await
            .unwrap();
        let unknown = create(&db.store, "globex", "", Scope::Write).await;

        // Assert
        assert!(
            issued
                .token
                .expose_secret()
                .starts_with(api_tokens::TOKEN_PREFIX)
        );
        assert_eq!(
            verified.map(|v| (v.integration_id, v.scope)),
            Some((acme.id, Scope::Read))
        );
        assert_eq!(listed.len(), 1);
        let line = describe(&listed[0]);
        assert!(line.contains("dashboard") && line.contains("active"));
        assert!(line.contains("scope read"), "{line}");
        assert!(
            !line.contains(issued.token.expose_secret()),
            "never the token"
        );
        assert!(twice.is_err(), "a token is revoked once");
        assert_eq!(after, None);
        assert!(unknown.unwrap_err().to_string().contains("globex"));
        db.cleanup().await.unwrap();
    }

    #[test]
    fn create_takes_a_scope_and_defaults_to_write() {
        use clap::Parser as _;

        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: Command,
        }
        let scope_of = |args: &[&str]| {
            let argv = ["leadsync", "create", "--integration", "acme"]
                .iter()
                .chain(args)
                .copied();
            match Cli::try_parse_from(argv).map(|cli| cli.command) {
                Ok(Command::Create { scope, .. }) => Ok(scope.0),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(err) => Err(err.to_string()),
            }
        };

        assert_eq!(scope_of(&[]), Ok(Scope::Write));
        for scope in Scope::ALL {
            assert_eq!(scope_of(&["--scope", scope.as_str()]), Ok(*scope));
        }
        let refused = scope_of(&["--scope", "root"]).unwrap_err();
        assert!(refused.contains("read, write, admin"), "{refused}");
    }
}
