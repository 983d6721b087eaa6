//! The engine benchmark: pipelines against hand-written loops doing the
//! same work, in one process run (the machines are noisy: compare ratios).
//!
//! `cargo bench --bench engine [W1|W2]` prints one JSON line per run:
//! `{"workload","parallelism","events","seconds","events_per_s",
//! "baseline_events_per_s","ratio"}`.
//!
//! - W1: generator of 50,000,000 events (`key = i % 10_000`, `value = i`,
//!   `ts = i` ms) → `filter(value % 3 != 0)` → `map(value * 2)` → blackhole.
//! - W2: the same generator, 20,000,000 events → `key_by(key)` → 1 s
//!   tumbling event-time window, sum of value → blackhole.
//!
//! Each line reports the best of `WEIR_BENCH_REPEAT` (default 5) interleaved
//! repetitions, pipeline and loop alike; every repetition is printed on
//! stderr. (The host's own two-thread speedup swings between 1.1 and 2.4
//! from one second to the next: the best of several filters that out.)
//!
//! `WEIR_BENCH_SCALE` (e.g. `0.1`) shrinks the event counts for a quick run.
//! `cargo bench --bench engine -- ceiling` instead measures what the machine
//! gives two threads with no exchange against one: W2's hand-written loop
//! split in two, and two W2 jobs at parallelism 1 over half the events each.
//! `cargo bench --bench engine -- checkpoints` measures W2 at parallelism 2
//! over ten times the events with aligned checkpoints every second stored
//! to `file://` storage, against the same job without checkpoints
//! (interleaved), and prints the overhead, checkpoints stored and the size
//! of the last one.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use weir::connectors::{BlackholeSink, GeneratorSource};
use weir::pipeline::{CheckpointConfig, Job, Sum, Tumbling, Watermarks};

#[derive(Clone, Copy, Debug)]
struct Event {
    key: u64,
    value: u64,
    ts: i64,
}

#[inline(always)]
fn event(i: u64) -> Event {
    Event {
        key: i % 10_000,
        value: i,
        ts: i as i64,
    }
}

fn w1_baseline(n: u64) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        let e = black_box(event(i));
        if e.value % 3 != 0 {
            black_box(e.value * 2);
        }
    }
    start.elapsed()
}

fn w1_pipeline(n: u64, parallelism: usize) -> Duration {
    let job = Job::new("w1")
        .parallelism(parallelism)
        .batch_size(batch_size())
        .source(
            GeneratorSource::new(event)
                .count(n)
                .timestamps(|e: &Event| e.ts),
        )
        .filter(|e: &Event| e.value % 3 != 0)
        .map(|e: Event| e.value * 2)
        .sink(BlackholeSink::new());
    let start = Instant::now();
    job.run_local().expect("W1 runs");
    start.elapsed()
}

fn w2_baseline(n: u64) -> Duration {
    let start = Instant::now();
    let mut window_end = 1000i64;
    let mut sums: FxHashMap<u64, u64> = FxHashMap::default();
    for i in 0..n {
        let e = black_box(event(i));
        if e.ts >= window_end {
            for (k, v) in sums.drain() {
                black_box((k, window_end - 1000, v));
            }
            window_end = e.ts - e.ts.rem_euclid(1000) + 1000;
        }
        *sums.entry(e.key).or_insert(0) += e.value;
    }
    for (k, v) in sums.drain() {
        black_box((k, window_end - 1000, v));
    }
    start.elapsed()
}

/// The hardware's own parallel ceiling for W2: `threads` hand-written loops,
/// thread `j` doing events `j, j + threads, ..` with its own map and no
/// exchange at all (so no key is shared: less than W2 has to do).
fn w2_threads(n: u64, threads: u64) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|j| {
            std::thread::spawn(move || {
                let mut window_end = 1000i64;
                let mut sums: FxHashMap<u64, u64> = FxHashMap::default();
                let mut i = j;
                while i < n {
                    let e = black_box(event(i));
                    if e.ts >= window_end {
                        for (k, v) in sums.drain() {
                            black_box((k, window_end - 1000, v));
                        }
                        window_end = e.ts - e.ts.rem_euclid(1000) + 1000;
                    }
                    *sums.entry(e.key).or_insert(0) += e.value;
                    i += threads;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("loop thread");
    }
    start.elapsed()
}

/// The engine's own parallel ceiling for W2: two independent jobs at
/// parallelism 1, each over half the events, at the same time (so no
/// record crosses threads: less than W2 has to do).
fn w2_two_jobs(n: u64) -> Duration {
    let start = Instant::now();
    let jobs: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || w2_pipeline(n / 2, 1)))
        .collect();
    for j in jobs {
        j.join().expect("job thread");
    }
    start.elapsed()
}

