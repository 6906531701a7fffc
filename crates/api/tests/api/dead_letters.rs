use leadsync_domain::{EventKey, PortalId, WebhookEvent};
use leadsync_queue::{OUTBOUND_QUEUE, PushLeadChange};
use leadsync_store::dead_letters::{self, DeadLetterKind, NewDeadLetter};
use redis::AsyncCommands as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Tenant, TestApi, acme_with_a_lead, json_of};

fn event_json(portal: u64, contact: u64) -> Value {
    json!({
        "eventId": 4242,
        "subscriptionId": 7,
        "portalId": portal,
        "appId": 99,
        "occurredAt": 1_780_000_000_000_i64,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": contact,
        "propertyName": "phone",
        "propertyValue": "+44 20 7946 0000",
        "changeSource": "CRM_UI",
    })
}

fn key_of(event: &Value) -> EventKey {
    let raw = serde_json::value::to_raw_value(event).unwrap();
    WebhookEvent::from_raw(&raw).key().clone()
}

async fn replay(api: &TestApi, tenant: &Tenant, id: i64) -> Value {
    let response = api
        .request(
            Method::POST,
            &format!("/v1/dead-letters/{id}/replay"),
            Some(&tenant.token),
        )
        .send()
        .await
        .unwrap();
    json_of(response, 200).await
}

#[tokio::test]
async fn an_inbound_dead_letter_is_listed_and_replayed_onto_the_event_queue_once() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let pool = api.db.store.pool();
    let event = event_json(1001, 55);
    let key = key_of(&event);
    // As the worker records a batch that failed for good: no integration
    // known yet, the event's portal.
    let letter = dead_letters::record(
        pool,
        &NewDeadLetter {
            integration_id: None,
            portal_id: Some(PortalId::new(1001)),
            event_key: key.as_str().to_owned(),
            kind: DeadLetterKind::InboundEvent,
            reason: "retries_exhausted_hubspot_unavailable".to_owned(),
            payload: event.clone(),
        },
    )
    .await
    .unwrap();

    // Act
    let listed = json_of(api.get("/v1/dead-letters", &acme).await, 200).await;
    let inbound_only = json_of(
        api.get("/v1/dead-letters?kind=inbound_event", &acme).await,
        200,
    )
    .await;
    let outbound_only = json_of(
        api.get("/v1/dead-letters?kind=outbound_change", &acme)
            .await,
        200,
    )
    .await;
    let first = replay(&api, &acme, letter.id).await;
    let second = replay(&api, &acme, letter.id).await;
    let open_after = json_of(api.get("/v1/dead-letters", &acme).await, 200).await;
    let all_after = json_of(
        api.get("/v1/dead-letters?include_replayed=true", &acme)
            .await,
        200,
    )
    .await;

    // Assert
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], letter.id);
    assert_eq!(data[0]["event_key"], key.as_str());
    assert_eq!(data[0]["payload"], event);
    assert_eq!(inbound_only["data"].as_array().unwrap().len(), 1);
    assert_eq!(outbound_only["data"], json!([]));
    assert_eq!(first["outcome"], "replayed");
    assert_eq!(first["queue"], "hubspot:events");
    assert_eq!(first["jobs_queued"], 1);
    assert_eq!(
        second["outcome"], "already_replayed",
        "a second replay is harmless"
    );
    assert_eq!(second["jobs_queued"], 0);
    assert!(
        second["message"]
            .as_str()
            .unwrap()
            .contains("already replayed")
    );
    assert_eq!(
        open_after["data"],
        json!([]),
        "a replayed letter is no longer open"
    );
    assert!(all_after["data"][0]["replayed_at"].is_string());
    // What landed in Redis: the event, once, under a task id of its own (the
    // letter's, after its first failure) and its original key, routed by its
    // portal.
    let mut inspector = api.inspector().await;
    let task_id = format!("replay:{}:1:{}", letter.id, key.as_str());
    assert_eq!(
        inspector.ids().await.unwrap(),
        std::slice::from_ref(&task_id)
    );
    assert_eq!(inspector.waiting().await.unwrap(), 1);
    let stored: EventKey = serde_json::from_value(json!(task_id)).unwrap();
    let job = inspector
        .get(&stored)
        .await
        .unwrap()
        .expect("the job is stored");
    assert_eq!(job.key, key);
    assert_eq!(job.portal_id, Some(PortalId::new(1001)));
    assert_eq!(job.integration, None);
    assert_eq!(
        serde_json::from_str::<Value>(job.event.get()).unwrap(),
        event
    );
    let stored = dead_letters::get(pool, letter.id).await.unwrap().unwrap();
    assert!(stored.replayed_at.is_some());
    api.finish().await;
}

