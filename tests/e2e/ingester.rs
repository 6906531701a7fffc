//! The ingester against a real Redis.

use std::time::{Duration, Instant};

use leadsync_domain::WebhookBatch;

use crate::helpers::{SECRET, TestIngester, batch, now_ms, test_settings, v3_post};

const PATH: &str = "/webhooks/hubspot";

#[tokio::test]
async fn a_signed_batch_becomes_one_job_per_event_with_its_key_and_payload() {
    // Arrange
    let mut app = TestIngester::spawn("").await;
    let body = batch(4242, 1, 50);

    // Act
    let res = app.post_signed(PATH, &body).await;

    // Assert
    assert_eq!(res.status(), 200);
    assert_eq!(app.jobs().await, 50);
    let expected = WebhookBatch::parse(body.as_bytes()).unwrap();
    for ev in expected.events() {
        let job = app
            .queue
            .get(ev.key())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no job {}", ev.key()));
        assert_eq!(job.key, *ev.key());
        assert_eq!(job.portal_id.map(|p| p.get()), Some(4242));
        assert_eq!(
            job.event.get(),
            ev.raw().get(),
            "the event is queued byte for byte"
        );
        assert!(job.integration.is_none());
    }
    app.stop().await;
}

#[tokio::test]
async fn a_repeated_delivery_enqueues_nothing_new_and_still_answers_200() {
    // Arrange
    let mut app = TestIngester::spawn("").await;
    let body = batch(4242, 100, 20);
    assert_eq!(app.post_signed(PATH, &body).await.status(), 200);

    // Act: the same delivery, then HubSpot's retry of it (attemptNumber 1).
    let again = app.post_signed(PATH, &body).await;
    let retry = app
        .post_signed(
            PATH,
            &body.replace("\"attemptNumber\":0", "\"attemptNumber\":1"),
        )
        .await;

    // Assert
    assert_eq!(again.status(), 200);
    assert_eq!(retry.status(), 200);
    assert_eq!(app.jobs().await, 20);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("leadsync_events_enqueued_total 20"),
        "{metrics}"
    );
    assert!(
        metrics.contains("leadsync_events_duplicate_total 40"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn concurrent_requests_each_get_their_events_queued() {
    // Arrange
    let mut app = TestIngester::spawn("").await;

    // Act: 64 single-event requests at once share bulk pushes.
    let requests = (0..64u64).map(|i| {
        let body = batch(7, 10_000 + i, 1);
        let app = &app;
        async move { app.post_signed(PATH, &body).await.status() }
    });
    let statuses = futures::future::join_all(requests).await;

    // Assert
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(app.jobs().await, 64);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_signature_is_401_and_queues_nothing() {
    // Arrange
    let mut app = TestIngester::spawn("").await;
    let body = batch(1, 1, 3);

    // Act
    let wrong_secret = app
        .post_signed_at(PATH, &body, now_ms(), "not-the-secret")
        .await;
    let unsigned = app
        .http
        .post(format!("{}{PATH}", app.address))
        .body(body.clone())
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(wrong_secret.status(), 401);
    let json: serde_json::Value = wrong_secret.json().await.unwrap();
    assert_eq!(json["code"], "invalid_signature");
    assert_eq!(unsigned.status(), 401);
    assert_eq!(app.jobs().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_stale_timestamp_is_401() {
    // Arrange
    let mut app = TestIngester::spawn("").await;
    let body = batch(1, 1, 1);

    // Act: correctly signed, six minutes ago.
    let res = app
        .post_signed_at(PATH, &body, now_ms() - 6 * 60 * 1000, SECRET)
        .await;

    // Assert
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("timestamp"));
    assert_eq!(app.jobs().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    // Arrange
    let mut app = TestIngester::spawn("").await;
    let huge = format!("[\"{}\"]", "x".repeat(2 * 1024 * 1024));

    // Act: once with Content-Length, once streamed without it.
    let declared = app.post_signed(PATH, &huge).await;
    let streamed = post_chunked(&app.address, PATH, huge.as_bytes()).await;

    // Assert
    assert_eq!(declared.status(), 413);
    let json: serde_json::Value = declared.json().await.unwrap();
    assert_eq!(json["code"], "body_too_large");
    // A server may close the connection while an oversized body is still being
    // sent; when the response arrives, it must be 413.
    if let Some(status_line) = streamed {
        assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    }
    assert_eq!(app.jobs().await, 0);
    app.stop().await;
}

/// Sends `body` with chunked transfer encoding (no Content-Length) and returns
/// the response's status line, or `None` when the server closed the connection
/// before answering.
async fn post_chunked(address: &str, path: &str, body: &[u8]) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    );
    let mut wire = head.into_bytes();
    for chunk in body.chunks(64 * 1024) {
        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before all of it is written.
    let _ = stream.write_all(&wire).await;
    let mut response = vec![0u8; 1024];
    let n = stream.read(&mut response).await.unwrap_or(0);
    let text = String::from_utf8_lossy(&response[..n]).into_owned();
    text.lines()
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

#[tokio::test]
async fn malformed_json_is_400() {
    // Arrange
    let mut app = TestIngester::spawn("").await;

    // Act
    let truncated = app.post_signed(PATH, "[{").await;
    let object = app.post_signed(PATH, r#"{"eventId":1}"#).await;

    // Assert
    assert_eq!(truncated.status(), 400);
    let json: serde_json::Value = truncated.json().await.unwrap();
    assert_eq!(json["code"], "malformed_body");
    assert_eq!(object.status(), 400);
    assert_eq!(app.jobs().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn unknown_event_types_inside_a_valid_batch_are_accepted_and_queued() {
    // Arrange
    let mut app = TestIngester::spawn("").await;
    let body = r#"[{"eventId":9,"subscriptionId":3,"portalId":5,"objectId":8,"occurredAt":1700000000000,"subscriptionType":"deal.creation","attemptNumber":0},{"surprise":true}]"#;

    // Act
    let res = app.post_signed(PATH, body).await;

    // Assert
    assert_eq!(res.status(), 200);
    assert_eq!(app.jobs().await, 2);
    let ids = app.queue.ids().await.unwrap();
    assert!(
        ids.contains(&"hs:5:3:9:8:1700000000000".to_owned()),
        "{ids:?}"
    );
    assert!(ids.iter().any(|id| id.starts_with("raw:")), "{ids:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_per_integration_url_is_verified_with_its_own_path_and_recorded() {
    // Arrange
    let mut app = TestIngester::spawn("").await;
    let body = batch(31, 1, 2);
    let path = "/webhooks/hubspot/acme-eu";

    // Act
    let res = app.post_signed(path, &body).await;
    // Signed for the generic URL but sent to the per-integration one: the URI differs.
    let wrong_uri = v3_post(&app.http, &app.address, path, PATH, &body)
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(res.status(), 200);
    assert_eq!(wrong_uri.status(), 401);
    let key = WebhookBatch::parse(body.as_bytes()).unwrap().events()[0]
        .key()
        .clone();
    let job = app.queue.get(&key).await.unwrap().unwrap();
    assert_eq!(job.integration.as_deref(), Some("acme-eu"));
    app.stop().await;
}

#[tokio::test]
async fn a_target_url_with_a_query_is_verified_on_hubspots_decoded_form() {
    // Arrange: a target URL whose query carries escapes. HubSpot signs the
    // URL with `%3A %2F %28 %29` decoded and `%20` kept.
    let mut app = TestIngester::spawn("").await;
    let body = batch(41, 1, 1);
    let sent = "/webhooks/hubspot?src=hs%3Aapp%2Fv3&x=%28a%29&q=a%20b";
    let decoded = "/webhooks/hubspot?src=hs:app/v3&x=(a)&q=a%20b";

    // Act
    let signed_decoded = v3_post(&app.http, &app.address, sent, decoded, &body)
        .send()
        .await
        .unwrap();
    let signed_as_sent = v3_post(&app.http, &app.address, sent, sent, &body)
        .send()
        .await
        .unwrap();
    let without_query = v3_post(&app.http, &app.address, sent, PATH, &body)
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(signed_decoded.status(), 200);
    assert_eq!(signed_as_sent.status(), 401);
    assert_eq!(without_query.status(), 401);
    assert_eq!(app.jobs().await, 1);
    app.stop().await;
}

#[tokio::test]
async fn v1_alone_is_accepted_unless_v3_is_required() {
    // Arrange
    let mut lenient = TestIngester::spawn("").await;
    let mut strict = TestIngester::spawn("[hubspot]\nrequire_signature_v3 = true").await;
    let body = batch(2, 1, 1);
    let v1 = |app: &TestIngester| {
        app.http
            .post(format!("{}{PATH}", app.address))
            .header(
                "X-HubSpot-Signature",
                leadsync_hubspot::signature::sign_v1(SECRET, body.as_bytes()),
            )
            .header("X-HubSpot-Signature-Version", "v1")
            .body(body.clone())
            .send()
    };

    // Act
    let accepted = v1(&lenient).await.unwrap();
    let refused = v1(&strict).await.unwrap();

    // Assert
    assert_eq!(accepted.status(), 200);
    assert_eq!(lenient.jobs().await, 1);
    assert_eq!(refused.status(), 401);
    assert_eq!(strict.jobs().await, 0);
    lenient.stop().await;
    strict.stop().await;
}

#[tokio::test]
async fn redis_on_a_closed_port_is_503_within_the_deadline() {
    // Arrange: a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let settings = test_settings(&format!("[redis]\nurl = \"redis://127.0.0.1:{port}/0\""));
    let app = leadsync_ingester::Application::build(&settings).unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let body = batch(1, 1, 1);

    // Act
    let started = Instant::now();
    let res = v3_post(&reqwest::Client::new(), &address, PATH, PATH, &body)
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let ready = reqwest::get(format!("{address}/readyz")).await.unwrap();

    // Assert
    assert_eq!(res.status(), 503);
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json["code"], "queue_unavailable");
    assert!(
        elapsed < Duration::from_millis(1000 + 500),
        "took {elapsed:?}, deadline 1 s"
    );
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn a_redis_that_never_answers_is_503_at_the_deadline_not_a_hang() {
    // Arrange: accepts connections, never replies.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let settings = test_settings(&format!(
        "[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\nconnect_timeout_ms = 10000\nresponse_timeout_ms = 10000"
    ));
    let app = leadsync_ingester::Application::build(&settings).unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let body = batch(1, 1, 1);

    // Act
    let started = Instant::now();
    let res = v3_post(&reqwest::Client::new(), &address, PATH, PATH, &body)
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();

    // Assert
    assert_eq!(res.status(), 503);
    assert!(
        elapsed >= Duration::from_millis(1000),
        "answered before the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "took {elapsed:?}, deadline 1 s"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_endpoints() {
    // Arrange
    let app = TestIngester::spawn("").await;
    let body = batch(3, 1, 2);
    app.post_signed(PATH, &body).await;
    app.post_signed_at(PATH, &body, now_ms(), "wrong").await;

    // Act
    let health = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    let ready = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    let metrics = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // Assert
    assert_eq!(health.status(), 200);
    assert_eq!(ready.status(), 200);
    for needle in [
        "leadsync_http_requests_total{route=\"/webhooks/hubspot\",status=\"200\"} 1",
        "leadsync_http_requests_total{route=\"/webhooks/hubspot\",status=\"401\"} 1",
        "leadsync_webhook_signature_failures_total{reason=\"mismatch\"} 1",
        "leadsync_webhook_events_received_total 2",
        "leadsync_events_enqueued_total 2",
        "leadsync_webhook_enqueue_seconds_count 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn each_job_carries_the_w3c_trace_context_of_its_request() {
    // Arrange: telemetry as the binary sets it up, exporting to a closed port
    // (export fails quietly; spans still get trace ids).
    let settings = test_settings(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:9/v1/traces\"\nlog_filter = \"warn,leadsync_ingester=info\"",
    );
    let _guard = leadsync_runtime::telemetry::init(&settings.telemetry)
        .expect("nextest runs each test in its own process, so no subscriber is installed yet");
    let mut app = TestIngester::spawn_with(settings).await;
    let body = batch(8, 1, 2);

    // Act
    let res = app.post_signed(PATH, &body).await;

    // Assert
    assert_eq!(res.status(), 200);
    let batch = WebhookBatch::parse(body.as_bytes()).unwrap();
    let mut trace_ids = Vec::new();
    for ev in batch.events() {
        let job = app.queue.get(ev.key()).await.unwrap().unwrap();
        let traceparent = job
            .trace
            .get("traceparent")
            .expect("a traceparent is stored");
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(parts[1].len(), 32, "{traceparent}");
        assert_ne!(parts[1], "0".repeat(32), "{traceparent}");
        trace_ids.push(parts[1].to_owned());
    }
    assert_eq!(
        trace_ids[0], trace_ids[1],
        "events of one request share its trace"
    );
    app.stop().await;
}

/// A TCP proxy to the local Redis that holds every reply for `delay`.
async fn slow_redis_proxy(delay: Duration) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect("127.0.0.1:6379")
                .await
                .unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_graceful_stop_finishes_in_flight_requests_and_refuses_new_ones() {
    // Arrange: Redis answers slowly, so a request is still in flight when we stop.
    let port = slow_redis_proxy(Duration::from_millis(150)).await;
    let settings = test_settings(&format!(
        "[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\n[application]\nenqueue_deadline_ms = 4000\nshutdown_timeout_secs = 10"
    ));
    // Cleaning up scans the whole shared keyspace: not through the slow proxy.
    let mut direct = settings.redis.clone();
    direct.url = secrecy::SecretString::from("redis://127.0.0.1:6379/0");
    let mut app = TestIngester::spawn_with(settings).await;
    let body = batch(9, 1, 3);
    let request = v3_post(&app.http, &app.address, PATH, PATH, &body);
    let in_flight = tokio::spawn(async move { request.send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Act
    let stopping = app.stop_handle();
    let stopped = tokio::spawn(async move { stopping.stop(true).await });
    let status = in_flight.await.unwrap();
    stopped.await.unwrap();
    let after = reqwest::Client::new()
        .get(format!("{}/healthz", app.address))
        .send()
        .await;

    // Assert
    assert_eq!(status.expect("the in-flight request was answered"), 200);
    assert_eq!(
        app.jobs().await,
        3,
        "its events were queued before the stop completed"
    );
    assert!(
        after.is_err(),
        "the stopped server still accepts connections"
    );
    leadsync_queue::QueueInspector::connect(&direct)
        .await
        .expect("Redis runs at 127.0.0.1:6379")
        .purge()
        .await
        .unwrap();
}
