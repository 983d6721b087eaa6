//! The services script itself: a service whose launched process has not
//! yet exec'd its launch chain when the script first looks at it (its
//! command line is still the script's own, as on a loaded CI machine) is
//! starting, not gone. Runs a broker of its own on a free port, in a
//! state directory of its own, with the script's launch-delay knob.

mod common;

use common::*;
use std::process::{Command, Stdio};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .unwrap()
        .port()
}

/// `scripts/services <cmd>` with this test's state directory and ports.
fn run(dir: &std::path::Path, kafka_port: u16, cmd: &str, delay: Option<&str>) -> (bool, String) {
    let mut c = Command::new("bash");
    c.arg(repo_root().join("scripts/services"))
        .arg(cmd)
        .env("WEIR_SERVICES_DIR", dir)
        .env("WEIR_KAFKA_PORT", kafka_port.to_string())
        .env("WEIR_ZK_PORT", free_port().to_string())
        .env("WEIR_SERVICES_TIMEOUT", "30")
        .stdin(Stdio::null());
    if let Some(d) = delay {
        c.env("WEIR_SERVICES_LAUNCH_DELAY", d);
    }
    let out = c.output().expect("run scripts/services");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_service_still_on_its_way_to_exec_is_waited_for() {
    // The shared services' broker binary, copied (no second download).
    services("install");
    let dir = repo_root().join("target").join(unique("services-launch"));
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let shared = repo_root().join("target/services/bin");
    for f in ["tansu", "tansu.wheel-sha256"] {
        std::fs::copy(shared.join(f), dir.join("bin").join(f)).expect("copy the broker binary");
    }
    let port = free_port();
    let (ok, out) = run(&dir, port, "start-kafka", Some("0.7"));
    let (stopped, stop_out) = run(&dir, port, "stop-kafka", None);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "start with a slow exec failed:\n{out}");
    assert!(out.contains("ready on"), "{out}");
    assert!(stopped, "{stop_out}");
}
