//! The dashboard in a real browser: headless Chromium (Debian's `chromium`,
//! installed by `scripts/browser install`) driven through its ChromeDriver
//! with the fantoccini WebDriver client, against three real worker
//! processes, a real ZooKeeper and a real broker.
//!
//! Opens the overview, follows the job's link, sees the job's tasks RUNNING
//! and its records per second rise (the page updates itself: the test never
//! reloads it), kills -9 a worker hosting a task and sees that task move to
//! another worker on the same page, then sees the worker listed as gone on
//! the overview. Screenshots go to `target/web-browser/`. The test starts
//! ChromeDriver and the browser itself and fails loudly when either cannot
//! start.

mod service_common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use service_common::*;

const TIMEOUT_MS: u64 = 3000;
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn out_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/web-browser");
    std::fs::create_dir_all(&d).expect("create target/web-browser");
    d
}

/// ChromeDriver on a free port; killed on drop.
struct Driver {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/browser");
    let out = Command::new(&script)
        .arg("install")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/browser install");
    assert!(
        out.status.success(),
        "scripts/browser install failed: the browser test needs Debian's chromium and chromium-driver\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let log = out_dir().join("chromedriver.log");
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
    let mut d = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = format!("127.0.0.1:{port}");
    // Its port accepting connections is the readiness signal (fantoccini then asks it for
    // a session, which is where a browser that cannot start shows).
    while std::net::TcpStream::connect(&addr).is_err() {
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!(
                "chromedriver exited ({st}) before answering:\n{}",
                std::fs::read_to_string(&d.log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not answer on {addr} within 20 s:\n{}",
            std::fs::read_to_string(&d.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d
}

async fn open_browser(driver: &Driver, profile: &std::path::Path) -> Client {
    // The flags that work on the project's machines (see scripts/browser flags): headless,
    // no sandbox (root), no background networking (the network is closed), a fresh profile.
    let args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--window-size=1400,1100".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": CHROMIUM, "args": args }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    match ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
    {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot start headless Chromium through chromedriver: {e}\n{}",
            std::fs::read_to_string(&driver.log).unwrap_or_default()
        ),
    }
}

async fn screenshot(b: &Client, name: &str) {
    let png = b.screenshot().await.expect("screenshot");
    let path = out_dir().join(name);
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// The job page's task table as the browser shows it: task -> (worker, state, records in/s).
async fn tasks_shown(b: &Client) -> BTreeMap<String, (String, String, f64)> {
    let js = "return Array.from(document.querySelectorAll('#tasks tr[data-task]')).map(r => [\
        r.dataset.task, r.querySelector('td.worker').dataset.worker, \
        r.querySelector('td.state').dataset.state, r.querySelector('td.rate-in').textContent])";
    let v = b.execute(js, vec![]).await.unwrap_or(Value::Null);
    v.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r[0].as_str().unwrap_or("").to_string(),
                        (
                            r[1].as_str().unwrap_or("").to_string(),
                            r[2].as_str().unwrap_or("").to_string(),
                            r[3].as_str().unwrap_or("").trim().parse().unwrap_or(0.0),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `f` until it holds or `timeout` passes (then screenshots and panics with `what`).
async fn wait_for<T, F, Fut>(b: &Client, c: &Cluster, what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            screenshot(b, "failure.png").await;
            let html = b.source().await.unwrap_or_default();
            panic!(
                "timed out after {timeout:?} waiting for {what} in the browser\npage:\n{html}\n{}",
                c.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium_follows_a_job_through_a_worker_kill() {
    let driver = start_driver();
    let profile = tempfile::tempdir().expect("profile dir");
    let b = open_browser(&driver, profile.path()).await;

    let mut c = Cluster::new("web-browser", TIMEOUT_MS);
    for w in ["v1", "v2", "v3"] {
        c.start_worker_with(w, &["--test-job-types"]);
    }
    let home = format!("http://{}", c.http_of("v1"));
    c.weir_ok(&[
        "submit",
        "failing",
        "--name",
        "clicks",
        "--parallelism",
        "3",
        "--set",
        "fail_on=nobody",
    ]);

    // The overview lists the job; follow its link.
    b.goto(&home).await.expect("open the overview");
    let link = wait_for(
        &b,
        &c,
        "the job's link",
        Duration::from_secs(20),
        || async {
            b.find(Locator::Css("#jobs tr[data-job='clicks'] a.job-link"))
                .await
                .ok()
        },
    )
    .await;
    screenshot(&b, "1-overview.png").await;
    link.click().await.expect("click the job's link");
    let url = b.current_url().await.expect("current URL");
    assert!(url.path().ends_with("/jobs/clicks"), "{url}");

    // Its tasks RUNNING, and their records per second rising (the page refreshes itself).
    let first = tasks_shown(&b).await;
    let first_rate: f64 = first.values().map(|(_, _, r)| r).sum();
    let shown = wait_for(
        &b,
        &c,
        "3 tasks RUNNING at > 100 records/s each",
        Duration::from_secs(40),
        || async {
            let t = tasks_shown(&b).await;
            (t.len() == 3
                && t.values()
                    .all(|(w, s, r)| !w.is_empty() && s == "RUNNING" && *r > 100.0))
            .then_some(t)
        },
    )
    .await;
    let rate: f64 = shown.values().map(|(_, _, r)| r).sum();
    eprintln!("records/s shown: {first_rate} when the page opened, {rate} once running");
    assert!(
        rate > first_rate,
        "records per second did not rise: {first_rate} -> {rate}"
    );
    // The chart has a line once two samples exist.
    wait_for(
        &b,
        &c,
        "the records/s chart",
        Duration::from_secs(20),
        || async { b.find(Locator::Css("polyline.in")).await.ok() },
    )
    .await;
    screenshot(&b, "2-job-running.png").await;

    // kill -9 a worker (not the one serving the page) that hosts a task: its task moves.
    let (victim_task, (victim, _, _)) = shown
        .iter()
        .find(|(_, (w, _, _))| w != "v1")
        .map(|(t, v)| (t.clone(), v.clone()))
        .expect("a task on v2 or v3");
    eprintln!("killing {victim} (hosts {victim_task})");
    c.workers.remove(&victim).expect("victim").kill9();
    // On the way (best effort, not asserted: it lasts about one session timeout), the page
    // shows the task's worker unreachable, or the task not RUNNING yet elsewhere.
    let mut moving_seen = false;
    let deadline = Instant::now() + Duration::from_secs(40);
    let moved = loop {
        let t = tasks_shown(&b).await;
        let row = t.get(&victim_task).cloned();
        if let Some((w, _, _)) = row
            .as_ref()
            .filter(|(w, s, _)| !w.is_empty() && *w != victim && s == "RUNNING")
        {
            break w.clone();
        }
        if !moving_seen {
            let unreachable = b
                .find(Locator::Css(&format!(
                    "#tasks tr[data-task='{victim_task}'] td.worker .badge"
                )))
                .await
                .is_ok();
            if unreachable || row.is_some_and(|(_, s, _)| s != "RUNNING") {
                moving_seen = true;
                screenshot(&b, "3-job-task-moving.png").await;
            }
        }
        if Instant::now() > deadline {
            screenshot(&b, "failure.png").await;
            panic!(
                "the killed worker's task {victim_task} not shown RUNNING elsewhere within 40 s: {t:?}\n{}",
                c.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("{victim_task} moved from {victim} to {moved} (seen on the way: {moving_seen})");
    screenshot(&b, "4-job-after-kill.png").await;

    // The overview: the killed worker is gone, the job RUNNING on the two others.
    b.goto(&home).await.expect("open the overview");
    let gone = format!("#gone tr[data-worker='{victim}']");
    wait_for(
        &b,
        &c,
        "the killed worker listed as gone",
        Duration::from_secs(20),
        || async { b.find(Locator::Css(&gone)).await.ok() },
    )
    .await;
    let live_workers = b
        .find_all(Locator::Css("#workers tr[data-worker]"))
        .await
        .expect("workers table");
    assert_eq!(live_workers.len(), 2);
    screenshot(&b, "5-overview-after-kill.png").await;
    b.close().await.expect("close the browser");
}
