//! `leadsync connect`: connects a HubSpot account to an integration, through
//! the public app's OAuth install or with a private app's access token, and
//! stores the tokens encrypted at rest (docs/setup.md).
//!
//! Connecting the same HubSpot account again renews its tokens: one account
//! is one integration (the `integrations` table is unique per portal).

use std::fmt;
use std::io::{BufRead, IsTerminal as _};

use anyhow::Context as _;
use leadsync_domain::{AppId, PortalId};
use leadsync_hubspot::{Client, ClientConfig, HubSpotError, OAuthApp, TokenSource};
use leadsync_runtime::{ConfigError, Settings};
use leadsync_store::integrations::{self, AuthMode, NewIntegration, Tokens};
use leadsync_store::{Integration, IntegrationSettings, Store, TokenCipher};
use secrecy::{ExposeSecret as _, SecretString};

use crate::oauth_state;

/// The authorization URL to open, and the `state` HubSpot hands back with the
/// code.
#[derive(Debug, Clone)]
pub struct AuthorizeLink {
    /// `https://app.hubspot.com/oauth/authorize?client_id=…&redirect_uri=…&scope=…&state=…`.
    pub url: String,
    /// A fresh random value; the redirect must carry the same one.
    pub state: String,
}

/// Whether connecting created the integration or renewed its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// A new integration.
    Created,
    /// The account was connected already: its tokens were replaced.
    Renewed,
}

/// A connected account.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The integration, as stored.
    pub integration: Integration,
    /// Created or renewed.
    pub outcome: ConnectOutcome,
}

impl fmt::Display for Connected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.integration;
        let verb = match self.outcome {
            ConnectOutcome::Created => "connected",
            ConnectOutcome::Renewed => "already connected; its tokens were renewed",
        };
        let mode = match i.auth_mode {
            AuthMode::OAuth => "OAuth",
            AuthMode::PrivateApp => "private-app token",
        };
        write!(
            f,
            "integration `{}`: HubSpot account {} {verb} ({mode}, stored encrypted). Next: leadsync setup --integration {}",
            i.name, i.portal_id, i.name
        )
    }
}

/// `leadsync connect …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Prints the URL that installs the app in a HubSpot account.
    OauthUrl {
        /// The integration's name.
        #[arg(long)]
        integration: String,
    },
    /// Exchanges the code HubSpot sent to the redirect URL for tokens and
    /// stores them encrypted. Reads the whole redirect URL (its `state` is
    /// checked) or just its code from standard input, never from the command
    /// line.
    Oauth {
        /// The integration's name.
        #[arg(long)]
        integration: String,
        /// Accept a bare code, whose origin nothing checks (for scripts
        /// that extract it); by default the whole redirect URL is required.
        #[arg(long)]
        skip_state_check: bool,
    },
    /// Checks a private app's access token, read from standard input (never
    /// from the command line), and stores it encrypted.
    PrivateApp {
        /// The integration's name.
        #[arg(long)]
        integration: String,
        /// The HubSpot account (portal) id you expect the token to belong to.
        /// HubSpot is asked which account it belongs to; a different one is
        /// refused. Needed only if HubSpot will not say (403).
        #[arg(long)]
        portal: Option<u64>,
    },
}

/// Runs a `connect` command and prints its outcome.
///
/// # Errors
/// See [`oauth_url`], [`oauth`] and [`private_app`].
pub async fn run(settings: &Settings, command: Command) -> anyhow::Result<()> {
    match command {
        Command::OauthUrl { integration } => {
            let link = oauth_url(settings, &integration)?;
            println!("Open this URL as a super admin of the HubSpot account and approve the app:");
            println!("{}", link.url);
            println!(
                "HubSpot then redirects to {}?code=...&state=... (the URL is valid for an hour). Run:",
                settings.hubspot.redirect_uri
            );
            println!("  leadsync connect oauth --integration {integration}");
            println!(
                "and paste that whole redirect URL when asked (or pipe it in): its state is checked."
            );
        }
        Command::Oauth {
            integration,
            skip_state_check,
        } => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("Paste the redirect URL HubSpot sent the browser to, then press Enter:");
            }
            let redirect = read_redirect(stdin.lock())?;
            if require_state(&redirect, skip_state_check)? {
                eprintln!("warning: the code's origin was not checked (--skip-state-check)");
            }
            println!(
                "{}",
                oauth(
                    settings,
                    &integration,
                    &redirect.code,
                    redirect.state.as_deref()
                )
                .await?
            );
        }
        Command::PrivateApp {
            integration,
            portal,
        } => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("Paste the private app's access token, then press Enter:");
            }
            let token = read_token(stdin.lock())?;
            println!(
                "{}",
                private_app(settings, &integration, portal.map(PortalId::new), token).await?
            );
        }
    }
    Ok(())
}

