//! Per-operator pipeline tests through `run_local`: stateless chains
//! (map / filter / flat_map), keyed rolling aggregation (`aggregate`,
//! `reduce`), the built-in aggregators `Count`, `Sum`, `Min`, `Max`, and a
//! user-defined `Aggregator`. Every job runs on real actors at parallelism
//! 2 with small batches, so records cross threads and batch boundaries.

use std::collections::BTreeMap;
use std::fmt::Debug;

use weir::actors::JobStatus;
use weir::connectors::{CollectSink, Collected, VecSource};
use weir::pipeline::{Aggregator, Count, Job, Max, Min, Sum};

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The last update per key of a rolling aggregation: its final value. A key
/// lives on one instance and its updates reach the sink in order, so the
/// last one collected is the final one.
fn finals<K: Ord + Clone, V: Clone + Debug>(out: &Collected<(K, V)>) -> BTreeMap<K, V> {
    out.take().into_iter().collect()
}

#[test]
fn map_filter_flat_map_chain() {
    let input: Vec<u64> = (0..10_000).collect();
    let (sink, out) = CollectSink::new();
    let report = Job::new("chain")
        .parallelism(2)
        .batch_size(64)
        .source(VecSource::new(input.clone()))
        .filter(|x: &u64| x % 3 != 0)
        .map(|x: u64| x * 2)
        .flat_map(|x: u64| vec![x; (x % 3) as usize])
        .map(|x: u64| x + 1)
        .sink(sink)
        .run_local()
        .unwrap();
    assert_eq!(report.status, JobStatus::Finished);
    let expected: Vec<u64> = input
        .iter()
        .filter(|x| *x % 3 != 0)
        .map(|x| x * 2)
        .flat_map(|x| vec![x; (x % 3) as usize])
        .map(|x| x + 1)
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(sorted(out.take()), sorted(expected));
}

#[test]
fn rebalance_keeps_every_record() {
    let (sink, out) = CollectSink::new();
    Job::new("rebalance")
        .batch_size(10)
        .source(VecSource::new((0..5_000u32).collect()))
        .map(|x: u32| x + 1)
        .rebalance()
        .parallelism(3)
        .filter(|x: &u32| x % 2 == 0)
        .sink(sink)
        .run_local()
        .unwrap();
    assert_eq!(
        sorted(out.take()),
        (1..=5_000).filter(|x| x % 2 == 0).collect::<Vec<u32>>()
    );
}

#[test]
fn keyed_rolling_count_ends_at_the_totals() {
    let words: Vec<String> = (0..3_000)
        .map(|i| format!("w{}", i % 7 * (i % 5)))
        .collect();
    let mut expected = BTreeMap::new();
    for w in &words {
        *expected.entry(w.clone()).or_insert(0u64) += 1;
    }
    let (sink, out) = CollectSink::new();
    Job::new("rolling-count")
        .parallelism(2)
        .batch_size(100)
        .source(VecSource::new(words))
        .key_by(|w: &String| w.clone())
        .aggregate(Count)
        .sink(sink)
        .run_local()
        .unwrap();
    let got = out.take();
    // A changelog: one update per key per batch, never decreasing, ending at the total.
    assert!(
        got.len() > expected.len(),
        "expected intermediate updates, got {}",
        got.len()
    );
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for (k, v) in got {
        let prev = last.insert(k.clone(), v).unwrap_or(0);
        assert!(v > prev, "count of {k} went from {prev} to {v}");
    }
    assert_eq!(last, expected);
}

#[test]
fn keyed_reduce() {
    let input: Vec<(u8, u64)> = (0..2_000u64).map(|i| ((i % 4) as u8, i)).collect();
    let (sink, out) = CollectSink::new();
    Job::new("reduce")
        .parallelism(2)
        .batch_size(50)
        .source(VecSource::new(input))
        .key_by(|r: &(u8, u64)| r.0)
        // Keeps the key, sums the values.
        .reduce(|a: &(u8, u64), b: &(u8, u64)| (a.0, a.1 + b.1))
        .sink(sink)
        .run_local()
        .unwrap();
    let got = finals(&out);
    for k in 0..4u8 {
        let sum: u64 = (0..2_000u64).filter(|i| i % 4 == u64::from(k)).sum();
        assert_eq!(got[&k], (k, sum), "key {k}");
    }
    assert_eq!(got.len(), 4);
}

