//! Contacts of one portal and every way they change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::properties::PropertyRegistry;
use super::{Change, ChangeKind, Source, iso};
use crate::error::PropertyError;

/// Properties the store maintains itself; never echoed as property changes.
pub(crate) const SYSTEM_PROPERTIES: &[&str] = &["hs_object_id", "createdate", "lastmodifieddate"];
/// What GET, list and batch read return when `properties` is not given.
const DEFAULT_PROPERTIES: &[&str] = &["email", "firstname", "lastname"];
/// Versions kept per property; older ones are forgotten.
const MAX_VERSIONS: usize = 50;

/// One value a property had.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub(crate) value: String,
    pub(crate) at: i64,
    pub(crate) source: Arc<Source>,
}

/// A contact with every property's history (newest version first).
#[derive(Debug, Clone)]
pub(crate) struct Contact {
    pub(crate) id: u64,
    pub(crate) props: BTreeMap<String, Vec<Version>>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) archived: bool,
    pub(crate) archived_at: Option<i64>,
}

impl Contact {
    /// The current value of a property, if it was ever set.
    pub(crate) fn value(&self, name: &str) -> Option<&str> {
        self.props
            .get(name)
            .and_then(|v| v.first())
            .map(|v| v.value.as_str())
    }

    /// The current value unless it is missing or empty.
    pub(crate) fn non_empty(&self, name: &str) -> Option<&str> {
        self.value(name).filter(|v| !v.is_empty())
    }

    fn set(&mut self, name: &str, value: String, at: i64, source: &Arc<Source>) {
        let versions = self.props.entry(name.to_owned()).or_default();
        versions.insert(
            0,
            Version {
                value,
                at,
                source: Arc::clone(source),
            },
        );
        versions.truncate(MAX_VERSIONS);
    }

    fn touch(&mut self, at: i64, source: &Arc<Source>) {
        self.updated_at = at;
        self.set("lastmodifieddate", iso(at), at, source);
    }
}

/// Which properties a read returns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    /// `None`: the defaults, only those with a value.
    pub(crate) properties: Option<Vec<String>>,
    pub(crate) with_history: Vec<String>,
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteError {
    Invalid(Vec<PropertyError>),
    /// Another contact already has this email.
    Conflict(u64),
    NotFound,
    /// A request that cannot be carried out as asked (merge with itself, …).
    Rejected(String),
}

/// The CRM state of one portal.
#[derive(Debug, Clone)]
pub(crate) struct CrmStore {
    pub(crate) contacts: BTreeMap<u64, Contact>,
    by_email: HashMap<String, u64>,
    merged_into: HashMap<u64, u64>,
    pub(crate) properties: PropertyRegistry,
    pub(crate) property_changes_on_create: bool,
}

/// Validated property writes, in stored form.
pub(crate) type Writes = Vec<(String, String)>;

impl CrmStore {
    pub(crate) fn new(property_changes_on_create: bool) -> Self {
        Self {
            contacts: BTreeMap::new(),
            by_email: HashMap::new(),
            merged_into: HashMap::new(),
            properties: PropertyRegistry::standard(),
            property_changes_on_create,
        }
    }

