//! Kafka → Kafka benchmark on the real broker (`cargo bench --bench kafka`).
//!
//! Pre-loads N records of ~100 bytes (default 5,000,000; override with
//! `WEIR_BENCH_KAFKA_RECORDS` or the first argument) into a 4-partition
//! topic, measuring rdkafka's raw produce rate while doing so; then
//! rdkafka's raw consume rate of the same topic; rdkafka alone copying
//! the topic (consume and produce at once, no decoding), and the same loop
//! with the produce call left out (what the consumer does while the broker
//! is not also taking writes); then the `kafka_etl`
//! pipeline (weir's Kafka source → filter → map → keyed Kafka sink, explicit
//! partitions, parallelism `WEIR_BENCH_KAFKA_PARALLELISM`, default 4: one
//! consumer per partition) end to
//! end, from job start until every record was written and flushed. Prints
//! one JSON line per measurement with events/s and the ratio to the lower
//! of the two raw rates (the ceiling), and the CPU time the broker (its
//! pid from `scripts/services`' `kafka.pid`) and this process spent on it
//! (`/proc/<pid>/stat`): `broker_cpu_s`, `bench_cpu_s`, `busy_cores` and
//! `cpu_us_per_record`. Deletes its topics at the end.
//!
//! Before measuring, it warms the broker up (a JVM: a broker just started
//! took twice the CPU per produced record until its hot paths were
//! compiled, and its first raw produce of 2 M records ran at 0.6 of the
//! next; 1 M records of warm-up were not enough, 3 M were): it produces and
//! consumes `WEIR_BENCH_KAFKA_WARMUP` records (default 3,000,000; 0 skips
//! it) in a scratch topic, unmeasured.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::io::Write;
use std::time::{Duration, Instant};
use weir::actors::runtime::LocalRuntime;
use weir::apps::etl::{etl_job, EtlParams};

fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("log_level", "3");
    c
}

/// The raw loops' producer: the same settings as weir's sink.
fn raw_producer(brokers: &str) -> BaseProducer {
    config(brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .create()
        .expect("producer")
}

/// The raw loops' consumer: the fetch settings of weir's source.
fn raw_consumer(brokers: &str, group: &str) -> BaseConsumer {
    config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        // As weir's source does (librdkafka's 1 s default stalls a copy).
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .expect("consumer")
}

/// Queues `rec`, waiting (and serving delivery reports) while librdkafka's
/// queue is full.
fn send_waiting<'a>(producer: &BaseProducer, mut rec: BaseRecord<'a, [u8], [u8]>) {
    loop {
        match producer.send(rec) {
            Ok(()) => return,
            Err((_, back)) => {
                rec = back;
                producer.poll(Duration::from_millis(1));
            }
        }
    }
}

fn line(name: &str, records: u64, secs: f64, ceiling: Option<f64>, extra: &str) -> f64 {
    let rate = records as f64 / secs;
    let ratio = ceiling
        .map(|c| format!(",\"ratio_to_ceiling\":{:.3}", rate / c))
        .unwrap_or_default();
    println!(
        "{{\"bench\":\"kafka\",\"measurement\":\"{name}\",\"records\":{records},\"seconds\":{secs:.3},\"events_per_s\":{rate:.0}{ratio}{extra}}}"
    );
    let _ = std::io::stdout().flush();
    rate
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) ": state is field 0, utime 11, stime 12 (proc(5)
    // numbers them 3, 14 and 15), in clock ticks: USER_HZ, 100 on Linux.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Where the CPU of a measurement went: the broker and this process.
struct Cpu {
    broker_pid: Option<String>,
}

