//! Batched placement against a real ZooKeeper: a pass's writes split over several
//! multi-ops when they exceed the size limit, with every state fenced and complete; a
//! mass move and a rescale down are batched too; a deposed leader's batch writes nothing.

mod coord_common;

use std::collections::BTreeMap;
use std::time::Duration;

use coord_common::*;
use weir::coord::batch::{self, Op, Unit};
use weir::coord::election::campaign;
use weir::coord::membership::{deregister, register};
use weir::coord::store::{create_job, read_assignment, read_job, update_job};
use weir::coord::{CoordError, JobSpec, Leader, TaskStatus};

fn spec(name: &str, parallelism: u32) -> JobSpec {
    JobSpec {
        name: name.into(),
        job_type: "t".into(),
        parallelism,
        config: BTreeMap::new(),
        stages: Vec::new(),
    }
}

#[actix::test]
async fn a_big_pass_is_split_into_fenced_multis_and_every_state_is_written() {
    let root = TestRoot::new("batch").await;
    let p = &root.paths;
    let lc = connect(Duration::from_secs(5)).await;
    let leadership = campaign(&lc, p, "leader").await.unwrap();
    // 8 KiB per multi: 2 × 150 tasks need many multis, and a job's states spill over into
    // multis that carry only its assignment's version check.
    let leader = Leader::new(lc.clone(), p.clone(), leadership).with_multi_bytes(8 * 1024);
    let mut sessions = Vec::new();
    for id in ["w1", "w2", "w3"] {
        let c = connect(Duration::from_secs(5)).await;
        register(&c, p, &worker(id, 200), Duration::ZERO)
            .await
            .unwrap();
        sessions.push(c);
    }
    for j in ["a", "b"] {
        create_job(&lc, p, &spec(j, 150)).await.unwrap();
    }
    let (report, _) = leader.reconcile().await.unwrap();
    assert_eq!(report.written, ["a", "b"]);
    assert_eq!(report.moved.len(), 300);
    assert!(
        report.transactions > 4,
        "300 states in 8 KiB multis: {report:?}"
    );
    for j in ["a", "b"] {
        let (a, _) = read_assignment(&lc, p, j).await.unwrap().unwrap();
        let view = read_job(&lc, p, j).await.unwrap();
        assert_eq!(view.tasks.len(), 150, "every task of {j} has a state");
        for (t, s) in &view.tasks {
            assert_eq!(s.state, TaskStatus::Scheduled);
            assert_eq!((&s.worker, s.epoch), (&a.tasks[t].worker, a.tasks[t].epoch));
        }
    }

    // A mass move: w1 leaves (its node deleted), its ~100 tasks move in one batched pass.
    let w1_tasks = {
        let (a, _) = read_assignment(&lc, p, "a").await.unwrap().unwrap();
        let (b, _) = read_assignment(&lc, p, "b").await.unwrap().unwrap();
        a.tasks_of("w1").count() + b.tasks_of("w1").count()
    };
    deregister(&sessions[0], p, "w1").await.unwrap();
    let (report, _) = leader.reconcile().await.unwrap();
    assert_eq!(report.moved.len(), w1_tasks, "only w1's tasks move");
    for j in ["a", "b"] {
        let (a, _) = read_assignment(&lc, p, j).await.unwrap().unwrap();
        let view = read_job(&lc, p, j).await.unwrap();
        assert!(a.tasks.values().all(|t| t.worker != "w1"));
        for (t, s) in &view.tasks {
            assert_eq!((&s.worker, s.epoch), (&a.tasks[t].worker, a.tasks[t].epoch));
        }
    }

    // Rescale down: the removed tasks' znodes go in the same kind of batch.
    update_job(&lc, p, &spec("a", 10)).await.unwrap();
    let (report, _) = leader.reconcile().await.unwrap();
    assert_eq!(report.written, ["a"]);
    let view = read_job(&lc, p, "a").await.unwrap();
    assert_eq!(view.tasks.len(), 10, "tasks 10.. of a are gone");
    let (a, _) = read_assignment(&lc, p, "a").await.unwrap().unwrap();
    assert_eq!(a.tasks.len(), 10);
}

#[actix::test]
async fn a_batch_without_the_guard_writes_nothing_and_a_fence_check_drops_its_units() {
    let root = TestRoot::new("batch-guard").await;
    let p = &root.paths;
    let c = connect(Duration::from_secs(5)).await;
    create_job(&c, p, &spec("j", 2)).await.unwrap();
    let leadership = campaign(&c, p, "leader").await.unwrap();
    let apath = p.assignment("j");
    let mut apaths = BTreeMap::new();
    apaths.insert("j".to_string(), apath.clone());
    let assignment = Unit {
        ops: vec![Op::Create {
            path: apath.clone(),
            data: b"{}".to_vec(),
        }],
        fenced_by: None,
        optional: false,
        writes_assignment: Some(("j".into(), 0)),
    };
    let state = |i: u32| Unit {
        ops: vec![Op::Create {
            path: p.task("j", &format!("j-{i}")),
            data: Vec::new(),
        }],
        fenced_by: Some("j".into()),
        optional: true,
        writes_assignment: None,
    };

    // Fenced continuation: with a 1-byte limit every unit is its own multi; the second and
    // third carry check(assignment, 0) and commit.
    let units = [assignment.clone(), state(0), state(1)];
    let r = batch::commit(&c, &leadership.node, &apaths, &units, 1)
        .await
        .unwrap();
    assert_eq!((r.transactions, r.ops, r.dropped.len()), (3, 3, 0));

    // The assignment moves on (version 1) between the multi that "wrote" it (a stand-in
    // unit claiming version 0) and the one carrying a state fenced by it: that state is
    // dropped, nothing of it written.
    c.set_data(&apath, b"{}", None).await.unwrap();
    let again = [
        Unit {
            ops: vec![Op::Set {
                path: p.spec("j"),
                data: c.get_data(&p.spec("j")).await.unwrap().0,
                version: None,
            }],
            fenced_by: None,
            optional: false,
            writes_assignment: Some(("j".into(), 0)),
        },
        state(5),
    ];
    let r = batch::commit(&c, &leadership.node, &apaths, &again, 1)
        .await
        .unwrap();
    assert_eq!((r.transactions, r.dropped.clone()), (1, vec![1]), "{r:?}");
    assert!(c.check_stat(&p.task("j", "j-5")).await.unwrap().is_none());

    // A deposed leader (election node gone) writes nothing.
    c.delete(&leadership.node, None).await.unwrap();
    let unfenced = Unit {
        fenced_by: None,
        ..state(7)
    };
    let err = batch::commit(&c, &leadership.node, &apaths, &[unfenced], 1 << 20)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CoordError::NoNode { path } if *path == leadership.node),
        "{err}"
    );
    assert!(c.check_stat(&p.task("j", "j-7")).await.unwrap().is_none());
}
