//! End-to-end tests of the `kafka_clicks` example against the real broker:
//! exact per-user 10 s window counts at parallelism 1 and 4 on a
//! 4-partition topic (computed independently here), and late plus
//! malformed records landing in `<input>.dlq` with their headers.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// A base time aligned to the 10 s windows.
const T0: i64 = 1_700_000_000_000;
const SENTINEL: &str = "~sentinel";

fn click(user: &str, ts: i64) -> String {
    format!(r#"{{"user": "{user}", "ts": {ts}}}"#)
}

/// (user, window_start) -> count, computed here.
fn windows_of(clicks: &[(String, i64)]) -> BTreeMap<(String, i64), u64> {
    let mut m = BTreeMap::new();
    for (u, ts) in clicks {
        *m.entry((u.clone(), ts - ts.rem_euclid(10_000)))
            .or_insert(0) += 1;
    }
    m
}

fn parse_counts(got: &[Got]) -> Vec<((String, i64), u64)> {
    got.iter()
        .map(|g| {
            let v = g.json();
            let user = v["user"].as_str().expect("user").to_string();
            assert_eq!(g.key.as_deref(), Some(user.as_str()), "keyed by user");
            (
                (user, v["window_start"].as_i64().expect("window_start")),
                v["count"].as_u64().expect("count"),
            )
        })
        .collect()
}

fn run_exact(parallelism: usize) {
    let brokers = ensure_kafka();
    let topics = JobTopics::create(&brokers, "clicks");
    let (input, output, dlq) = (
        topics.input.clone(),
        topics.output.clone(),
        topics.dlq.clone(),
    );
    create_topic(&brokers, &dlq, 1);

    // 3000 clicks of 10 users over ~111 s, each partition in time order.
    let clicks: Vec<(String, i64)> = (0..3000i64)
        .map(|i| (format!("u{}", (i * 7) % 10), T0 + 1 + i * 37))
        .collect();
    let mut recs: Vec<Rec> = clicks
        .iter()
        .enumerate()
        .map(|(i, (u, ts))| Rec::to((i % 4) as i32, click(u, *ts)))
        .collect();
    recs.push(Rec::to(1, "{\"user\": 5}"));
    recs.push(Rec::to(2, "garbage"));
    produce(&brokers, &input, &recs);

    // A bound larger than the data's span: no record can be late however
    // partitions interleave; all windows fire on the sentinels below.
    let p = parallelism.to_string();
    let mut proc_ = topics.spawn(
        "kafka_clicks",
        &brokers,
        &["--parallelism", &p, "--out-of-orderness-ms", "3600000"],
    );
    proc_.wait_for_log("assigned partitions", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    let sentinels: Vec<Rec> = (0..4)
        .map(|pt| Rec::to(pt, click(SENTINEL, T0 + 86_400_000)))
        .collect();
    produce(&brokers, &input, &sentinels);

    let want = windows_of(&clicks);
    let fired = read_topic(
        &brokers,
        &output,
        want.len(),
        Duration::from_secs(90),
        Duration::from_millis(500),
    );
    let log = proc_.terminate(Duration::from_secs(30));
    let all = read_topic(
        &brokers,
        &output,
        want.len() + 1,
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    assert!(
        fired.len() >= want.len(),
        "windows fired on the watermark before the drain: {} of {}\n{}",
        fired.len(),
        want.len(),
        tail(&log)
    );
    let got: Vec<_> = parse_counts(&all)
        .into_iter()
        .filter(|((u, _), _)| u != SENTINEL)
        .collect();
    let as_map: BTreeMap<_, _> = got.iter().cloned().collect();
    assert_eq!(got.len(), as_map.len(), "one output per user and window");
    assert_eq!(
        as_map,
        want,
        "exact window counts at parallelism {parallelism}; log:\n{}",
        tail(&log)
    );

    let dead = read_topic(
        &brokers,
        &dlq,
        2,
        Duration::from_secs(30),
        Duration::from_millis(500),
    );
    let payloads: Vec<String> = dead.iter().map(Got::text).collect();
    assert_eq!(dead.len(), 2, "{payloads:?}");
    assert!(
        payloads.contains(&"garbage".to_string())
            && payloads.contains(&"{\"user\": 5}".to_string())
    );
    for d in &dead {
        assert_eq!(d.headers["source.topic"], input);
        assert!(d.headers["error"].starts_with("invalid JSON"));
    }
}

#[test]
fn clicks_exact_output_parallelism_1() {
    run_exact(1);
}

#[test]
fn clicks_exact_output_parallelism_4() {
    run_exact(4);
}

/// Records later than the watermark go to the dead-letter topic with
/// `error: late`; the windows they missed keep their on-time counts.
#[test]
fn clicks_late_and_malformed_records_go_to_the_dead_letter_topic() {
    let brokers = ensure_kafka();
    let topics = JobTopics::create(&brokers, "late");
    let (input, output, dlq) = (
        topics.input.clone(),
        topics.output.clone(),
        topics.dlq.clone(),
    );
    create_topic(&brokers, &dlq, 1);
    let mut proc_ = topics.spawn("kafka_clicks", &brokers, &[]);
    proc_.wait_for_log("assigned partitions", Duration::from_secs(60));

    let mut on_time: Vec<(String, i64)> = Vec::new();
    // Phase 1: window [T0, T0+10s), spread over every partition, within 500 ms.
    let phase1: Vec<(String, i64)> = (0..40)
        .map(|i| (format!("u{}", i % 4), T0 + 1000 + i * 12))
        .collect();
    produce(
        &brokers,
        &input,
        &phase1
            .iter()
            .enumerate()
            .map(|(i, (u, t))| Rec::to((i % 4) as i32, click(u, *t)))
            .collect::<Vec<_>>(),
    );
    on_time.extend(phase1.iter().cloned());
    std::thread::sleep(Duration::from_secs(2));
    // Phase 2: window [T0+20s, T0+30s) on every partition: the watermark
    // passes T0+10s and the first window fires.
    let phase2: Vec<(String, i64)> = (0..8)
        .map(|i| (format!("u{}", i % 4), T0 + 25_000 + i * 10))
        .collect();
    produce(
        &brokers,
        &input,
        &phase2
            .iter()
            .enumerate()
            .map(|(i, (u, t))| Rec::to((i % 4) as i32, click(u, *t)))
            .collect::<Vec<_>>(),
    );
    on_time.extend(phase2.iter().cloned());
    let first = read_topic(
        &brokers,
        &output,
        4,
        Duration::from_secs(60),
        Duration::from_millis(200),
    );
    assert_eq!(
        first.len(),
        4,
        "first window fired for the 4 users: {:?}\n{}",
        first.iter().map(Got::text).collect::<Vec<_>>(),
        tail(&proc_.log_text())
    );

    // Phase 3: late records for the fired window, a malformed one, and an on-time one.
    let late: Vec<(String, i64)> = (0..4).map(|i| (format!("u{i}"), T0 + 2000 + i)).collect();
    let mut recs: Vec<Rec> = late
        .iter()
        .enumerate()
        .map(|(i, (u, t))| Rec::to(i as i32, click(u, *t)))
        .collect();
    recs.push(Rec::to(3, "{not json"));
    recs.push(Rec::to(0, click("u9", T0 + 25_500)));
    on_time.push(("u9".into(), T0 + 25_500));
    produce(&brokers, &input, &recs);

    let dead = read_topic(
        &brokers,
        &dlq,
        5,
        Duration::from_secs(60),
        Duration::from_millis(500),
    );
    let log = proc_.terminate(Duration::from_secs(30));
    let late_letters: Vec<&Got> = dead
        .iter()
        .filter(|d| d.headers.get("error").map(String::as_str) == Some("late"))
        .collect();
    assert_eq!(
        late_letters.len(),
        4,
        "late records in {dlq}: {:?}\n{}",
        dead,
        tail(&log)
    );
    // Each late letter names its input record: the record at that
    // partition and offset of the input topic is the letter's payload.
    let inputs: BTreeMap<(String, String), serde_json::Value> = read_topic(
        &brokers,
        &input,
        54,
        Duration::from_secs(30),
        Duration::ZERO,
    )
    .iter()
    .filter(|g| g.text() != "{not json")
    .map(|g| ((g.partition.to_string(), g.offset.to_string()), g.json()))
    .collect();
    for l in &late_letters {
        assert_eq!(l.headers["source.topic"], input);
        let v = l.json();
        assert!(
            late.contains(&(
                v["user"].as_str().unwrap().to_string(),
                v["ts"].as_i64().unwrap()
            )),
            "late payload {v}"
        );
        let at = (
            l.headers["source.partition"].clone(),
            l.headers["source.offset"].clone(),
        );
        assert_eq!(
            inputs.get(&at),
            Some(&v),
            "late letter {v} names input record {at:?}"
        );
    }
    let bad: Vec<&Got> = dead
        .iter()
        .filter(|d| d.headers["error"].starts_with("invalid JSON"))
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].text(), "{not json");
    assert_eq!(bad[0].headers["source.partition"], "3");

    let all = read_topic(
        &brokers,
        &output,
        100,
        Duration::from_secs(5),
        Duration::ZERO,
    );
    let got: BTreeMap<_, _> = parse_counts(&all).into_iter().collect();
    assert_eq!(
        got,
        windows_of(&on_time),
        "late records are not counted; log:\n{}",
        tail(&log)
    );
}