fn w2_pipeline(n: u64, parallelism: usize) -> Duration {
    w2_with(n, parallelism, Job::new("w2"))
}

/// W2 without checkpoints (`None`) or with one every second stored under
/// `dir`: the time, and the number and size of the checkpoints stored.
fn w2_checkpointed(n: u64, dir: Option<&std::path::Path>) -> (Duration, usize, u64) {
    let config = CheckpointConfig {
        interval: dir.map(|_| Duration::from_secs(1)),
        storage_url: dir.map(|d| format!("file://{}", d.display())),
        ..CheckpointConfig::default()
    };
    let took = w2_with(n, 2, Job::new("w2-checkpoints").checkpointing(config));
    let Some(dir) = dir else {
        return (took, 0, 0);
    };
    // Every stored checkpoint (retention keeps the newest 3) and the size
    // of the newest.
    let mut stored: Vec<(u64, u64)> = std::fs::read_dir(dir.join("w2-checkpoints"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let id = e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok()?;
                    let meta = std::fs::read(e.path().join("_metadata")).ok()?;
                    let v: serde_json::Value = serde_json::from_slice(&meta).ok()?;
                    Some((id, v["state_bytes"].as_u64()?))
                })
                .collect()
        })
        .unwrap_or_default();
    stored.sort_unstable();
    let _ = std::fs::remove_dir_all(dir.join("w2-checkpoints"));
    let (last_id, last_bytes) = stored.last().copied().unwrap_or((0, 0));
    (took, last_id as usize, last_bytes)
}

fn w2_with(n: u64, parallelism: usize, job: Job) -> Duration {
    let job = job
        .parallelism(parallelism)
        .batch_size(batch_size())
        .source(
            GeneratorSource::new(event)
                .count(n)
                .timestamps(|e: &Event| e.ts),
        )
        .watermarks(Watermarks::ascending())
        .key_by(|e: &Event| e.key)
        .window(Tumbling::event_time(Duration::from_secs(1)))
        .aggregate(Sum::of(|e: &Event| e.value))
        .sink(BlackholeSink::new());
    let start = Instant::now();
    job.run_local().expect("W2 runs");
    start.elapsed()
}

