//! ZooKeeper digest authentication and ACLs on weir's tree, against the real server: a
//! tree created with credentials can be written by a client that has them (the CLI too),
//! read by anyone, and changed by no one else (an unauthenticated client's writes are
//! refused with `NoAuth`).
//!
//! Its own test binary: once a session authenticates, the process creates every znode
//! with the protected ACL (`store::acls`), which must not leak into other tests.

mod coord_common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use coord_common::zk_addr;
use weir::coord::session::{connect_once, SessionConfig, ZkAuth};
use weir::coord::store::{create_job, delete_recursive, ensure_layout, list_jobs, read_spec};
use weir::coord::{JobSpec, ZkPaths};

fn session(auth: Option<&str>) -> SessionConfig {
    let mut cfg = SessionConfig::new(zk_addr());
    cfg.session_timeout = Duration::from_secs(5);
    cfg.auth = auth.map(|a| ZkAuth::parse(a).unwrap());
    cfg
}

fn spec(name: &str) -> JobSpec {
    JobSpec {
        name: name.into(),
        job_type: "etl".into(),
        parallelism: 2,
        config: BTreeMap::new(),
        stages: Vec::new(),
    }
}

#[tokio::test]
async fn writes_need_the_credentials_reads_do_not() {
    let root = format!(
        "/weir-test-auth-{}-{}",
        std::process::id(),
        weir::coord::model::now_ms()
    );
    let paths = ZkPaths::new(&root).unwrap();
    let authed = connect_once(&session(Some("weir:s3cret")))
        .await
        .unwrap_or_else(|e| panic!("ZooKeeper at {}: {e} (run scripts/services up)", zk_addr()));
    ensure_layout(&authed, &paths).await.unwrap();
    create_job(&authed, &paths, &spec("a")).await.unwrap();

    // The CLI with the same credentials (flag, then file) can write.
    let weir = |args: &[&str], auth: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["--zk", &zk_addr(), "--root", &root, "--zk-wait-s", "5"])
            .args(auth)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run weir")
    };
    let out = weir(
        &["rescale", "a", "3", "--json"],
        &["--zk-auth", "weir:s3cret"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        read_spec(&authed, &paths, "a").await.unwrap().parallelism,
        3
    );
    let file = std::env::temp_dir().join(format!("weir-auth-{}", std::process::id()));
    std::fs::write(&file, "weir:s3cret\n").unwrap();
    let out = weir(
        &["rescale", "a", "4"],
        &["--zk-auth-file", file.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        read_spec(&authed, &paths, "a").await.unwrap().parallelism,
        4
    );

    // Without credentials: reading works, every change is refused.
    let anon = zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(5))
        .connect(&zk_addr())
        .await
        .unwrap();
    assert_eq!(list_jobs(&anon, &paths).await.unwrap(), ["a"]);
    assert_eq!(read_spec(&anon, &paths, "a").await.unwrap().parallelism, 4);
    let refused = |r: Result<_, zookeeper_client::Error>, what: &str| match r {
        Err(zookeeper_client::Error::NoAuth) => {}
        other => panic!("{what} without credentials: {other:?}, not NoAuth"),
    };
    refused(
        anon.set_data(&paths.spec("a"), b"{}", None)
            .await
            .map(|_| ()),
        "set the spec",
    );
    refused(
        anon.create(
            &paths.worker("intruder"),
            b"{}",
            &zookeeper_client::CreateMode::Ephemeral
                .with_acls(zookeeper_client::Acls::anyone_all()),
        )
        .await
        .map(|_| ()),
        "register a worker",
    );
    refused(
        anon.delete(&paths.spec("a"), None).await,
        "delete (cancel) a job",
    );
    // The CLI without credentials: its cancel is refused, and says so.
    let out = weir(&["cancel", "a"], &[]);
    assert!(
        !out.status.success(),
        "cancel without credentials succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("auth"), "{err}");
    assert!(
        read_spec(&authed, &paths, "a").await.is_ok(),
        "the job survived"
    );

    // A wrong password is no better.
    let wrong = connect_once(&session(Some("weir:wrong"))).await.unwrap();
    match wrong.set_data(&paths.spec("a"), b"{}", None).await {
        Err(zookeeper_client::Error::NoAuth) => {}
        other => panic!("set with a wrong password: {other:?}"),
    }

    delete_recursive(&authed, &root).await.unwrap();
    let gone = anon.check_stat(&root).await.unwrap();
    assert!(gone.is_none(), "cleanup left {root}");
}
