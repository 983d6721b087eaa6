//! Completed checkpoints in an object store.
//!
//! Layout under the storage root: `<job>/chk-<id>/state` (every operator
//! state, [`super::format`]) and then `<job>/chk-<id>/_metadata` (JSON:
//! id, completion time, source positions, the tasks and operator types).
//! The metadata object is written last: a checkpoint whose upload died
//! half way has none and is invisible to [`CheckpointStorage::latest`] and
//! [`CheckpointStorage::load`]. Retention keeps the newest `n` and never
//! deletes one that the caller protects. All calls are async and must
//! run off the arbiters that run operators.

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::{format, CheckpointError};

/// One task's operator state, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    /// The task's uid: `job/stage#subtask`.
    pub task: String,
    /// The operator's Rust type name (key, value and accumulator types).
    pub operator: String,
    /// The operator's own encoding of its state.
    pub state: Vec<u8>,
}

/// The `_metadata` object of a completed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// [`format::FORMAT_VERSION`] of the state object.
    pub format_version: u32,
    /// Job name.
    pub job: String,
    /// Checkpoint id.
    pub id: u64,
    /// Completion time, milliseconds since the Unix epoch.
    pub completed_at_ms: u64,
    /// Source positions by task uid.
    pub positions: BTreeMap<String, serde_json::Value>,
    /// Task uid → operator type, of every stored state.
    pub operators: BTreeMap<String, String>,
    /// Size of the state object in bytes.
    pub state_bytes: u64,
}

/// Where a job's completed checkpoints live.
///
/// ```
/// use weir::checkpoint::CheckpointStorage;
/// let dir = tempfile::tempdir().unwrap();
/// let url = format!("file://{}", dir.path().display());
/// let storage = CheckpointStorage::parse(&url).unwrap();
/// assert!(CheckpointStorage::parse("ftp://nowhere").is_err());
/// # let _ = storage;
/// ```
#[derive(Clone, Debug)]
pub struct CheckpointStorage {
    store: Arc<dyn ObjectStore>,
    url: String,
}

fn store_err(location: &Path) -> impl FnOnce(object_store::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Store {
        location: location.to_string(),
        source,
    }
}

