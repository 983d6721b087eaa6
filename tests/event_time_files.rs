//! Event time over the files of a directory: files read one after another
//! are like Kafka partitions read one after another, so a file not read yet
//! holds the watermark. Here the first file (in name order) holds the
//! latest clicks and the last the earliest: windows must come out exact and
//! nothing may be late, at parallelism 1 and 2, with small batches so the
//! source emits many watermarks along the way.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use weir::connectors::{CollectSink, FileSource};
use weir::pipeline::{Count, Job, Tumbling, Watermarks, Windowed};

#[derive(serde::Deserialize, Clone)]
struct Click {
    user: String,
    ts: i64,
}

/// Three files; file `k` covers minute `2 - k`, so the files are read in
/// the reverse order of their event time. Returns the expected counts.
fn write_files(dir: &std::path::Path) -> BTreeMap<(String, i64), u64> {
    let mut expected = BTreeMap::new();
    for k in 0..3i64 {
        let mut f = std::fs::File::create(dir.join(format!("clicks-{k}.jsonl"))).unwrap();
        let base = (2 - k) * 60_000;
        for i in 0..600i64 {
            // Out of order by up to 900 ms inside a file (bound: 1 s).
            let ts = base + i * 100 + if i % 2 == 0 { 900 } else { 0 };
            let user = format!("u{}", (i * 7 + k) % 5);
            writeln!(f, r#"{{"user": "{user}", "ts": {ts}}}"#).unwrap();
            *expected
                .entry((user, ts - ts.rem_euclid(10_000)))
                .or_insert(0) += 1;
        }
    }
    expected
}

fn run(parallelism: usize) {
    let dir = tempfile::tempdir().unwrap();
    let expected = write_files(dir.path());
    let (sink, out) = CollectSink::new();
    let report = Job::new("files-backlog")
        .parallelism(parallelism)
        .batch_size(16)
        .source(FileSource::json::<Click>(dir.path()).with_timestamps(|c: &Click| c.ts))
        .watermarks(Watermarks::bounded_out_of_orderness(Duration::from_secs(1)))
        .key_by(|c: &Click| c.user.clone())
        .window(Tumbling::event_time(Duration::from_secs(10)))
        .aggregate(Count)
        .sink(sink)
        .run_local()
        .unwrap();
    let late: u64 = report.tasks.values().map(|m| m.late_records).sum();
    assert_eq!(late, 0, "no click is late at parallelism {parallelism}");
    let mut got = BTreeMap::new();
    for w in out.take() {
        let w: Windowed<String, u64> = w;
        assert!(
            got.insert((w.key.clone(), w.window.start), w.value)
                .is_none(),
            "window {} {} fired twice",
            w.key,
            w.window.start
        );
    }
    assert_eq!(got, expected, "parallelism {parallelism}");
}

#[test]
fn files_read_one_after_another_make_no_record_late() {
    run(1);
}

#[test]
fn files_split_over_two_instances_make_no_record_late() {
    run(2);
}
