//! The README's demo runs end to end against the local Redis and Postgres.

use leadsync_runtime::Settings;

#[tokio::test]
async fn the_demo_syncs_both_directions_without_duplicates_or_echoes() {
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
    let outbound = report.outbound;
    assert_eq!(outbound.contacts_created, 3, "{report:?}");
    assert_eq!(outbound.edit_writes, outbound.platform_edits, "{report:?}");
    assert!(outbound.hubspot_edit_synced, "{report:?}");
    assert_eq!(outbound.echo_writes, 0, "no echo traffic: {report:?}");
}