/// `WEIR_BENCH_BATCH` overrides the job's batch size.
fn batch_size() -> usize {
    std::env::var("WEIR_BENCH_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(weir::pipeline::JobConfig::default().batch_size)
}

fn report(workload: &str, parallelism: usize, events: u64, took: Duration, baseline: Duration) {
    let eps = events as f64 / took.as_secs_f64();
    let base = events as f64 / baseline.as_secs_f64();
    println!(
        "{{\"workload\":\"{workload}\",\"parallelism\":{parallelism},\"events\":{events},\"seconds\":{:.3},\"events_per_s\":{:.0},\"baseline_events_per_s\":{:.0},\"ratio\":{:.3}}}",
        took.as_secs_f64(),
        eps,
        base,
        eps / base
    );
}

/// `WEIR_BENCH_REPEAT` (default 5): repetitions of each measurement.
fn repetitions() -> usize {
    std::env::var("WEIR_BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1)
}

/// Runs the loop and the pipeline at each parallelism `repeat` times,
/// interleaved (loop, p1, p2, loop, p1, p2, ..), so that a slow minute of
/// the host hits every configuration alike; prints every repetition on
/// stderr (named by `labels`: the baseline's, then the prefix of each
/// parallelism) and returns the best time of each (the loop's, then one
/// per parallelism).
fn best_of(
    workload: &str,
    labels: (&str, &str),
    repeat: usize,
    ps: &[usize],
    baseline: impl Fn() -> Duration,
    pipeline: impl Fn(usize) -> Duration,
) -> (Duration, Vec<Duration>) {
    let mut base = Duration::MAX;
    let mut best = vec![Duration::MAX; ps.len()];
    for rep in 1..=repeat {
        let b = baseline();
        base = base.min(b);
        let (base_label, label) = labels;
        let mut line = format!(
            "{workload} repetition {rep}/{repeat}: {base_label} {:.3} s",
            b.as_secs_f64()
        );
        for (i, &p) in ps.iter().enumerate() {
            let t = pipeline(p);
            best[i] = best[i].min(t);
            line.push_str(&format!(", {label}{p} {:.3} s", t.as_secs_f64()));
        }
        eprintln!("{line}");
    }
    (base, best)
}

fn main() {
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let scale: f64 = std::env::var("WEIR_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    // `WEIR_BENCH_PARALLELISM=2` runs one parallelism only (profiling).
    let ps: Vec<usize> = match std::env::var("WEIR_BENCH_PARALLELISM")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(p) => vec![p],
        None => vec![1, 2],
    };
    let repeat = repetitions();
    if only.as_deref() == Some("ceiling") {
        // `cargo bench --bench engine -- ceiling`: what two threads reach on
        // this machine with no exchange, against one.
        let n = (20_000_000.0 * scale) as u64;
        let (one, two) = best_of(
            "ceiling",
            ("one thread", "threads "),
            repeat,
            &[2],
            || w2_baseline(n),
            |t| w2_threads(n, t as u64),
        );
        let (one, two) = (one.as_secs_f64(), two[0].as_secs_f64());
        println!(
            "{{\"workload\":\"W2 loop, 2 threads without exchange\",\"one_thread_s\":{one:.3},\"two_threads_s\":{two:.3},\"speedup\":{:.2}}}",
            one / two
        );
        let (one, two) = best_of(
            "ceiling",
            ("one job", "jobs "),
            repeat,
            &[2],
            || w2_pipeline(n, 1),
            |_| w2_two_jobs(n),
        );
        let (one, two) = (one.as_secs_f64(), two[0].as_secs_f64());
        println!(
            "{{\"workload\":\"W2 pipeline, 2 jobs at parallelism 1 without exchange\",\"one_job_s\":{one:.3},\"two_jobs_s\":{two:.3},\"speedup\":{:.2}}}",
            one / two
        );
        return;
    }
    if only.as_deref() == Some("checkpoints") {
        let n = (200_000_000.0 * scale) as u64;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (mut none, mut with) = (Duration::MAX, Duration::MAX);
        let (mut count, mut bytes) = (0, 0);
        for rep in 1..=repeat {
            let (a, _, _) = w2_checkpointed(n, None);
            let (b, c, sz) = w2_checkpointed(n, Some(dir.path()));
            eprintln!(
                "checkpoints repetition {rep}/{repeat}: none {:.3} s, every 1 s to file:// {:.3} s ({c} stored, last {sz} bytes)",
                a.as_secs_f64(),
                b.as_secs_f64()
            );
            none = none.min(a);
            if b < with {
                (with, count, bytes) = (b, c, sz);
            }
        }
        println!(
            "{{\"workload\":\"W2 p2, checkpoints every 1 s to file:// against none\",\"events\":{n},\"none_s\":{:.3},\"checkpointed_s\":{:.3},\"overhead\":{:.3},\"checkpoints\":{count},\"last_state_bytes\":{bytes}}}",
            none.as_secs_f64(),
            with.as_secs_f64(),
            with.as_secs_f64() / none.as_secs_f64() - 1.0
        );
        return;
    }
    let want = |w: &str| only.as_deref().is_none_or(|o| o.eq_ignore_ascii_case(w));
    if want("W1") {
        let n = (50_000_000.0 * scale) as u64;
        let (base, best) = best_of(
            "W1",
            ("loop", "p"),
            repeat,
            &ps,
            || w1_baseline(n),
            |p| w1_pipeline(n, p),
        );
        for (&p, &took) in ps.iter().zip(&best) {
            report("W1", p, n, took, base);
        }
    }
    if want("W2") {
        let n = (20_000_000.0 * scale) as u64;
        let (base, best) = best_of(
            "W2",
            ("loop", "p"),
            repeat,
            &ps,
            || w2_baseline(n),
            |p| w2_pipeline(n, p),
        );
        for (&p, &took) in ps.iter().zip(&best) {
            report("W2", p, n, took, base);
        }
    }
}