type Reading = (&'static str, i64);

fn readings() -> Vec<Reading> {
    (0..1_000i64)
        .map(|i| {
            let station = ["oslo", "lima", "pune"][(i % 3) as usize];
            (station, (i * 37) % 101 - 50)
        })
        .collect()
}

fn expected_by_station(f: impl Fn(&[i64]) -> i64) -> BTreeMap<String, i64> {
    let mut by: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (s, v) in readings() {
        by.entry(s.to_string()).or_default().push(v);
    }
    by.into_iter().map(|(k, vs)| (k, f(&vs))).collect()
}

#[test]
fn keyed_sum_min_max() {
    fn run<A>(name: &str, agg: A) -> BTreeMap<String, A::Out>
    where
        A: Aggregator<Reading>,
        A::Out: Clone + Debug,
    {
        let (sink, out) = CollectSink::new();
        Job::new(name)
            .parallelism(2)
            .batch_size(32)
            .source(VecSource::new(readings()))
            .key_by(|r: &Reading| r.0.to_string())
            .aggregate(agg)
            .sink(sink)
            .run_local()
            .unwrap();
        finals(&out)
    }
    let sum = run("sum", Sum::of(|r: &Reading| r.1));
    assert_eq!(sum, expected_by_station(|v| v.iter().sum()));
    let min = run("min", Min::of(|r: &Reading| r.1));
    assert_eq!(
        min,
        expected_by_station(|v| *v.iter().min().unwrap())
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect()
    );
    let max = run("max", Max::of(|r: &Reading| r.1));
    assert_eq!(
        max,
        expected_by_station(|v| *v.iter().max().unwrap())
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect()
    );
}

/// A user aggregator: the mean of a field and how many readings it covers.
#[derive(Clone)]
struct Mean;

impl Aggregator<Reading> for Mean {
    type Acc = (i64, u64);
    type Out = (u64, f64);
    fn init(&self) -> (i64, u64) {
        (0, 0)
    }
    fn add(&self, acc: &mut (i64, u64), r: &Reading) {
        acc.0 += r.1;
        acc.1 += 1;
    }
    fn merge(&self, acc: &mut (i64, u64), o: (i64, u64)) {
        acc.0 += o.0;
        acc.1 += o.1;
    }
    fn result(&self, acc: &(i64, u64)) -> (u64, f64) {
        (acc.1, acc.0 as f64 / acc.1 as f64)
    }
}

#[test]
fn keyed_user_defined_aggregator() {
    let (sink, out) = CollectSink::new();
    Job::new("mean")
        .parallelism(2)
        .batch_size(16)
        .source(VecSource::new(readings()))
        .key_by(|r: &Reading| r.0.to_string())
        .aggregate(Mean)
        .sink(sink)
        .run_local()
        .unwrap();
    let got = finals(&out);
    assert_eq!(got.len(), 3);
    let sums = expected_by_station(|v| v.iter().sum());
    let counts = expected_by_station(|v| v.len() as i64);
    for (station, (n, mean)) in got {
        assert_eq!(n as i64, counts[&station]);
        let want = sums[&station] as f64 / counts[&station] as f64;
        assert!((mean - want).abs() < 1e-9, "{station}: {mean} != {want}");
    }
}

#[test]
fn task_metrics_count_records_per_stage() {
    let (sink, out) = CollectSink::new();
    let report = Job::new("metrics")
        .parallelism(2)
        .batch_size(100)
        .source(VecSource::new((0..1_000u32).collect()))
        .filter(|x: &u32| x % 4 == 0)
        .sink(sink)
        .run_local()
        .unwrap();
    assert_eq!(out.len(), 250);
    let stage = |s: &str, f: fn(&weir::pipeline::TaskMetricsSnapshot) -> u64| -> u64 {
        report
            .tasks
            .iter()
            .filter(|(k, _)| k.contains(s))
            .map(|(_, m)| f(m))
            .sum()
    };
    assert_eq!(stage("-source#", |m| m.records_in), 1_000);
    assert_eq!(stage("-source#", |m| m.records_out), 250);
    assert_eq!(stage("-sink#", |m| m.records_out), 250);
}
