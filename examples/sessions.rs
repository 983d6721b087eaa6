//! Click sessions: per-user activity sessions over event time.
//!
//! A deterministic generator plays a click stream of `--users` users: click
//! `i` happens at about `i × 100 ms` of event time (with up to 200 ms of
//! jitter, so the stream is slightly out of order) and belongs to a
//! pseudo-random user. A user's session closes after `--gap-ms` without a
//! click. Each closed session is printed to stdout as one JSON line:
//!
//! ```text
//! {"user":7,"start":1700000001200,"end":1700000006950,"clicks":4,"active_ms":2750}
//! ```
//!
//! `--events N` bounds the stream (0: unbounded, until Ctrl-C / SIGTERM,
//! which drains the job and prints the sessions still open); `--rate R`
//! limits it to R clicks per second. A summary goes to stderr at the end.
//!
//! ```text
//! cargo run --example sessions -- --events 100000
//! cargo run --example sessions -- --events 0 --rate 2000
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;
use weir::connectors::{GeneratorSource, StdoutSink};
use weir::pipeline::{Aggregator, Job, Session, Watermarks, Windowed};

/// Prints per-user click sessions as JSON lines.
#[derive(Parser)]
struct Args {
    /// Clicks to generate (0: unbounded).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Clicks per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Distinct users.
    #[arg(long, default_value_t = 20)]
    users: u32,
    /// Inactivity that closes a session, in milliseconds of event time.
    #[arg(long, default_value_t = 3_000)]
    gap_ms: u64,
    /// Parallel instances of each stage.
    #[arg(long, default_value_t = 2)]
    parallelism: usize,
}

/// Event time of the first click: 2023-11-14T22:13:20Z.
const EPOCH_MS: i64 = 1_700_000_000_000;
/// Largest jitter of a click's timestamp.
const JITTER_MS: u64 = 200;

/// One click.
#[derive(Debug, Clone, Copy)]
struct Click {
    user: u32,
    ts: i64,
}

/// A well-mixed hash of `i` (splitmix64): the generator's only randomness.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Click number `i`: always the same for the same `i`.
fn click(i: u64, users: u32) -> Click {
    let r = mix(i);
    Click {
        user: (r % u64::from(users)) as u32,
        ts: EPOCH_MS + i as i64 * 100 + ((r >> 32) % JITTER_MS) as i64,
    }
}

/// A user aggregator: clicks in the session and time between the first and
/// the last of them.
#[derive(Clone)]
struct Activity;

impl Aggregator<Click> for Activity {
    /// (clicks, first click, last click)
    type Acc = (u64, i64, i64);
    /// (clicks, active milliseconds)
    type Out = (u64, i64);

    fn init(&self) -> Self::Acc {
        (0, i64::MAX, i64::MIN)
    }
    fn add(&self, acc: &mut Self::Acc, c: &Click) {
        *acc = (acc.0 + 1, acc.1.min(c.ts), acc.2.max(c.ts));
    }
    fn merge(&self, acc: &mut Self::Acc, o: Self::Acc) {
        *acc = (acc.0 + o.0, acc.1.min(o.1), acc.2.max(o.2));
    }
    fn result(&self, acc: &Self::Acc) -> Self::Out {
        (acc.0, acc.2 - acc.1)
    }
}

/// One closed session, as printed.
#[derive(Serialize)]
struct SessionOut {
    user: u32,
    start: i64,
    end: i64,
    clicks: u64,
    active_ms: i64,
}

fn main() -> ExitCode {
    weir::logging::init_stderr();
    let args = Args::parse();
    let users = args.users.max(1);
    let mut clicks = GeneratorSource::new(move |i| click(i, users)).timestamps(|c: &Click| c.ts);
    if args.events > 0 {
        clicks = clicks.count(args.events);
    }
    if let Some(rate) = args.rate {
        clicks = clicks.rate(rate);
    }
    let result = Job::new("sessions")
        .parallelism(args.parallelism)
        .source(clicks)
        .watermarks(Watermarks::bounded_out_of_orderness(Duration::from_millis(
            2 * JITTER_MS,
        )))
        .key_by(|c: &Click| c.user)
        .window(Session::event_time(Duration::from_millis(args.gap_ms)))
        .aggregate(Activity)
        .map(|w: Windowed<u32, (u64, i64)>| SessionOut {
            user: w.key,
            start: w.window.start,
            end: w.window.end,
            clicks: w.value.0,
            active_ms: w.value.1,
        })
        .sink(StdoutSink::json())
        .run_local();
    match result {
        Ok(report) => {
            let sum = |stage: &str, f: fn(&weir::pipeline::TaskMetricsSnapshot) -> u64| -> u64 {
                report
                    .tasks
                    .iter()
                    .filter(|(name, _)| name.contains(stage))
                    .map(|(_, m)| f(m))
                    .sum()
            };
            tracing::info!(
                status = ?report.status,
                events = sum("-source#", |m| m.records_out),
                sessions = sum("-sink#", |m| m.records_out),
                late = sum("-window#", |m| m.late_records),
                "sessions done"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sessions: {e}");
            ExitCode::FAILURE
        }
    }
}