    /// Checks and normalises a property map; every failure is reported at once.
    pub(crate) fn validate<'a, I>(&self, input: I) -> Result<Writes, Vec<PropertyError>>
    where
        I: IntoIterator<Item = (&'a String, &'a String)>,
    {
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        for (name, value) in input {
            match self.properties.normalize(name, value) {
                Ok(v) => ok.push((name.clone(), v)),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(ok)
        } else {
            Err(errors)
        }
    }

    /// The id an active contact is known by (merged-away ids lead to the winner).
    fn canonical(&self, id: u64) -> u64 {
        let mut id = id;
        // Merge chains are short, but a bound keeps a corrupted map from looping.
        for _ in 0..16 {
            match self.merged_into.get(&id) {
                Some(next) => id = *next,
                None => break,
            }
        }
        id
    }

    /// Finds a contact by `idProperty` (default `hs_object_id`). `archived`
    /// selects archived contacts instead of active ones, as HubSpot's flag does.
    pub(crate) fn resolve(
        &self,
        raw: &str,
        id_property: Option<&str>,
        archived: bool,
    ) -> Option<u64> {
        let found = match id_property {
            None | Some("hs_object_id") => {
                let id = raw.trim().parse::<u64>().ok()?;
                Some(self.canonical(id))
            }
            Some("email") if !archived => self.by_email.get(&raw.trim().to_lowercase()).copied(),
            Some(prop) if self.properties.is_unique(prop) => {
                let want = if prop == "email" {
                    raw.trim().to_lowercase()
                } else {
                    raw.to_owned()
                };
                self.contacts
                    .values()
                    .find(|c| c.archived == archived && c.value(prop) == Some(want.as_str()))
                    .map(|c| c.id)
            }
            Some(_) => None,
        }?;
        self.contacts
            .get(&found)
            .filter(|c| c.archived == archived)
            .map(|c| c.id)
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Contact> {
        self.contacts.get(&id)
    }

    /// The active contact with this email.
    pub(crate) fn id_by_email(&self, email: &str) -> Option<u64> {
        self.by_email.get(&email.trim().to_lowercase()).copied()
    }

    fn email_owner(&self, writes: &Writes) -> Option<(String, Option<u64>)> {
        writes
            .iter()
            .find(|(n, v)| n == "email" && !v.is_empty())
            .map(|(_, v)| (v.clone(), self.by_email.get(v).copied()))
    }

    /// Creates a contact with id `id`.
    pub(crate) fn create(
        &mut self,
        id: u64,
        writes: &Writes,
        source: &Arc<Source>,
        now: i64,
        changes: &mut Vec<Change>,
    ) -> Result<u64, WriteError> {
        let email = match self.email_owner(writes) {
            Some((_, Some(existing))) => return Err(WriteError::Conflict(existing)),
            Some((email, None)) => Some(email),
            None => None,
        };
        let mut contact = Contact {
            id,
            props: BTreeMap::new(),
            created_at: now,
            updated_at: now,
            archived: false,
            archived_at: None,
        };
        contact.set("hs_object_id", id.to_string(), now, source);
        contact.set("createdate", iso(now), now, source);
        contact.set("lastmodifieddate", iso(now), now, source);
        for (name, value) in writes {
            contact.set(name, value.clone(), now, source);
        }
        if let Some(at) = contact.value("createdate").and_then(super::parse_time_ms) {
            contact.created_at = at;
        }
        changes.push(Change {
            object_id: id,
            occurred_at: now,
            source: Arc::clone(source),
            kind: ChangeKind::Creation,
        });
        if self.property_changes_on_create {
            for (name, value) in writes {
                if !value.is_empty() && !SYSTEM_PROPERTIES.contains(&name.as_str()) {
                    changes.push(property_change(id, name, value, now, source));
                }
            }
        }
        if let Some(email) = email {
            self.by_email.insert(email, id);
        }
        self.contacts.insert(id, contact);
        Ok(id)
    }

    /// Applies property writes to an active contact; unchanged values are no-ops
    /// that leave no history and fire no event.
    pub(crate) fn update(
        &mut self,
        id: u64,
        writes: &Writes,
        source: &Arc<Source>,
        now: i64,
        changes: &mut Vec<Change>,
    ) -> Result<usize, WriteError> {
        let contact = self
            .contacts
            .get(&id)
            .filter(|c| !c.archived)
            .ok_or(WriteError::NotFound)?;
        let old_email = contact.non_empty("email").map(str::to_owned);
        if let Some((_, Some(owner))) = self.email_owner(writes)
            && owner != id
        {
            return Err(WriteError::Conflict(owner));
        }
        let contact = self.contacts.get_mut(&id).ok_or(WriteError::NotFound)?;
        let mut changed = 0;
        for (name, value) in writes {
            let current = contact.value(name);
            if current == Some(value.as_str()) || (current.is_none() && value.is_empty()) {
                continue;
            }
            contact.set(name, value.clone(), now, source);
            changed += 1;
            if !SYSTEM_PROPERTIES.contains(&name.as_str()) {
                changes.push(property_change(id, name, value, now, source));
            }
        }
        if changed > 0 {
            contact.touch(now, source);
            let new_email = contact.non_empty("email").map(str::to_owned);
            if new_email != old_email {
                if let Some(old) = old_email {
                    self.by_email.remove(&old);
                }
                if let Some(new) = new_email {
                    self.by_email.insert(new, id);
                }
            }
        }
        Ok(changed)
    }

    /// Moves a contact to the recycle bin; archiving an archived one is a no-op.
    pub(crate) fn archive(
        &mut self,
        id: u64,
        source: &Arc<Source>,
        now: i64,
        changes: &mut Vec<Change>,
    ) -> Result<(), WriteError> {
        let contact = self.contacts.get_mut(&id).ok_or(WriteError::NotFound)?;
        if contact.archived {
            return Ok(());
        }
        contact.archived = true;
        contact.archived_at = Some(now);
        contact.updated_at = now;
        if let Some(email) = contact.non_empty("email")
            && self.by_email.get(email) == Some(&id)
        {
            let email = email.to_owned();
            self.by_email.remove(&email);
        }
        changes.push(Change {
            object_id: id,
            occurred_at: now,
            source: Arc::clone(source),
            kind: ChangeKind::Deletion,
        });
        Ok(())
    }

    /// Brings an archived contact back.
    pub(crate) fn restore(
        &mut self,
        id: u64,
        source: &Arc<Source>,
        now: i64,
        changes: &mut Vec<Change>,
    ) -> Result<(), WriteError> {
        let contact = self
            .contacts
            .get(&id)
            .filter(|c| c.archived)
            .ok_or(WriteError::NotFound)?;
        let email = contact.non_empty("email").map(str::to_owned);
        if let Some(owner) = email.as_ref().and_then(|e| self.by_email.get(e)) {
            return Err(WriteError::Conflict(*owner));
        }
        let contact = self.contacts.get_mut(&id).ok_or(WriteError::NotFound)?;
        contact.archived = false;
        contact.archived_at = None;
        contact.touch(now, source);
        if let Some(email) = email {
            self.by_email.insert(email, id);
        }
        changes.push(Change {
            object_id: id,
            occurred_at: now,
            source: Arc::clone(source),
            kind: ChangeKind::Restore,
        });
        Ok(())
    }

    /// GDPR delete: gone for good, with `privacyDeletion` and `deletion` events.
    pub(crate) fn gdpr_delete(
        &mut self,
        id: u64,
        source: &Arc<Source>,
        now: i64,
        changes: &mut Vec<Change>,
    ) -> Result<(), WriteError> {
        let contact = self.contacts.remove(&id).ok_or(WriteError::NotFound)?;
        if let Some(email) = contact.non_empty("email")
            && self.by_email.get(email) == Some(&id)
        {
            self.by_email.remove(email);
        }
        self.merged_into.retain(|_, to| *to != id);
        for kind in [ChangeKind::PrivacyDeletion, ChangeKind::Deletion] {
            changes.push(Change {
                object_id: id,
                occurred_at: now,
                source: Arc::clone(source),
                kind,
            });
        }
        Ok(())
    }

    /// Merges `other` into `primary`: `primary` keeps its id and values and
    /// gains `other`'s values for properties it lacks; `other`'s id becomes an
    /// alias of `primary`.
    pub(crate) fn merge(
        &mut self,
        primary: u64,
        other: u64,
        source: &Arc<Source>,
        now: i64,
        changes: &mut Vec<Change>,
    ) -> Result<u64, WriteError> {
        if primary == other {
            return Err(WriteError::Rejected(
                "A contact cannot be merged with itself.".to_owned(),
            ));
        }
        let loser = self
            .contacts
            .get(&other)
            .filter(|c| !c.archived)
            .cloned()
            .ok_or(WriteError::NotFound)?;
        if self.contacts.get(&primary).is_none_or(|c| c.archived) {
            return Err(WriteError::NotFound);
        }
        self.contacts.remove(&other);
        let loser_email = loser.non_empty("email").map(str::to_owned);
        if let Some(email) = &loser_email {
            self.by_email.remove(email);
        }
        let winner = self
            .contacts
            .get_mut(&primary)
            .ok_or(WriteError::NotFound)?;
        let mut moved = 0u32;
        let mut moved_changes = Vec::new();
        for (name, versions) in &loser.props {
            let skip = SYSTEM_PROPERTIES.contains(&name.as_str())
                || matches!(
                    name.as_str(),
                    "email" | "hs_additional_emails" | "hs_merged_object_ids"
                );
            let Some(value) = versions
                .first()
                .map(|v| v.value.clone())
                .filter(|v| !v.is_empty())
            else {
                continue;
            };
            if skip || winner.non_empty(name).is_some() {
                continue;
            }
            winner.set(name, value.clone(), now, source);
            moved += 1;
            moved_changes.push(property_change(primary, name, &value, now, source));
        }
        if let Some(email) = loser_email {
            let emails = match winner.non_empty("hs_additional_emails") {
                Some(existing) => format!("{existing};{email}"),
                None => email,
            };
            winner.set("hs_additional_emails", emails, now, source);
        }
        let mut merged_ids: Vec<String> = winner
            .non_empty("hs_merged_object_ids")
            .map(|s| s.split(';').map(str::to_owned).collect())
            .unwrap_or_default();
        merged_ids.push(other.to_string());
        winner.set("hs_merged_object_ids", merged_ids.join(";"), now, source);
        winner.touch(now, source);
        self.merged_into.insert(other, primary);
        changes.push(Change {
            object_id: primary,
            occurred_at: now,
            source: Arc::clone(source),
            kind: ChangeKind::Merge {
                primary,
                merged: vec![other],
                new_object_id: primary,
                moved,
            },
        });
        changes.extend(moved_changes);
        Ok(primary)
    }

    /// Active (or archived) contacts with id ≥ `after`, in id order.
    pub(crate) fn page(
        &self,
        after: u64,
        limit: usize,
        archived: bool,
    ) -> (Vec<&Contact>, Option<u64>) {
        let mut iter = self
            .contacts
            .range(after..)
            .map(|(_, c)| c)
            .filter(|c| c.archived == archived);
        let page: Vec<&Contact> = iter.by_ref().take(limit).collect();
        let next = iter.next().map(|c| c.id);
        (page, next)
    }

    /// A contact as the API returns it.
    pub(crate) fn view<'a>(
        &'a self,
        contact: &'a Contact,
        selection: &'a Selection,
    ) -> ContactJson<'a> {
        let mut properties = BTreeMap::new();
        for name in SYSTEM_PROPERTIES {
            properties.insert(*name, contact.value(name));
        }
        match &selection.properties {
            None => {
                for name in DEFAULT_PROPERTIES {
                    if let Some(v) = contact.value(name) {
                        properties.insert(*name, Some(v));
                    }
                }
            }
            Some(names) => {
                for name in names {
                    // Unknown names are ignored by reads, like HubSpot does.
                    if self.properties.get_any(name).is_some() {
                        properties.insert(name.as_str(), contact.value(name));
                    }
                }
            }
        }
        self.json(contact, properties, &selection.with_history)
    }

