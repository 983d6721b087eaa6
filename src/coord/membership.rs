//! Worker membership: one ephemeral znode per live worker.
//!
//! Owns: registering a worker (`/workers/<id>` ephemeral, `WorkerInfo` JSON),
//! deregistering, and reading the member list with a watch on it.
//! Must never: delete another session's registration, or report a worker as
//! gone because *our* connection dropped (only the server removes an
//! ephemeral node, when that worker's session really expires).

use std::time::{Duration, Instant};

use zookeeper_client::{Client, OneshotWatcher};

use super::error::{CoordError, CoordResult};
use super::model::{encode, WorkerInfo};
use super::paths::ZkPaths;
use super::store::{ephemeral, read_workers};

/// Registers `info` as the ephemeral node `/workers/<id>` of this session.
///
/// If the node exists and belongs to this session, its data is updated. If it belongs to
/// another session (typically our own previous, expired session that the server has not
/// reaped yet, or a second process with the same id), it waits up to `wait_for_stale`
/// for it to go away, then fails with `AlreadyExists` naming the path.
pub async fn register(
    client: &Client,
    paths: &ZkPaths,
    info: &WorkerInfo,
    wait_for_stale: Duration,
) -> CoordResult<()> {
    info.validate()?;
    let path = paths.worker(&info.id);
    let data = encode(&path, info)?;
    let deadline = Instant::now() + wait_for_stale;
    loop {
        match client.create(&path, &data, &ephemeral()).await {
            Ok(_) => {
                tracing::info!(worker = %info.id, path = %path, "worker registered");
                return Ok(());
            }
            Err(zookeeper_client::Error::NodeExists) => {}
            Err(e) => return Err(CoordError::zk(&path, e)),
        }
        match client.check_stat(&path).await {
            Ok(Some(stat)) if stat.ephemeral_owner == client.session_id().0 => {
                client
                    .set_data(&path, &data, None)
                    .await
                    .map_err(|e| CoordError::zk(&path, e))?;
                return Ok(());
            }
            Ok(Some(stat)) => {
                if Instant::now() >= deadline {
                    return Err(CoordError::AlreadyExists { path });
                }
                tracing::info!(
                    path = %path,
                    owner = format_args!("{:#x}", stat.ephemeral_owner),
                    "worker id still held by another session; waiting for it to expire"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(None) => {} // vanished meanwhile: retry create at once
            Err(e) => return Err(CoordError::zk(&path, e)),
        }
    }
}

/// Removes this session's registration (a clean leave). Missing node is fine; a node owned
/// by another session is left alone.
pub async fn deregister(client: &Client, paths: &ZkPaths, id: &str) -> CoordResult<()> {
    let path = paths.worker(id);
    match client.check_stat(&path).await {
        Ok(Some(stat)) if stat.ephemeral_owner == client.session_id().0 => {
            match client.delete(&path, Some(stat.version)).await {
                Ok(()) | Err(zookeeper_client::Error::NoNode) => Ok(()),
                Err(e) => Err(CoordError::zk(&path, e)),
            }
        }
        Ok(_) => Ok(()),
        Err(e) => Err(CoordError::zk(&path, e)),
    }
}

/// The live workers, and a watcher that fires when one joins or leaves.
pub async fn watch_workers(
    client: &Client,
    paths: &ZkPaths,
) -> CoordResult<(Vec<WorkerInfo>, OneshotWatcher)> {
    let dir = paths.workers();
    let (ids, watcher) = client
        .list_and_watch_children(&dir)
        .await
        .map_err(|e| CoordError::zk(&dir, e))?;
    Ok((read_workers(client, paths, ids).await?, watcher))
}
