//! The README's demo runs end to end against the local Redis and Postgres.

use leadsync_runtime::Settings;

#[tokio::test]
async fn the_demo_queues_every_distinct_event_once_and_syncs_every_contact() {
    // Arrange
    let settings = Settings::from_toml("").expect("defaults are valid");

    // Act
    let report = leadsync_cli::demo::run(settings)
        .await
        .expect("the demo runs");

    // Assert
    assert!(report.jobs_queued > 1_000, "{report:?}");
    assert!(report.events_duplicated > 0, "{report:?}");
    assert_eq!(
        report.events_delivered,
        report.jobs_queued + report.events_duplicated,
        "every distinct event queued once, every redelivery dropped: {report:?}"
    );
    assert_eq!(report.leads, report.contacts, "{report:?}");
    assert!(report.contacts >= 202, "{report:?}");
    assert!(
        report.api_calls * 20 < report.jobs_queued,
        "batch reads, not one call per event: {report:?}"
    );
}
