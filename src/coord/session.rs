//! Opening a ZooKeeper session, and what the process knows about its health.
//!
//! Owns: connecting with exponential backoff (reporting "waiting for ZooKeeper
//! at HOST:PORT" meanwhile), the shared [`SessionStatus`] a caller can read at
//! any time, and the liveness bound [`SessionStatus::may_be_alive_until`] a
//! worker uses to stop its tasks before its session could have expired.
//! Must never: panic when ZooKeeper is down, treat `Disconnected` as
//! `Expired`, or give up connecting on its own (the owner cancels it).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use zookeeper_client::Client;

use super::error::CoordError;

/// How to reach ZooKeeper and how to retry.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `host:port[,host:port...][/chroot]`: one server or an ensemble, optionally with a
    /// chroot (created if missing) under which weir's root then lives.
    pub address: String,
    /// Session timeout asked of the server (it clamps it to its min/max).
    pub session_timeout: Duration,
    /// First retry delay when ZooKeeper is unreachable.
    pub backoff_initial: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// Digest credentials (`user:password`): the session authenticates with them, and the
    /// znodes this process creates are protected (see `store`'s ACLs).
    pub auth: Option<ZkAuth>,
}

/// ZooKeeper digest credentials `user:password` (its `Debug` hides the password).
#[derive(Clone, PartialEq, Eq)]
pub struct ZkAuth(String);

impl ZkAuth {
    /// Checks the `user:password` form (both parts non-empty).
    ///
    /// ```
    /// use weir::coord::session::ZkAuth;
    /// assert!(ZkAuth::parse("weir:s3cret").is_ok());
    /// assert!(ZkAuth::parse("weir").is_err());
    /// assert_eq!(format!("{:?}", ZkAuth::parse("weir:s3cret").unwrap()), "ZkAuth(weir:***)");
    /// ```
    pub fn parse(s: &str) -> Result<ZkAuth, CoordError> {
        let s = s.trim();
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok(ZkAuth(s.to_string())),
            _ => Err(CoordError::Invalid {
                field: "ZooKeeper credentials".into(),
                reason: "expected user:password (digest scheme)".into(),
            }),
        }
    }

    /// Credentials from a command line: `flag` (`--zk-auth`, or its environment variable)
    /// or else the first line of `file` (`--zk-auth-file`); `None` without either.
    pub fn from_flag_or_file(
        flag: Option<&str>,
        file: Option<&std::path::Path>,
    ) -> Result<Option<ZkAuth>, CoordError> {
        if let Some(f) = flag {
            return ZkAuth::parse(f).map(Some);
        }
        let Some(path) = file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| CoordError::Invalid {
            field: "--zk-auth-file".into(),
            reason: format!("{}: {e}", path.display()),
        })?;
        ZkAuth::parse(text.lines().next().unwrap_or_default()).map(Some)
    }

    /// The user name.
    pub fn user(&self) -> &str {
        self.0.split_once(':').map_or("", |(u, _)| u)
    }
}

impl std::fmt::Debug for ZkAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ZkAuth({}:***)", self.user())
    }
}

impl SessionConfig {
    /// Defaults: 6 s session, retries from 100 ms doubling up to 5 s.
    pub fn new(address: impl Into<String>) -> Self {
        SessionConfig {
            address: address.into(),
            session_timeout: Duration::from_secs(6),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            auth: None,
        }
    }
}

/// Where the process stands with ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No session yet (or a new one after expiry): trying to connect.
    Connecting {
        /// Attempts so far.
        attempt: u32,
        /// Last connection error, if any attempt failed.
        last_error: Option<String>,
    },
    /// Session established and connected.
    Connected,
    /// Connection lost; the session may still be alive (do not treat as expired).
    Disconnected {
        /// When the disconnection was observed.
        since: Instant,
    },
    /// The session expired; a new one is being opened.
    Expired,
    /// Shut down on purpose.
    Closed,
}

/// Snapshot of the session's health, shared through a [`StatusHandle`].
#[derive(Debug, Clone)]
pub struct SessionStatus {
    /// ZooKeeper address being used.
    pub address: String,
    /// Current phase.
    pub phase: Phase,
    /// Id of the current session, once one exists.
    pub session_id: Option<i64>,
    /// Negotiated session timeout (the requested one until negotiated).
    pub session_timeout: Duration,
    /// Last moment the server is known to have heard from this session.
    pub last_heard: Option<Instant>,
    /// Whether this process currently leads.
    pub leader: bool,
    /// Sessions opened so far (1 for the first session, +1 after each expiry).
    pub generation: u64,
}