#[tokio::test]
async fn an_outbound_dead_letter_is_replayed_as_lead_change_jobs() {
    // Arrange
    let (api, acme, lead_id) = acme_with_a_lead().await;
    // As the push side records a lead it could not push.
    let letter = dead_letters::record(
        api.db.store.pool(),
        &NewDeadLetter {
            integration_id: Some(acme.integration.id),
            portal_id: Some(PortalId::new(1001)),
            event_key: PushLeadChange::task_id_of(12),
            kind: DeadLetterKind::OutboundChange,
            reason: "hubspot_validation".to_owned(),
            payload: json!({
                "integration_id": acme.integration.id,
                "lead_id": lead_id,
                "change_ids": [11, 12],
                "operations": ["insert", "update"],
            }),
        },
    )
    .await
    .unwrap();

    // Act
    let replayed = replay(&api, &acme, letter.id).await;

    // Assert
    assert_eq!(replayed["outcome"], "replayed");
    assert_eq!(replayed["queue"], OUTBOUND_QUEUE);
    assert_eq!(replayed["jobs_queued"], 2);
    let config = leadsync_queue::outbound_config(&api.settings.redis);
    let mut conn = leadsync_queue::redis_client(&api.settings.redis)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut ids: Vec<String> = conn.hkeys(config.job_data_hash()).await.unwrap();
    ids.sort();
    let expected = [
        format!("replay:{}:1:lead-change:11", letter.id),
        format!("replay:{}:1:lead-change:12", letter.id),
    ];
    assert_eq!(ids, expected);
    let raw: Vec<u8> = conn
        .hget(config.job_data_hash(), &expected[1])
        .await
        .unwrap();
    let job: PushLeadChange = serde_json::from_slice(&raw).unwrap();
    assert_eq!(job.change_id, 12);
    assert_eq!(job.lead_id, lead_id);
    assert_eq!(job.integration_id, acme.integration.id);
    assert_eq!(job.operation, "update");
    let active: u64 = conn.llen(config.active_jobs_list()).await.unwrap();
    assert_eq!(active, 2, "ready for a worker");
    api.finish().await;
}

#[tokio::test]
async fn dead_letter_queries_are_validated() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;

    for (path, field) in [
        ("/v1/dead-letters?kind=everything", "kind"),
        ("/v1/dead-letters?cursor=-3", "cursor"),
        ("/v1/dead-letters?limit=5000", "limit"),
    ] {
        // Act
        let error = json_of(api.get(path, &acme).await, 422).await;

        // Assert
        assert_eq!(error["field"], field, "{path}");
    }
    let missing = api
        .request(
            Method::POST,
            "/v1/dead-letters/12345/replay",
            Some(&acme.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(missing, 404).await["code"], "not_found");
    api.finish().await;
}

