//! The control API: act as HubSpot users (edit, import, merge, restore,
//! GDPR-delete), tune limits and faults, steer delivery, and observe. The same
//! operations are served over HTTP under `/_sim/` (see [`ControlClient`]).

mod client;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use client::ControlClient;

use crate::api_faults::ApiFault;
use crate::auth::lock;
use crate::config::{DeliveryConfig, FaultConfig, PortalConfig, RateLimitConfig, private_app_id};
use crate::crm::contacts::Contact;
use crate::crm::{Change, CrmStore, Source, WriteError, iso, now_ms};
use crate::error::ControlError;
use crate::ids::Stream;
use crate::model::{
    AuthorizationCode, AuthorizeRequest, ContactRecord, CreatePortal, ImportRequest, ImportResult,
    MergeRequest, PrivateAppToken, PropertyVersion, SimInfo, UserEdit,
};
use crate::state::Sim;
use crate::stats::SimStats;

/// In-process access to the control API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Control {
    sim: Arc<Sim>,
}

/// Properties an import's extra edits cycle through.
const EDITABLE: &[&str] = &[
    "firstname",
    "lastname",
    "phone",
    "company",
    "jobtitle",
    "city",
    "state",
    "country",
    "website",
];
const FIRST_NAMES: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Barbara",
    "Ken",
    "Margaret",
    "Dennis",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Hedy",
    "John",
    "Katherine",
    "Donald",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie",
    "Allen", "Dijkstra", "Perlman", "Lee", "Lamarr", "McCarthy", "Johnson", "Knuth",
];
const COMPANIES: &[&str] = &[
    "Initech", "Globex", "Umbrella", "Hooli", "Vandelay", "Acme", "Stark", "Wayne",
];
const JOB_TITLES: &[&str] = &[
    "Engineer",
    "Analyst",
    "Director",
    "Founder",
    "Consultant",
    "Manager",
    "Designer",
];

/// The record of contact `id` as it is now; `reported` names it in the error.
fn current(store: &CrmStore, id: u64, reported: u64) -> Result<ContactRecord, ControlError> {
    store
        .get(id)
        .map(record)
        .ok_or(ControlError::UnknownContact(reported))
}

fn record(contact: &Contact) -> ContactRecord {
    ContactRecord {
        id: contact.id,
        properties: contact
            .props
            .iter()
            .filter_map(|(k, v)| v.first().map(|v| (k.clone(), v.value.clone())))
            .collect(),
        history: contact
            .props
            .iter()
            .map(|(k, vs)| {
                let versions = vs
                    .iter()
                    .map(|v| PropertyVersion {
                        value: v.value.clone(),
                        timestamp: iso(v.at),
                        source_type: v.source.kind.as_str().to_owned(),
                        source_id: v.source.source_id.clone(),
                        updated_by_user_id: v.source.user_id,
                    })
                    .collect();
                (k.clone(), versions)
            })
            .collect(),
        created_at: iso(contact.created_at),
        updated_at: iso(contact.updated_at),
        archived: contact.archived,
        archived_at: contact.archived_at.map(iso),
    }
}

