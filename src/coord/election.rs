//! Leader election with ephemeral sequential znodes under `/leader`.
//!
//! Owns: entering the election, waiting to win it, and the identity of the
//! winner's znode (which the leader's writes check, so a deposed leader cannot
//! write).
//! Must never: give up leadership because the connection dropped (only
//! session expiry removes our candidate node), or herd (each candidate
//! watches only its predecessor).
//!
//! # Why not `Client::lock` with `LockPrefix::new_curator`
//! That Curator-compatible lock would work, but this recipe (the classic one)
//! keeps two things explicit that weir needs: the candidate node's path, which
//! every leader write checks in its multi-op (`check_version(node, 0)`), and
//! readable candidate data (`{"candidate": id}`), so the CLI can show who
//! leads and who is queued by listing `/leader`. It also lets us find our own
//! node again after a connection loss during `create` (by session owner),
//! which is the recipe's one subtle case.

use zookeeper_client::{Client, CreateMode};

use super::error::{CoordError, CoordResult};
use super::paths::ZkPaths;

/// Proof of having won the election in this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// Candidate id that won.
    pub candidate: String,
    /// Our election znode (full path); it exists as long as our session does.
    pub node: String,
}

/// Short wait before retrying after a connection loss (the client queues requests until it
/// reconnects, so this only avoids a hot loop).
async fn pause() {
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

/// The sequence number at the end of an election node name (`<candidate>-<10 digits>`).
fn sequence_of(name: &str) -> Option<i64> {
    name.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

/// Finds a candidate node of `candidate` created by this session (after a connection loss
/// during create, the node may exist without our knowing its name).
async fn own_node(
    client: &Client,
    paths: &ZkPaths,
    candidate: &str,
) -> CoordResult<Option<String>> {
    let dir = paths.leader();
    let children = client
        .list_children(&dir)
        .await
        .map_err(|e| CoordError::zk(&dir, e))?;
    let prefix = format!("{candidate}-");
    for name in children.iter().filter(|n| n.starts_with(&prefix)) {
        let path = format!("{dir}/{name}");
        if let Ok(Some(stat)) = client.check_stat(&path).await {
            if stat.ephemeral_owner == client.session_id().0 {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

/// Enters the election as `candidate` and waits until this session leads.
///
/// Returns only once we lead; after winning it `sync`s the root so the caller's next reads
/// see everything the previous leader wrote (SAMZA-2301). Fails only when the session is
/// lost (or on unexpected server errors); transient connection losses are retried.
pub async fn campaign(
    client: &Client,
    paths: &ZkPaths,
    candidate: &str,
) -> CoordResult<Leadership> {
    let dir = paths.leader();
    let prefix = paths.leader_candidate_prefix(candidate);
    let data = serde_json::json!({ "candidate": candidate }).to_string();
    let node = loop {
        if let Some(node) = own_node(client, paths, candidate).await? {
            break node;
        }
        let opts = CreateMode::EphemeralSequential.with_acls(super::store::acls());
        match client.create(&prefix, data.as_bytes(), &opts).await {
            Ok((_, seq)) => break format!("{prefix}{seq}"),
            Err(zookeeper_client::Error::ConnectionLoss) => pause().await,
            Err(e) => return Err(CoordError::zk(&prefix, e)),
        }
    };
    let my_name = node.rsplit('/').next().unwrap_or_default().to_string();
    let my_seq = sequence_of(&my_name).ok_or_else(|| CoordError::Malformed {
        path: node.clone(),
        reason: "election node without a sequence number".into(),
    })?;
    tracing::info!(candidate, node = %node, "entered leader election");
    loop {
        let children = match client.list_children(&dir).await {
            Ok(c) => c,
            Err(zookeeper_client::Error::ConnectionLoss) => {
                pause().await;
                continue;
            }
            Err(e) => return Err(CoordError::zk(&dir, e)),
        };
        if !children.contains(&my_name) {
            // Our node is gone while our session lives: someone deleted it. Re-enter.
            return Err(CoordError::NoNode { path: node });
        }
        let predecessor = children
            .iter()
            .filter_map(|n| sequence_of(n).map(|s| (s, n)))
            .filter(|(s, _)| *s < my_seq)
            .max_by_key(|(s, _)| *s)
            .map(|(_, n)| format!("{dir}/{n}"));
        match predecessor {
            None => {
                client
                    .sync(paths.root())
                    .await
                    .map_err(|e| CoordError::zk(paths.root(), e))?;
                tracing::info!(candidate, node = %node, "won leader election");
                return Ok(Leadership {
                    candidate: candidate.to_string(),
                    node,
                });
            }
            Some(pred) => match client.check_and_watch_stat(&pred).await {
                Ok((Some(_), watcher)) => {
                    tracing::debug!(candidate, waiting_on = %pred, "waiting for predecessor");
                    let ev = watcher.changed().await;
                    if ev.session_state.is_terminated() {
                        return Err(CoordError::SessionExpired { path: pred });
                    }
                }
                Ok((None, _)) => {}
                Err(zookeeper_client::Error::ConnectionLoss) => pause().await,
                Err(e) => return Err(CoordError::zk(&pred, e)),
            },
        }
    }
}

/// The current leader's candidate id, by reading the lowest election node (for CLIs).
pub async fn current_leader(client: &Client, paths: &ZkPaths) -> CoordResult<Option<String>> {
    let dir = paths.leader();
    let children = client
        .list_children(&dir)
        .await
        .map_err(|e| CoordError::zk(&dir, e))?;
    let Some(first) = children
        .iter()
        .filter_map(|n| sequence_of(n).map(|s| (s, n)))
        .min_by_key(|(s, _)| *s)
    else {
        return Ok(None);
    };
    Ok(first.1.rsplit_once('-').map(|(c, _)| c.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sequence_parsing() {
        assert_eq!(super::sequence_of("w-1-0000000042"), Some(42));
        assert_eq!(super::sequence_of("nodash"), None);
    }
}