    /// A contact with every property that has a value (create/update responses).
    pub(crate) fn view_all<'a>(&'a self, contact: &'a Contact) -> ContactJson<'a> {
        let properties = contact
            .props
            .iter()
            .filter_map(|(k, v)| v.first().map(|v| (k.as_str(), Some(v.value.as_str()))))
            .collect();
        self.json(contact, properties, &[])
    }

    fn json<'a>(
        &'a self,
        contact: &'a Contact,
        properties: BTreeMap<&'a str, Option<&'a str>>,
        with_history: &'a [String],
    ) -> ContactJson<'a> {
        let properties_with_history = (!with_history.is_empty()).then(|| {
            with_history
                .iter()
                .filter(|n| self.properties.get_any(n).is_some())
                .map(|n| {
                    let versions = contact
                        .props
                        .get(n)
                        .map(|vs| vs.iter().map(VersionJson::from).collect())
                        .unwrap_or_default();
                    (n.as_str(), versions)
                })
                .collect()
        });
        ContactJson {
            id: contact.id.to_string(),
            properties,
            properties_with_history,
            created_at: iso(contact.created_at),
            updated_at: iso(contact.updated_at),
            archived: contact.archived,
            archived_at: contact.archived_at.map(iso),
            new: None,
        }
    }
}