/// Refuses a name the `integrations` table would refuse, before anything is
/// spent (an authorization code works once).
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 63;
    anyhow::ensure!(
        valid,
        "invalid integration name `{name}`: use 1 to 63 lowercase letters, digits, `-` and `_`, starting with a letter or digit"
    );
    Ok(())
}

/// The public app's OAuth credentials from the configuration.
fn oauth_app(settings: &Settings) -> Result<OAuthApp, ConfigError> {
    let hubspot = &settings.hubspot;
    if hubspot.client_id.is_empty() {
        return Err(ConfigError::invalid(
            "hubspot.client_id",
            "is required for OAuth: the public app's client id",
        ));
    }
    let secret = hubspot.oauth_client_secret().ok_or_else(|| {
        ConfigError::invalid(
            "hubspot.client_secrets",
            "is required for OAuth: the first one is the app's current client secret",
        )
    })?;
    Ok(OAuthApp {
        client_id: hubspot.client_id.clone(),
        client_secret: secret.clone(),
    })
}

/// A HubSpot client for one-off operator commands: the configured API and,
/// when configured, the OAuth app.
pub(crate) fn client_config(settings: &Settings) -> anyhow::Result<ClientConfig> {
    let base_url = settings
        .hubspot
        .api_base_url
        .parse()
        .map_err(|e| ConfigError::invalid("hubspot.api_base_url", format!("not a URL: {e}")))?;
    let mut config = ClientConfig::new(base_url);
    config.oauth_app = oauth_app(settings).ok();
    Ok(config)
}

/// The cipher sealing tokens at rest.
pub(crate) fn cipher(settings: &Settings) -> anyhow::Result<TokenCipher> {
    let key = settings.hubspot.require_token_encryption_key()?;
    TokenCipher::from_base64_key(key)
        .map_err(|e| ConfigError::invalid("hubspot.token_encryption_key", e.to_string()).into())
}

/// Connects to the platform's database.
pub(crate) async fn store(settings: &Settings) -> anyhow::Result<Store> {
    Store::connect(&settings.database)
        .await
        .context("connecting to Postgres (database.url)")
}

/// `connect oauth-url`: the URL a HubSpot super admin of the account opens to
/// install the app. HubSpot then redirects to `hubspot.redirect_uri` with
/// `?code=…&state=…`; the state is signed for this integration and valid for
/// an hour ([`oauth_state`]).
///
/// # Errors
/// An invalid name, or `hubspot.client_id` / `hubspot.redirect_uri` /
/// `hubspot.token_encryption_key` unset.
pub fn oauth_url(settings: &Settings, integration: &str) -> anyhow::Result<AuthorizeLink> {
    check_name(integration)?;
    let app = oauth_app(settings)?;
    let redirect = settings.hubspot.require_redirect_uri()?;
    let state = oauth_state::issue(&state_key(settings)?, integration, unix_now());
    let url =
        leadsync_hubspot::authorize_url(&app.client_id, redirect, &settings.hubspot.scopes, &state);
    Ok(AuthorizeLink {
        url: url.into(),
        state,
    })
}