impl SessionStatus {
    fn new(address: &str, session_timeout: Duration) -> Self {
        SessionStatus {
            address: address.to_string(),
            phase: Phase::Connecting {
                attempt: 0,
                last_error: None,
            },
            session_id: None,
            session_timeout,
            last_heard: None,
            leader: false,
            generation: 0,
        }
    }

    /// Until when the session may still be alive on the server: the last moment the server
    /// heard from us plus the session timeout. `None` when there is no session (connecting,
    /// expired, closed). While connected it moves forward all the time.
    ///
    /// A worker that is `Disconnected` must stop its tasks before this instant: after it,
    /// another worker may already own them.
    pub fn may_be_alive_until(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connected => Some(Instant::now() + self.session_timeout),
            Phase::Disconnected { .. } => self.last_heard.map(|t| t + self.session_timeout),
            _ => None,
        }
    }

    /// Whether the session is connected right now.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// A one-line human description, e.g. `waiting for ZooKeeper at 127.0.0.1:2181 (attempt 3: ...)`.
    pub fn describe(&self) -> String {
        match &self.phase {
            Phase::Connecting {
                attempt,
                last_error,
            } => match last_error {
                Some(e) => format!(
                    "waiting for ZooKeeper at {} (attempt {attempt}: {e})",
                    self.address
                ),
                None => format!("waiting for ZooKeeper at {}", self.address),
            },
            Phase::Connected => format!(
                "connected to ZooKeeper at {} (session {:#x}{})",
                self.address,
                self.session_id.unwrap_or(0),
                if self.leader { ", leader" } else { "" }
            ),
            Phase::Disconnected { since } => format!(
                "disconnected from ZooKeeper at {} for {:?}; session may be alive for {:?} more",
                self.address,
                since.elapsed(),
                self.may_be_alive_until()
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or_default()
            ),
            Phase::Expired => format!(
                "session expired; reconnecting to ZooKeeper at {}",
                self.address
            ),
            Phase::Closed => "closed".to_string(),
        }
    }
}

/// A cheap, clonable, thread-safe view of the [`SessionStatus`].
#[derive(Debug, Clone)]
pub struct StatusHandle(Arc<RwLock<SessionStatus>>);

impl StatusHandle {
    /// A handle in the `Connecting` phase for `address`.
    pub fn new(address: &str, session_timeout: Duration) -> Self {
        StatusHandle(Arc::new(RwLock::new(SessionStatus::new(
            address,
            session_timeout,
        ))))
    }

    /// A snapshot.
    pub fn get(&self) -> SessionStatus {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies `f` to the status.
    pub fn update(&self, f: impl FnOnce(&mut SessionStatus)) {
        let mut g = self.0.write().unwrap_or_else(|p| p.into_inner());
        f(&mut g);
    }

    /// Records that the server just answered us.
    pub fn touch(&self) {
        self.update(|s| s.last_heard = Some(Instant::now()));
    }

    /// Records a disconnection observed now. The client declares a connection lost after
    /// `connection_timeout` (2/5 of the session timeout) without a reply while it pings
    /// every 3/20 of it, so the server heard from us no earlier than `now - 2/5·timeout`.
    pub fn mark_disconnected(&self) {
        self.update(|s| {
            let now = Instant::now();
            let floor = now.checked_sub(s.session_timeout * 2 / 5).unwrap_or(now);
            s.last_heard = Some(s.last_heard.map_or(floor, |t| t.max(floor)));
            s.phase = Phase::Disconnected { since: now };
        });
    }
}

/// Connects, retrying with exponential backoff until it succeeds; never returns an error.
/// While waiting, `status` says `waiting for ZooKeeper at HOST:PORT` and each failure is
/// logged. Cancel by dropping the future.
pub async fn connect_with_backoff(cfg: &SessionConfig, status: &StatusHandle) -> Client {
    let mut delay = cfg.backoff_initial;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match connect_once(cfg).await {
            Ok(client) => {
                status.update(|s| {
                    s.phase = Phase::Connected;
                    s.session_id = Some(client.session_id().0);
                    s.session_timeout = client.session_timeout();
                    s.last_heard = Some(Instant::now());
                    s.generation += 1;
                });
                tracing::info!(
                    address = %cfg.address,
                    session = format_args!("{:#x}", client.session_id().0),
                    timeout_ms = client.session_timeout().as_millis() as u64,
                    "ZooKeeper session established"
                );
                return client;
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(address = %cfg.address, attempt, error = %msg, "waiting for ZooKeeper at {}", cfg.address);
                status.update(|s| {
                    s.phase = Phase::Connecting {
                        attempt,
                        last_error: Some(msg),
                    }
                });
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(cfg.backoff_max);
            }
        }
    }
}

