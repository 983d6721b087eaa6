//! The clicks job through a Kafka repartition topic against the same job
//! on input already partitioned by user (`cargo bench --bench
//! repartition`), on the real broker, in one run.
//!
//! Pre-loads N clicks (default 1,000,000; `WEIR_BENCH_REPARTITION_RECORDS`
//! or the first argument) of 1,000 users, one per millisecond of event
//! time, into a 4-partition topic with each user in partition `user % 4`
//! (the input the single-stage job needs). Then, from the same topic with
//! fresh consumer groups:
//!
//! - `clicks_prepartitioned`: `clicks_job` (source → key_by user → 10 s
//!   window count → Kafka sink) at parallelism 2, in-process exchange;
//! - `clicks_through_repartition`: its two stages as four jobs in the same
//!   process, as the cluster runs them, cut from `clicks_graph` by the
//!   stage planner: `parse` instances 0 and 1 (two input partitions each)
//!   writing each click to `weir-<job>-count-repartition` (2 partitions)
//!   where the graph's `key_by(user)` routes it, and `count` instances 0
//!   and 1 reading a partition each.
//!
//! Each is timed from job start until its windowing stage's sources have
//! read all N clicks (what a job that must see every record can go at;
//! windows fire as the watermark passes, at least once, no checkpoint
//! storage). Prints one JSON line per measurement with events/s, and the
//! second's ratio to the first. Deletes its topics at the end.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::io::Write;
use std::time::{Duration, Instant};
use weir::actors::runtime::LocalRuntime;
use weir::actors::LocalJob;
use weir::apps::clicks::{clicks_job, ClicksParams};
use weir::apps::clicks_stages::{clicks_stage, StageParams};
use weir::connectors::kafka::repartition::{create_repartition_topic, delete_repartition_topic};
use weir::connectors::kafka::KafkaConfig;

const USERS: u64 = 1000;
const T0: i64 = 1_700_000_000_000;

fn line(name: &str, records: u64, secs: f64, extra: &str) -> f64 {
    let rate = records as f64 / secs;
    println!(
        "{{\"bench\":\"repartition\",\"measurement\":\"{name}\",\"records\":{records},\"seconds\":{secs:.3},\"events_per_s\":{rate:.0}{extra}}}"
    );
    let _ = std::io::stdout().flush();
    rate
}

/// Runs `jobs` in one local runtime until the sources of the jobs whose
/// names start with `counted` have emitted `n` records; then cancels them
/// (the others first) and returns the seconds from start to that point.
fn run_until_read(jobs: Vec<LocalJob>, counted: &str, n: u64) -> f64 {
    let counted = counted.to_string();
    let system = actix::System::new();
    system.block_on(async move {
        let rt = LocalRuntime::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        );
        let start = Instant::now();
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|j| rt.start(j).expect("valid job"))
            .collect();
        let secs = loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut read = 0;
            for h in &handles {
                let report = h.report();
                assert!(
                    !report.status.is_terminal(),
                    "a job stopped early: {report:?}"
                );
                if report.name.starts_with(&counted) {
                    read += report
                        .tasks
                        .iter()
                        .filter(|(k, _)| k.contains("-source#"))
                        .map(|(_, m)| m.records_out)
                        .sum::<u64>();
                }
            }
            if read >= n {
                break start.elapsed().as_secs_f64();
            }
        };
        // Upstream jobs first: a draining count stage reads on to their end.
        for h in handles.iter().rev() {
            h.cancel();
        }
        for h in handles {
            h.wait().await;
        }
        drop(rt);
        secs
    })
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .or_else(|| {
            std::env::var("WEIR_BENCH_REPARTITION_RECORDS")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1_000_000);
    let root = env!("CARGO_MANIFEST_DIR");
    let status = std::process::Command::new("bash")
        .arg(format!("{root}/scripts/services"))
        .arg("up")
        .status()
        .expect("run scripts/services up");
    assert!(
        status.success(),
        "scripts/services up failed: the benchmark needs the broker"
    );
    let brokers = format!(
        "127.0.0.1:{}",
        std::env::var("WEIR_KAFKA_PORT").unwrap_or_else(|_| "9092".into())
    );
    let suffix = std::process::id();
    let input = format!("bench-clicks-{suffix}");
    let out_one = format!("bench-clicks-one-{suffix}");
    let out_two = format!("bench-clicks-two-{suffix}");
    let job = format!("bench{suffix}");
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &brokers);
    let admin: AdminClient<DefaultClientContext> = cfg.create().expect("admin");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let topics: Vec<NewTopic> = [&input, &out_one, &out_two]
        .iter()
        .map(|t| NewTopic::new(t, 4, TopicReplication::Fixed(1)))
        .collect();
    for r in
        futures::executor::block_on(admin.create_topics(&topics, &opts)).expect("create topics")
    {
        r.expect("create topic");
    }

    // The input: user `id % 1000` in partition `user % 4`, 1 ms apart.
    let producer: BaseProducer = cfg
        .clone()
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .create()
        .expect("producer");
    let start = Instant::now();
    let mut buf = String::with_capacity(64);
    for id in 0..n {
        let user = id % USERS;
        buf.clear();
        use std::fmt::Write as _;
        let _ = write!(buf, r#"{{"user":"u{user}","ts":{}}}"#, T0 + id as i64);
        let mut rec = BaseRecord::<[u8], [u8]>::to(&input)
            .payload(buf.as_bytes())
            .partition((user % 4) as i32);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    producer.poll(Duration::from_millis(10));
                    rec = r;
                }
            }
        }
        if id % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(600)).expect("flush");
    eprintln!(
        "{n} clicks produced in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // A: one job, the in-process exchange.
    let mut p = ClicksParams::new(&brokers, &input, &out_one);
    p.group = format!("bench-one-{suffix}");
    p.parallelism = 2;
    p.partitions = Some(vec![0, 1, 2, 3]);
    p.job_name = format!("{job}-one");
    let secs = run_until_read(vec![clicks_job(&p).into()], &p.job_name, n);
    let one = line("clicks_prepartitioned", n, secs, ",\"parallelism\":2");

    // B: two stages of two instances each, through the repartition topic.
    let mut s = StageParams::new(&brokers, &input, &out_two);
    s.job = job.clone();
    s.parse_instances = 2;
    s.count_instances = 2;
    s.input_partitions = 4;
    let config = KafkaConfig::new(&brokers);
    create_repartition_topic(&config, &s.topic(), 2).expect("repartition topic");
    let mut jobs = Vec::new();
    for i in 0..2 {
        s.instance = i;
        jobs.push(clicks_stage(&s, "parse").expect("parse stage"));
    }
    for i in 0..2 {
        s.instance = i;
        jobs.push(clicks_stage(&s, "count").expect("count stage"));
    }
    let secs = run_until_read(jobs, &format!("{job}-count"), n);
    let two = n as f64 / secs;
    line(
        "clicks_through_repartition",
        n,
        secs,
        &format!(
            ",\"parse_instances\":2,\"count_instances\":2,\"ratio_to_prepartitioned\":{:.3}",
            two / one
        ),
    );
    std::thread::sleep(Duration::from_secs(3));
    let _ = delete_repartition_topic(&config, &s.topic());
    let _ = futures::executor::block_on(admin.delete_topics(&[&input, &out_one, &out_two], &opts));
}
