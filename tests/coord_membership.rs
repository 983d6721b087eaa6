//! Membership against a real ZooKeeper: registration writes the ephemeral node with the
//! worker's JSON, closing the session removes it, and an unreachable ZooKeeper is reported
//! as "waiting for ZooKeeper at HOST:PORT" instead of a panic.

mod coord_common;

use std::time::Duration;

use actix::prelude::*;
use coord_common::*;
use weir::coord::actor::{CoordActor, CoordConfig, GetStatus, ListWorkers, ReadJob, Shutdown};
use weir::coord::session::Phase;
use weir::coord::{CoordError, CoordEvent, SessionEvent, WorkerInfo};

#[actix::test]
async fn registration_creates_ephemeral_json_and_closing_the_session_removes_it() {
    let root = TestRoot::new("membership").await;
    let (rcpt, events) = collector();
    let mut cfg = CoordConfig::new(zk_addr());
    cfg.root = root.root.clone();
    cfg.worker = Some(worker("w1", 3));
    let actor = CoordActor::new(cfg, Some(rcpt)).unwrap();
    let status = actor.status_handle();
    let coord = actor.start();

    let observer = connect(Duration::from_secs(5)).await;
    let path = root.paths.worker("w1");
    let (data, stat) = wait_for("the worker node", Duration::from_secs(10), || {
        let (o, p) = (observer.clone(), path.clone());
        async move { o.get_data(&p).await.ok() }
    })
    .await;
    let info: WorkerInfo =
        serde_json::from_slice(&data).expect("worker node holds WorkerInfo JSON");
    assert_eq!(info, worker("w1", 3));
    let session = status
        .get()
        .session_id
        .expect("a session id once connected");
    assert_eq!(
        stat.ephemeral_owner, session,
        "the node is ephemeral and owned by the actor's session"
    );
    assert!(events.any(|e| matches!(e, CoordEvent::SessionState(SessionEvent::Connected { session_id }) if *session_id == session)));
    wait_for("WorkersChanged with w1", Duration::from_secs(5), || {
        let ev = events.clone();
        async move {
            ev.any(
                |e| matches!(e, CoordEvent::WorkersChanged(ws) if ws.iter().any(|w| w.id == "w1")),
            )
            .then_some(())
        }
    })
    .await;
    let listed = coord.send(ListWorkers).await.unwrap().unwrap();
    assert_eq!(
        listed.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        ["w1"]
    );

    coord.send(Shutdown).await.unwrap();
    wait_for(
        "the ephemeral node to vanish after the session closed",
        Duration::from_secs(5),
        || {
            let (o, p) = (observer.clone(), path.clone());
            async move { matches!(o.check_stat(&p).await, Ok(None)).then_some(()) }
        },
    )
    .await;
    assert_eq!(status.get().phase, Phase::Closed);
}

#[actix::test]
async fn unreachable_zookeeper_is_reported_not_fatal() {
    // Port 1 on loopback: nothing listens there.
    let mut cfg = CoordConfig::new("127.0.0.1:1");
    cfg.session.backoff_initial = Duration::from_millis(20);
    cfg.session.backoff_max = Duration::from_millis(100);
    cfg.session.session_timeout = Duration::from_secs(1);
    let coord = CoordActor::new(cfg, None).unwrap().start();
    let status = wait_for("a failed attempt", Duration::from_secs(10), || {
        let c = coord.clone();
        async move {
            let s = c.send(GetStatus).await.unwrap();
            matches!(s.phase, Phase::Connecting { attempt, .. } if attempt >= 2).then_some(s)
        }
    })
    .await;
    assert!(
        status
            .describe()
            .starts_with("waiting for ZooKeeper at 127.0.0.1:1"),
        "{}",
        status.describe()
    );
    assert!(status.may_be_alive_until().is_none());
    let err = coord
        .send(ReadJob { job: "j".into() })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, CoordError::NoSession(ref m) if m.contains("waiting for ZooKeeper at 127.0.0.1:1")),
        "{err}"
    );
    coord.send(Shutdown).await.unwrap();
}
