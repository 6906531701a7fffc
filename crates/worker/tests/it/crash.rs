//! A worker process killed with SIGKILL while it holds jobs loses none of
//! them: another worker takes them over after the heartbeat timeout.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{RunningWorker, TestEnv};

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn jobs_held_by_a_killed_worker_are_processed_by_the_next_one() {
    // Arrange: the binary, with a batch window far longer than the test, so
    // it holds every job without committing any.
    let env = TestEnv::new().await;
    let contacts = env.create_contacts(15);
    let mut events: Vec<_> = contacts.iter().map(|c| env.creation(*c)).collect();
    events.extend(contacts.iter().map(|c| env.change(*c, "firstname", "Test")));
    let mut victim = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_leadsync-worker"))
            .env_remove("LEADSYNC_CONFIG")
            .envs(env.env_vars(&[("WORKER__BATCH_WINDOW_MS", "60000")]))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the worker binary starts"),
    );
    env.push(&events).await;
    let mut queue = env.queue().await;
    let holding = queue
        .wait_until(Duration::from_secs(20), async |q| q.held().await == 30)
        .await;
    assert!(
        holding,
        "the binary holds all 30 jobs (held {})",
        queue.held().await
    );
    assert!(
        env.leads().await.is_empty(),
        "nothing committed before the kill"
    );

    // Act: SIGKILL, then a second worker.
    victim.0.kill().expect("SIGKILL");
    let status = victim.0.wait().expect("the killed worker is reaped");
    let rescuer = RunningWorker::start(&env.settings("")).await;
    let leads = env.wait_for_leads(15, Duration::from_secs(40)).await;
    let all_done = queue
        .wait_until(Duration::from_secs(10), async |q| q.done().await == 30)
        .await;

    // Assert: every event became (part of) a lead and every task ended done.
    assert!(!status.success(), "the worker was killed, not stopped");
    assert_eq!(leads.len(), 15);
    for contact in &contacts {
        assert!(env.lead(*contact).await.is_some(), "contact {contact} lost");
    }
    assert!(all_done, "done: {}", queue.done().await);
    assert_eq!(queue.held().await, 0);
    assert_eq!(queue.waiting().await, 0);
    assert_eq!(queue.dead().await, 0);
    for event in &events {
        assert!(queue.is_done(event).await, "{} is not done", event.key);
    }
    assert_eq!(
        rescuer.metrics.processed.get(),
        30,
        "no event was lost or skipped"
    );
    rescuer.stop(Duration::from_secs(15)).await;
    env.finish().await;
}