fn control_error(err: WriteError, contact_id: u64) -> ControlError {
    match err {
        WriteError::Invalid(errors) => ControlError::Invalid(
            errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        WriteError::Conflict(id) => {
            ControlError::Conflict(format!("Contact already exists. Existing ID: {id}"))
        }
        WriteError::NotFound => ControlError::UnknownContact(contact_id),
        WriteError::Rejected(message) => ControlError::Invalid(message),
    }
}

impl Control {
    pub(crate) fn new(sim: Arc<Sim>) -> Self {
        Self { sim }
    }

    fn user(&self, user_id: Option<u64>) -> Arc<Source> {
        Source::user(user_id.unwrap_or(self.sim.config.default_user_id))
    }

    /// Runs a write on a portal's store and delivers the events it caused.
    fn write<T>(
        &self,
        portal_id: u64,
        f: impl FnOnce(&mut CrmStore, &mut Vec<Change>) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let portal = self
            .sim
            .portal(portal_id)
            .ok_or(ControlError::UnknownPortal(portal_id))?;
        let mut changes = Vec::new();
        let result = {
            let mut store = lock(&portal.crm);
            f(&mut store, &mut changes)
        };
        self.sim.emit(portal_id, &changes);
        result
    }

    fn read<T>(
        &self,
        portal_id: u64,
        f: impl FnOnce(&CrmStore) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let portal = self
            .sim
            .portal(portal_id)
            .ok_or(ControlError::UnknownPortal(portal_id))?;
        let store = lock(&portal.crm);
        f(&store)
    }

    /// The app and portals.
    pub fn info(&self) -> SimInfo {
        SimInfo {
            app_id: self.sim.config.app.app_id,
            client_id: self.sim.config.app.client_id.clone(),
            portals: self.sim.portal_ids(),
            seed: self.sim.config.seed,
        }
    }

    /// Existing portal ids, ascending.
    pub fn portals(&self) -> Vec<u64> {
        self.sim.portal_ids()
    }

    /// Creates a portal with the app installed.
    pub fn create_portal(&self, req: CreatePortal) -> Result<(), ControlError> {
        let mut cfg = PortalConfig::new(req.portal_id);
        cfg.rate_limit = req.rate_limit;
        if let Some(token) = req.private_app_token {
            cfg = cfg.with_private_app_token(token);
        }
        self.sim
            .add_portal(&cfg)
            .map(|_| ())
            .map_err(|id| ControlError::Conflict(format!("portal {id} already exists")))
    }

    /// Registers a private-app token for a portal (a generated one if `None`).
    pub fn add_private_app_token(
        &self,
        portal_id: u64,
        token: Option<String>,
    ) -> Result<PrivateAppToken, ControlError> {
        if self.sim.portal(portal_id).is_none() {
            return Err(ControlError::UnknownPortal(portal_id));
        }
        let n = usize::try_from(self.sim.ids.next(Stream::Token) % 1000).unwrap_or_default();
        let app_id = private_app_id(portal_id, n + 1);
        let token = token.unwrap_or_else(|| {
            // The shape of real private-app tokens: pat-<region>-<uuid>.
            format!("pat-na1-{}", self.sim.ids.uuid(Stream::Token))
        });
        self.sim.auth.add_private_app(&token, portal_id, app_id);
        Ok(PrivateAppToken {
            portal_id,
            token,
            app_id,
        })
    }

    /// A user installs the app: mints an authorization code for
    /// `POST /oauth/v1/token` (the portal is created if new).
    pub fn authorize(&self, req: AuthorizeRequest) -> AuthorizationCode {
        self.sim.portal_or_create(req.portal_id);
        let user_id = req.user_id.unwrap_or(self.sim.config.default_user_id);
        let code = self.sim.auth.authorize(
            &self.sim.ids,
            req.portal_id,
            user_id,
            req.redirect_uri.clone(),
        );
        let redirect_url = req.redirect_uri.map(|uri| {
            let sep = if uri.contains('?') { '&' } else { '?' };
            format!("{uri}{sep}code={code}")
        });
        AuthorizationCode {
            code,
            portal_id: req.portal_id,
            redirect_url,
        }
    }

    /// Expires one OAuth access token now (all of them if `None`), so the next
    /// call gets 401 `EXPIRED_AUTHENTICATION`. Returns how many were expired.
    pub fn expire_access_tokens(&self, token: Option<&str>) -> usize {
        self.sim.auth.expire(token, now_ms())
    }

    /// A user creates a contact in the CRM UI (`CRM_UI`).
    pub fn create_contact(
        &self,
        portal_id: u64,
        edit: &UserEdit,
    ) -> Result<ContactRecord, ControlError> {
        let source = self.user(edit.user_id);
        self.write(portal_id, |store, changes| {
            let writes = store
                .validate(&edit.properties)
                .map_err(|e| control_error(WriteError::Invalid(e), 0))?;
            let id = self.sim.ids.next_contact_id();
            store
                .create(id, &writes, &source, now_ms(), changes)
                .map_err(|e| control_error(e, id))?;
            current(store, id, id)
        })
    }

    /// A user edits a contact in the CRM UI (`CRM_UI`, `sourceId: userId:N`).
    pub fn update_contact(
        &self,
        portal_id: u64,
        contact_id: u64,
        edit: &UserEdit,
    ) -> Result<ContactRecord, ControlError> {
        let source = self.user(edit.user_id);
        self.write(portal_id, |store, changes| {
            let id = store
                .resolve(&contact_id.to_string(), None, false)
                .ok_or(ControlError::UnknownContact(contact_id))?;
            let writes = store
                .validate(&edit.properties)
                .map_err(|e| control_error(WriteError::Invalid(e), contact_id))?;
            store
                .update(id, &writes, &source, now_ms(), changes)
                .map_err(|e| control_error(e, contact_id))?;
            current(store, id, id)
        })
    }

    /// A user deletes a contact (to the recycle bin).
    pub fn archive_contact(
        &self,
        portal_id: u64,
        contact_id: u64,
        user_id: Option<u64>,
    ) -> Result<(), ControlError> {
        let source = self.user(user_id);
        self.write(portal_id, |store, changes| {
            store
                .archive(contact_id, &source, now_ms(), changes)
                .map_err(|e| control_error(e, contact_id))
        })
    }

    /// A user restores a deleted contact (`contact.restore`).
    pub fn restore_contact(
        &self,
        portal_id: u64,
        contact_id: u64,
        user_id: Option<u64>,
    ) -> Result<ContactRecord, ControlError> {
        let source = self.user(user_id);
        self.write(portal_id, |store, changes| {
            store
                .restore(contact_id, &source, now_ms(), changes)
                .map_err(|e| control_error(e, contact_id))?;
            current(store, contact_id, contact_id)
        })
    }

    /// A user merges two contacts (`contact.merge`).
    pub fn merge_contacts(
        &self,
        portal_id: u64,
        req: &MergeRequest,
    ) -> Result<ContactRecord, ControlError> {
        let source = self.user(req.user_id);
        self.write(portal_id, |store, changes| {
            let primary = store
                .merge(
                    req.primary_object_id,
                    req.object_id_to_merge,
                    &source,
                    now_ms(),
                    changes,
                )
                .map_err(|e| control_error(e, req.object_id_to_merge))?;
            current(store, primary, primary)
        })
    }

    /// A user GDPR-deletes a contact (`contact.privacyDeletion` and `contact.deletion`).
    pub fn gdpr_delete_contact(
        &self,
        portal_id: u64,
        contact_id: u64,
        user_id: Option<u64>,
    ) -> Result<(), ControlError> {
        let source = self.user(user_id);
        self.write(portal_id, |store, changes| {
            store
                .gdpr_delete(contact_id, &source, now_ms(), changes)
                .map_err(|e| control_error(e, contact_id))
        })
    }

    /// A CRM import of generated contacts (`changeSource: IMPORT`).
    pub fn import_contacts(
        &self,
        portal_id: u64,
        req: &ImportRequest,
    ) -> Result<ImportResult, ControlError> {
        let import_id = 1_000 + self.sim.ids.next(Stream::Import) % 9_000_000;
        let user_id = req.user_id.unwrap_or(self.sim.config.default_user_id);
        let source = Source::import(import_id, user_id);
        let domain = req
            .email_domain
            .clone()
            .unwrap_or_else(|| "import.example.com".to_owned());
        self.write(portal_id, |store, changes| {
            let extra = store
                .validate(&req.properties)
                .map_err(|e| control_error(WriteError::Invalid(e), 0))?;
            let now = now_ms();
            let mut result = ImportResult {
                import_id,
                ..ImportResult::default()
            };
            for row in 0..req.count {
                let r = self.sim.ids.next(Stream::Import);
                let pick =
                    |list: &[&str], shift: u32| list[(r >> shift) as usize % list.len()].to_owned();
                let mut writes = vec![
                    (
                        "email".to_owned(),
                        format!("import{import_id}.{row}@{domain}"),
                    ),
                    ("firstname".to_owned(), pick(FIRST_NAMES, 0)),
                    ("lastname".to_owned(), pick(LAST_NAMES, 8)),
                    (
                        "phone".to_owned(),
                        format!("+1555{:07}", (r >> 16) % 10_000_000),
                    ),
                    ("company".to_owned(), pick(COMPANIES, 40)),
                    ("jobtitle".to_owned(), pick(JOB_TITLES, 48)),
                ];
                writes.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
                writes.extend(extra.iter().cloned());
                let email = writes
                    .iter()
                    .find(|(k, _)| k == "email")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                // A row whose email is known updates that contact, as imports do.
                let id = match store.id_by_email(&email) {
                    Some(id) => {
                        store
                            .update(id, &writes, &source, now, changes)
                            .map_err(|e| control_error(e, id))?;
                        result.updated += 1;
                        id
                    }
                    None => {
                        let id = self.sim.ids.next_contact_id();
                        store
                            .create(id, &writes, &source, now, changes)
                            .map_err(|e| control_error(e, id))?;
                        result.created += 1;
                        id
                    }
                };
                for k in 0..req.extra_edits {
                    let property = EDITABLE[k as usize % EDITABLE.len()];
                    let edit = vec![(
                        property.to_owned(),
                        format!("{property}-{import_id}-{row}-edit{k}"),
                    )];
                    store
                        .update(id, &edit, &source, now, changes)
                        .map_err(|e| control_error(e, id))?;
                }
                result.ids.push(id);
            }
            Ok(result)
        })
    }

    /// Every contact of a portal (archived ones included), with history.
    pub fn contacts(&self, portal_id: u64) -> Result<Vec<ContactRecord>, ControlError> {
        self.read(portal_id, |store| {
            Ok(store.contacts.values().map(record).collect())
        })
    }

    /// One contact (merged-away ids lead to the winner).
    pub fn contact(&self, portal_id: u64, contact_id: u64) -> Result<ContactRecord, ControlError> {
        self.read(portal_id, |store| {
            let id = store
                .resolve(&contact_id.to_string(), None, false)
                .or_else(|| store.resolve(&contact_id.to_string(), None, true))
                .ok_or(ControlError::UnknownContact(contact_id))?;
            current(store, id, contact_id)
        })
    }

    /// The active contact with this email.
    pub fn contact_by_email(
        &self,
        portal_id: u64,
        email: &str,
    ) -> Result<Option<ContactRecord>, ControlError> {
        self.read(portal_id, |store| {
            Ok(store
                .id_by_email(email)
                .and_then(|id| store.get(id))
                .map(record))
        })
    }

    /// New limits for one portal, or for all (and future) portals if `None`.
    pub fn set_rate_limit(
        &self,
        portal_id: Option<u64>,
        cfg: RateLimitConfig,
    ) -> Result<(), ControlError> {
        if self.sim.set_rate_limit(portal_id, cfg) {
            Ok(())
        } else {
            Err(ControlError::UnknownPortal(portal_id.unwrap_or_default()))
        }
    }

    /// A portal's current limits.
    pub fn rate_limit(&self, portal_id: u64) -> Result<RateLimitConfig, ControlError> {
        let portal = self
            .sim
            .portal(portal_id)
            .ok_or(ControlError::UnknownPortal(portal_id))?;
        let cfg = lock(&portal.limiter).cfg;
        Ok(cfg)
    }

    /// Sets the delivery fault rates (drawn from the seeded RNG).
    pub fn set_faults(&self, faults: FaultConfig) {
        self.sim.delivery.set_faults(faults);
    }

    /// The delivery fault rates.
    pub fn faults(&self) -> FaultConfig {
        self.sim.delivery.faults()
    }

    /// Makes the API answer `fault`'s error instead of serving matching
    /// calls (behind the faults already injected; the first match is used).
    ///
    /// # Errors
    /// [`ControlError::Invalid`] for a status outside 400–599 or 429, an
    /// endpoint that is not a CRM endpoint key, or `times: 0`.
    pub fn inject_api_fault(&self, fault: ApiFault) -> Result<(), ControlError> {
        self.sim
            .api_faults
            .add(fault)
            .map_err(ControlError::Invalid)
    }

    /// The injected API faults left, `times` counting the calls each still fails.
    pub fn api_faults(&self) -> Vec<ApiFault> {
        self.sim.api_faults.list()
    }

    /// Removes every injected API fault.
    pub fn clear_api_faults(&self) {
        self.sim.api_faults.clear();
    }

    /// Sets the delivery timeout, retry count, time scale and batch size.
    pub fn set_delivery_config(&self, cfg: DeliveryConfig) {
        self.sim.delivery.set_config(cfg);
    }

    /// The delivery tunables.
    pub fn delivery_config(&self) -> DeliveryConfig {
        self.sim.delivery.config()
    }

    /// Holds every delivery until [`Control::resume_delivery`]; events queue up.
    pub fn pause_delivery(&self) {
        self.sim.delivery.set_paused(true);
    }

    /// Resumes delivery.
    pub fn resume_delivery(&self) {
        self.sim.delivery.set_paused(false);
    }

    /// Makes every scheduled retry (and injected delay) due now.
    pub fn retry_now(&self) {
        self.sim.delivery.retry_now();
    }

    /// Every counter.
    pub fn stats(&self) -> SimStats {
        self.sim.stats()
    }

    /// Zeroes every counter; state is kept.
    pub fn reset_stats(&self) {
        self.sim.reset_stats();
    }

    /// Back to the configured start state (contacts, tokens, queue all gone).
    pub fn reset(&self) -> Result<(), ControlError> {
        self.sim
            .reset()
            .map_err(|e| ControlError::Invalid(e.to_string()))
    }

    /// Whether nothing is queued, scheduled for retry or in flight.
    pub fn delivery_idle(&self) -> bool {
        self.sim.delivery.is_idle()
    }

    /// Waits until delivery is idle; false if `timeout` passed first.
    pub async fn wait_for_delivery_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.sim.delivery.is_idle() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
