//! A session that really expires: worker A reaches ZooKeeper through a TCP proxy the test
//! controls; cutting the proxy stops its heartbeats, so the server expires its session.
//! A sees `Disconnected` first (with a liveness deadline, and is NOT treated as expired),
//! then `Expired`; the leader (another actor) reassigns A's tasks only once A's ephemeral
//! node is gone; when the proxy forwards again A opens a NEW session, registers again,
//! and the leader gives it tasks back.

mod coord_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use coord_common::*;
use weir::coord::actor::{CoordActor, CoordConfig, CreateJob, GetStatus, ReadAssignment, Shutdown};
use weir::coord::session::Phase;
use weir::coord::{CoordEvent, JobAssignment, JobSpec, SessionEvent};

fn on(a: &JobAssignment, w: &str) -> usize {
    a.tasks.values().filter(|t| t.worker == w).count()
}

#[actix::test]
async fn expired_worker_rejoins_and_its_tasks_are_reassigned() {
    let root = TestRoot::new("expiry").await;
    let proxy = Proxy::start(zk_addr()).await;

    // Leader + worker L, directly connected.
    let (l_rcpt, l_events) = collector();
    let mut cfg = CoordConfig::new(zk_addr());
    cfg.root = root.root.clone();
    cfg.worker = Some(worker("wl", 10));
    cfg.candidate = Some("wl".into());
    let l = CoordActor::new(cfg, Some(l_rcpt)).unwrap().start();

    // Worker A through the proxy, 2 s session.
    let (a_rcpt, a_events) = collector();
    let mut cfg = CoordConfig::new(proxy.addr.to_string());
    cfg.root = root.root.clone();
    cfg.worker = Some(worker("wa", 10));
    cfg.session.session_timeout = Duration::from_secs(2);
    cfg.session.backoff_initial = Duration::from_millis(50);
    cfg.session.backoff_max = Duration::from_millis(200);
    let a_actor = CoordActor::new(cfg, Some(a_rcpt)).unwrap();
    let a_status = a_actor.status_handle();
    let a = a_actor.start();

    wait_for("L to lead", Duration::from_secs(10), || {
        let ev = l_events.clone();
        async move {
            ev.any(|e| matches!(e, CoordEvent::BecameLeader))
                .then_some(())
        }
    })
    .await;
    let spec = JobSpec {
        name: "j".into(),
        job_type: "t".into(),
        parallelism: 4,
        config: BTreeMap::new(),
        stages: Vec::new(),
    };
    l.send(CreateJob(spec)).await.unwrap().unwrap();
    let read = |l: Addr<CoordActor>| async move {
        l.send(ReadAssignment { job: "j".into() })
            .await
            .ok()?
            .ok()?
            .map(|x| x.0)
    };
    let before = wait_for("2 tasks each on wl and wa", Duration::from_secs(10), || {
        let l = l.clone();
        async move {
            read(l)
                .await
                .filter(|a| on(a, "wa") == 2 && on(a, "wl") == 2)
        }
    })
    .await;
    // A learns its assignment through its own watch.
    wait_for("A's AssignmentChanged", Duration::from_secs(5), || {
        let ev = a_events.clone();
        async move {
            ev.any(|e| matches!(e, CoordEvent::AssignmentChanged { job, assignment: Some(x) } if job == "j" && on(x, "wa") == 2))
                .then_some(())
        }
    })
    .await;
    let old_session = a_status.get().session_id.unwrap();

    // Cut A off.
    let cut_at = Instant::now();
    proxy.block();
    let until = wait_for("A's Disconnected", Duration::from_secs(5), || {
        let ev = a_events.clone();
        async move {
            ev.snapshot().into_iter().find_map(|e| match e {
                CoordEvent::SessionState(SessionEvent::Disconnected { may_be_alive_until }) => {
                    Some(may_be_alive_until)
                }
                _ => None,
            })
        }
    })
    .await;
    assert!(
        until > cut_at && until <= Instant::now() + Duration::from_secs(2),
        "deadline within one session timeout"
    );
    let st = a.send(GetStatus).await.unwrap();
    if matches!(st.phase, Phase::Disconnected { .. }) {
        assert!(st.may_be_alive_until().is_some());
        assert!(st.describe().contains("disconnected"), "{}", st.describe());
    }
    // Disconnected is not Expired: right after the cut, A's node still exists and nothing moved.
    let now = read(l.clone()).await.unwrap();
    if cut_at.elapsed() < Duration::from_millis(1500) {
        assert_eq!(now, before, "no reassignment on a mere disconnection");
    }

    // The server expires A's session: the leader moves A's tasks (and only those) to wl.
    let moved = wait_for("A's tasks on wl", Duration::from_secs(15), || {
        let l = l.clone();
        async move { read(l).await.filter(|a| on(a, "wl") == 4) }
    })
    .await;
    assert!(
        cut_at.elapsed() >= Duration::from_millis(1500),
        "not before the session could expire"
    );
    for (t, was) in &before.tasks {
        if was.worker == "wl" {
            assert_eq!(&moved.tasks[t], was, "wl's own tasks untouched");
        } else {
            assert!(
                moved.tasks[t].epoch > was.epoch,
                "moved task got a new epoch"
            );
        }
    }

    // A itself learns it expired (client-side deadline, or the server says so on reconnect).
    wait_for("A's Expired", Duration::from_secs(15), || {
        let ev = a_events.clone();
        async move {
            ev.any(|e| matches!(e, CoordEvent::SessionState(SessionEvent::Expired)))
                .then_some(())
        }
    })
    .await;
    let d = a_events
        .position(|e| {
            matches!(
                e,
                CoordEvent::SessionState(SessionEvent::Disconnected { .. })
            )
        })
        .unwrap();
    let x = a_events
        .position(|e| matches!(e, CoordEvent::SessionState(SessionEvent::Expired)))
        .unwrap();
    assert!(d < x, "Disconnected is reported before Expired");

    // Forward again: A opens a NEW session, registers again, and gets tasks back.
    proxy.unblock();
    let new_session = wait_for("A's new session", Duration::from_secs(15), || {
        let s = a_status.clone();
        async move {
            let st = s.get();
            (st.is_connected() && st.session_id.is_some() && st.session_id != Some(old_session))
                .then(|| st.session_id.unwrap())
        }
    })
    .await;
    assert_eq!(a_status.get().generation, 2);
    let observer = connect(Duration::from_secs(5)).await;
    wait_for(
        "wa registered by the new session",
        Duration::from_secs(10),
        || {
            let (o, path) = (observer.clone(), root.paths.worker("wa"));
            async move {
                o.check_stat(&path)
                    .await
                    .ok()
                    .flatten()
                    .filter(|s| s.ephemeral_owner == new_session)
                    .map(|_| ())
            }
        },
    )
    .await;
    let after = wait_for("2+2 again", Duration::from_secs(10), || {
        let l = l.clone();
        async move {
            read(l)
                .await
                .filter(|a| on(a, "wa") == 2 && on(a, "wl") == 2)
        }
    })
    .await;
    assert!(after.epoch > moved.epoch);
    assert!(a_events.position(|e| matches!(e, CoordEvent::SessionState(SessionEvent::Connected { session_id }) if *session_id == new_session)).unwrap() > x);
    // The leader never lost leadership through all this.
    assert!(!l_events.any(|e| matches!(e, CoordEvent::LostLeadership)));

    a.send(Shutdown).await.unwrap();
    l.send(Shutdown).await.unwrap();
}
