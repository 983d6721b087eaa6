//! The `wordcount` example, run as a real process: its stdout (exactly one
//! `<word> <count>` line per distinct word, nothing else) matches counts
//! computed independently in the test, on the bundled sample, on a temp
//! file at several parallelisms, and on stdin (`-`); a missing file exits
//! non-zero naming `source.path`; and SIGTERM while stdin is still open
//! drains the job, prints the counts of what was read, and exits 0.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Builds the example once per test binary and returns its path.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    // This test runs from target/<profile>/deps; examples land in
    // target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "--examples"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --examples failed");
    });
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

fn expected(text: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for w in text.split_whitespace() {
        *m.entry(w.to_string()).or_insert(0) += 1;
    }
    m
}

/// Parses stdout, insisting on the exact `<word> <count>` format and one
/// line per word.
fn parse(stdout: &[u8]) -> BTreeMap<String, u64> {
    let text = std::str::from_utf8(stdout).expect("utf-8 output");
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let (word, count) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not `word count`: {line:?}"));
        assert!(
            !word.is_empty() && !word.contains(char::is_whitespace),
            "bad word in {line:?}"
        );
        let count: u64 = count
            .parse()
            .unwrap_or_else(|_| panic!("bad count in {line:?}"));
        assert!(
            m.insert(word.to_string(), count).is_none(),
            "{word} printed twice"
        );
    }
    m
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(example("wordcount"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

const TEXT: &str = "the quick  brown fox\n\tjumps over the lazy dog\n\n  The DOG sleeps; the fox doesn't.\nüber café café naïve\nthe end";

#[test]
fn bundled_sample_with_no_argument() {
    let out = run(&[], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sample = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/sample.txt"),
    )
    .unwrap();
    let want = expected(&sample);
    assert!(want.len() > 100, "the sample is a real text");
    assert_eq!(parse(&out.stdout), want);
    assert!(!out.stderr.is_empty(), "logs go to stderr");
}

#[test]
fn a_file_at_several_parallelisms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.txt");
    let text = format!("{TEXT}\n").repeat(50);
    std::fs::write(&path, &text).unwrap();
    let want = expected(&text);
    assert_eq!(want["the"], 200);
    for p in ["1", "3"] {
        let out = run(&[path.to_str().unwrap(), "--parallelism", p], None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(parse(&out.stdout), want, "parallelism {p}");
    }
    // The default parallelism (2).
    let out = run(&[path.to_str().unwrap()], None);
    assert_eq!(parse(&out.stdout), want);
}

#[test]
fn stdin_with_dash() {
    let out = run(&["-"], Some(TEXT));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(parse(&out.stdout), expected(TEXT));
}

#[test]
fn empty_input_prints_nothing() {
    let out = run(&["-"], Some(""));
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn a_missing_file_fails_naming_the_field() {
    let out = run(&["/definitely/not/here.txt"], None);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("source.path") && err.contains("/definitely/not/here.txt"),
        "{err}"
    );
}

/// Waits for `child` to exit, killing it (and failing) after `limit`.
fn wait_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_with_stdin_open_drains_and_prints_the_counts() {
    let mut child = Command::new(example("wordcount"))
        .arg("-")
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the job runs (so the signal handler is installed).
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("job running") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the example exited early"
        );
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(TEXT.as_bytes()).unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
    // Give the reader time to take the lines; stdin stays open.
    std::thread::sleep(Duration::from_secs(2));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_within(&mut child, Duration::from_secs(10));
    drop(stdin);
    assert!(status.success(), "exit status {status:?}");
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(parse(&out), expected(TEXT), "the drain flushed every count");
}
