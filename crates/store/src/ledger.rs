//! The echo ledger: every property value written to HubSpot, recorded before
//! the call, so that the inbound side recognises its own echo (design.md §2.2).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use leadsync_domain::{ContactId, PortalId, ValueHash};
use sqlx::PgExecutor;

use crate::{StoreError, db_id, from_db_id};

/// One recorded write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Hash of the value written.
    pub value_hash: ValueHash,
    /// When it was recorded.
    pub written_at: DateTime<Utc>,
}

/// One write to record for a contact of a portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerWrite {
    /// The contact written to.
    pub contact: ContactId,
    /// HubSpot property name.
    pub property: String,
    /// Hash of the value.
    pub value_hash: ValueHash,
}

/// Records the values about to be written to one contact, replacing what
/// was recorded for those properties before.
pub async fn record_writes(
    exec: impl PgExecutor<'_>,
    portal: PortalId,
    contact: ContactId,
    writes: &[(&str, ValueHash)],
) -> Result<(), StoreError> {
    let batch: Vec<LedgerWrite> = writes
        .iter()
        .map(|(property, value_hash)| LedgerWrite {
            contact,
            property: (*property).to_owned(),
            value_hash: *value_hash,
        })
        .collect();
    record_many(exec, portal, &batch).await
}

/// Records a batch of writes (a whole batch upsert) in one statement. When
/// the same contact property appears twice, the later entry wins.
pub async fn record_many(
    exec: impl PgExecutor<'_>,
    portal: PortalId,
    writes: &[LedgerWrite],
) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    // One row per key: an upsert may not touch the same row twice.
    let mut unique: BTreeMap<(u64, &str), &ValueHash> = BTreeMap::new();
    for w in writes {
        unique.insert((w.contact.get(), w.property.as_str()), &w.value_hash);
    }
    let mut contacts = Vec::with_capacity(unique.len());
    let mut properties = Vec::with_capacity(unique.len());
    let mut hashes = Vec::with_capacity(unique.len());
    for ((contact, property), hash) in unique {
        contacts.push(db_id(contact)?);
        properties.push(property);
        hashes.push(hash.as_bytes().to_vec());
    }
    sqlx::query(
        "INSERT INTO echo_ledger (portal_id, contact_id, property, value_hash, written_at) \
         SELECT $1, c, p, h, now() FROM unnest($2::bigint[], $3::text[], $4::bytea[]) AS t(c, p, h) \
         ON CONFLICT (portal_id, contact_id, property) DO UPDATE \
         SET value_hash = EXCLUDED.value_hash, written_at = EXCLUDED.written_at",
    )
    .bind(db_id(portal.get())?)
    .bind(contacts)
    .bind(properties)
    .bind(hashes)
    .execute(exec)
    .await?;
    Ok(())
}

/// The recorded writes for these contacts, restricted to `properties` unless
/// it is empty; one query for a whole batch.
pub async fn get(
    exec: impl PgExecutor<'_>,
    portal: PortalId,
    contacts: &[ContactId],
    properties: &[&str],
) -> Result<HashMap<(ContactId, String), LedgerEntry>, StoreError> {
    if contacts.is_empty() {
        return Ok(HashMap::new());
    }
    let ids = contacts
        .iter()
        .map(|c| db_id(c.get()))
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<(i64, String, Vec<u8>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT contact_id, property, value_hash, written_at FROM echo_ledger \
         WHERE portal_id = $1 AND contact_id = ANY($2) \
         AND (cardinality($3::text[]) = 0 OR property = ANY($3))",
    )
    .bind(db_id(portal.get())?)
    .bind(ids)
    .bind(properties)
    .fetch_all(exec)
    .await?;
    rows.into_iter()
        .map(|(contact, property, hash, written_at)| {
            Ok((
                (ContactId::new(from_db_id(contact)), property),
                LedgerEntry {
                    value_hash: ValueHash::from_bytes(&hash)
                        .ok_or_else(|| StoreError::Corrupt("value hash is not 16 bytes".into()))?,
                    written_at,
                },
            ))
        })
        .collect()
}

/// Forgets everything recorded for a contact (privacy deletion, merge).
pub async fn forget_contact(
    exec: impl PgExecutor<'_>,
    portal: PortalId,
    contact: ContactId,
) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM echo_ledger WHERE portal_id = $1 AND contact_id = $2")
        .bind(db_id(portal.get())?)
        .bind(db_id(contact.get())?)
        .execute(exec)
        .await?;
    Ok(done.rows_affected())
}

/// Deletes entries recorded before `before` (their echoes are long past).
pub async fn prune(exec: impl PgExecutor<'_>, before: DateTime<Utc>) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM echo_ledger WHERE written_at < $1")
        .bind(before)
        .execute(exec)
        .await?;
    Ok(done.rows_affected())
}
