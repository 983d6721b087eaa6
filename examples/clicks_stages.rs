//! clicks_stages: the clicks job in two stages connected by a Kafka
//! repartition topic, each stage run as separate processes.
//!
//! ```text
//! cargo run --release --example clicks_stages -- --stage parse --instance I \
//!     --brokers 127.0.0.1:9092 --input clicks --output clicks-per-user \
//!     [--job clicks] [--parse-instances N] [--count-instances M] \
//!     [--out-of-orderness-ms 2000] [--idle-timeout-ms 10000] \
//!     [--checkpoint-dir DIR | --checkpoint-url URL] [--drain] \
//!     [--producer-option KEY=VALUE ..]
//! cargo run --release --example clicks_stages -- --stage count --instance J ...
//! ```
//!
//! Both stages are cut from one job graph
//! ([`clicks_graph`](weir::apps::clicks_stages::clicks_graph)) by the
//! cluster's stage planner. `--stage parse` (instance `I` of `N`) reads the input partitions `p`
//! with `p % N == I` (JSON `{"user", "ts"}`) and writes each click to the
//! repartition topic `weir-<job>-count-repartition` (M partitions, created
//! if missing) at the partition of its user's stable hash, with watermark
//! control records. `--stage count` (instance `J` of `M`) reads partition
//! `J` of that topic (its watermark: the minimum over the N parse writers)
//! and writes one `{"user", "window_start", "count"}` per user and 10 s
//! window to the output topic. Each process needs its own
//! `--checkpoint-dir` for exactly-once; killed, it resumes from its last
//! checkpoint when started again with the same arguments, without
//! rewinding the other stage. Ctrl-C or SIGTERM stops it (a savepoint with
//! checkpoints, else a drain).

use anyhow::Context;
use clap::{Parser, ValueEnum};
use std::time::Duration;
use weir::apps::clicks_stages::{clicks_stage, StageParams};
use weir::connectors::kafka::repartition::{create_repartition_topic, topic_partitions};
use weir::connectors::kafka::KafkaConfig;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Stage {
    /// Input topic -> key by user -> repartition topic.
    Parse,
    /// Repartition topic -> 10 s window count per user -> output topic.
    Count,
}

/// One process of one stage of the two-stage clicks job.
#[derive(Parser, Debug)]
#[command(name = "clicks_stages", version, about)]
struct Args {
    /// Which stage this process runs.
    #[arg(long, value_enum)]
    stage: Stage,
    /// This process's index within its stage.
    #[arg(long, default_value_t = 0)]
    instance: usize,
    /// Processes of the parse stage (the repartition topic's writers).
    #[arg(long, default_value_t = 1)]
    parse_instances: usize,
    /// Processes of the count stage (the repartition topic's partitions).
    #[arg(long, default_value_t = 1)]
    count_instances: usize,
    /// The logical job's name (names the repartition topic).
    #[arg(long, default_value = "clicks")]
    job: String,
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT..].
    #[arg(long)]
    brokers: String,
    /// Input topic (parse).
    #[arg(long)]
    input: String,
    /// Output topic (count).
    #[arg(long)]
    output: String,
    /// Accepted for symmetry with kafka_clicks; each process commits
    /// for its own group `weir-<job>-<stage>-<instance>`.
    #[arg(long)]
    group: Option<String>,
    /// Bounded out-of-orderness of `ts`, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    out_of_orderness_ms: u64,
    /// A quiet input partition stops holding the watermark after this long.
    #[arg(long, default_value_t = 10_000)]
    idle_timeout_ms: u64,
    /// Durable checkpoints in this directory (exactly-once).
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<std::path::PathBuf>,
    /// Like --checkpoint-dir, as an object-store URL.
    #[arg(long, value_name = "URL")]
    checkpoint_url: Option<String>,
    /// On Ctrl-C / SIGTERM, drain even with durable checkpoints.
    #[arg(long)]
    drain: bool,
    /// A librdkafka option for this stage's producer, KEY=VALUE
    /// (repeatable), e.g. transaction.timeout.ms=5000.
    #[arg(long, value_name = "KEY=VALUE")]
    producer_option: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    weir::logging::init_stderr();
    let args = Args::parse();
    let mut p = StageParams::new(&args.brokers, &args.input, &args.output);
    p.job = args.job;
    p.instance = args.instance;
    p.parse_instances = args.parse_instances;
    p.count_instances = args.count_instances;
    p.out_of_orderness = Duration::from_millis(args.out_of_orderness_ms);
    p.idle_timeout = Duration::from_millis(args.idle_timeout_ms);
    p.checkpoint_url = weir::apps::checkpoint_url(
        args.checkpoint_dir.as_deref(),
        args.checkpoint_url.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    p.drain = args.drain;
    for o in &args.producer_option {
        let (k, v) = o
            .split_once('=')
            .with_context(|| format!("--producer-option {o}: want KEY=VALUE"))?;
        p.producer_options.push((k.to_string(), v.to_string()));
    }
    let config = KafkaConfig::new(&args.brokers);
    create_repartition_topic(&config, &p.topic(), p.count_instances)
        .with_context(|| format!("repartition topic {}", p.topic()))?;
    let stage = match args.stage {
        Stage::Parse => {
            p.input_partitions = topic_partitions(&config, &p.input)
                .with_context(|| format!("input topic {}", p.input))?;
            "parse"
        }
        Stage::Count => "count",
    };
    let job = clicks_stage(&p, stage).with_context(|| format!("stage {stage}"))?;
    let report = job
        .run_local()
        .with_context(|| format!("clicks_stages {:?} failed", args.stage))?;
    tracing::info!(status = ?report.status, "clicks_stages stopped");
    Ok(())
}
