//! The leader's reconciliation against a real ZooKeeper: balanced initial placement, a
//! worker whose ephemeral node disappears has only its tasks moved (balance holds, epochs
//! bumped only for moved tasks, a FAILED task keeps its error), rescale, and cancel cleanup.

mod coord_common;

use std::collections::BTreeMap;
use std::time::Duration;

use coord_common::*;
use weir::coord::election::campaign;
use weir::coord::fencing::{write_task_state, FenceToken};
use weir::coord::membership::register;
use weir::coord::store::{cancel_job, create_job, read_assignment, read_job, update_job};
use weir::coord::{JobAssignment, JobSpec, Leader, TaskError, TaskId, TaskState, TaskStatus};

fn loads(a: &JobAssignment) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for t in a.tasks.values() {
        *m.entry(t.worker.clone()).or_insert(0) += 1;
    }
    m
}

#[actix::test]
async fn dead_workers_tasks_move_and_only_them() {
    let root = TestRoot::new("leader").await;
    let p = &root.paths;
    let leader_client = connect(Duration::from_secs(5)).await;
    let leadership = campaign(&leader_client, p, "leader").await.unwrap();
    let leader = Leader::new(leader_client.clone(), p.clone(), leadership);

    // Three workers, each on its own session.
    let mut sessions = BTreeMap::new();
    for id in ["w1", "w2", "w3"] {
        let c = connect(Duration::from_secs(5)).await;
        register(&c, p, &worker(id, 10), Duration::ZERO)
            .await
            .unwrap();
        sessions.insert(id, c);
    }
    let spec = JobSpec {
        name: "j".into(),
        job_type: "t".into(),
        parallelism: 9,
        config: BTreeMap::new(),
        stages: Vec::new(),
    };
    create_job(&leader_client, p, &spec).await.unwrap();

    let (report, _) = leader.reconcile().await.unwrap();
    assert_eq!((report.workers, report.jobs), (3, 1));
    assert_eq!(report.written, ["j"]);
    let (a1, _) = read_assignment(&leader_client, p, "j")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a1.tasks.len(), 9);
    assert_eq!(loads(&a1).values().copied().collect::<Vec<_>>(), [3, 3, 3]);
    // Every task got a SCHEDULED state for its worker.
    let view = read_job(&leader_client, p, "j").await.unwrap();
    assert_eq!(view.tasks.len(), 9);
    assert!(view
        .tasks
        .iter()
        .all(|(t, s)| s.state == TaskStatus::Scheduled && s.worker == a1.tasks[t].worker));

    // Nothing changed: nothing written.
    let (report, _) = leader.reconcile().await.unwrap();
    assert!(report.written.is_empty(), "{report:?}");

    // One of w2's tasks failed past its restart policy.
    let (failed_task, ta) = a1.tasks.iter().find(|(_, a)| a.worker == "w2").unwrap();
    let tok = FenceToken {
        job: "j".into(),
        task: failed_task.clone(),
        worker: "w2".into(),
        epoch: ta.epoch,
    };
    let mut st = TaskState::scheduled("w2", ta.epoch);
    st.state = TaskStatus::Failed;
    st.restarts = 3;
    st.last_error = Some(TaskError {
        message: "division by zero in map".into(),
        at_ms: 42,
    });
    write_task_state(&sessions["w2"], p, &tok, &st, None)
        .await
        .unwrap();

    // w2's session ends: its ephemeral node disappears.
    drop(sessions.remove("w2"));
    wait_for("w2's node to vanish", Duration::from_secs(5), || {
        let (c, path) = (leader_client.clone(), p.worker("w2"));
        async move { matches!(c.check_stat(&path).await, Ok(None)).then_some(()) }
    })
    .await;
    let (report, _) = leader.reconcile().await.unwrap();
    let (a2, _) = read_assignment(&leader_client, p, "j")
        .await
        .unwrap()
        .unwrap();
    let w2_tasks: Vec<TaskId> = a1
        .tasks
        .iter()
        .filter(|(_, a)| a.worker == "w2")
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(report.moved, w2_tasks, "exactly w2's tasks moved");
    assert_eq!(a2.epoch, a1.epoch + 1);
    for (t, old) in &a1.tasks {
        let new = &a2.tasks[t];
        if old.worker == "w2" {
            assert_ne!(new.worker, "w2");
            assert_eq!(new.epoch, a2.epoch, "a moved task gets the new epoch");
        } else {
            assert_eq!(new, old, "{t} stays where it was, same epoch");
        }
    }
    let l = loads(&a2);
    assert_eq!(l.len(), 2);
    assert!(
        l.values().max().unwrap() - l.values().min().unwrap() <= 1,
        "balanced: {l:?}"
    );
    let view = read_job(&leader_client, p, "j").await.unwrap();
    let moved_failed = &view.tasks[failed_task];
    assert_eq!(
        moved_failed.state,
        TaskStatus::Failed,
        "FAILED stays FAILED across a move"
    );
    assert_eq!(moved_failed.last_error, st.last_error, "its error is kept");
    assert_eq!(moved_failed.restarts, 3);
    assert_eq!(moved_failed.worker, a2.tasks[failed_task].worker);
    assert_eq!(moved_failed.epoch, a2.epoch);
    for t in w2_tasks.iter().filter(|t| *t != failed_task) {
        assert_eq!(view.tasks[t].state, TaskStatus::Scheduled);
        assert_eq!(view.tasks[t].worker, a2.tasks[t].worker);
    }

    // Rescale down to 4: tasks 4..9 leave the assignment and their znodes go.
    update_job(
        &leader_client,
        p,
        &JobSpec {
            parallelism: 4,
            ..spec.clone()
        },
    )
    .await
    .unwrap();
    leader.reconcile().await.unwrap();
    let (a3, _) = read_assignment(&leader_client, p, "j")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        a3.tasks.keys().map(|t| t.index).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    let l = loads(&a3);
    assert!(
        l.values().max().unwrap() - l.values().min().unwrap() <= 1,
        "balanced: {l:?}"
    );
    let view = read_job(&leader_client, p, "j").await.unwrap();
    assert_eq!(
        view.tasks.keys().map(|t| t.index).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );

    // Cancel: the leader removes the assignment and every znode of the job.
    cancel_job(&leader_client, p, "j").await.unwrap();
    let (report, _) = leader.reconcile().await.unwrap();
    assert_eq!(report.cleaned, ["j"]);
    assert!(
        leader_client
            .check_stat(&p.job("j"))
            .await
            .unwrap()
            .is_none(),
        "job znodes cleaned"
    );
}

