//! Bad input and bad configuration. Malformed JSON lines are sent to the
//! dead-letter output (reason, file path, `line N`, payload), counted in the
//! report and the task metrics, and the valid records are still processed
//! to a FINISHED job. Invalid settings (zero parallelism of the job or of a
//! stage, a missing input path, zero-length windows, a zero batch size or
//! channel capacity) are rejected by `validate()` and by `run_local()`
//! before anything runs, with an error naming the field.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use weir::actors::{JobStatus, RunError};
use weir::connectors::{BlackholeSink, CollectSink, FileSource, VecSource};
use weir::pipeline::{
    BuildError, Count, DeadLetters, Graph, Job, RunnableJob, Session, Sliding, Sum, Tumbling,
    Windows,
};

#[derive(Debug, Clone, Deserialize, PartialEq)]
struct Order {
    customer: String,
    amount: u64,
}

#[test]
fn malformed_json_lines_become_dead_letters_and_the_job_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.jsonl");
    let text = [
        r#"{"customer":"ann","amount":10}"#,
        r#"{"customer":"bob","amount":5}"#,
        r#"{"customer":"ann","amount":"seven"}"#, // line 3: wrong type
        r#"not json at all"#,                     // line 4
        r#"{"customer":"cy","amount":1}"#,
        r#""#, // line 6: empty
        r#"{"customer":"bob","amount":7}"#,
        r#"{"customer":"ann","#, // line 8: truncated
        r#"{"customer":"ann","amount":2}"#,
    ]
    .join("\n");
    std::fs::write(&path, text + "\n").unwrap();
    let (dead, letters) = DeadLetters::collect();
    let (sink, out) = CollectSink::new();
    let report = Job::new("orders")
        .parallelism(2)
        .batch_size(2)
        .dead_letters(dead)
        .source(FileSource::json::<Order>(&path))
        .key_by(|o: &Order| o.customer.clone())
        .window(Windows::global())
        .aggregate(Sum::of(|o: &Order| o.amount))
        .sink(sink)
        .run_local()
        .expect("bad lines do not fail the job");
    assert_eq!(report.status, JobStatus::Finished);
    assert_eq!(report.restarts, 0);
    let mut totals: Vec<_> = out.take().into_iter().map(|w| (w.key, w.value)).collect();
    totals.sort();
    assert_eq!(
        totals,
        vec![
            ("ann".to_string(), 12),
            ("bob".to_string(), 12),
            ("cy".to_string(), 1)
        ]
    );

    let mut dl = letters.take();
    dl.sort_by_key(|d| d.position.clone());
    let positions: Vec<_> = dl.iter().map(|d| d.position.as_str()).collect();
    assert_eq!(positions, vec!["line 3", "line 4", "line 6", "line 8"]);
    for d in &dl {
        assert_eq!(Path::new(&d.source), path, "{d:?}");
        assert!(d.reason.contains("invalid JSON"), "{d:?}");
    }
    assert_eq!(dl[0].payload, r#"{"customer":"ann","amount":"seven"}"#);
    assert_eq!(dl[1].payload, "not json at all");
    assert_eq!(report.dead_letters, 4, "counted in the report");
    let per_task: u64 = report.tasks.values().map(|m| m.dead_letters).sum();
    assert_eq!(per_task, 4, "counted in the source task's metrics");
}

#[test]
fn dead_letters_to_a_file_are_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"customer\":\"a\",\"amount\":1}\n{oops\n").unwrap();
    let dl_path = dir.path().join("dead.jsonl");
    let report = Job::new("dl-file")
        .dead_letters(DeadLetters::file(&dl_path).unwrap())
        .source(FileSource::json::<Order>(&input))
        .sink(BlackholeSink::new())
        .run_local()
        .unwrap();
    assert_eq!(report.dead_letters, 1);
    let written = std::fs::read_to_string(&dl_path).unwrap();
    let letter: serde_json::Value = serde_json::from_str(written.trim()).unwrap();
    assert_eq!(letter["position"], "line 2");
    assert_eq!(letter["payload"], "{oops");
}

