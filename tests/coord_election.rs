//! Leader election against a real ZooKeeper: of three candidates exactly one leads; when
//! the leader's session ends another one takes over.

mod coord_common;

use std::time::Duration;

use actix::prelude::*;
use coord_common::*;
use weir::coord::actor::{CoordActor, CoordConfig, GetStatus, Shutdown};
use weir::coord::election::current_leader;
use weir::coord::CoordEvent;

#[actix::test]
async fn three_candidates_one_leader_and_failover() {
    let root = TestRoot::new("election").await;
    let mut actors = Vec::new();
    for id in ["c1", "c2", "c3"] {
        let (rcpt, events) = collector();
        let mut cfg = CoordConfig::new(zk_addr());
        cfg.root = root.root.clone();
        cfg.candidate = Some(id.to_string());
        cfg.session.session_timeout = Duration::from_secs(4);
        actors.push((
            id,
            CoordActor::new(cfg, Some(rcpt)).unwrap().start(),
            events,
        ));
    }

    let leaders = |actors: Vec<(&'static str, Addr<CoordActor>)>| async move {
        let mut out = Vec::new();
        for (id, a) in actors {
            if a.connected() && a.send(GetStatus).await.map(|s| s.leader).unwrap_or(false) {
                out.push(id);
            }
        }
        out
    };
    let handles: Vec<_> = actors.iter().map(|(id, a, _)| (*id, a.clone())).collect();
    let first = wait_for("a leader", Duration::from_secs(10), || {
        let h = handles.clone();
        async move {
            let l = leaders(h).await;
            (l.len() == 1).then(|| l[0])
        }
    })
    .await;
    // Stays unique for a while, and ZooKeeper agrees who leads.
    for _ in 0..10 {
        assert_eq!(
            leaders(handles.clone()).await,
            vec![first],
            "exactly one leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let observer = connect(Duration::from_secs(5)).await;
    assert_eq!(
        current_leader(&observer, &root.paths)
            .await
            .unwrap()
            .as_deref(),
        Some(first)
    );
    let (_, leader_addr, leader_events) = actors.iter().find(|(id, _, _)| *id == first).unwrap();
    assert!(leader_events.any(|e| matches!(e, CoordEvent::BecameLeader)));
    for (id, _, ev) in &actors {
        if *id != first {
            assert!(
                !ev.any(|e| matches!(e, CoordEvent::BecameLeader)),
                "{id} must not have led"
            );
        }
    }

    // Kill the leader's session: another candidate takes over.
    leader_addr.send(Shutdown).await.unwrap();
    let rest: Vec<_> = handles
        .iter()
        .filter(|(id, _)| *id != first)
        .cloned()
        .collect();
    let second = wait_for("a new leader", Duration::from_secs(10), || {
        let h = rest.clone();
        async move {
            let l = leaders(h).await;
            (l.len() == 1).then(|| l[0])
        }
    })
    .await;
    assert_ne!(second, first);
    let (_, _, ev2) = actors.iter().find(|(id, _, _)| *id == second).unwrap();
    assert!(ev2.any(|e| matches!(e, CoordEvent::BecameLeader)));
    assert_eq!(
        current_leader(&observer, &root.paths)
            .await
            .unwrap()
            .as_deref(),
        Some(second)
    );
    for (_, a, _) in &actors {
        if a.connected() {
            a.send(Shutdown).await.unwrap();
        }
    }
}