#[tokio::test]
async fn a_replay_that_cannot_reach_the_queue_leaves_the_letter_open() {
    // Arrange: nothing listens on port 1.
    let api = TestApi::spawn_with("[redis]\nurl = \"redis://127.0.0.1:1/0\"").await;
    let acme = api.tenant("acme", 1001).await;
    let event = event_json(1001, 56);
    let letter = dead_letters::record(
        api.db.store.pool(),
        &NewDeadLetter {
            integration_id: Some(acme.integration.id),
            portal_id: Some(PortalId::new(1001)),
            event_key: key_of(&event).as_str().to_owned(),
            kind: DeadLetterKind::InboundEvent,
            reason: "hubspot_validation".to_owned(),
            payload: event,
        },
    )
    .await
    .unwrap();

    // Act
    let response = api
        .request(
            Method::POST,
            &format!("/v1/dead-letters/{}/replay", letter.id),
            Some(&acme.token),
        )
        .send()
        .await
        .unwrap();

    // Assert
    let error = json_of(response, 503).await;
    assert_eq!(error["code"], "service_unavailable");
    assert!(
        !error["message"].as_str().unwrap().contains("redis"),
        "opaque"
    );
    let stored = dead_letters::get(api.db.store.pool(), letter.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.replayed_at, None,
        "the letter stays open for a later replay"
    );
    api.stop().await;
    api.db.cleanup().await.unwrap();
}

/// Reopens a replayed letter: the state a replay leaves when Redis took the
/// push but the Postgres commit that marks the letter failed.
async fn lose_replay_commit(api: &TestApi, id: i64) {
    sqlx::query("UPDATE dead_letters SET replayed_at = NULL WHERE id = $1")
        .bind(id)
        .execute(api.db.store.pool())
        .await
        .unwrap();
}

/// Records an open letter for a webhook event of portal 1001; returns what
/// was recorded and the letter's id.
async fn inbound_letter(api: &TestApi, tenant: &Tenant, contact: u64) -> (NewDeadLetter, i64) {
    let event = event_json(1001, contact);
    let new = NewDeadLetter {
        integration_id: Some(tenant.integration.id),
        portal_id: Some(PortalId::new(1001)),
        event_key: key_of(&event).as_str().to_owned(),
        kind: DeadLetterKind::InboundEvent,
        reason: "hubspot_validation".to_owned(),
        payload: event,
    };
    let id = dead_letters::record(api.db.store.pool(), &new)
        .await
        .unwrap()
        .id;
    (new, id)
}

#[tokio::test]
async fn a_letter_that_failed_again_is_replayed_under_a_new_task_id() {
    // Arrange: a replay reached the queue but its commit was lost, and the
    // replayed job then failed again, bumping the still open letter.
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let (new, id) = inbound_letter(&api, &acme, 57).await;
    let first = replay(&api, &acme, id).await;
    lose_replay_commit(&api, id).await;
    let bumped = dead_letters::record(api.db.store.pool(), &new)
        .await
        .unwrap();

    // Act
    let second = replay(&api, &acme, id).await;

    // Assert
    assert_eq!(first["jobs_queued"], 1);
    assert_eq!(bumped.id, id, "the failure bumped the open letter");
    assert_eq!(second["outcome"], "replayed");
    assert_eq!(second["jobs_queued"], 1, "the new failure is queued again");
    let mut ids = api.inspector().await.ids().await.unwrap();
    ids.sort();
    assert_eq!(ids.len(), 2, "one job per replayed failure: {ids:?}");
    let stored = dead_letters::get(api.db.store.pool(), id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.replayed_at.is_some());
    api.finish().await;
}

#[tokio::test]
async fn a_replay_that_queues_nothing_leaves_the_letter_open() {
    // Arrange: a replay reached the queue but its commit was lost; nothing
    // failed since, so the same jobs are still known to the queue.
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let (_, id) = inbound_letter(&api, &acme, 58).await;
    replay(&api, &acme, id).await;
    lose_replay_commit(&api, id).await;

    // Act
    let response = api
        .request(
            Method::POST,
            &format!("/v1/dead-letters/{id}/replay"),
            Some(&acme.token),
        )
        .send()
        .await
        .unwrap();

    // Assert
    let error = json_of(response, 409).await;
    assert_eq!(error["code"], "already_queued");
    assert!(error["message"].as_str().unwrap().contains("stays open"));
    let stored = dead_letters::get(api.db.store.pool(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.replayed_at, None,
        "nothing was queued, so it stays open"
    );
    assert_eq!(api.inspector().await.ids().await.unwrap().len(), 1);
    api.finish().await;
}
