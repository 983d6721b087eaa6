//! Fencing against a real ZooKeeper: a writer holding an old epoch gets `Fenced` and the
//! znode is unchanged; a move of *another* task does not fence a current writer.

mod coord_common;

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use coord_common::*;
use weir::coord::actor::{CoordActor, CoordConfig, Shutdown, WriteOutcome, WriteTaskState};
use weir::coord::fencing::{write_checkpoint, write_task_state, FenceToken};
use weir::coord::store::{create_job, persistent, read_job};
use weir::coord::{
    CheckpointMeta, CoordError, JobAssignment, JobSpec, TaskAssignment, TaskId, TaskState,
    TaskStatus,
};

fn spec(name: &str, p: u32) -> JobSpec {
    JobSpec {
        name: name.into(),
        job_type: "t".into(),
        parallelism: p,
        config: BTreeMap::new(),
        stages: Vec::new(),
    }
}

fn assignment(epoch: u64, tasks: &[(u32, &str, u64)]) -> JobAssignment {
    JobAssignment {
        epoch,
        tasks: tasks
            .iter()
            .map(|(i, w, e)| (TaskId::new("j", *i), TaskAssignment::new(w, *e)))
            .collect(),
        ..Default::default()
    }
}

#[actix::test]
async fn old_epoch_is_fenced_and_znode_unchanged() {
    let root = TestRoot::new("fencing").await;
    let p = &root.paths;
    let c = connect(Duration::from_secs(5)).await;
    create_job(&c, p, &spec("j", 2)).await.unwrap();
    let apath = p.assignment("j");
    let a1 = assignment(1, &[(0, "w1", 1), (1, "w2", 1)]);
    c.create(&apath, &serde_json::to_vec(&a1).unwrap(), &persistent())
        .await
        .unwrap();

    let tok0 = FenceToken {
        job: "j".into(),
        task: TaskId::new("j", 0),
        worker: "w1".into(),
        epoch: 1,
    };
    let mut st = TaskState::scheduled("w1", 1);
    st.state = TaskStatus::Running;
    st.records_in = 10;
    let v = write_task_state(&c, p, &tok0, &st, None)
        .await
        .expect("current writer may write");

    // Another task moves (w2 -> w3): w1's token is still good (revalidated at the new version).
    let a2 = assignment(2, &[(0, "w1", 1), (1, "w3", 2)]);
    c.set_data(&apath, &serde_json::to_vec(&a2).unwrap(), Some(0))
        .await
        .unwrap();
    st.records_in = 20;
    let v2 = write_task_state(&c, p, &tok0, &st, Some(v))
        .await
        .expect("unrelated move must not fence");
    assert_ne!(v, v2, "the version hint was refreshed");

    // Task 0 moves to w3: w1 is now a zombie for it.
    let a3 = assignment(3, &[(0, "w3", 3), (1, "w3", 2)]);
    c.set_data(&apath, &serde_json::to_vec(&a3).unwrap(), Some(1))
        .await
        .unwrap();
    let spath = p.task_state("j", "j-0");
    let before = c.get_data(&spath).await.unwrap();
    st.records_in = 999;
    for hint in [Some(v2), None] {
        let err = write_task_state(&c, p, &tok0, &st, hint).await.unwrap_err();
        assert_eq!(
            err,
            CoordError::Fenced {
                path: spath.clone(),
                held_epoch: 1
            },
            "hint {hint:?}"
        );
    }
    let after = c.get_data(&spath).await.unwrap();
    assert_eq!(
        before, after,
        "a fenced write changes nothing (data and version)"
    );
    let stored: TaskState = serde_json::from_slice(&after.0).unwrap();
    assert_eq!(stored.records_in, 20);

    // Checkpoint metadata is fenced the same way; the new owner may write it.
    let meta = CheckpointMeta {
        id: 1,
        offsets: BTreeMap::from([("in/0".to_string(), 5)]),
        state_paths: BTreeMap::new(),
        completed_at_ms: 1,
        epoch: 3,
        worker: "w3".into(),
        transactional_id: None,
    };
    let err = write_checkpoint(&c, p, &tok0, &meta, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoordError::Fenced { ref path, held_epoch: 1 } if *path == p.checkpoint("j", "j-0")),
        "{err}"
    );
    assert!(
        c.check_stat(&p.checkpoint("j", "j-0"))
            .await
            .unwrap()
            .is_none(),
        "nothing written"
    );
    let tok_new = FenceToken {
        job: "j".into(),
        task: TaskId::new("j", 0),
        worker: "w3".into(),
        epoch: 3,
    };
    write_checkpoint(&c, p, &tok_new, &meta, None)
        .await
        .unwrap();
    let err = write_checkpoint(&c, p, &tok_new, &meta, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoordError::Invalid { ref field, .. } if field == "CheckpointMeta.id"),
        "never backwards: {err}"
    );
    let view = read_job(&c, p, "j").await.unwrap();
    assert_eq!(view.checkpoints.get(&TaskId::new("j", 0)), Some(&meta));

    // A cancelled job (assignment gone) fences everyone.
    c.delete(&apath, None).await.unwrap();
    assert!(matches!(
        write_task_state(&c, p, &tok_new, &st, None).await,
        Err(CoordError::Fenced { .. })
    ));
}

