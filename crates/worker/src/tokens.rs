//! HubSpot credentials of the connected accounts.
//!
//! [`PgTokenStore`] keeps OAuth tokens in the `integrations` table, encrypted
//! with the deployment's [`TokenCipher`]; the HubSpot client's
//! [`leadsync_hubspot::OAuthTokens`] reads and refreshes through it.
//! [`Credentials`] registers every integration's credentials on the client
//! (a private-app token, or OAuth) and reloads them periodically and whenever
//! an event names a portal the client does not know, so an account connected
//! while the worker runs works without a restart.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use leadsync_domain::PortalId;
use leadsync_hubspot::{Client, OAuthTokens, TokenSet, TokenSource, TokenStore, TokenStoreError};
use leadsync_store::integrations::{self, AuthMode, Tokens};
use leadsync_store::{Store, StoreError, TokenCipher};
use tokio_util::sync::CancellationToken;

/// For this long after a reload, a portal it found without a usable token
/// does not trigger another one.
const MIN_RELOAD_GAP: Duration = Duration::from_secs(2);

/// OAuth tokens in Postgres, encrypted at rest.
#[derive(Clone)]
pub struct PgTokenStore {
    store: Store,
    cipher: TokenCipher,
}

impl std::fmt::Debug for PgTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTokenStore").finish_non_exhaustive()
    }
}

/// Why a token could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum TokenStoreFailure {
    /// The database failed, or the stored tokens do not decrypt.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Tokens were refreshed for a portal no integration is connected to
    /// (it was disconnected meanwhile).
    #[error("no integration is connected to portal {0}")]
    UnknownPortal(PortalId),
}

impl PgTokenStore {
    /// A store over `store`'s integrations, sealing tokens with `cipher`.
    pub fn new(store: Store, cipher: TokenCipher) -> Self {
        Self { store, cipher }
    }

    async fn load_tokens(&self, portal: PortalId) -> Result<Option<TokenSet>, TokenStoreFailure> {
        let pool = self.store.pool();
        let Some(integration) = integrations::by_portal(pool, portal).await? else {
            return Ok(None);
        };
        if integration.auth_mode != AuthMode::OAuth {
            return Ok(None);
        }
        let Some(tokens) = integrations::tokens(pool, integration.id, &self.cipher).await? else {
            return Ok(None);
        };
        let Some(refresh_token) = tokens.refresh else {
            return Ok(None);
        };
        Ok(Some(TokenSet {
            access_token: tokens.access,
            refresh_token,
            // Unknown expiry: treat the access token as expired, so the
            // first call refreshes it instead of failing.
            expires_at: tokens.expires_at.unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            portal: Some(portal),
        }))
    }

    async fn save_tokens(
        &self,
        portal: PortalId,
        tokens: TokenSet,
    ) -> Result<(), TokenStoreFailure> {
        let pool = self.store.pool();
        let integration = integrations::by_portal(pool, portal)
            .await?
            .ok_or(TokenStoreFailure::UnknownPortal(portal))?;
        integrations::store_tokens(
            pool,
            integration.id,
            &self.cipher,
            &Tokens {
                access: tokens.access_token,
                refresh: Some(tokens.refresh_token),
                expires_at: Some(tokens.expires_at),
            },
        )
        .await?;
        Ok(())
    }
}

impl TokenStore for PgTokenStore {
    fn load(&self, portal: PortalId) -> BoxFuture<'_, Result<Option<TokenSet>, TokenStoreError>> {
        async move {
            self.load_tokens(portal)
                .await
                .map_err(TokenStoreError::from)
        }
        .boxed()
    }

    fn save(
        &self,
        portal: PortalId,
        tokens: TokenSet,
    ) -> BoxFuture<'_, Result<(), TokenStoreError>> {
        async move {
            self.save_tokens(portal, tokens)
                .await
                .map_err(TokenStoreError::from)
        }
        .boxed()
    }
}

/// What a reload registered, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialsReport {
    /// Portals with a private-app token.
    pub private_app: usize,
    /// Portals connected through OAuth.
    pub oauth: usize,
    /// Integrations without usable credentials (no token stored, or one that
    /// does not decrypt).
    pub unusable: usize,
    /// Portals whose credentials were removed (their integration is gone).
    pub removed: usize,
}

/// Why credentials could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The integrations could not be read.
    #[error("reading the integrations failed: {0}")]
    Store(#[from] StoreError),
    /// Not one stored token decrypts: the key is not the one they were
    /// sealed with.
    #[error(
        "configuration key `hubspot.token_encryption_key`: none of the {0} stored tokens decrypts with it"
    )]
    WrongKey(usize),
}

/// The credentials registered on a HubSpot [`Client`], kept in step with the
/// integrations table.
pub struct Credentials {
    store: Store,
    cipher: TokenCipher,
    client: Client,
    oauth: Option<OAuthTokens>,
    state: Mutex<Registered>,
    reload: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Registered {
    /// Portal → when its integration last changed (a reconnect changes it).
    portals: HashMap<PortalId, DateTime<Utc>>,
    /// Portals whose integration had no usable token at the last reload.
    unusable: HashSet<PortalId>,
    last_reload: Option<Instant>,
}

impl Credentials {
    /// Credentials of `client`, read from `store` with `cipher`. `oauth` is
    /// the client's OAuth token cache, invalidated when an account is
    /// connected again.
    pub fn new(
        store: Store,
        cipher: TokenCipher,
        client: Client,
        oauth: Option<OAuthTokens>,
    ) -> Self {
        Self {
            store,
            cipher,
            client,
            oauth,
            state: Mutex::new(Registered::default()),
            reload: tokio::sync::Mutex::new(()),
        }
    }

