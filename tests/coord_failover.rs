//! Failover of a FAILED task against a real ZooKeeper: a worker's (fenced) failure record
//! makes the leader move exactly that task to another worker with a new epoch, keeping its
//! error and restarts, and delete the record; a stale record is only deleted; with a single
//! worker the task is restarted in place (new epoch, same worker); the running leader reacts
//! to a record through its watch on the job's `failed` children; a malformed task state does
//! not keep a worker from reading the job's spec.

mod coord_common;

use std::collections::BTreeMap;
use std::time::Duration;

use coord_common::*;
use weir::coord::election::campaign;
use weir::coord::fencing::{write_failure, write_task_state, FenceToken};
use weir::coord::membership::register;
use weir::coord::model::{encode, FailureRecord};
use weir::coord::store::{create_job, persistent, read_assignment, read_job, read_spec};
use weir::coord::{
    CoordError, JobAssignment, JobSpec, Leader, TaskError, TaskId, TaskState, TaskStatus, ZkPaths,
};
use zookeeper_client::Client;

fn spec(name: &str, parallelism: u32) -> JobSpec {
    JobSpec {
        name: name.into(),
        job_type: "t".into(),
        parallelism,
        config: BTreeMap::new(),
        stages: Vec::new(),
    }
}

fn token(job: &str, a: &JobAssignment, task: &TaskId) -> FenceToken {
    let ta = &a.tasks[task];
    FenceToken {
        job: job.into(),
        task: task.clone(),
        worker: ta.worker.clone(),
        epoch: ta.epoch,
    }
}

/// What a worker does when its task is FAILED past the restart policy: publish FAILED with
/// the error, then record the failure, both fenced on its token.
async fn fail(c: &Client, p: &ZkPaths, tok: &FenceToken, message: &str, restarts: u32) {
    let err = TaskError {
        message: message.into(),
        at_ms: 1_000 + restarts as u64,
    };
    let mut st = TaskState::scheduled(&tok.worker, tok.epoch);
    st.state = TaskStatus::Failed;
    st.restarts = restarts;
    st.last_error = Some(err.clone());
    write_task_state(c, p, tok, &st, None).await.unwrap();
    write_failure(c, p, tok, &err, restarts, None)
        .await
        .unwrap();
}

async fn exists(c: &Client, path: &str) -> bool {
    c.check_stat(path).await.unwrap().is_some()
}