/// Splits a connect string into its servers and its chroot (`None` without one):
///
/// ```
/// use weir::coord::session::split_chroot;
/// assert_eq!(split_chroot("h1:1,h2:2,h3:3/weir/a"), ("h1:1,h2:2,h3:3", Some("/weir/a")));
/// assert_eq!(split_chroot("127.0.0.1:2181"), ("127.0.0.1:2181", None));
/// assert_eq!(split_chroot("127.0.0.1:2181/"), ("127.0.0.1:2181", None));
/// ```
pub fn split_chroot(address: &str) -> (&str, Option<&str>) {
    match address.find('/') {
        Some(i) if address[i..].len() > 1 => {
            (&address[..i], Some(address[i..].trim_end_matches('/')))
        }
        Some(i) => (&address[..i], None),
        None => (address, None),
    }
}

/// One connection attempt, failing fast when no server answers. With a chroot in the
/// address, the session is opened on the servers, the chroot created if missing, and the
/// client returned is rooted there.
pub async fn connect_once(cfg: &SessionConfig) -> Result<Client, CoordError> {
    let (servers, chroot) = split_chroot(&cfg.address);
    let client = connect_servers(cfg, servers).await?;
    let Some(chroot) = chroot else {
        return Ok(client);
    };
    client
        .mkdir(chroot, &super::store::persistent())
        .await
        .map_err(|e| CoordError::zk(chroot, e))?;
    client.chroot(chroot).map_err(|_| CoordError::Invalid {
        field: "ZooKeeper address".into(),
        reason: format!("{:?}: bad chroot {chroot:?}", cfg.address),
    })
}

async fn connect_servers(cfg: &SessionConfig, servers: &str) -> Result<Client, CoordError> {
    let mut connector = Client::connector();
    if let Some(auth) = &cfg.auth {
        super::store::secure_acls();
        connector = connector.with_auth("digest", auth.0.as_bytes());
    }
    let fut = connector
        .with_session_timeout(cfg.session_timeout)
        .with_fail_eagerly()
        .connect(servers);
    // Bound the attempt: an unanswering (not refusing) address would otherwise wait a whole session timeout.
    match tokio::time::timeout(cfg.session_timeout.max(Duration::from_secs(1)) * 2, fut).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(CoordError::Unreachable {
            address: cfg.address.clone(),
            reason: e.to_string(),
        }),
        Err(_) => Err(CoordError::Unreachable {
            address: cfg.address.clone(),
            reason: "connect timed out".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_bound_after_disconnect() {
        let h = StatusHandle::new("127.0.0.1:1", Duration::from_secs(10));
        assert!(h.get().may_be_alive_until().is_none(), "no session yet");
        assert!(h
            .get()
            .describe()
            .starts_with("waiting for ZooKeeper at 127.0.0.1:1"));
        h.update(|s| s.phase = Phase::Connected);
        h.touch();
        h.mark_disconnected();
        let s = h.get();
        let until = s.may_be_alive_until().unwrap();
        let left = until.saturating_duration_since(Instant::now());
        // last_heard is now (touched just before), so ~10 s are left, and never more.
        assert!(
            left <= Duration::from_secs(10) && left > Duration::from_secs(9),
            "{left:?}"
        );
        assert!(s.describe().contains("disconnected"));
    }

    #[test]
    fn disconnect_without_recent_contact_uses_the_conservative_floor() {
        let h = StatusHandle::new("x:1", Duration::from_secs(10));
        h.mark_disconnected();
        let left = h
            .get()
            .may_be_alive_until()
            .unwrap()
            .saturating_duration_since(Instant::now());
        assert!(
            left <= Duration::from_secs(6) && left > Duration::from_secs(5),
            "{left:?}"
        );
    }

    #[tokio::test]
    async fn connect_once_reports_the_address() {
        let mut cfg = SessionConfig::new("127.0.0.1:1");
        cfg.session_timeout = Duration::from_secs(1);
        let err = connect_once(&cfg).await.unwrap_err();
        assert!(
            matches!(err, CoordError::Unreachable { ref address, .. } if address == "127.0.0.1:1"),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("waiting for ZooKeeper at 127.0.0.1:1"));
    }
}
