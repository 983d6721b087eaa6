//! How a worker process runs: [`WorkerConfig`] (identity, ZooKeeper and
//! Kafka addresses, session and lease timing, capacity, checkpoint storage)
//! and the lease margin it derives.
//! Must never: start anything or talk to ZooKeeper (it is plain data).

use std::time::Duration;

/// How a worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Worker id (unique in the cluster; a path segment).
    pub id: String,
    /// ZooKeeper `host:port[,host:port...][/chroot]`.
    pub zk: String,
    /// ZooKeeper digest credentials (protect the tree; see `coord::store`'s ACLs).
    pub zk_auth: Option<crate::coord::session::ZkAuth>,
    /// Root of the znode tree (default `/weir`).
    pub root: String,
    /// Kafka `bootstrap.servers` handed to task factories.
    pub brokers: String,
    /// ZooKeeper session timeout.
    pub session_timeout: Duration,
    /// Most tasks at once.
    pub capacity: u32,
    /// Threads of the local runtime.
    pub threads: usize,
    /// Address advertised in the worker's znode (its HTTP endpoint), if any.
    pub address: String,
    /// Progress publication period per task (state changes go at once).
    pub publish_interval: Duration,
    /// How long SIGTERM waits for tasks to drain before aborting them.
    pub drain_grace: Duration,
    /// How long a task that could not even be built stays FAILED here before it is reported
    /// to the leader (which moves it): a bad job bounces between workers at most this often.
    pub build_failure_delay: Duration,
    /// Durable checkpoint storage shared by every worker of the cluster
    /// (`file:///shared/dir`, `s3://..`), handed to task factories.
    pub checkpoint_url: Option<String>,
    /// Whether the HTTP endpoint accepts cancel and rescale (`--http-admin`);
    /// without it the dashboard and its API are read-only.
    pub http_admin: bool,
}

impl WorkerConfig {
    /// Defaults: root `/weir`, 6 s session, capacity 64, 2 threads, 1 s publication,
    /// 6 s drain grace.
    pub fn new(id: &str, zk: &str, brokers: &str) -> Self {
        WorkerConfig {
            id: id.to_string(),
            zk: zk.to_string(),
            zk_auth: None,
            root: crate::coord::paths::DEFAULT_ROOT.to_string(),
            brokers: brokers.to_string(),
            session_timeout: Duration::from_secs(6),
            capacity: 64,
            threads: 2,
            address: String::new(),
            publish_interval: Duration::from_secs(1),
            drain_grace: Duration::from_secs(6),
            build_failure_delay: Duration::from_secs(1),
            checkpoint_url: None,
            http_admin: false,
        }
    }

    /// The lease's safety margin: a fifth of the session timeout, at least 200 ms.
    pub fn lease_margin(&self) -> Duration {
        (self.session_timeout / 5).max(Duration::from_millis(200))
    }
}