#[actix::test]
async fn failed_task_moves_alone_and_stale_records_are_dropped() {
    let root = TestRoot::new("failover").await;
    let p = &root.paths;
    let lc = connect(Duration::from_secs(5)).await;
    let leader = Leader::new(
        lc.clone(),
        p.clone(),
        campaign(&lc, p, "leader").await.unwrap(),
    );
    let mut sessions = BTreeMap::new();
    for id in ["w1", "w2", "w3"] {
        let c = connect(Duration::from_secs(5)).await;
        register(&c, p, &worker(id, 10), Duration::ZERO)
            .await
            .unwrap();
        sessions.insert(id, c);
    }
    create_job(&lc, p, &spec("f", 6)).await.unwrap();
    assert!(exists(&lc, &p.failed("f")).await, "created with the job");
    leader.reconcile().await.unwrap();
    let (a1, _) = read_assignment(&lc, p, "f").await.unwrap().unwrap();
    assert_eq!(a1.tasks.len(), 6);

    // Task on w2 fails past its policy: w2 records it.
    let (failed, _) = a1.tasks.iter().find(|(_, a)| a.worker == "w2").unwrap();
    let tok = token("f", &a1, failed);
    fail(&sessions["w2"], p, &tok, "sink exploded", 3).await;
    let record = p.failed_task("f", &failed.to_string());
    assert!(exists(&lc, &record).await);

    let (report, _) = leader.reconcile().await.unwrap();
    assert_eq!(
        report.failed_over,
        std::slice::from_ref(failed),
        "{report:?}"
    );
    assert_eq!(
        report.moved,
        std::slice::from_ref(failed),
        "nothing else moves: {report:?}"
    );
    let (a2, _) = read_assignment(&lc, p, "f").await.unwrap().unwrap();
    assert_eq!(a2.epoch, a1.epoch + 1);
    for (t, old) in &a1.tasks {
        let new = &a2.tasks[t];
        if t == failed {
            assert_ne!(new.worker, "w2", "never back onto the worker it failed on");
            assert_eq!(new.epoch, a2.epoch, "a moved task gets the new epoch");
            assert_eq!(
                new.avoid.as_deref(),
                Some("w2"),
                "remembered in the assignment"
            );
        } else {
            assert_eq!(new, old, "{t} stays where it was, same epoch");
        }
    }
    let view = read_job(&lc, p, "f").await.unwrap();
    let st = &view.tasks[failed];
    assert_eq!(
        st.state,
        TaskStatus::Scheduled,
        "to be started by its new worker"
    );
    assert_eq!(st.worker, a2.tasks[failed].worker);
    assert_eq!(st.epoch, a2.epoch);
    assert_eq!(st.restarts, 3, "restarts kept");
    assert_eq!(
        st.last_error.as_ref().map(|e| e.message.as_str()),
        Some("sink exploded"),
        "error kept"
    );
    assert!(!exists(&lc, &record).await, "record deleted");

    // The next passes move nothing (not even back to w2).
    let (report, _) = leader.reconcile().await.unwrap();
    assert!(report.written.is_empty(), "{report:?}");

    // The old owner is fenced: it cannot record the failure again.
    let err = write_failure(
        &sessions["w2"],
        p,
        &tok,
        &TaskError {
            message: "again".into(),
            at_ms: 9,
        },
        4,
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CoordError::Fenced { .. }), "{err:?}");

    // A stale record (written just before the move, say) is only deleted.
    let stale = FailureRecord {
        worker: "w2".into(),
        epoch: tok.epoch,
        error: "late".into(),
        at_ms: 5,
        restarts: 3,
    };
    lc.create(&record, &encode(&record, &stale).unwrap(), &persistent())
        .await
        .unwrap();
    // A malformed one too.
    let junk = p.failed_task("f", "garbage");
    lc.create(&junk, b"{nope", &persistent()).await.unwrap();
    let (report, _) = leader.reconcile().await.unwrap();
    assert_eq!(report.stale_failures, 2, "{report:?}");
    assert!(
        report.written.is_empty() && report.moved.is_empty(),
        "{report:?}"
    );
    assert!(!exists(&lc, &record).await && !exists(&lc, &junk).await);
    let (a3, _) = read_assignment(&lc, p, "f").await.unwrap().unwrap();
    assert_eq!(a3, a2, "a stale record moves nothing");

    // The moved task fails on its new worker too: it moves again, never back onto that one.
    let now_on = a2.tasks[failed].worker.clone();
    let tok2 = token("f", &a2, failed);
    fail(&sessions[now_on.as_str()], p, &tok2, "still broken", 7).await;
    let (report, _) = leader.reconcile().await.unwrap();
    assert_eq!(
        report.failed_over,
        std::slice::from_ref(failed),
        "{report:?}"
    );
    let (a4, _) = read_assignment(&lc, p, "f").await.unwrap().unwrap();
    assert_ne!(a4.tasks[failed].worker, now_on);
    let st = &read_job(&lc, p, "f").await.unwrap().tasks[failed];
    assert_eq!(st.restarts, 7);
    assert_eq!(st.last_error.as_ref().unwrap().message, "still broken");
}

#[actix::test]
async fn single_worker_restarts_the_task_in_place() {
    let root = TestRoot::new("failover-one").await;
    let p = &root.paths;
    let lc = connect(Duration::from_secs(5)).await;
    let leader = Leader::new(
        lc.clone(),
        p.clone(),
        campaign(&lc, p, "leader").await.unwrap(),
    );
    let w = connect(Duration::from_secs(5)).await;
    register(&w, p, &worker("solo", 10), Duration::ZERO)
        .await
        .unwrap();
    create_job(&lc, p, &spec("s", 2)).await.unwrap();
    leader.reconcile().await.unwrap();
    let (a1, _) = read_assignment(&lc, p, "s").await.unwrap().unwrap();
    let t = TaskId::new("s", 1);
    fail(&w, p, &token("s", &a1, &t), "boom", 2).await;

    let (report, _) = leader.reconcile().await.unwrap();
    assert_eq!(report.restarted, std::slice::from_ref(&t), "{report:?}");
    assert!(report.moved.is_empty() && report.failed_over.is_empty());
    let (a2, _) = read_assignment(&lc, p, "s").await.unwrap().unwrap();
    assert_eq!(a2.tasks[&t].worker, "solo", "nowhere else to go: it stays");
    assert_eq!(
        a2.tasks[&t].epoch, a2.epoch,
        "a new epoch restarts it in place"
    );
    assert_ne!(a2.tasks[&t].epoch, a1.tasks[&t].epoch);
    let other = TaskId::new("s", 0);
    assert_eq!(a2.tasks[&other], a1.tasks[&other]);
    let st = &read_job(&lc, p, "s").await.unwrap().tasks[&t];
    assert_eq!(
        (st.state, st.worker.as_str(), st.restarts),
        (TaskStatus::Scheduled, "solo", 2)
    );
    assert_eq!(st.last_error.as_ref().unwrap().message, "boom");
    assert!(!exists(&lc, &p.failed_task("s", "s-1")).await);

    assert_eq!(
        a2.tasks[&t].avoid, None,
        "back on the worker it failed on: no avoid kept"
    );

    // A second worker joins: an ordinary rebalance, one task each.
    let w2 = connect(Duration::from_secs(5)).await;
    register(&w2, p, &worker("w2", 10), Duration::ZERO)
        .await
        .unwrap();
    let (report, _) = leader.reconcile().await.unwrap();
    assert_eq!(report.moved.len(), 1, "{report:?}");
    let (a3, _) = read_assignment(&lc, p, "s").await.unwrap().unwrap();
    let on: std::collections::BTreeSet<&str> =
        a3.tasks.values().map(|a| a.worker.as_str()).collect();
    assert_eq!(on.len(), 2, "{a3:?}");
}

