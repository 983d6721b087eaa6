//! The `sessions` example, run as a real process: a bounded run prints
//! well-formed JSON sessions that account for every generated click, obey
//! session semantics (per user, sessions are separated by at least the gap;
//! `end = last click + gap`), and are identical at parallelism 1 and 2; and
//! SIGTERM during an unbounded run drains the job (open sessions are fired
//! and flushed) and exits 0 within a few seconds, with the printed sessions
//! accounting for exactly the clicks the source read.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Builds the examples once per test binary and returns the path of one.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "--examples"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("run cargo build").success(),
            "cargo build --examples failed"
        );
    });
    profile_dir.join("examples").join(name)
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
struct SessionOut {
    user: u32,
    start: i64,
    end: i64,
    clicks: u64,
    active_ms: i64,
}

const GAP: i64 = 3_000;

fn parse(stdout: &str) -> Vec<SessionOut> {
    let mut v: Vec<SessionOut> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a session line ({e}): {l:?}"))
        })
        .collect();
    v.sort();
    v
}

/// The `key=value` number a tracing summary line carries.
fn field(stderr: &str, key: &str) -> u64 {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("sessions done"))
        .expect("summary line on stderr");
    let at = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("{key} missing in {line:?}"))
        + key.len()
        + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn check_sessions(sessions: &[SessionOut]) {
    let mut by_user: BTreeMap<u32, Vec<&SessionOut>> = BTreeMap::new();
    for s in sessions {
        assert!(s.clicks >= 1, "{s:?}");
        assert_eq!(
            s.end - s.start - GAP,
            s.active_ms,
            "end = last click + gap: {s:?}"
        );
        by_user.entry(s.user).or_default().push(s);
    }
    for (user, list) in by_user {
        for pair in list.windows(2) {
            assert!(
                pair[1].start > pair[0].end,
                "user {user}: sessions {:?} and {:?} should have merged",
                pair[0],
                pair[1]
            );
        }
    }
}

fn bounded(events: u64, parallelism: u32) -> (Vec<SessionOut>, String) {
    let out = Command::new(example("sessions"))
        .args([
            "--events",
            &events.to_string(),
            "--parallelism",
            &parallelism.to_string(),
        ])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    (parse(&String::from_utf8(out.stdout).unwrap()), stderr)
}

#[test]
fn a_bounded_run_accounts_for_every_click() {
    let (sessions, stderr) = bounded(20_000, 2);
    check_sessions(&sessions);
    let clicks: u64 = sessions.iter().map(|s| s.clicks).sum();
    assert_eq!(clicks, 20_000);
    assert_eq!(field(&stderr, "events"), 20_000);
    assert_eq!(field(&stderr, "sessions"), sessions.len() as u64);
    assert_eq!(field(&stderr, "late"), 0);
    let users: std::collections::BTreeSet<u32> = sessions.iter().map(|s| s.user).collect();
    assert_eq!(users.len(), 20, "every user has sessions");
    assert!(
        sessions.len() > 20 * 10,
        "sessions close and new ones open: {}",
        sessions.len()
    );
}

#[test]
fn the_output_is_the_same_at_parallelism_1_and_2() {
    let (p1, _) = bounded(10_000, 1);
    let (p2, _) = bounded(10_000, 2);
    assert_eq!(p1, p2);
}

#[test]
fn sigterm_drains_open_sessions_and_exits_zero() {
    let mut child = Command::new(example("sessions"))
        .args(["--events", "0", "--rate", "20000"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for l in stdout.lines() {
                lines.lock().unwrap().push(l.unwrap());
            }
        })
    };
    let stderr_reader = {
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s).unwrap();
            s
        })
    };
    // Sessions close while it runs: the job is up and its handler installed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines.lock().unwrap().len() < 20 {
        assert!(Instant::now() < deadline, "no sessions printed");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the unbounded run exited by itself"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = lines.lock().unwrap().len();
    let signalled = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if signalled.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("no exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
    reader.join().unwrap();
    let stderr = stderr_reader.join().unwrap();
    let all = lines.lock().unwrap().join("\n");
    let sessions = parse(&all);
    check_sessions(&sessions);
    assert!(
        sessions.len() > before,
        "the drain fired the sessions still open"
    );
    assert!(stderr.contains("status=Cancelled"), "{stderr}");
    let clicks: u64 = sessions.iter().map(|s| s.clicks).sum();
    let read = field(&stderr, "events");
    assert!(read > 0);
    assert_eq!(
        clicks, read,
        "every click the source read is in a printed session"
    );
}
