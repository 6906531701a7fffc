//! The control API over HTTP, for processes that did not start the simulator
//! (benchmarks, the demo).

use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api_faults::ApiFault;
use crate::config::{DeliveryConfig, FaultConfig, RateLimitConfig};
use crate::error::ControlError;
use crate::model::{
    AuthorizationCode, AuthorizeRequest, ContactRecord, CreatePortal, ImportRequest, ImportResult,
    MergeRequest, PrivateAppToken, SimInfo, UserEdit,
};
use crate::stats::SimStats;

/// A client of a running simulator's `/_sim/` routes.
#[derive(Debug, Clone)]
pub struct ControlClient {
    http: reqwest::Client,
    base: String,
}

impl ControlClient {
    /// A client for the simulator at `base_url` (e.g. `http://127.0.0.1:8090`).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base_url.into().trim_end_matches('/').to_owned(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<reqwest::Response, ControlError> {
        let url = format!("{}/_sim{path}", self.base);
        let mut req = self.http.request(method, url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            Err(ControlError::Status { status, body })
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ControlError> {
        Ok(self.send(method, path, body).await?.json().await?)
    }

    async fn call_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(), ControlError> {
        self.send(method, path, body).await.map(|_| ())
    }

    fn to_json(value: &impl Serialize) -> Result<Value, ControlError> {
        serde_json::to_value(value).map_err(|e| ControlError::Invalid(e.to_string()))
    }

    /// The app and portals.
    pub async fn info(&self) -> Result<SimInfo, ControlError> {
        self.call(Method::GET, "/info", None).await
    }

    /// Existing portal ids.
    pub async fn portals(&self) -> Result<Vec<u64>, ControlError> {
        self.call(Method::GET, "/portals", None).await
    }

    /// See [`crate::Control::create_portal`].
    pub async fn create_portal(&self, req: &CreatePortal) -> Result<(), ControlError> {
        self.call_empty(Method::POST, "/portals", Some(Self::to_json(req)?))
            .await
    }

    /// See [`crate::Control::add_private_app_token`].
    pub async fn add_private_app_token(
        &self,
        portal_id: u64,
        token: Option<&str>,
    ) -> Result<PrivateAppToken, ControlError> {
        self.call(
            Method::POST,
            &format!("/portals/{portal_id}/private-app-tokens"),
            Some(json!({ "token": token })),
        )
        .await
    }

    /// See [`crate::Control::authorize`].
    pub async fn authorize(
        &self,
        req: &AuthorizeRequest,
    ) -> Result<AuthorizationCode, ControlError> {
        self.call(Method::POST, "/oauth/authorize", Some(Self::to_json(req)?))
            .await
    }

    /// See [`crate::Control::expire_access_tokens`].
    pub async fn expire_access_tokens(&self, token: Option<&str>) -> Result<usize, ControlError> {
        let v: Value = self
            .call(
                Method::POST,
                "/oauth/expire",
                Some(json!({ "accessToken": token })),
            )
            .await?;
        Ok(v["expired"].as_u64().unwrap_or_default() as usize)
    }

    /// See [`crate::Control::create_contact`].
    pub async fn create_contact(
        &self,
        portal_id: u64,
        edit: &UserEdit,
    ) -> Result<ContactRecord, ControlError> {
        self.call(
            Method::POST,
            &format!("/portals/{portal_id}/contacts"),
            Some(Self::to_json(edit)?),
        )
        .await
    }

    /// See [`crate::Control::update_contact`].
    pub async fn update_contact(
        &self,
        portal_id: u64,
        contact_id: u64,
        edit: &UserEdit,
    ) -> Result<ContactRecord, ControlError> {
        self.call(
            Method::PATCH,
            &format!("/portals/{portal_id}/contacts/{contact_id}"),
            Some(Self::to_json(edit)?),
        )
        .await
    }

    /// See [`crate::Control::archive_contact`].
    pub async fn archive_contact(
        &self,
        portal_id: u64,
        contact_id: u64,
        user_id: Option<u64>,
    ) -> Result<(), ControlError> {
        let query = user_id.map(|u| format!("?userId={u}")).unwrap_or_default();
        self.call_empty(
            Method::DELETE,
            &format!("/portals/{portal_id}/contacts/{contact_id}{query}"),
            None,
        )
        .await
    }

    /// See [`crate::Control::restore_contact`].
    pub async fn restore_contact(
        &self,
        portal_id: u64,
        contact_id: u64,
        user_id: Option<u64>,
    ) -> Result<ContactRecord, ControlError> {
        self.call(
            Method::POST,
            &format!("/portals/{portal_id}/contacts/{contact_id}/restore"),
            Some(json!({ "userId": user_id })),
        )
        .await
    }

    /// See [`crate::Control::merge_contacts`].
    pub async fn merge_contacts(
        &self,
        portal_id: u64,
        req: &MergeRequest,
    ) -> Result<ContactRecord, ControlError> {
        self.call(
            Method::POST,
            &format!("/portals/{portal_id}/merge"),
            Some(Self::to_json(req)?),
        )
        .await
    }

    /// See [`crate::Control::gdpr_delete_contact`].
    pub async fn gdpr_delete_contact(
        &self,
        portal_id: u64,
        contact_id: u64,
        user_id: Option<u64>,
    ) -> Result<(), ControlError> {
        self.call_empty(
            Method::POST,
            &format!("/portals/{portal_id}/contacts/{contact_id}/gdpr-delete"),
            Some(json!({ "userId": user_id })),
        )
        .await
    }

    /// See [`crate::Control::import_contacts`].
    pub async fn import_contacts(
        &self,
        portal_id: u64,
        req: &ImportRequest,
    ) -> Result<ImportResult, ControlError> {
        self.call(
            Method::POST,
            &format!("/portals/{portal_id}/imports"),
            Some(Self::to_json(req)?),
        )
        .await
    }

    /// See [`crate::Control::contacts`].
    pub async fn contacts(&self, portal_id: u64) -> Result<Vec<ContactRecord>, ControlError> {
        self.call(Method::GET, &format!("/portals/{portal_id}/contacts"), None)
            .await
    }

    /// See [`crate::Control::contact`].
    pub async fn contact(
        &self,
        portal_id: u64,
        contact_id: u64,
    ) -> Result<ContactRecord, ControlError> {
        self.call(
            Method::GET,
            &format!("/portals/{portal_id}/contacts/{contact_id}"),
            None,
        )
        .await
    }

    /// See [`crate::Control::set_rate_limit`].
    pub async fn set_rate_limit(
        &self,
        portal_id: Option<u64>,
        cfg: &RateLimitConfig,
    ) -> Result<(), ControlError> {
        let path = match portal_id {
            Some(p) => format!("/portals/{p}/rate-limit"),
            None => "/rate-limit".to_owned(),
        };
        self.call_empty(Method::PUT, &path, Some(Self::to_json(cfg)?))
            .await
    }

    /// See [`crate::Control::rate_limit`].
    pub async fn rate_limit(&self, portal_id: u64) -> Result<RateLimitConfig, ControlError> {
        self.call(
            Method::GET,
            &format!("/portals/{portal_id}/rate-limit"),
            None,
        )
        .await
    }

    /// See [`crate::Control::set_faults`].
    pub async fn set_faults(&self, faults: &FaultConfig) -> Result<(), ControlError> {
        self.call_empty(Method::PUT, "/faults", Some(Self::to_json(faults)?))
            .await
    }

    /// See [`crate::Control::faults`].
    pub async fn faults(&self) -> Result<FaultConfig, ControlError> {
        self.call(Method::GET, "/faults", None).await
    }

    /// See [`crate::Control::inject_api_fault`].
    pub async fn inject_api_fault(&self, fault: &ApiFault) -> Result<(), ControlError> {
        self.call_empty(Method::POST, "/api-faults", Some(Self::to_json(fault)?))
            .await
    }

    /// See [`crate::Control::api_faults`].
    pub async fn api_faults(&self) -> Result<Vec<ApiFault>, ControlError> {
        self.call(Method::GET, "/api-faults", None).await
    }

    /// See [`crate::Control::clear_api_faults`].
    pub async fn clear_api_faults(&self) -> Result<(), ControlError> {
        self.call_empty(Method::DELETE, "/api-faults", None).await
    }

    /// See [`crate::Control::set_delivery_config`].
    pub async fn set_delivery_config(&self, cfg: &DeliveryConfig) -> Result<(), ControlError> {
        self.call_empty(Method::PUT, "/delivery", Some(Self::to_json(cfg)?))
            .await
    }

    /// See [`crate::Control::delivery_config`].
    pub async fn delivery_config(&self) -> Result<DeliveryConfig, ControlError> {
        self.call(Method::GET, "/delivery", None).await
    }

    /// See [`crate::Control::pause_delivery`].
    pub async fn pause_delivery(&self) -> Result<(), ControlError> {
        self.call_empty(Method::POST, "/delivery/pause", None).await
    }

    /// See [`crate::Control::resume_delivery`].
    pub async fn resume_delivery(&self) -> Result<(), ControlError> {
        self.call_empty(Method::POST, "/delivery/resume", None)
            .await
    }

    /// See [`crate::Control::retry_now`].
    pub async fn retry_now(&self) -> Result<(), ControlError> {
        self.call_empty(Method::POST, "/delivery/retry-now", None)
            .await
    }

    /// See [`crate::Control::stats`].
    pub async fn stats(&self) -> Result<SimStats, ControlError> {
        self.call(Method::GET, "/stats", None).await
    }

    /// See [`crate::Control::reset_stats`].
    pub async fn reset_stats(&self) -> Result<(), ControlError> {
        self.call_empty(Method::POST, "/stats/reset", None).await
    }

    /// See [`crate::Control::reset`].
    pub async fn reset(&self) -> Result<(), ControlError> {
        self.call_empty(Method::POST, "/reset", None).await
    }

    /// See [`crate::Control::wait_for_delivery_idle`]; the server waits.
    pub async fn wait_for_delivery_idle(&self, timeout: Duration) -> Result<bool, ControlError> {
        let ms = timeout.as_millis().min(600_000);
        let v: Value = self
            .call(Method::GET, &format!("/delivery/idle?timeoutMs={ms}"), None)
            .await?;
        Ok(v["idle"].as_bool().unwrap_or(false))
    }
}