#[actix::test]
async fn running_leader_is_woken_by_a_failure_record() {
    let root = TestRoot::new("failover-run").await;
    let p = root.paths.clone();
    let lc = connect(Duration::from_secs(5)).await;
    let leadership = campaign(&lc, &p, "leader").await.unwrap();
    // A long resync: only the watch on `failed` can make it react in time.
    let leader =
        Leader::new(lc.clone(), p.clone(), leadership).with_resync(Duration::from_secs(120));
    let task = actix::spawn(leader.run());
    let w1 = connect(Duration::from_secs(5)).await;
    let w2 = connect(Duration::from_secs(5)).await;
    register(&w1, &p, &worker("w1", 10), Duration::ZERO)
        .await
        .unwrap();
    register(&w2, &p, &worker("w2", 10), Duration::ZERO)
        .await
        .unwrap();
    create_job(&lc, &p, &spec("r", 2)).await.unwrap();
    let a1 = wait_for("2 tasks on 2 workers", Duration::from_secs(10), || {
        let (c, p) = (lc.clone(), p.clone());
        async move {
            let (a, _) = read_assignment(&c, &p, "r").await.ok()??;
            let on: std::collections::BTreeSet<_> = a.tasks.values().map(|t| &t.worker).collect();
            (a.tasks.len() == 2 && on.len() == 2).then_some(a)
        }
    })
    .await;
    let t = TaskId::new("r", 0);
    let from = a1.tasks[&t].worker.clone();
    let c = if from == "w1" { &w1 } else { &w2 };
    fail(c, &p, &token("r", &a1, &t), "kaput", 3).await;
    let a2 = wait_for("the failed task moved", Duration::from_secs(10), || {
        let (c, p, from) = (lc.clone(), p.clone(), from.clone());
        async move {
            let (a, _) = read_assignment(&c, &p, "r").await.ok()??;
            (a.tasks[&TaskId::new("r", 0)].worker != from).then_some(a)
        }
    })
    .await;
    assert_eq!(
        a2.tasks[&TaskId::new("r", 1)],
        a1.tasks[&TaskId::new("r", 1)]
    );
    wait_for("the record deleted", Duration::from_secs(10), || {
        let (c, path) = (lc.clone(), p.failed_task("r", "r-0"));
        async move { matches!(c.check_stat(&path).await, Ok(None)).then_some(()) }
    })
    .await;
    task.abort();
}

#[actix::test]
async fn malformed_task_state_does_not_block_the_spec() {
    let root = TestRoot::new("failover-spec").await;
    let p = &root.paths;
    let c = connect(Duration::from_secs(5)).await;
    create_job(&c, p, &spec("m", 2)).await.unwrap();
    c.create(&p.task("m", "m-0"), b"", &persistent())
        .await
        .unwrap();
    c.create(&p.task_state("m", "m-0"), b"{garbage", &persistent())
        .await
        .unwrap();
    let err = read_job(&c, p, "m").await.unwrap_err();
    assert!(matches!(err, CoordError::Malformed { .. }), "{err:?}");
    assert_eq!(read_spec(&c, p, "m").await.unwrap(), spec("m", 2));
    let err = read_spec(&c, p, "nope").await.unwrap_err();
    assert!(matches!(err, CoordError::NoNode { .. }), "{err:?}");
}
