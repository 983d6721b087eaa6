//! Malformed JSON in znodes (written by hand, by an old version, or by a bug) gives
//! `CoordError::Malformed` naming the znode, never a panic.

mod coord_common;

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use coord_common::*;
use weir::coord::actor::{CoordActor, CoordConfig, ReadJob, Shutdown};
use weir::coord::store::{
    create_job, ephemeral, list_workers, persistent, read_assignment, read_job,
};
use weir::coord::{CoordError, JobSpec};

fn malformed_at(err: &CoordError) -> &str {
    match err {
        CoordError::Malformed { path, .. } => path,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[actix::test]
async fn malformed_spec_state_and_assignment_name_the_path() {
    let root = TestRoot::new("malformed").await;
    let p = &root.paths;
    let c = connect(Duration::from_secs(5)).await;
    let spec = JobSpec {
        name: "j".into(),
        job_type: "t".into(),
        parallelism: 2,
        config: BTreeMap::new(),
        stages: Vec::new(),
    };
    create_job(&c, p, &spec).await.unwrap();

    // Spec.
    c.set_data(&p.spec("j"), b"{\"name\": \"j\", \"parallelism\": ", None)
        .await
        .unwrap();
    let err = read_job(&c, p, "j").await.unwrap_err();
    assert_eq!(malformed_at(&err), p.spec("j"));
    assert!(
        err.to_string().contains(&p.spec("j")),
        "message names the znode: {err}"
    );
    // Valid JSON, wrong shape.
    c.set_data(&p.spec("j"), b"[1,2,3]", None).await.unwrap();
    assert_eq!(
        malformed_at(&read_job(&c, p, "j").await.unwrap_err()),
        p.spec("j")
    );

    // Through the actor as well.
    let mut cfg = CoordConfig::new(zk_addr());
    cfg.root = root.root.clone();
    let coord = CoordActor::new(cfg, None).unwrap().start();
    let err = wait_for("the actor's answer", Duration::from_secs(10), || {
        let co = coord.clone();
        async move {
            match co.send(ReadJob { job: "j".into() }).await.unwrap() {
                Err(CoordError::NoSession(_)) => None,
                other => Some(other),
            }
        }
    })
    .await
    .unwrap_err();
    assert_eq!(malformed_at(&err), p.spec("j"));

    // Task state (unknown status spelling).
    c.set_data(&p.spec("j"), &serde_json::to_vec(&spec).unwrap(), None)
        .await
        .unwrap();
    c.create(&p.task("j", "j-0"), b"", &persistent())
        .await
        .unwrap();
    c.create(
        &p.task_state("j", "j-0"),
        br#"{"state":"running","worker":"w","epoch":1}"#,
        &persistent(),
    )
    .await
    .unwrap();
    let err = read_job(&c, p, "j").await.unwrap_err();
    assert_eq!(malformed_at(&err), p.task_state("j", "j-0"));

    // Assignment.
    c.create(&p.assignment("j"), b"\xff\xfe", &persistent())
        .await
        .unwrap();
    let err = read_assignment(&c, p, "j").await.unwrap_err();
    assert_eq!(malformed_at(&err), p.assignment("j"));

    // A malformed worker registration is skipped (it cannot be given tasks), not fatal.
    c.create(&p.worker("junk"), b"not json", &ephemeral())
        .await
        .unwrap();
    assert!(list_workers(&c, p).await.unwrap().is_empty());
    coord.send(Shutdown).await.unwrap();
}
