//! Webhook delivery: payloads, signatures, batching, retries, concurrency,
//! faults, pause/resume, determinism.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use leadsync_hubspot::signature::{
    SignatureHeaders, SignaturePolicy, UnverifiedRequest, WebhookSecrets,
};
use leadsync_hubspot_sim::{
    DeliveryConfig, FaultConfig, ImportRequest, MergeRequest, ReceivedRequest, Receiver, SimConfig,
    SubscriptionSpec, USER_AGENT, UserEdit,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::helpers::{PORTAL, config, start_delivering, start_with};

const WAIT: Duration = Duration::from_secs(10);

fn fast_retries(mut cfg: SimConfig) -> SimConfig {
    // 24 hours of retries in about 0.1 s.
    cfg.delivery = DeliveryConfig {
        time_scale: 1_000_000.0,
        ..DeliveryConfig::default()
    };
    cfg
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn verify(req: &ReceivedRequest, secret: &str, require_v3: bool) -> bool {
    let secrets = WebhookSecrets::new(vec![SecretString::from(secret.to_owned())]).expect("secret");
    let headers = SignatureHeaders {
        signature: req.header("x-hubspot-signature"),
        version: req.header("x-hubspot-signature-version"),
        signature_v3: if require_v3 {
            req.header("x-hubspot-signature-v3")
        } else {
            None
        },
        timestamp: req.header("x-hubspot-request-timestamp"),
    };
    UnverifiedRequest {
        method: "POST",
        uri: &req.url,
        body: req.body.clone(),
        headers,
    }
    .verify(
        &secrets,
        SignaturePolicy {
            require_v3,
            ..SignaturePolicy::default()
        },
        now_ms(),
    )
    .is_ok()
}

#[tokio::test]
async fn deliveries_are_signed_so_the_projects_verifier_accepts_them() {
    // Arrange
    let (t, receiver) = start_delivering(
        config(),
        vec![
            SubscriptionSpec::new("contact.creation"),
            SubscriptionSpec::property_change("firstname"),
        ],
    )
    .await;
    let secret = t.sim.config().app.client_secret.expose_secret().to_owned();
    let oauth = t.oauth_token(PORTAL).await;
    let app_id = t.sim.config().app.app_id;

    // Act
    let (status, _, _) = t
        .with_token(oauth["access_token"].as_str().expect("token"))
        .post(
            "/crm/v3/objects/contacts",
            json!({ "properties": { "email": "s@example.com", "firstname": "Sig" }}),
        )
        .await;
    assert!(receiver.wait_for_events(2, WAIT).await);

    // Assert
    assert_eq!(status, reqwest::StatusCode::CREATED);
    let requests = receiver.requests();
    let req = &requests[0];
    assert!(verify(req, &secret, true), "v3 verifies");
    assert!(verify(req, &secret, false), "v1 verifies");
    assert!(!verify(req, "another-secret", true));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("user-agent"), Some(USER_AGENT));
    assert_eq!(req.header("x-hubspot-signature-version"), Some("v1"));
    let events: Vec<Value> = requests.iter().flat_map(ReceivedRequest::events).collect();
    let creation = events
        .iter()
        .find(|e| e["subscriptionType"] == "contact.creation")
        .expect("creation event");
    assert_eq!(creation["changeSource"], "INTEGRATION");
    assert_eq!(
        creation["sourceId"],
        app_id.to_string(),
        "the app's own writes carry its id"
    );
    assert_eq!(creation["changeFlag"], "CREATED");
    assert_eq!(creation["portalId"], PORTAL);
    assert_eq!(creation["appId"], app_id);
    assert_eq!(creation["attemptNumber"], 0);
    assert!(
        creation["eventId"].is_u64()
            && creation["subscriptionId"].is_u64()
            && creation["objectId"].is_u64()
    );
    assert!(
        creation["occurredAt"]
            .as_i64()
            .is_some_and(|t| (now_ms() - t).abs() < 60_000)
    );
    let change = events
        .iter()
        .find(|e| e["subscriptionType"] == "contact.propertyChange")
        .expect("property change");
    assert_eq!(
        (
            change["propertyName"].clone(),
            change["propertyValue"].clone()
        ),
        (json!("firstname"), json!("Sig"))
    );
}

#[tokio::test]
async fn a_503_is_retried_until_it_succeeds_with_attempt_numbers_counting_up() {
    // Arrange
    let (t, receiver) = start_delivering(
        fast_retries(config()),
        vec![SubscriptionSpec::new("contact.creation")],
    )
    .await;
    receiver.fail_next(3, 503);

    // Act
    t.sim
        .control()
        .create_contact(PORTAL, &UserEdit::new([("email", "r@example.com")]))
        .expect("created");
    assert!(receiver.wait_for_events(1, WAIT).await);
    assert!(t.sim.control().wait_for_delivery_idle(WAIT).await);

    // Assert
    let requests = receiver.requests();
    let attempts: Vec<(u16, Value)> = requests
        .iter()
        .map(|r| (r.status, r.events()[0]["attemptNumber"].clone()))
        .collect();
    assert_eq!(
        attempts,
        vec![
            (503, json!(0)),
            (503, json!(1)),
            (503, json!(2)),
            (200, json!(3))
        ]
    );
    let first = requests[0].events();
    let last = requests[3].events();
    assert_eq!(
        first[0]["eventId"], last[0]["eventId"],
        "a retry is the same event"
    );
    let stats = t.sim.control().stats().delivery;
    assert_eq!(
        (
            stats.failed_requests,
            stats.events_retried,
            stats.events_delivered
        ),
        (3, 3, 1)
    );
}

#[tokio::test]
async fn delivery_gives_up_after_the_tenth_retry_and_counts_the_drop() {
    // Arrange
    let (t, receiver) = start_delivering(
        fast_retries(config()),
        vec![SubscriptionSpec::new("contact.creation")],
    )
    .await;
    receiver.respond_with(500);

    // Act
    t.sim
        .control()
        .create_contact(PORTAL, &UserEdit::new([("email", "g@example.com")]))
        .expect("created");
    assert!(t.sim.control().wait_for_delivery_idle(WAIT).await);

    // Assert
    let attempts: Vec<u64> = receiver
        .requests()
        .iter()
        .map(|r| r.events()[0]["attemptNumber"].as_u64().expect("attempt"))
        .collect();
    assert_eq!(
        attempts,
        (0..=10).collect::<Vec<u64>>(),
        "1 attempt + 10 retries"
    );
    let stats = t.sim.control().stats().delivery;
    assert_eq!(
        (stats.events_dropped, stats.events_delivered, stats.pending),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_failures_that_get_retried() {
    // Arrange: a receiver slower than the delivery timeout.
    let mut cfg = fast_retries(config());
    cfg.delivery.timeout_ms = 100;
    let (t, receiver) =
        start_delivering(cfg, vec![SubscriptionSpec::new("contact.creation")]).await;
    receiver.set_delay(Duration::from_millis(400));

    // Act
    t.sim
        .control()
        .create_contact(PORTAL, &UserEdit::new([("email", "slow@example.com")]))
        .expect("created");
    tokio::time::sleep(Duration::from_millis(250)).await;
    receiver.set_delay(Duration::ZERO);
    assert!(t.sim.control().wait_for_delivery_idle(WAIT).await);

    // Assert
    let stats = t.sim.control().stats().delivery;
    assert!(stats.failed_requests >= 1, "{stats:?}");
    assert_eq!(stats.events_delivered, 1);
    let attempts: Vec<u64> = receiver
        .requests()
        .iter()
        .filter_map(|r| r.events().first().and_then(|e| e["attemptNumber"].as_u64()))
        .collect();
    assert!(
        attempts.iter().any(|a| *a >= 1),
        "the event was sent again: {attempts:?}"
    );

    // Arrange: nothing listens at the target.
    let mut cfg = fast_retries(config());
    cfg.app.target_url = Some("http://127.0.0.1:9/nothing-here".to_owned());
    cfg.subscriptions = vec![SubscriptionSpec::new("contact.creation")];
    let dead = start_with(cfg).await;

    // Act
    dead.sim
        .control()
        .create_contact(PORTAL, &UserEdit::new([("email", "d@example.com")]))
        .expect("created");
    assert!(dead.sim.control().wait_for_delivery_idle(WAIT).await);

    // Assert
    let stats = dead.sim.control().stats().delivery;
    assert_eq!(
        (stats.requests, stats.failed_requests, stats.events_dropped),
        (11, 11, 1)
    );
}

#[tokio::test]
async fn a_bulk_import_of_1000_contacts_arrives_in_posts_of_at_most_100() {
    // Arrange
    let subscriptions = SubscriptionSpec::all_contact_events(&[
        "firstname",
        "lastname",
        "phone",
        "company",
        "jobtitle",
    ]);
    let (t, receiver) = start_delivering(config(), subscriptions).await;

    // Act
    let import = t
        .sim
        .control()
        .import_contacts(
            PORTAL,
            &ImportRequest {
                count: 1_000,
                ..ImportRequest::default()
            },
        )
        .expect("imported");
    assert!(
        receiver.wait_for_events(6_000, WAIT).await,
        "got {}",
        receiver.accepted_event_count()
    );
    assert!(t.sim.control().wait_for_delivery_idle(WAIT).await);

    // Assert
    let requests = receiver.requests();
    assert!(
        requests
            .iter()
            .all(|r| (1..=100).contains(&r.events().len()))
    );
    assert!(requests.len() >= 60, "6000 events need at least 60 POSTs");
    let events = receiver.accepted_events();
    assert_eq!(events.len(), 6_000);
    let creations: HashSet<u64> = events
        .iter()
        .filter(|e| e["subscriptionType"] == "contact.creation")
        .filter_map(|e| e["objectId"].as_u64())
        .collect();
    assert_eq!(creations.len(), 1_000);
    assert_eq!(
        creations,
        import.ids.iter().copied().collect::<HashSet<u64>>()
    );
    let mut per_property: BTreeMap<String, usize> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e["subscriptionType"] == "contact.propertyChange")
    {
        *per_property
            .entry(e["propertyName"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        per_property.values().copied().collect::<Vec<_>>(),
        vec![1_000; 5]
    );
    assert!(events.iter().all(|e| e["changeSource"] == "IMPORT"));
}

#[tokio::test]
async fn import_extra_edits_fire_property_changes_when_creation_fires_none() {
    // Arrange
    let mut cfg = config();
    cfg.property_changes_on_create = false;
    let subscriptions = SubscriptionSpec::all_contact_events(&[
        "firstname",
        "lastname",
        "phone",
        "company",
        "jobtitle",
    ]);
    let (t, receiver) = start_delivering(cfg, subscriptions).await;

    // Act
    t.sim
        .control()
        .import_contacts(
            PORTAL,
            &ImportRequest {
                count: 10,
                extra_edits: 5,
                ..ImportRequest::default()
            },
        )
        .expect("imported");
    assert!(t.sim.control().wait_for_delivery_idle(WAIT).await);

    // Assert
    let events = receiver.accepted_events();
    let count = |kind: &str| {
        events
            .iter()
            .filter(|e| e["subscriptionType"] == kind)
            .count()
    };
    assert_eq!(
        (count("contact.creation"), count("contact.propertyChange")),
        (10, 50)
    );
}

#[tokio::test]
async fn ui_edits_merges_restores_and_gdpr_deletes_produce_their_events() {
    // Arrange
    let mut subscriptions =
        SubscriptionSpec::all_contact_events(&["firstname", "lastname", "phone"]);
    subscriptions.push(SubscriptionSpec {
        active: false,
        ..SubscriptionSpec::property_change("company")
    });
    let mut cfg = config();
    cfg.property_changes_on_create = false;
    let (t, receiver) = start_delivering(cfg, subscriptions).await;
    let control = t.sim.control();
    let a = control
        .create_contact(
            PORTAL,
            &UserEdit::new([("email", "a@example.com"), ("firstname", "Ann")]).by(45_678),
        )
        .expect("a")
        .id;
    let b = control
        .create_contact(
            PORTAL,
            &UserEdit::new([("email", "b@example.com"), ("phone", "123")]),
        )
        .expect("b")
        .id;

    // Act
    control
        .update_contact(
            PORTAL,
            a,
            &UserEdit::new([
                ("firstname", "Ann"),
                ("lastname", "Lee"),
                ("company", "Acme"),
            ])
            .by(45_678),
        )
        .expect("edit");
    control
        .merge_contacts(
            PORTAL,
            &MergeRequest {
                primary_object_id: a,
                object_id_to_merge: b,
                user_id: None,
            },
        )
        .expect("merge");
    control.archive_contact(PORTAL, a, None).expect("archive");
    control.restore_contact(PORTAL, a, None).expect("restore");
    control.gdpr_delete_contact(PORTAL, a, None).expect("gdpr");
    assert!(control.wait_for_delivery_idle(WAIT).await);

    // Assert
    let mut events = receiver.accepted_events();
    events.sort_by_key(|e| (e["occurredAt"].as_i64(), e["eventId"].as_u64()));
    let kinds: Vec<String> = events
        .iter()
        .map(|e| {
            let kind = e["subscriptionType"].as_str().unwrap_or_default();
            match e["propertyName"].as_str() {
                Some(p) => format!("{kind}:{p}"),
                None => kind.to_owned(),
            }
        })
        .collect();
    let expected = [
        "contact.creation",
        "contact.creation",
        "contact.propertyChange:lastname",
        "contact.merge",
        "contact.propertyChange:phone",
        "contact.deletion",
        "contact.restore",
        "contact.privacyDeletion",
        "contact.deletion",
    ];
    let mut sorted_kinds = kinds;
    sorted_kinds.sort();
    let mut sorted_expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    sorted_expected.sort();
    assert_eq!(
        sorted_kinds, sorted_expected,
        "unchanged firstname and inactive company fire nothing"
    );
    let lastname = events
        .iter()
        .find(|e| e["propertyName"] == "lastname")
        .expect("lastname");
    assert_eq!(lastname["changeSource"], "CRM_UI");
    assert_eq!(lastname["sourceId"], "userId:45678");
    let merge = events
        .iter()
        .find(|e| e["subscriptionType"] == "contact.merge")
        .expect("merge");
    assert_eq!(merge["primaryObjectId"], a);
    assert_eq!(merge["mergedObjectIds"], json!([b]));
    assert_eq!(merge["newObjectId"], a);
    assert_eq!(merge["numberOfPropertiesMoved"], 1);
    let deletion = events
        .iter()
        .find(|e| e["subscriptionType"] == "contact.deletion")
        .expect("deletion");
    assert_eq!(deletion["changeFlag"], "DELETED");
}

#[tokio::test]
async fn at_most_max_concurrent_requests_are_in_flight() {
    // Arrange: one event per POST and a slow receiver, so requests pile up.
    let mut cfg = config();
    cfg.app.max_concurrent_requests = 6;
    cfg.delivery.max_batch = 1;
    let (t, receiver) =
        start_delivering(cfg, vec![SubscriptionSpec::new("contact.creation")]).await;
    receiver.set_delay(Duration::from_millis(30));

    // Act
    t.sim
        .control()
        .import_contacts(
            PORTAL,
            &ImportRequest {
                count: 60,
                ..ImportRequest::default()
            },
        )
        .expect("imported");
    assert!(t.sim.control().wait_for_delivery_idle(WAIT).await);

    // Assert
    let stats = t.sim.control().stats().delivery;
    assert_eq!(stats.events_delivered, 60);
    assert_eq!(stats.max_in_flight, 6);
}

#[tokio::test]
async fn pause_holds_events_until_resume_and_no_target_means_no_events() {
    // Arrange
    let (t, receiver) =
        start_delivering(config(), vec![SubscriptionSpec::new("contact.creation")]).await;
    let control = t.sim.control();

    // Act
    control.pause_delivery();
    control
        .create_contact(PORTAL, &UserEdit::new([("email", "p@example.com")]))
        .expect("created");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let while_paused = receiver.request_count();
    let paused_stats = control.stats().delivery;
    control.resume_delivery();
    assert!(receiver.wait_for_events(1, WAIT).await);

    // Assert
    assert_eq!(while_paused, 0);
    assert!(paused_stats.paused);
    assert_eq!(paused_stats.pending, 1);

    // Arrange: no target URL at all.
    let mut cfg = config();
    cfg.subscriptions = vec![SubscriptionSpec::new("contact.creation")];
    let quiet = start_with(cfg).await;

    // Act
    quiet
        .sim
        .control()
        .create_contact(PORTAL, &UserEdit::new([("email", "q@example.com")]))
        .expect("created");

    // Assert
    assert_eq!(quiet.sim.control().stats().delivery.events_enqueued, 0);
}

#[tokio::test]
async fn injected_faults_duplicate_and_lose_events_and_are_counted() {
    // Arrange
    let (t, receiver) =
        start_delivering(config(), vec![SubscriptionSpec::new("contact.creation")]).await;
    let control = t.sim.control();
    control.set_faults(FaultConfig {
        duplicate_rate: 1.0,
        ..FaultConfig::default()
    });

    // Act: every event twice.
    control
        .import_contacts(
            PORTAL,
            &ImportRequest {
                count: 20,
                ..ImportRequest::default()
            },
        )
        .expect("imported");
    assert!(control.wait_for_delivery_idle(WAIT).await);
    let duplicated = receiver.accepted_events();
    // Act: every event lost.
    control.set_faults(FaultConfig {
        drop_rate: 1.0,
        ..FaultConfig::default()
    });
    control
        .import_contacts(
            PORTAL,
            &ImportRequest {
                count: 5,
                ..ImportRequest::default()
            },
        )
        .expect("imported");
    assert!(control.wait_for_delivery_idle(WAIT).await);
    // Act: reordered and delayed, but all there.
    control.set_faults(FaultConfig {
        reorder_rate: 0.5,
        delay_rate: 0.5,
        max_delay_ms: 50,
        ..FaultConfig::default()
    });
    control
        .import_contacts(
            PORTAL,
            &ImportRequest {
                count: 50,
                ..ImportRequest::default()
            },
        )
        .expect("imported");
    assert!(control.wait_for_delivery_idle(WAIT).await);

    // Assert
    assert_eq!(duplicated.len(), 40);
    let distinct: HashSet<u64> = duplicated
        .iter()
        .filter_map(|e| e["eventId"].as_u64())
        .collect();
    assert_eq!(distinct.len(), 20);
    let stats = control.stats().delivery;
    assert_eq!(stats.events_duplicated, 20);
    assert_eq!(stats.events_lost, 5);
    assert!(
        stats.events_reordered > 0 && stats.events_delayed > 0,
        "{stats:?}"
    );
    assert_eq!(receiver.accepted_event_count(), 40 + 50);
}

#[tokio::test]
async fn the_same_seed_and_calls_give_the_same_ids_and_events() {
    // Arrange
    async fn run() -> (Vec<u64>, Vec<(u64, u64)>) {
        let mut cfg = config();
        cfg.faults = FaultConfig {
            duplicate_rate: 0.3,
            ..FaultConfig::default()
        };
        let (t, receiver) =
            start_delivering(cfg, vec![SubscriptionSpec::new("contact.creation")]).await;
        let import = t
            .sim
            .control()
            .import_contacts(
                PORTAL,
                &ImportRequest {
                    count: 30,
                    ..ImportRequest::default()
                },
            )
            .expect("imported");
        assert!(t.sim.control().wait_for_delivery_idle(WAIT).await);
        let mut events: Vec<(u64, u64)> = receiver
            .accepted_events()
            .iter()
            .filter_map(|e| Some((e["objectId"].as_u64()?, e["eventId"].as_u64()?)))
            .collect();
        events.sort_unstable();
        (import.ids, events)
    }

    // Act
    let first = run().await;
    let second = run().await;

    // Assert
    assert_eq!(first, second);
    assert!(first.1.len() > 30, "some duplicates were injected");
}

#[tokio::test]
async fn receiver_helper_keeps_unrecorded_counts() {
    // Arrange
    let receiver = Receiver::spawn_with(false, 1).await.expect("receiver");
    let mut cfg = config();
    cfg.app.target_url = Some(receiver.url());
    cfg.subscriptions = vec![SubscriptionSpec::new("contact.creation")];
    let t = start_with(cfg).await;

    // Act
    t.sim
        .control()
        .import_contacts(
            PORTAL,
            &ImportRequest {
                count: 3,
                ..ImportRequest::default()
            },
        )
        .expect("imported");
    assert!(receiver.wait_for_events(3, WAIT).await);

    // Assert
    assert!(receiver.requests().is_empty(), "bodies are not kept");
    assert_eq!(receiver.accepted_event_count(), 3);
}