    fn registered(&self) -> std::sync::MutexGuard<'_, Registered> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `portal` has credentials on the client.
    pub fn is_registered(&self, portal: PortalId) -> bool {
        self.registered().portals.contains_key(&portal)
    }

    /// Loads every integration and registers its credentials on the client;
    /// portals whose integration is gone lose theirs.
    ///
    /// # Errors
    /// [`CredentialsError`] when the integrations cannot be read, or when no
    /// stored token decrypts (a wrong `hubspot.token_encryption_key`).
    pub async fn reload(&self) -> Result<CredentialsReport, CredentialsError> {
        let _one_at_a_time = self.reload.lock().await;
        let pool = self.store.pool();
        let all = integrations::list(pool).await?;
        let mut report = CredentialsReport::default();
        let mut seen: HashMap<PortalId, DateTime<Utc>> = HashMap::new();
        let mut unusable = HashSet::new();
        let mut undecryptable = 0;
        let mut with_tokens = 0;
        let previous = self.registered().portals.clone();
        for integration in all {
            let portal = integration.portal_id;
            match integration.auth_mode {
                AuthMode::PrivateApp => {
                    match integrations::tokens(pool, integration.id, &self.cipher).await {
                        Ok(Some(tokens)) => {
                            with_tokens += 1;
                            self.client
                                .set_token_source(portal, TokenSource::PrivateApp(tokens.access));
                            seen.insert(portal, integration.updated_at);
                            report.private_app += 1;
                        }
                        Ok(None) => {
                            tracing::warn!(
                                integration.id = %integration.id,
                                portal.id = %portal,
                                "Integration {} has no private-app token stored; its events cannot be read",
                                integration.id
                            );
                            self.client.remove_token_source(portal);
                            unusable.insert(portal);
                            report.unusable += 1;
                        }
                        Err(StoreError::Crypto(e)) => {
                            with_tokens += 1;
                            undecryptable += 1;
                            tracing::error!(
                                integration.id = %integration.id,
                                portal.id = %portal,
                                error = %e,
                                "The stored token of integration {} does not decrypt",
                                integration.id
                            );
                            self.client.remove_token_source(portal);
                            unusable.insert(portal);
                            report.unusable += 1;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                AuthMode::OAuth => {
                    self.client.set_token_source(portal, TokenSource::OAuth);
                    let changed = previous
                        .get(&portal)
                        .is_some_and(|at| *at != integration.updated_at);
                    if changed && let Some(oauth) = &self.oauth {
                        // Connected again (or refreshed elsewhere): forget the
                        // cached access token, the store has the truth.
                        if let Err(e) = oauth.invalidate(portal).await {
                            tracing::warn!(portal.id = %portal, error.code = e.code(), "Failed to invalidate the cached access token of portal {portal}");
                        }
                    }
                    seen.insert(portal, integration.updated_at);
                    report.oauth += 1;
                }
            }
        }
        if with_tokens > 0 && undecryptable == with_tokens {
            return Err(CredentialsError::WrongKey(with_tokens));
        }
        for portal in previous.keys().filter(|p| !seen.contains_key(p)) {
            self.client.remove_token_source(*portal);
            report.removed += 1;
        }
        let mut state = self.registered();
        state.portals = seen;
        state.unusable = unusable;
        state.last_reload = Some(Instant::now());
        Ok(report)
    }

    /// Reloads when one of `portals` has an integration but no credentials
    /// on the client yet (an account connected since the last reload).
    /// Portals without an integration cost one indexed query and no reload:
    /// their events are dead-lettered as `unknown_portal`.
    pub async fn ensure(&self, portals: impl IntoIterator<Item = PortalId>) {
        let unknown: Vec<PortalId> = {
            let state = self.registered();
            let recent = state
                .last_reload
                .is_some_and(|at| at.elapsed() < MIN_RELOAD_GAP);
            portals
                .into_iter()
                .filter(|p| !state.portals.contains_key(p))
                // Just found without usable tokens: the periodic reload
                // picks up a fix, not every batch.
                .filter(|p| !(recent && state.unusable.contains(p)))
                .collect()
        };
        let mut connected = 0;
        for portal in &unknown {
            match integrations::by_portal(self.store.pool(), *portal).await {
                Ok(Some(_)) => connected += 1,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(portal.id = %portal, error = %e, "Looking up the integration of portal {portal} failed");
                }
            }
        }
        if connected == 0 {
            return;
        }
        match self.reload().await {
            Ok(report) => tracing::info!(
                credentials.private_app = report.private_app,
                credentials.oauth = report.oauth,
                "Reloaded credentials: {connected} newly connected portal(s)"
            ),
            Err(e) => tracing::warn!(error = %e, "Reloading credentials failed"),
        }
    }

    /// Reloads every `every` until `shutdown`.
    pub async fn refresh_periodically(
        self: Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "Periodic reload of HubSpot credentials failed");
            }
        }
    }
}
