//! The services script itself: a service whose launched process has not
//! yet exec'd its launch chain when the script first looks at it (its
//! command line is still the script's own, as on a loaded CI machine) is
//! starting, not gone. Runs a Kafka broker of its own (one KRaft node) on
//! free ports, in a state directory of its own, with the script's
//! launch-delay knob.

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

/// `scripts/services <cmd>` with this test's state directory and ports
/// (Kafka's client and controller listeners).
fn run(dir: &std::path::Path, ports: (u16, u16), cmd: &str, delay: Option<&str>) -> (bool, String) {
    let mut c = Command::new("bash");
    c.arg(repo_root().join("scripts/services"))
        .arg(cmd)
        .env("WEIR_SERVICES_DIR", dir)
        .env("WEIR_KAFKA_PORT", ports.0.to_string())
        .env("WEIR_KAFKA_CONTROLLER_PORT", ports.1.to_string())
        .env("WEIR_ZK_PORT", free_port().to_string())
        // the first start formats Kafka's storage; a loaded 2-core machine
        // (other test binaries, a build) can make it several times slower
        .env("WEIR_SERVICES_TIMEOUT", "120")
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
    // The shared services' Kafka jars and their stamp, copied (no second
    // download; a copy, so nothing here can touch the shared folder).
    services("install");
    let dir = repo_root().join("target").join(unique("services-launch"));
    let libs = dir.join("kafka-libs");
    std::fs::create_dir_all(&libs).unwrap();
    let shared = repo_root().join("target/services/kafka-libs");
    let mut jars = 0;
    for e in std::fs::read_dir(&shared).expect("target/services/kafka-libs after `install`") {
        let e = e.unwrap();
        std::fs::copy(e.path(), libs.join(e.file_name())).expect("copy Kafka's jars");
        jars += 1;
    }
    assert!(jars > 1, "no jars in {}", shared.display());
    let ports = loop {
        let (a, b) = (free_port(), free_port());
        if a != b {
            break (a, b);
        }
    };
    let (ok, out) = run(&dir, ports, "start-kafka", Some("0.7"));
    let (stopped, stop_out) = run(&dir, ports, "stop-kafka", None);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "start with a slow exec failed:\n{out}");
    assert!(out.contains("ready on"), "{out}");
    assert!(
        !out.contains("jars missing"),
        "the copied jars were downloaded again:\n{out}"
    );
    assert!(stopped, "{stop_out}");
}