#[actix::test]
async fn actor_write_task_state_is_fenced_too() {
    let root = TestRoot::new("fencing-actor").await;
    let p = root.paths.clone();
    let c = connect(Duration::from_secs(5)).await;
    create_job(&c, &p, &spec("j", 1)).await.unwrap();
    let apath = p.assignment("j");
    c.create(
        &apath,
        &serde_json::to_vec(&assignment(1, &[(0, "w1", 1)])).unwrap(),
        &persistent(),
    )
    .await
    .unwrap();

    let mut cfg = CoordConfig::new(zk_addr());
    cfg.root = root.root.clone();
    let coord = CoordActor::new(cfg, None).unwrap().start();
    let tok = FenceToken {
        job: "j".into(),
        task: TaskId::new("j", 0),
        worker: "w1".into(),
        epoch: 1,
    };
    let st = TaskState::scheduled("w1", 1);
    let out = wait_for("the actor's session", Duration::from_secs(10), || {
        let (co, t, s) = (coord.clone(), tok.clone(), st.clone());
        async move {
            co.send(WriteTaskState { token: t, state: s })
                .await
                .unwrap()
                .ok()
        }
    })
    .await;
    assert_eq!(out, WriteOutcome::Written);

    // Progress without a status change is rate-limited, and the newest one is written later.
    let spath = p.task_state("j", "j-0");
    let mut progress = st.clone();
    for n in 1..=20 {
        progress.records_in = n;
        let out = coord
            .send(WriteTaskState {
                token: tok.clone(),
                state: progress.clone(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            WriteOutcome::Deferred,
            "update {n} within the interval"
        );
    }
    let stored: TaskState = serde_json::from_slice(&c.get_data(&spath).await.unwrap().0).unwrap();
    assert_eq!(stored.records_in, 0, "not written yet");
    wait_for(
        "the deferred state to be flushed",
        Duration::from_secs(5),
        || {
            let (c, sp) = (c.clone(), spath.clone());
            async move {
                let (data, _) = c.get_data(&sp).await.ok()?;
                let s: TaskState = serde_json::from_slice(&data).ok()?;
                (s.records_in == 20).then_some(())
            }
        },
    )
    .await;

    c.set_data(
        &apath,
        &serde_json::to_vec(&assignment(2, &[(0, "w2", 2)])).unwrap(),
        None,
    )
    .await
    .unwrap();
    let before = c.get_data(&p.task_state("j", "j-0")).await.unwrap();
    let mut failed = st.clone();
    failed.state = TaskStatus::Failed; // a status change: written at once, not deferred
    let err = coord
        .send(WriteTaskState {
            token: tok,
            state: failed,
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, CoordError::Fenced { held_epoch: 1, .. }),
        "{err}"
    );
    assert_eq!(c.get_data(&p.task_state("j", "j-0")).await.unwrap(), before);
    coord.send(Shutdown).await.unwrap();
}