impl CheckpointStorage {
    /// Opens `file:///absolute/dir` (created if missing) or, with the `s3`
    /// feature, `s3://bucket/prefix` (credentials from the environment).
    pub fn parse(url: &str) -> Result<Self, CheckpointError> {
        let bad = |reason: String| CheckpointError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|_| bad("not an absolute local path".into()))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| bad(e.to_string()))?
                        .with_automatic_cleanup(true),
                )
            }
            #[cfg(feature = "s3")]
            "s3" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            other => {
                return Err(bad(format!(
                "scheme {other}:// is not supported (file:// always; s3:// with the `s3` feature)"
            )))
            }
        };
        Ok(CheckpointStorage {
            store,
            url: url.to_string(),
        })
    }

    /// The URL this storage was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn dir(job: &str, id: u64) -> Path {
        Path::from_iter([job.to_string(), format!("chk-{id}")])
    }

    /// Writes checkpoint `meta.id`: the state object, then the metadata
    /// object. Returns the checkpoint's location.
    pub async fn write(
        &self,
        mut meta: CheckpointMetadata,
        states: &[TaskState],
    ) -> Result<String, CheckpointError> {
        let dir = Self::dir(&meta.job, meta.id);
        let state = format::encode(states);
        meta.state_bytes = state.len() as u64;
        meta.format_version = format::FORMAT_VERSION;
        meta.operators = states
            .iter()
            .map(|s| (s.task.clone(), s.operator.clone()))
            .collect();
        let state_path = dir.clone().join("state");
        self.store
            .put(&state_path, PutPayload::from(state))
            .await
            .map_err(store_err(&state_path))?;
        let meta_path = dir.clone().join("_metadata");
        let json = serde_json::to_vec_pretty(&meta).expect("metadata encodes");
        self.store
            .put(&meta_path, PutPayload::from(json))
            .await
            .map_err(store_err(&meta_path))?;
        Ok(format!("{}/{}", self.url.trim_end_matches('/'), dir))
    }

    /// Every object stored for `job`, with the id of the checkpoint whose
    /// `chk-<id>` directory holds it (`None`: not in one).
    async fn objects(
        &self,
        job: &str,
    ) -> Result<Vec<(Option<u64>, object_store::ObjectMeta)>, CheckpointError> {
        let prefix = Path::from(job);
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(store_err(&prefix))?;
        Ok(objects
            .into_iter()
            .map(|o| {
                let parts: Vec<_> = o.location.parts().collect();
                let id = parts
                    .len()
                    .checked_sub(2)
                    .and_then(|i| parts.get(i))
                    .and_then(|d| d.as_ref().strip_prefix("chk-")?.parse::<u64>().ok());
                (id, o)
            })
            .collect())
    }

    /// Ids of `job`'s checkpoints that have their metadata object, oldest
    /// first (torn uploads are left out).
    pub async fn completed(&self, job: &str) -> Result<Vec<u64>, CheckpointError> {
        let mut ids: Vec<u64> = self
            .objects(job)
            .await?
            .into_iter()
            .filter(|(_, o)| o.location.filename() == Some("_metadata"))
            .filter_map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The newest completed checkpoint of `job`, if any.
    pub async fn latest(&self, job: &str) -> Result<Option<u64>, CheckpointError> {
        Ok(self.completed(job).await?.last().copied())
    }

    /// The whole object at `path`.
    async fn read(&self, path: &Path) -> Result<Vec<u8>, CheckpointError> {
        let bytes = self
            .store
            .get(path)
            .await
            .map_err(store_err(path))?
            .bytes()
            .await
            .map_err(store_err(path))?;
        Ok(bytes.to_vec())
    }

    /// Loads checkpoint `id` of `job` (its metadata must exist).
    pub async fn load(
        &self,
        job: &str,
        id: u64,
    ) -> Result<(CheckpointMetadata, Vec<TaskState>), CheckpointError> {
        let dir = Self::dir(job, id);
        let meta_path = dir.clone().join("_metadata");
        let bytes = self.read(&meta_path).await?;
        let meta: CheckpointMetadata =
            serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
                location: meta_path.to_string(),
                reason: e.to_string(),
            })?;
        let state_path = dir.join("state");
        let bytes = self.read(&state_path).await?;
        let states = format::decode(&bytes).map_err(|reason| CheckpointError::Corrupt {
            location: state_path.to_string(),
            reason,
        })?;
        Ok((meta, states))
    }

    /// Deletes every checkpoint of `job` (a copy of a job that no restore
    /// can name any more); the number of objects deleted.
    pub async fn delete_all(&self, job: &str) -> Result<usize, CheckpointError> {
        let objects = self.objects(job).await?;
        for (_, o) in &objects {
            self.store
                .delete(&o.location)
                .await
                .map_err(store_err(&o.location))?;
        }
        Ok(objects.len())
    }

    /// Deletes every checkpoint of `job` (complete or torn) older than the
    /// newest `keep` complete ones, except the ids in `protect` (the one
    /// being written, the one a restore would load, the one a coordinator
    /// recorded).
    pub async fn retain(
        &self,
        job: &str,
        keep: usize,
        protect: &[u64],
    ) -> Result<(), CheckpointError> {
        let ids = self.completed(job).await?;
        let Some(&oldest_kept) = ids.get(ids.len().saturating_sub(keep.max(1))) else {
            return Ok(());
        };
        for (id, o) in self.objects(job).await? {
            if let Some(id) = id {
                if id < oldest_kept && !protect.contains(&id) {
                    self.store
                        .delete(&o.location)
                        .await
                        .map_err(store_err(&o.location))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(job: &str, id: u64) -> CheckpointMetadata {
        CheckpointMetadata {
            format_version: 0,
            job: job.into(),
            id,
            completed_at_ms: id * 1000,
            positions: [("j/0-source#0".to_string(), serde_json::json!({"at": id}))].into(),
            operators: BTreeMap::new(),
            state_bytes: 0,
        }
    }

    #[tokio::test]
    async fn torn_uploads_are_invisible_and_retention_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let s = CheckpointStorage::parse(&format!("file://{}", dir.path().display())).unwrap();
        let states = |id: u64| {
            vec![TaskState {
                task: "j/1-window#0".into(),
                operator: "W".into(),
                state: vec![id as u8; 3],
            }]
        };
        for id in 1..=4 {
            s.write(meta("j", id), &states(id)).await.unwrap();
        }
        // Checkpoint 5 died after its state object, before its metadata.
        let torn = dir.path().join("j/chk-5");
        std::fs::create_dir_all(&torn).unwrap();
        std::fs::write(torn.join("state"), b"partial").unwrap();
        assert_eq!(s.latest("j").await.unwrap(), Some(4));
        let (m, st) = s.load("j", 4).await.unwrap();
        assert_eq!((m.id, st), (4, states(4)));
        assert_eq!(m.operators["j/1-window#0"], "W");
        assert!(
            s.load("j", 5).await.is_err(),
            "a torn checkpoint never loads"
        );
        s.retain("j", 2, &[1]).await.unwrap();
        assert_eq!(
            s.completed("j").await.unwrap(),
            vec![1, 3, 4],
            "1 is protected"
        );
        assert!(torn.join("state").exists(), "newer than every kept one");
        assert_eq!(s.latest("other").await.unwrap(), None);
    }
}
