//! The `hubspot-sim` binary runs standalone and serves the API and control API.

use std::process::Stdio;
use std::time::Duration;

use leadsync_hubspot_sim::{ControlClient, UserEdit};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn the_binary_serves_on_the_port_it_prints() {
    // Arrange
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubspot-sim"))
        .args([
            "--port",
            "0",
            "--seed",
            "7",
            "--no-rate-limit",
            "--portal",
            "100",
            "--private-app-token",
            "pat-standalone",
        ])
        .args(["--log", "warn"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("prints its address in time")
        .expect("readable")
        .expect("a line");
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a URL")
        .to_owned();

    // Act
    let control = ControlClient::new(base.clone());
    let info = control.info().await.expect("control API answers");
    let contact = control
        .create_contact(100, &UserEdit::new([("email", "bin@example.com")]))
        .await
        .expect("created");
    let body: Value = reqwest::Client::new()
        .get(format!("{base}/crm/v3/objects/contacts/{}", contact.id))
        .bearer_auth("pat-standalone")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    // SIGTERM (what `docker stop` sends) stops it cleanly.
    let pid = child.id().expect("running").to_string();
    let term = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("exit status");

    // Assert
    assert!(term.success());
    assert!(exit.success(), "{exit:?}");
    assert_eq!(info.seed, 7);
    assert_eq!(info.portals, vec![100]);
    assert_eq!(body["properties"]["email"], "bin@example.com");
}