/// The field a job is rejected for, checked both ways: `validate()` and
/// `run_local()` (which must not run it).
fn rejected_field<G: Graph>(build: impl Fn() -> RunnableJob<G>) -> String {
    let field = match build().validate() {
        Err(BuildError::Invalid { field, .. }) => field,
        Ok(()) => panic!("validate() accepted an invalid job"),
    };
    match build().run_local() {
        Err(RunError::Build(BuildError::Invalid { field: f, reason })) => {
            assert_eq!(f, field);
            assert!(!reason.is_empty());
        }
        other => panic!("run_local() did not reject the job: {other:?}"),
    }
    field
}

fn numbers() -> VecSource<u64> {
    VecSource::new(vec![1, 2, 3])
}

#[test]
fn zero_job_parallelism_is_rejected() {
    let field = rejected_field(|| {
        Job::new("p0")
            .parallelism(0)
            .source(numbers())
            .sink(BlackholeSink::new())
    });
    assert_eq!(field, "job.parallelism");
}

#[test]
fn zero_stage_parallelism_is_rejected() {
    let field = rejected_field(|| {
        Job::new("stage-p0")
            .source(numbers())
            .map(|x: u64| x + 1)
            .rebalance()
            .parallelism(0)
            .sink(BlackholeSink::new())
    });
    assert!(field.ends_with("rebalance.parallelism"), "{field}");
    let field = rejected_field(|| {
        Job::new("source-p0")
            .source(numbers())
            .parallelism(0)
            .sink(BlackholeSink::new())
    });
    assert!(field.ends_with("source.parallelism"), "{field}");
}

#[test]
fn a_missing_input_path_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.txt");
    let field = rejected_field(|| {
        Job::new("missing")
            .source(FileSource::lines(&missing))
            .sink(BlackholeSink::new())
    });
    assert_eq!(field, "source.path");
    let err = Job::new("missing")
        .source(FileSource::lines(&missing))
        .sink(BlackholeSink::new())
        .validate()
        .unwrap_err();
    assert!(
        err.to_string().contains("nope.txt"),
        "the error names the path: {err}"
    );
}

#[test]
fn zero_length_windows_are_rejected() {
    let keyed = || Job::new("w0").source(numbers()).key_by(|x: &u64| x % 2);
    let field = rejected_field(|| {
        keyed()
            .window(Tumbling::event_time(Duration::ZERO))
            .aggregate(Count)
            .sink(BlackholeSink::new())
    });
    assert_eq!(field, "window.size");
    let field = rejected_field(|| {
        keyed()
            .window(Sliding::event_time(Duration::ZERO, Duration::from_secs(1)))
            .aggregate(Count)
            .sink(BlackholeSink::new())
    });
    assert_eq!(field, "window.size");
    let field = rejected_field(|| {
        keyed()
            .window(Sliding::event_time(Duration::from_secs(1), Duration::ZERO))
            .aggregate(Count)
            .sink(BlackholeSink::new())
    });
    assert_eq!(field, "window.slide");
    let field = rejected_field(|| {
        keyed()
            .window(Session::event_time(Duration::ZERO))
            .aggregate(Count)
            .sink(BlackholeSink::new())
    });
    assert_eq!(field, "window.gap");
}

#[test]
fn zero_batch_size_and_channel_capacity_are_rejected() {
    let field = rejected_field(|| {
        Job::new("b0")
            .batch_size(0)
            .source(numbers())
            .sink(BlackholeSink::new())
    });
    assert_eq!(field, "job.batch_size");
    let field = rejected_field(|| {
        Job::new("c0")
            .channel_capacity(0)
            .source(numbers())
            .sink(BlackholeSink::new())
    });
    assert_eq!(field, "job.channel_capacity");
}

#[test]
fn a_valid_job_validates() {
    let job = Job::new("ok")
        .parallelism(3)
        .source(numbers())
        .key_by(|x: &u64| *x)
        .aggregate(Count)
        .sink(BlackholeSink::new());
    assert_eq!(job.validate(), Ok(()));
}