impl Cpu {
    fn new(root: &str) -> Cpu {
        let dir = std::env::var("WEIR_SERVICES_DIR")
            .unwrap_or_else(|_| format!("{root}/target/services"));
        let broker_pid = std::fs::read_to_string(format!("{dir}/kafka.pid"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|p| cpu_seconds(p).is_some());
        if broker_pid.is_none() {
            eprintln!("broker pid not found in {dir}/kafka.pid: no broker CPU figures");
        }
        Cpu { broker_pid }
    }

    /// (broker, this process) CPU seconds so far.
    fn now(&self) -> (Option<f64>, f64) {
        (
            self.broker_pid.as_deref().and_then(cpu_seconds),
            cpu_seconds("self").unwrap_or(0.0),
        )
    }

    /// JSON fields for the CPU used since `start` by a measurement of
    /// `records` records over `secs` seconds.
    fn since(&self, start: (Option<f64>, f64), secs: f64, records: u64) -> String {
        let (b1, s1) = self.now();
        let bench = s1 - start.1;
        match (start.0, b1) {
            (Some(b0), Some(b1)) => {
                let broker = b1 - b0;
                format!(
                    ",\"broker_cpu_s\":{broker:.2},\"bench_cpu_s\":{bench:.2},\"busy_cores\":{:.2},\"cpu_us_per_record\":{:.3}",
                    (broker + bench) / secs,
                    (broker + bench) / records as f64 * 1e6
                )
            }
            _ => format!(",\"bench_cpu_s\":{bench:.2}"),
        }
    }
}

fn payload(id: u64, buf: &mut Vec<u8>) {
    buf.clear();
    let _ = write!(
        buf,
        r#"{{"id":{id},"user":"user-{:04}","amount":{}.{:02},"note":""#,
        id % 1000,
        id % 10_000,
        id % 100
    );
    while buf.len() < 98 {
        buf.push(b'x');
    }
    buf.extend_from_slice(b"\"}");
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .or_else(|| {
            std::env::var("WEIR_BENCH_KAFKA_RECORDS")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(5_000_000);
    let parallelism: usize = std::env::var("WEIR_BENCH_KAFKA_PARALLELISM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
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
    let cpu = Cpu::new(root);
    let warmup: u64 = std::env::var("WEIR_BENCH_KAFKA_WARMUP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000_000);
    let suffix = std::process::id();
    let input = format!("bench-in-{suffix}");
    let output = format!("bench-out-{suffix}");
    let admin: AdminClient<DefaultClientContext> = config(&brokers).create().expect("admin");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let topics = [
        NewTopic::new(&input, 4, TopicReplication::Fixed(1)),
        NewTopic::new(&output, 4, TopicReplication::Fixed(1)),
    ];
    for r in
        futures::executor::block_on(admin.create_topics(&topics, &opts)).expect("create topics")
    {
        r.expect("create topic");
    }

    // 0. Warm-up (unmeasured): the broker's produce and fetch paths
    // compiled by its JIT before anything is timed.
    if warmup > 0 {
        let scratch = format!("bench-warmup-{suffix}");
        for r in futures::executor::block_on(admin.create_topics(
            &[NewTopic::new(&scratch, 4, TopicReplication::Fixed(1))],
            &opts,
        ))
        .expect("create topic")
        {
            r.expect("create topic");
        }
        let start = Instant::now();
        let producer = raw_producer(&brokers);
        let mut buf = Vec::with_capacity(128);
        for id in 0..warmup {
            payload(id, &mut buf);
            let rec = BaseRecord::<[u8], [u8]>::to(&scratch)
                .payload(&buf[..])
                .partition((id % 4) as i32);
            send_waiting(&producer, rec);
            if id % 1024 == 0 {
                producer.poll(Duration::ZERO);
            }
        }
        producer.flush(Duration::from_secs(600)).expect("flush");
        drop(producer);
        let consumer = raw_consumer(&brokers, &format!("bench-warmup-{suffix}"));
        let mut tpl = TopicPartitionList::new();
        for p in 0..4 {
            tpl.add_partition_offset(&scratch, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut got = 0;
        while got < warmup {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                got += 1;
            }
        }
        drop(consumer);
        let _ = futures::executor::block_on(admin.delete_topics(&[&scratch], &opts));
        eprintln!(
            "warm-up: {warmup} records produced and consumed in {:.1} s (unmeasured)",
            start.elapsed().as_secs_f64()
        );
    }

    // 1. Raw produce (the pre-load): same producer settings as weir's sink.
    let producer = raw_producer(&brokers);
    let mut buf = Vec::with_capacity(128);
    let cpu0 = cpu.now();
    let start = Instant::now();
    for id in 0..n {
        payload(id, &mut buf);
        let rec = BaseRecord::<[u8], [u8]>::to(&input)
            .payload(&buf[..])
            .partition((id % 4) as i32);
        send_waiting(&producer, rec);
        if id % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(600)).expect("flush");
    let secs = start.elapsed().as_secs_f64();
    let produce_rate = line("raw_produce", n, secs, None, &cpu.since(cpu0, secs, n));
    drop(producer);

    // 2. Raw consume: one consumer, all partitions, poll per message.
    let consumer = raw_consumer(&brokers, &format!("bench-raw-{suffix}"));
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset(&input, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let cpu0 = cpu.now();
    let start = Instant::now();
    let (mut got, mut bytes) = (0u64, 0u64);
    while got < n {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                got += 1;
                bytes += m.payload().map_or(0, |p| p.len() as u64);
            }
            Some(Err(e)) => eprintln!("consume error: {e}"),
            None => {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let consume_rate = line(
        "raw_consume",
        n,
        secs,
        None,
        &format!(",\"bytes\":{bytes}{}", cpu.since(cpu0, secs, n)),
    );
    drop(consumer);
    let ceiling = produce_rate.min(consume_rate);

    // 2b. Raw copy: rdkafka alone, consume and produce at once (what a
    // Kafka-to-Kafka job can reach on this machine, broker included).
    let copy_out = format!("bench-copy-{suffix}");
    for r in futures::executor::block_on(admin.create_topics(
        &[NewTopic::new(&copy_out, 4, TopicReplication::Fixed(1))],
        &opts,
    ))
    .expect("create topic")
    {
        r.expect("create topic");
    }
    let cpu0 = cpu.now();
    let copy_rate = raw_copy(&brokers, &tpl, &copy_out, n, true);
    let fields = format!("{}{}", copy_rate.1, cpu.since(cpu0, copy_rate.0, n));
    line("raw_copy", n, copy_rate.0, Some(ceiling), &fields);
    let copy_rate = n as f64 / copy_rate.0;
    let cpu0 = cpu.now();
    let alone = raw_copy(&brokers, &tpl, &copy_out, n, false);
    let fields = format!("{}{}", alone.1, cpu.since(cpu0, alone.0, n));
    line(
        "raw_copy_without_produce",
        n,
        alone.0,
        Some(ceiling),
        &fields,
    );

    // 3. The kafka_etl pipeline, end to end.
    let mut params = EtlParams::new(&brokers, &input, &output);
    params.group = format!("bench-etl-{suffix}");
    params.parallelism = parallelism;
    params.partitions = Some(vec![0, 1, 2, 3]);
    let job = etl_job(&params);
    let cpu0 = cpu.now();
    let system = actix::System::new();
    let secs = system.block_on(async move {
        let rt = LocalRuntime::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        );
        let start = Instant::now();
        let handle = rt.start(job).expect("valid job");
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let report = handle.report();
            let written: u64 = report
                .tasks
                .iter()
                .filter(|(k, _)| k.contains("-sink#"))
                .map(|(_, m)| m.records_out)
                .sum();
            if written >= n {
                break;
            }
            assert!(
                !report.status.is_terminal(),
                "pipeline stopped early: {report:?}"
            );
        }
        handle.cancel(); // drain: the sinks flush (every record acknowledged)
        let report = handle.wait().await;
        let secs = start.elapsed().as_secs_f64();
        drop(rt);
        eprintln!(
            "pipeline: {:?}, restarts {}",
            report.status, report.restarts
        );
        secs
    });
    line(
        "etl_pipeline",
        n,
        secs,
        Some(ceiling),
        &format!(
            ",\"parallelism\":{parallelism},\"ceiling_events_per_s\":{ceiling:.0},\"ratio_to_raw_copy\":{:.3}{}",
            n as f64 / secs / copy_rate,
            cpu.since(cpu0, secs, n)
        ),
    );
    // Let the pipeline's clients finish closing before the topics go away
    // (librdkafka 2.12 can crash on the broker's reply to fetches of a
    // deleted topic: see the Kafka section of ARCHITECTURE.md).
    std::thread::sleep(Duration::from_secs(3));
    let _ = futures::executor::block_on(admin.delete_topics(&[&input, &output, &copy_out], &opts));
}

/// rdkafka alone copying `n` records from the assigned partitions to `out`
/// (keyed, like `kafka_etl`), polling record by record; with `produce` false
/// the records are built but not sent. Returns the seconds taken and the
/// JSON fields saying where the time went.
fn raw_copy(
    brokers: &str,
    tpl: &TopicPartitionList,
    out: &str,
    n: u64,
    produce: bool,
) -> (f64, String) {
    let consumer = raw_consumer(brokers, &format!("bench-copy-{}", std::process::id()));
    consumer.assign(tpl).unwrap();
    let producer = raw_producer(brokers);
    let start = Instant::now();
    let (mut copied, mut polling) = (0u64, Duration::ZERO);
    while copied < n {
        let t = Instant::now();
        let m = consumer.poll(Duration::from_millis(100));
        polling += t.elapsed();
        if let Some(Ok(m)) = m {
            let p = m.payload().unwrap_or(&[]);
            let rec = BaseRecord::<[u8], [u8]>::to(out).payload(p).key(&p[20..29]);
            if produce {
                send_waiting(&producer, rec);
            } else {
                std::hint::black_box(&rec);
            }
            copied += 1;
            if copied % 1024 == 0 {
                producer.poll(Duration::ZERO);
            }
        }
    }
    producer.flush(Duration::from_secs(600)).expect("flush");
    let secs = start.elapsed().as_secs_f64();
    (
        secs,
        format!(
            ",\"seconds_waiting_in_consumer_poll\":{:.3}",
            polling.as_secs_f64()
        ),
    )
}