fn property_change(id: u64, name: &str, value: &str, now: i64, source: &Arc<Source>) -> Change {
    Change {
        object_id: id,
        occurred_at: now,
        source: Arc::clone(source),
        kind: ChangeKind::PropertyChange {
            name: name.to_owned(),
            value: value.to_owned(),
        },
    }
}

/// SPEC `SimplePublicObject(WithAssociations)`, borrowed from the store.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContactJson<'a> {
    pub(crate) id: String,
    pub(crate) properties: BTreeMap<&'a str, Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) properties_with_history: Option<BTreeMap<&'a str, Vec<VersionJson<'a>>>>,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    pub(crate) archived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) archived_at: Option<String>,
    /// Upsert results only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) new: Option<bool>,
}

/// SPEC `ValueWithTimestamp`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VersionJson<'a> {
    value: &'a str,
    timestamp: String,
    source_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_by_user_id: Option<u64>,
}

impl<'a> From<&'a Version> for VersionJson<'a> {
    fn from(v: &'a Version) -> Self {
        Self {
            value: &v.value,
            timestamp: iso(v.at),
            source_type: v.source.kind.as_str(),
            source_id: v.source.source_id.as_deref(),
            updated_by_user_id: v.source.user_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(pairs: &[(&str, &str)]) -> Writes {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn duplicate_email_conflicts_case_insensitively() {
        let mut store = CrmStore::new(false);
        let src = Source::integration(7);
        let mut changes = Vec::new();
        let input = BTreeMap::from([("email".to_owned(), "Ann@X.com".to_owned())]);
        let w = store.validate(&input).expect("valid");
        store
            .create(10, &w, &src, 1, &mut changes)
            .expect("created");
        let input = BTreeMap::from([("email".to_owned(), "ann@x.COM".to_owned())]);
        let w = store.validate(&input).expect("valid");
        assert_eq!(
            store.create(11, &w, &src, 2, &mut changes),
            Err(WriteError::Conflict(10))
        );
        assert_eq!(store.resolve("ANN@x.com", Some("email"), false), Some(10));
    }

    #[test]
    fn unchanged_values_fire_nothing_and_changed_ones_keep_history() {
        let mut store = CrmStore::new(false);
        let src = Source::user(5);
        let mut changes = Vec::new();
        store
            .create(10, &writes(&[("firstname", "Ann")]), &src, 1, &mut changes)
            .expect("created");
        assert_eq!(changes.len(), 1, "creation only, property events are off");
        changes.clear();
        let n = store
            .update(
                10,
                &writes(&[("firstname", "Ann"), ("lastname", "Lee")]),
                &src,
                2,
                &mut changes,
            )
            .expect("updated");
        assert_eq!(n, 1);
        assert_eq!(changes.len(), 1);
        assert!(
            matches!(&changes[0].kind, ChangeKind::PropertyChange { name, .. } if name == "lastname")
        );
        let c = store.get(10).expect("contact");
        assert_eq!(c.updated_at, 2);
        assert_eq!(c.props["lastmodifieddate"].len(), 2);
    }

    #[test]
    fn merge_moves_missing_values_and_aliases_the_loser() {
        let mut store = CrmStore::new(false);
        let src = Source::user(5);
        let mut changes = Vec::new();
        store
            .create(10, &writes(&[("email", "a@x.com")]), &src, 1, &mut changes)
            .expect("a");
        store
            .create(
                11,
                &writes(&[("email", "b@x.com"), ("phone", "123")]),
                &src,
                1,
                &mut changes,
            )
            .expect("b");
        changes.clear();
        store.merge(10, 11, &src, 3, &mut changes).expect("merged");
        assert!(
            matches!(&changes[0].kind, ChangeKind::Merge { moved: 1, merged, .. } if merged == &vec![11])
        );
        assert_eq!(store.resolve("11", None, false), Some(10));
        let c = store.get(10).expect("winner");
        assert_eq!(c.value("phone"), Some("123"));
        assert_eq!(c.value("hs_additional_emails"), Some("b@x.com"));
        assert_eq!(store.id_by_email("b@x.com"), None);
    }
}
