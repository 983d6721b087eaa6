//! The same job gives the same results at parallelism 1, 2 and 4 (two
//! targets take the source's direct-to-part writer): word count
//! (global window, from memory and from a directory of files) and windowed
//! sums over slightly out-of-order event time (tumbling and sliding),
//! compared as sorted multisets with each other and with results computed
//! independently in the test.

use std::collections::BTreeMap;
use std::time::Duration;

use weir::actors::JobStatus;
use weir::connectors::{CollectSink, FileSource, GeneratorSource, VecSource};
use weir::pipeline::{Count, Job, Sliding, Source, Sum, Tumbling, Watermarks, Windowed, Windows};

const WORDS: [&str; 12] = [
    "river", "weir", "mill", "wheel", "water", "sluice", "stone", "pond", "flour", "sack", "book",
    "miller",
];

fn lines() -> Vec<String> {
    (0..2_000u64)
        .map(|i| {
            let n = (i * 7 + 3) % 9;
            (0..n)
                .map(|j| WORDS[((i * 31 + j * 17) % 12) as usize])
                .collect::<Vec<_>>()
                .join(if i % 2 == 0 { " " } else { "  \t" })
        })
        .collect()
}

fn expected_counts(lines: &[String]) -> Vec<(String, u64)> {
    let mut m = BTreeMap::new();
    for l in lines {
        for w in l.split_whitespace() {
            *m.entry(w.to_string()).or_insert(0) += 1;
        }
    }
    m.into_iter().collect()
}

fn word_count<S: Source<Out = String>>(source: S, parallelism: usize) -> Vec<(String, u64)> {
    let (sink, out) = CollectSink::new();
    let report = Job::new("wordcount")
        .parallelism(parallelism)
        .batch_size(64)
        .source(source)
        .flat_map(|l: String| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .key_by(|w: &String| w.clone())
        .window(Windows::global())
        .aggregate(Count)
        .sink(sink)
        .run_local()
        .unwrap();
    assert_eq!(report.status, JobStatus::Finished);
    let mut v: Vec<_> = out
        .take()
        .into_iter()
        .map(|w: Windowed<String, u64>| (w.key, w.value))
        .collect();
    v.sort();
    v
}

#[test]
fn word_count_is_the_same_at_parallelism_1_2_and_4() {
    let input = lines();
    let expected = expected_counts(&input);
    for p in [1, 2, 4] {
        let counts = word_count(VecSource::new(input.clone()), p);
        assert_eq!(counts, expected, "parallelism {p}");
    }
}

#[test]
fn word_count_over_a_directory_is_the_same_at_parallelism_1_2_and_4() {
    let dir = tempfile::tempdir().unwrap();
    let input = lines();
    for (i, chunk) in input.chunks(300).enumerate() {
        std::fs::write(
            dir.path().join(format!("part-{i:02}.txt")),
            chunk.join("\n") + "\n",
        )
        .unwrap();
    }
    let expected = expected_counts(&input);
    for p in [1, 2, 4] {
        let counts = word_count(FileSource::lines(dir.path()), p);
        assert_eq!(counts, expected, "parallelism {p}");
    }
}

/// `(key, value, event time)`: event time advances ~2 ms per event with up
/// to 6 ms of disorder, so a 10 ms bound never makes a record late whatever
/// the parallelism.
type Ev = (u64, u64, i64);

const EVENTS: u64 = 30_000;

fn event(i: u64) -> Ev {
    (i % 13, i % 1000, (i * 2 + (i * 2_654_435_761) % 7) as i64)
}

fn windowed_sums(parallelism: usize, sliding: bool) -> Vec<(u64, i64, i64, u64)> {
    let (sink, out) = CollectSink::new();
    let windows = if sliding {
        Sliding::event_time(Duration::from_millis(100), Duration::from_millis(40))
    } else {
        Tumbling::event_time(Duration::from_millis(100))
    };
    let report = Job::new("sums")
        .parallelism(parallelism)
        .batch_size(256)
        .source(
            GeneratorSource::new(event)
                .count(EVENTS)
                .timestamps(|e: &Ev| e.2),
        )
        .watermarks(Watermarks::bounded_out_of_orderness(Duration::from_millis(
            10,
        )))
        .key_by(|e: &Ev| e.0)
        .window(windows)
        .aggregate(Sum::of(|e: &Ev| e.1))
        .sink(sink)
        .run_local()
        .unwrap();
    let late: u64 = report.tasks.values().map(|m| m.late_records).sum();
    assert_eq!(late, 0, "no record may be late");
    let mut v: Vec<_> = out
        .take()
        .into_iter()
        .map(|w| (w.key, w.window.start, w.window.end, w.value))
        .collect();
    v.sort();
    v
}

fn expected_sums(size: i64, slide: i64) -> Vec<(u64, i64, i64, u64)> {
    let mut m: BTreeMap<(u64, i64, i64), u64> = BTreeMap::new();
    for i in 0..EVENTS {
        let (k, v, ts) = event(i);
        let mut start = ts - ts.rem_euclid(slide);
        while start > ts - size {
            *m.entry((k, start, start + size)).or_default() += v;
            start -= slide;
        }
    }
    m.into_iter().map(|((k, s, e), v)| (k, s, e, v)).collect()
}

#[test]
fn tumbling_sums_are_the_same_at_parallelism_1_2_and_4() {
    let expected = expected_sums(100, 100);
    for p in [1, 2, 4] {
        assert_eq!(windowed_sums(p, false), expected, "parallelism {p}");
    }
}

#[test]
fn sliding_sums_are_the_same_at_parallelism_1_2_and_4() {
    let expected = expected_sums(100, 40);
    for p in [1, 2, 4] {
        assert_eq!(windowed_sums(p, true), expected, "parallelism {p}");
    }
}