/// `connect oauth`: checks the redirect's `state` (when there is one: a bare
/// code has none), exchanges the authorization code, asks HubSpot which
/// account (and app) the token belongs to, and stores the integration with
/// its tokens encrypted. The same account connected again keeps its
/// integration and gets the new tokens.
///
/// # Errors
/// A state not issued for this integration by this installation, or older
/// than an hour (the code is then not spent), a refused or already used code, a token of another app than
/// `hubspot.app_id` (or of an unnamed app while `hubspot.app_id` is set), an
/// account connected under another name, missing configuration, or an
/// unreachable database.
pub async fn oauth(
    settings: &Settings,
    integration: &str,
    code: &SecretString,
    state: Option<&str>,
) -> anyhow::Result<Connected> {
    check_name(integration)?;
    if let Some(state) = state {
        oauth_state::verify(&state_key(settings)?, integration, state, unix_now()).map_err(
            |e| {
                anyhow::anyhow!(
                    "refusing the redirect for integration `{integration}`: {e}; nothing was stored"
                )
            },
        )?;
    }
    let cipher = cipher(settings)?;
    let redirect = settings.hubspot.require_redirect_uri()?;
    oauth_app(settings)?;
    let store = store(settings).await?;
    let client = Client::builder(client_config(settings)?).build()?;
    let tokens = client
        .exchange_code(code.expose_secret().trim(), redirect)
        .await
        .map_err(|e| match e {
            HubSpotError::ReauthorizationRequired { status } => anyhow::anyhow!(
                "HubSpot refused the authorization code ({}): codes work once and expire quickly; open a new `leadsync connect oauth-url`",
                status.as_deref().unwrap_or("invalid_grant")
            ),
            other => anyhow::Error::new(other).context("exchanging the authorization code"),
        })?;
    let info = client
        .access_token_info(&tokens.access_token)
        .await
        .context("asking HubSpot which account the new token belongs to")?;
    if let Some(hub) = tokens.portal {
        anyhow::ensure!(
            hub == info.portal,
            "HubSpot gave two account ids for one token ({hub} and {})",
            info.portal
        );
    }
    let configured = settings.hubspot.app_id;
    check_app(configured, info.app_id)?;
    let result = save(
        &store,
        &cipher,
        Account {
            name: integration,
            portal: info.portal,
            app_id: info
                .app_id
                .or((configured != 0).then_some(AppId::new(configured))),
            mode: AuthMode::OAuth,
        },
        &Tokens {
            access: tokens.access_token,
            refresh: Some(tokens.refresh_token),
            expires_at: Some(tokens.expires_at),
        },
    )
    .await;
    store.close().await;
    result
}

/// Refuses a token of another app than `hubspot.app_id` (`configured`, 0 when
/// unset), and one HubSpot names no app for while `hubspot.app_id` is set:
/// that app's webhooks could not be checked to reach this account.
fn check_app(configured: u64, token_app: Option<AppId>) -> anyhow::Result<()> {
    if configured == 0 {
        return Ok(());
    }
    match token_app {
        Some(app) => anyhow::ensure!(
            app.get() == configured,
            "the token belongs to HubSpot app {app}, but hubspot.app_id is {configured}; nothing was stored"
        ),
        None => anyhow::bail!(
            "HubSpot did not say which app the token belongs to, so it cannot be checked against hubspot.app_id ({configured}); nothing was stored"
        ),
    }
    Ok(())
}

/// The first non-blank line of `input`, trimmed; `None` when there is none.
fn first_line(input: impl BufRead, what: &str) -> anyhow::Result<Option<SecretString>> {
    for line in input.lines() {
        let line = SecretString::from(
            line.with_context(|| format!("reading {what} from standard input"))?,
        );
        let value = line.expose_secret().trim();
        if !value.is_empty() {
            return Ok(Some(SecretString::from(value.to_owned())));
        }
    }
    Ok(None)
}

/// Reads a private-app token: the first non-blank line of `input`.
///
/// # Errors
/// Nothing but blanks, or a read failure.
pub fn read_token(input: impl BufRead) -> anyhow::Result<SecretString> {
    first_line(input, "the token")?
        .context("no token on standard input: paste the private app's access token, or pipe it in")
}

/// What HubSpot's redirect handed back, as the operator pasted it.
#[derive(Debug)]
pub struct Redirect {
    /// The authorization code (a credential until used).
    pub code: SecretString,
    /// The `state` of the redirect URL; `None` when only the code was pasted.
    pub state: Option<String>,
}