#[actix::test]
async fn running_leader_reacts_to_watches() {
    let root = TestRoot::new("leader-run").await;
    let p = root.paths.clone();
    let lc = connect(Duration::from_secs(5)).await;
    let leadership = campaign(&lc, &p, "leader").await.unwrap();
    let leader = Leader::new(lc.clone(), p.clone(), leadership.clone());
    let task = actix::spawn(leader.run());

    let w1 = connect(Duration::from_secs(5)).await;
    register(&w1, &p, &worker("w1", 10), Duration::ZERO)
        .await
        .unwrap();
    let spec = JobSpec {
        name: "r".into(),
        job_type: "t".into(),
        parallelism: 4,
        config: BTreeMap::new(),
        stages: Vec::new(),
    };
    create_job(&lc, &p, &spec).await.unwrap();
    let assigned_to = |n: usize| {
        let (c, p) = (lc.clone(), p.clone());
        move || {
            let (c, p) = (c.clone(), p.clone());
            async move {
                let (a, _) = read_assignment(&c, &p, "r").await.ok()??;
                (a.tasks.len() == 4 && loads(&a).len() == n).then_some(a)
            }
        }
    };
    wait_for(
        "4 tasks on 1 worker",
        Duration::from_secs(10),
        assigned_to(1),
    )
    .await;
    let w2 = connect(Duration::from_secs(5)).await;
    register(&w2, &p, &worker("w2", 10), Duration::ZERO)
        .await
        .unwrap();
    let a = wait_for(
        "2+2 after w2 joined",
        Duration::from_secs(10),
        assigned_to(2),
    )
    .await;
    assert_eq!(loads(&a).values().copied().collect::<Vec<_>>(), [2, 2]);
    drop(w1);
    let a = wait_for(
        "all on w2 after w1's session closed",
        Duration::from_secs(10),
        assigned_to(1),
    )
    .await;
    assert!(a.tasks.values().all(|t| t.worker == "w2"));

    // Deleting the election node (leadership lost while the session lives) stops the loop.
    lc.delete(&leadership.node, None).await.unwrap();
    let _ = create_job(
        &lc,
        &p,
        &JobSpec {
            name: "r2".into(),
            ..spec
        },
    )
    .await;
    let res = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("leader loop ends")
        .unwrap();
    assert!(res.is_err());
    drop(w2);
}
