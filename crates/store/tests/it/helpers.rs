use leadsync_domain::PortalId;
use leadsync_store::dead_letters::{DeadLetterKind, NewDeadLetter};
use leadsync_store::integrations::{self, AuthMode, IntegrationSettings, NewIntegration};
use leadsync_store::leads::{LeadFields, NewLead};
use leadsync_store::testing::TestDb;
use leadsync_store::{Integration, Store};

/// A fresh database with one integration (portal 1001, name `acme`).
pub async fn setup() -> (TestDb, Integration) {
    let db = TestDb::create().await.expect("test database");
    let integration = new_integration(&db.store, "acme", 1001).await;
    (db, integration)
}

pub async fn new_integration(store: &Store, name: &str, portal: u64) -> Integration {
    integrations::create(
        store.pool(),
        &NewIntegration {
            name: name.to_owned(),
            portal_id: PortalId::new(portal),
            app_id: None,
            auth_mode: AuthMode::OAuth,
            settings: IntegrationSettings::default(),
        },
    )
    .await
    .expect("integration")
}

pub fn lead(first: &str, email: &str) -> NewLead {
    NewLead {
        fields: LeadFields {
            first_name: Some(first.to_owned()),
            email: Some(email.to_owned()),
            ..LeadFields::default()
        },
        source_system: None,
    }
}

/// A dead letter of `integration_id` about `portal`'s event `key`.
pub fn dead_letter(
    integration_id: Option<uuid::Uuid>,
    portal: Option<u64>,
    key: &str,
    kind: DeadLetterKind,
    payload: serde_json::Value,
) -> NewDeadLetter {
    NewDeadLetter {
        integration_id,
        portal_id: portal.map(PortalId::new),
        event_key: key.to_owned(),
        kind,
        reason: "test".to_owned(),
        payload,
    }
}
