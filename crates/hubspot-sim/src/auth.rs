//! Who may call: OAuth access/refresh tokens, authorization codes, private-app
//! tokens. Every token belongs to exactly one portal.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use actix_web::http::StatusCode;
use serde::Serialize;
use serde_json::json;

use crate::error::ApiError;
use crate::ids::Ids;

/// Scopes granted to the public app's tokens.
pub(crate) const SCOPES: &[&str] = &[
    "oauth",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.schemas.contacts.read",
    "crm.schemas.contacts.write",
];

/// The credentials one access token stands for.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) portal_id: u64,
    pub(crate) app_id: u64,
    pub(crate) user_id: u64,
    pub(crate) kind: GrantKind,
}

/// OAuth tokens expire; private-app tokens do not.
#[derive(Debug, Clone)]
pub(crate) enum GrantKind {
    OAuth { expires_at_ms: i64 },
    PrivateApp,
}

/// A caller that passed authentication.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub(crate) portal_id: u64,
    /// The app whose id is the `sourceId` of this caller's writes.
    pub(crate) app_id: u64,
    pub(crate) private_app: bool,
}

#[derive(Debug, Clone)]
struct RefreshGrant {
    portal_id: u64,
    user_id: u64,
}

#[derive(Debug, Clone)]
struct CodeGrant {
    portal_id: u64,
    user_id: u64,
    redirect_uri: Option<String>,
}

/// The body of a successful `POST /oauth/v1/token` (SPEC `AccessTokenResponse`).
#[derive(Debug, Serialize)]
pub(crate) struct TokenResponse {
    token_type: &'static str,
    pub(crate) refresh_token: String,
    pub(crate) access_token: String,
    expires_in: u64,
    token_use: &'static str,
    pub(crate) hub_id: u64,
    user_id: u64,
    scopes: &'static [&'static str],
}

/// Parameters of the token endpoint (form-encoded).
#[derive(Debug, Default)]
pub(crate) struct TokenForm {
    pub(crate) grant_type: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) redirect_uri: Option<String>,
    pub(crate) refresh_token: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
}

impl TokenForm {
    pub(crate) fn parse(body: &[u8]) -> Self {
        let mut form = Self::default();
        for (k, v) in url::form_urlencoded::parse(body) {
            let v = Some(v.into_owned());
            match k.as_ref() {
                "grant_type" => form.grant_type = v,
                "code" => form.code = v,
                "redirect_uri" => form.redirect_uri = v,
                "refresh_token" => form.refresh_token = v,
                "client_id" => form.client_id = v,
                "client_secret" => form.client_secret = v,
                _ => {}
            }
        }
        form
    }
}

/// The OAuth token endpoint's error body (docs/hubspot-sim.md, "OAuth"): the older
/// `status`/`message` pair plus the newer `error`/`error_description`, so a
/// client that reads either shape works.
fn oauth_error(status: &str, error: &str, message: &str, request_id: &str) -> ApiError {
    ApiError::raw(
        StatusCode::BAD_REQUEST,
        json!({
            "status": status,
            "message": message,
            "error": error,
            "error_description": message,
            "requestId": request_id,
        }),
    )
}

/// All tokens of the simulator.
#[derive(Debug, Default)]
pub(crate) struct AuthStore {
    tokens: RwLock<HashMap<String, Grant>>,
    refresh: Mutex<HashMap<String, RefreshGrant>>,
    codes: Mutex<HashMap<String, CodeGrant>>,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthError {
    Missing,
    Unknown,
    Expired { seconds_ago: i64 },
}

impl AuthError {
    pub(crate) fn into_api(self) -> ApiError {
        match self {
            // hubspot-api-nodejs#432, hubspot-api-php#363.
            Self::Missing | Self::Unknown => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            ),
            // Quoted by Segment's docs from a real response; see docs/hubspot-sim.md, "OAuth".
            Self::Expired { seconds_ago } => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "EXPIRED_AUTHENTICATION",
                format!(
                    "The OAuth token used to make this call expired {seconds_ago} second(s) ago."
                ),
            ),
        }
    }
}

impl AuthStore {
    pub(crate) fn clear(&self) {
        write(&self.tokens).clear();
        lock(&self.refresh).clear();
        lock(&self.codes).clear();
    }

    pub(crate) fn add_private_app(&self, token: &str, portal_id: u64, app_id: u64) {
        write(&self.tokens).insert(
            token.to_owned(),
            Grant {
                portal_id,
                app_id,
                user_id: 0,
                kind: GrantKind::PrivateApp,
            },
        );
    }