/// Reads the first non-blank line of `input`: HubSpot's whole redirect URL
/// (`…?code=…&state=…`), or just the code.
///
/// # Errors
/// Nothing but blanks, a read failure, a redirect URL carrying HubSpot's
/// `error` (the install was refused) or lacking `code` or `state`.
pub fn read_redirect(input: impl BufRead) -> anyhow::Result<Redirect> {
    let line = first_line(input, "the redirect URL")?.context(
        "no redirect URL on standard input: paste the URL HubSpot sent the browser to, or pipe it in",
    )?;
    let text = line.expose_secret();
    if !(text.starts_with("https://") || text.starts_with("http://")) {
        return Ok(Redirect {
            code: line,
            state: None,
        });
    }
    let url = url::Url::parse(text).context("the pasted redirect URL does not parse")?;
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(error) = param("error") {
        anyhow::bail!(
            "HubSpot redirected with error `{error}`{}: the app was not installed; nothing was stored",
            param("error_description")
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
    }
    let code = param("code").context("the redirect URL carries no `code`")?;
    let state = param("state").context(
        "the redirect URL carries no `state`: it is not the answer to a `leadsync connect oauth-url`",
    )?;
    Ok(Redirect {
        code: SecretString::from(code),
        state: Some(state),
    })
}

/// Refuses a bare code (no state) unless `skip_state_check`; `true` when a
/// bare code is let through unchecked.
///
/// # Errors
/// A bare code without `skip_state_check`.
pub fn require_state(redirect: &Redirect, skip_state_check: bool) -> anyhow::Result<bool> {
    if redirect.state.is_some() {
        return Ok(false);
    }
    anyhow::ensure!(
        skip_state_check,
        "a bare code carries no state, so nothing shows that it answers an authorization URL of this installation: paste the whole redirect URL, or pass --skip-state-check to accept the code unchecked; nothing was stored"
    );
    Ok(true)
}

/// The key of OAuth states, derived from `hubspot.token_encryption_key`.
fn state_key(settings: &Settings) -> anyhow::Result<oauth_state::StateKey> {
    let key = settings.hubspot.require_token_encryption_key()?;
    oauth_state::StateKey::derive(key)
        .map_err(|e| ConfigError::invalid("hubspot.token_encryption_key", e.to_string()).into())
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `connect private-app`: asks HubSpot which account the token belongs to
/// (`GET /account-info/v3/details`), checks the token with one cheap read
/// (the first contact id of the account) and stores it encrypted. A token
/// HubSpot refuses stores nothing.
///
/// `portal`, when given, must be the account HubSpot names: a token of
/// another account is refused, since its webhooks would be dead-lettered as
/// an unknown portal and its writes would go to the other account. When
/// HubSpot refuses to name the account (any refusal but a 401), `portal` is
/// required and taken as given.
///
/// # Errors
/// A refused token, a token of another account than `portal`, a token
/// without contact read access, an account connected under another name or
/// through OAuth, missing configuration.
pub async fn private_app(
    settings: &Settings,
    integration: &str,
    portal: Option<PortalId>,
    token: SecretString,
) -> anyhow::Result<Connected> {
    check_name(integration)?;
    anyhow::ensure!(
        portal.is_none_or(|p| p.get() > 0),
        "--portal must be a HubSpot account id"
    );
    let cipher = cipher(settings)?;
    let client = Client::builder(client_config(settings)?).build()?;
    let portal = token_account(&client, &token, portal).await?;
    client.set_token_source(portal, TokenSource::PrivateApp(token.clone()));
    client
        .list_contacts(portal, None, 1, &["hs_object_id"])
        .await
        .map_err(|e| match e {
            HubSpotError::Unauthorized { .. } | HubSpotError::TokenExpired => refused_token(),
            HubSpotError::Permanent { status: 403, .. } => anyhow::anyhow!(
                "HubSpot accepted the token but refused to list contacts (403): give the private app the scopes crm.objects.contacts.read and .write, crm.schemas.contacts.read and .write; nothing was stored"
            ),
            other => anyhow::Error::new(other)
                .context("checking the private-app token with HubSpot; nothing was stored"),
        })?;
    let store = store(settings).await?;
    let result = save(
        &store,
        &cipher,
        Account {
            name: integration,
            portal,
            app_id: None,
            mode: AuthMode::PrivateApp,
        },
        &Tokens {
            access: token,
            refresh: None,
            expires_at: None,
        },
    )
    .await;
    store.close().await;
    result
}

fn refused_token() -> anyhow::Error {
    anyhow::anyhow!(
        "HubSpot refused the private-app token (401): check that it was copied whole and that the private app is still installed; nothing was stored"
    )
}

/// The account `token` belongs to, as HubSpot names it, checked against the
/// operator's `expected` one.
async fn token_account(
    client: &Client,
    token: &SecretString,
    expected: Option<PortalId>,
) -> anyhow::Result<PortalId> {
    match client.account_details(token).await {
        Ok(details) => {
            if let Some(expected) = expected {
                anyhow::ensure!(
                    expected == details.portal,
                    "the token belongs to HubSpot account {}, not to --portal {expected}; nothing was stored",
                    details.portal
                );
            }
            Ok(details.portal)
        }
        Err(HubSpotError::Unauthorized { .. } | HubSpotError::TokenExpired) => Err(refused_token()),
        // Any other refusal of this one call (a 403 for a token without
        // access to it, a 400 or 404 should HubSpot retire the endpoint)
        // leaves the operator's word; without it there is no account.
        Err(
            e @ (HubSpotError::Permanent { .. }
            | HubSpotError::NotFound
            | HubSpotError::Validation { .. }),
        ) => match expected {
            Some(portal) => {
                eprintln!(
                    "warning: HubSpot did not name the token's account ({}); connecting --portal {portal} as given",
                    e.code()
                );
                Ok(portal)
            }
            None => Err(anyhow::anyhow!(
                "HubSpot would not say which account the token belongs to ({}): pass --portal with the account id; nothing was stored",
                e.code()
            )),
        },
        Err(other) => Err(anyhow::Error::new(other)
            .context("asking HubSpot which account the token belongs to; nothing was stored")),
    }
}

/// Who is being connected.
struct Account<'a> {
    name: &'a str,
    portal: PortalId,
    app_id: Option<AppId>,
    mode: AuthMode,
}

/// Creates the integration with its tokens in one transaction, or renews the
/// tokens of the account's integration.
async fn save(
    store: &Store,
    cipher: &TokenCipher,
    account: Account<'_>,
    tokens: &Tokens,
) -> anyhow::Result<Connected> {
    let pool = store.pool();
    let Account {
        name,
        portal,
        app_id,
        mode,
    } = account;
    if let Some(existing) = integrations::by_portal(pool, portal).await? {
        anyhow::ensure!(
            existing.name == name,
            "HubSpot account {portal} is already connected as integration `{}`; to renew its credentials, connect again with --integration {}",
            existing.name,
            existing.name
        );
        anyhow::ensure!(
            existing.auth_mode == mode,
            "integration `{name}` is connected with {}; it cannot switch to {} in place",
            mode_label(existing.auth_mode),
            mode_label(mode)
        );
        integrations::store_tokens(pool, existing.id, cipher, tokens).await?;
        let integration = integrations::get(pool, existing.id)
            .await?
            .context("the integration disappeared while its tokens were renewed")?;
        return Ok(Connected {
            integration,
            outcome: ConnectOutcome::Renewed,
        });
    }
    if let Some(other) = integrations::by_name(pool, name).await? {
        anyhow::bail!(
            "integration `{name}` is already connected to HubSpot account {}; choose another name",
            other.portal_id
        );
    }
    let mut tx = store.begin().await?;
    let integration = integrations::create(
        &mut *tx,
        &NewIntegration {
            name: name.to_owned(),
            portal_id: portal,
            app_id,
            auth_mode: mode,
            settings: IntegrationSettings::default(),
        },
    )
    .await
    .with_context(|| format!("creating integration `{name}`"))?;
    integrations::store_tokens(&mut *tx, integration.id, cipher, tokens).await?;
    tx.commit()
        .await
        .context("committing the new integration")?;
    // Read back after the commit: the tokens changed `updated_at`.
    let integration = integrations::get(pool, integration.id)
        .await?
        .context("the new integration is missing")?;
    Ok(Connected {
        integration,
        outcome: ConnectOutcome::Created,
    })
}

fn mode_label(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::OAuth => "OAuth",
        AuthMode::PrivateApp => "a private-app token",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_tables_rule() {
        assert!(check_name("acme").is_ok());
        assert!(check_name("acme-eu_2").is_ok());
        assert!(check_name("0acme").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-acme").is_err());
        assert!(check_name("Acme").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn the_token_is_the_first_non_blank_line() {
        let token = read_token("\n  pat-na1-abc  \nmore\n".as_bytes()).expect("a token");
        assert_eq!(token.expose_secret(), "pat-na1-abc");
        assert!(read_token(" \n\n".as_bytes()).is_err());
    }

    #[test]
    fn the_redirect_is_the_first_non_blank_line() {
        let bare = read_redirect("\n  na1-6f2a-code \nmore\n".as_bytes()).expect("a code");
        assert_eq!(bare.code.expose_secret(), "na1-6f2a-code");
        let message = read_redirect("".as_bytes())
            .expect_err("nothing pasted")
            .to_string();
        assert!(message.contains("no redirect URL"), "{message}");
    }

    #[test]
    fn a_token_must_name_the_configured_app() {
        let configured = 1_160_452;
        assert!(check_app(configured, Some(AppId::new(configured))).is_ok());
        let other = check_app(configured, Some(AppId::new(7)))
            .expect_err("another app")
            .to_string();
        assert!(other.contains("hubspot.app_id is 1160452"), "{other}");
        let unnamed = check_app(configured, None)
            .expect_err("no app named while one is configured")
            .to_string();
        assert!(unnamed.contains("did not say which app"), "{unnamed}");
        // Without hubspot.app_id there is nothing to compare with.
        assert!(check_app(0, Some(AppId::new(7))).is_ok());
        assert!(check_app(0, None).is_ok());
    }
}