    /// Checks `Authorization: Bearer …`.
    pub(crate) fn authenticate(
        &self,
        header: Option<&str>,
        now_ms: i64,
    ) -> Result<Caller, AuthError> {
        let token = header
            .and_then(|h| {
                let (scheme, rest) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        self.check_token(token, now_ms)
    }

    pub(crate) fn check_token(&self, token: &str, now_ms: i64) -> Result<Caller, AuthError> {
        let tokens = read(&self.tokens);
        let grant = tokens.get(token).ok_or(AuthError::Unknown)?;
        if let GrantKind::OAuth { expires_at_ms } = grant.kind
            && now_ms >= expires_at_ms
        {
            return Err(AuthError::Expired {
                seconds_ago: (now_ms - expires_at_ms) / 1000,
            });
        }
        Ok(Caller {
            portal_id: grant.portal_id,
            app_id: grant.app_id,
            private_app: matches!(grant.kind, GrantKind::PrivateApp),
        })
    }

    /// Mints an authorization code, as if a user of `portal_id` clicked "connect".
    pub(crate) fn authorize(
        &self,
        ids: &Ids,
        portal_id: u64,
        user_id: u64,
        redirect_uri: Option<String>,
    ) -> String {
        let code = ids.uuid(crate::ids::Stream::Token);
        lock(&self.codes).insert(
            code.clone(),
            CodeGrant {
                portal_id,
                user_id,
                redirect_uri,
            },
        );
        code
    }

    /// Expires one access token, or all when `token` is `None`; returns how many.
    pub(crate) fn expire(&self, token: Option<&str>, now_ms: i64) -> usize {
        let mut tokens = write(&self.tokens);
        let mut n = 0;
        for (t, grant) in tokens.iter_mut() {
            if token.is_some_and(|x| x != t) {
                continue;
            }
            if let GrantKind::OAuth { expires_at_ms } = &mut grant.kind {
                *expires_at_ms = (*expires_at_ms).min(now_ms);
                n += 1;
            }
        }
        n
    }

    /// `POST /oauth/v1/token`.
    pub(crate) fn exchange(
        &self,
        form: &TokenForm,
        app: &AppCredentials<'_>,
        ids: &Ids,
        now_ms: i64,
    ) -> Result<TokenResponse, ApiError> {
        let request_id = || ids.uuid(crate::ids::Stream::Correlation);
        if form.client_id.as_deref() != Some(app.client_id) {
            return Err(oauth_error(
                "BAD_CLIENT_ID",
                "invalid_client",
                "missing or unknown client id",
                &request_id(),
            ));
        }
        if form.client_secret.as_deref() != Some(app.client_secret) {
            return Err(oauth_error(
                "BAD_CLIENT_SECRET",
                "invalid_client",
                "missing or invalid client secret",
                &request_id(),
            ));
        }
        let (portal_id, user_id, refresh_token) = match form.grant_type.as_deref() {
            Some("authorization_code") => {
                let code = form.code.as_deref().unwrap_or_default();
                // Codes are single-use: remove it whatever happens next.
                let grant = lock(&self.codes).remove(code).ok_or_else(|| {
                    oauth_error(
                        "BAD_AUTH_CODE",
                        "invalid_grant",
                        "missing or unknown auth code",
                        &request_id(),
                    )
                })?;
                if grant.redirect_uri.is_some() && grant.redirect_uri != form.redirect_uri {
                    return Err(oauth_error(
                        "BAD_REDIRECT_URI",
                        "invalid_grant",
                        "redirect_uri does not match the one used to authorize",
                        &request_id(),
                    ));
                }
                let refresh = ids.uuid(crate::ids::Stream::Token);
                lock(&self.refresh).insert(
                    refresh.clone(),
                    RefreshGrant {
                        portal_id: grant.portal_id,
                        user_id: grant.user_id,
                    },
                );
                (grant.portal_id, grant.user_id, refresh)
            }
            Some("refresh_token") => {
                let token = form.refresh_token.as_deref().unwrap_or_default();
                let grant = lock(&self.refresh).get(token).cloned().ok_or_else(|| {
                    oauth_error(
                        "BAD_REFRESH_TOKEN",
                        "invalid_grant",
                        "missing or unknown refresh token",
                        &request_id(),
                    )
                })?;
                // HubSpot returns the same refresh token (docs/hubspot-sim.md, "OAuth").
                (grant.portal_id, grant.user_id, token.to_owned())
            }
            other => {
                return Err(oauth_error(
                    "BAD_GRANT_TYPE",
                    "unsupported_grant_type",
                    &format!("unsupported grant_type {}", other.unwrap_or("(missing)")),
                    &request_id(),
                ));
            }
        };
        let access_token = ids.token("CJ", 150);
        write(&self.tokens).insert(
            access_token.clone(),
            Grant {
                portal_id,
                app_id: app.app_id,
                user_id,
                kind: GrantKind::OAuth {
                    expires_at_ms: now_ms + i64::try_from(app.ttl_secs * 1000).unwrap_or(i64::MAX),
                },
            },
        );
        Ok(TokenResponse {
            token_type: "bearer",
            refresh_token,
            access_token,
            expires_in: app.ttl_secs,
            token_use: "access_token",
            hub_id: portal_id,
            user_id,
            scopes: SCOPES,
        })
    }

    /// `GET /oauth/v1/access-tokens/{token}` (docs/hubspot-sim.md, "OAuth").
    pub(crate) fn access_token_info(&self, token: &str, now_ms: i64) -> Option<serde_json::Value> {
        let tokens = read(&self.tokens);
        let grant = tokens.get(token)?;
        let GrantKind::OAuth { expires_at_ms } = grant.kind else {
            return None;
        };
        let remaining = (expires_at_ms - now_ms).max(0) / 1000;
        if remaining == 0 {
            return None;
        }
        Some(json!({
            "token": token,
            "user": format!("user{}@sim.hubspot.test", grant.user_id),
            "hub_domain": format!("portal-{}.sim.hubspot.test", grant.portal_id),
            "scopes": SCOPES,
            "hub_id": grant.portal_id,
            "app_id": grant.app_id,
            "expires_in": remaining,
            "user_id": grant.user_id,
            "token_type": "access",
        }))
    }

    /// `GET /oauth/v1/refresh-tokens/{token}`.
    pub(crate) fn refresh_token_info(
        &self,
        token: &str,
        client_id: &str,
    ) -> Option<serde_json::Value> {
        let grants = lock(&self.refresh);
        let grant = grants.get(token)?;
        Some(json!({
            "token": token,
            "user": format!("user{}@sim.hubspot.test", grant.user_id),
            "hub_domain": format!("portal-{}.sim.hubspot.test", grant.portal_id),
            "scopes": SCOPES,
            "hub_id": grant.portal_id,
            "client_id": client_id,
            "user_id": grant.user_id,
            "token_type": "refresh",
        }))
    }

    /// `DELETE /oauth/v1/refresh-tokens/{token}`: access tokens stay valid.
    pub(crate) fn revoke_refresh(&self, token: &str) -> bool {
        lock(&self.refresh).remove(token).is_some()
    }
}

/// What the token endpoint checks a request against.
#[derive(Debug)]
pub(crate) struct AppCredentials<'a> {
    pub(crate) app_id: u64,
    pub(crate) client_id: &'a str,
    pub(crate) client_secret: &'a str,
    pub(crate) ttl_secs: u64,
}

// A panic while a lock is held leaves plain data behind; keep serving it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppCredentials<'static> {
        AppCredentials {
            app_id: 9,
            client_id: "cid",
            client_secret: "secret",
            ttl_secs: 60,
        }
    }

    fn form(pairs: &str) -> TokenForm {
        TokenForm::parse(pairs.as_bytes())
    }

    #[test]
    fn code_exchange_refresh_and_expiry() {
        let (store, ids) = (AuthStore::default(), Ids::new(1));
        let code = store.authorize(&ids, 77, 5, None);
        let t = store
            .exchange(
                &form(&format!(
                    "grant_type=authorization_code&code={code}&client_id=cid&client_secret=secret"
                )),
                &app(),
                &ids,
                0,
            )
            .expect("token");
        assert_eq!(t.hub_id, 77);
        assert_eq!(
            store
                .check_token(&t.access_token, 59_999)
                .expect("valid")
                .portal_id,
            77
        );
        assert_eq!(
            store.check_token(&t.access_token, 67_000).unwrap_err(),
            AuthError::Expired { seconds_ago: 7 }
        );
        // The code was used up.
        let again = store.exchange(
            &form(&format!(
                "grant_type=authorization_code&code={code}&client_id=cid&client_secret=secret"
            )),
            &app(),
            &ids,
            0,
        );
        assert_eq!(again.unwrap_err().body["status"], "BAD_AUTH_CODE");
        let r = store
            .exchange(
                &form(&format!(
                    "grant_type=refresh_token&refresh_token={}&client_id=cid&client_secret=secret",
                    t.refresh_token
                )),
                &app(),
                &ids,
                70_000,
            )
            .expect("refreshed");
        assert_eq!(r.refresh_token, t.refresh_token);
        assert!(store.check_token(&r.access_token, 70_001).is_ok());
    }

    #[test]
    fn bad_credentials_and_tokens_are_refused() {
        let (store, ids) = (AuthStore::default(), Ids::new(1));
        let bad = store.exchange(
            &form("grant_type=refresh_token&refresh_token=nope&client_id=cid&client_secret=secret"),
            &app(),
            &ids,
            0,
        );
        let err = bad.unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.body["status"], "BAD_REFRESH_TOKEN");
        let bad = store.exchange(
            &form("grant_type=refresh_token&refresh_token=x&client_id=cid&client_secret=wrong"),
            &app(),
            &ids,
            0,
        );
        assert_eq!(bad.unwrap_err().body["status"], "BAD_CLIENT_SECRET");
        assert_eq!(store.authenticate(None, 0).unwrap_err(), AuthError::Missing);
        assert_eq!(
            store.authenticate(Some("Bearer zzz"), 0).unwrap_err(),
            AuthError::Unknown
        );
        store.add_private_app("pat-1", 3, 44);
        let c = store
            .authenticate(Some("bearer pat-1"), i64::MAX)
            .expect("private apps never expire");
        assert!(c.private_app);
        assert_eq!(c.app_id, 44);
    }
}
