//! kafka_etl: payments from a Kafka topic, validated and converted to cents.
//!
//! ```text
//! cargo run --release --example kafka_etl -- --brokers 127.0.0.1:9092 \
//!     --input payments --output payments-cents [--group G] [--parallelism N] \
//!     [--checkpoint-dir DIR | --checkpoint-url URL]
//! ```
//!
//! Input JSON `{"id": <u64>, "user": "<string>", "amount": <number>}`;
//! records with `amount < 0` are dropped; output JSON
//! `{"id": .., "user": .., "amount_cents": <i64>}` keyed by user. Malformed
//! input goes unchanged to `<input>.dlq`. Runs until stopped: Ctrl-C or
//! SIGTERM drains (the sink flushes) and exits. Logs go to stderr. With
//! `--checkpoint-dir` every valid payment reaches the output exactly once
//! (to `read_committed` readers), across kills and restarts with the same
//! arguments.

use anyhow::Context;
use clap::Parser;
use weir::apps::etl::{etl_job, EtlParams};

/// Payments in, amounts in cents out.
#[derive(Parser, Debug)]
#[command(name = "kafka_etl", version, about)]
struct Args {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT..].
    #[arg(long)]
    brokers: String,
    /// Input topic.
    #[arg(long)]
    input: String,
    /// Output topic.
    #[arg(long)]
    output: String,
    /// Consumer group.
    #[arg(long, default_value = "weir-kafka-etl")]
    group: String,
    /// Parallel instances in this process.
    #[arg(long, default_value_t = 1)]
    parallelism: usize,
    /// Read these partitions (comma-separated) by explicit assignment
    /// instead of joining the group (offsets are still committed to it).
    #[arg(long, value_delimiter = ',')]
    partitions: Option<Vec<i32>>,
    /// Durable checkpoints in this directory: the job runs exactly-once
    /// (transactional output, offsets committed in its transactions),
    /// resumes from its last checkpoint when started again, and a stop
    /// (Ctrl-C, SIGTERM) takes a savepoint instead of draining.
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<std::path::PathBuf>,
    /// Like --checkpoint-dir, as an object-store URL (file:///dir; s3://
    /// with the `s3` feature).
    #[arg(long, value_name = "URL")]
    checkpoint_url: Option<String>,
    /// The output's delivery guarantee: exactly-once (needs checkpoint
    /// storage; the default with it), at-least-once (the default without),
    /// or none (checkpoints wait for no acknowledgement).
    #[arg(long, value_name = "GUARANTEE")]
    delivery: Option<weir::apps::Delivery>,
}

fn main() -> anyhow::Result<()> {
    weir::logging::init_stderr();
    let args = Args::parse();
    let mut params = EtlParams::new(&args.brokers, &args.input, &args.output);
    params.group = args.group;
    params.parallelism = args.parallelism;
    params.partitions = args.partitions;
    params.checkpoint_url = weir::apps::checkpoint_url(
        args.checkpoint_dir.as_deref(),
        args.checkpoint_url.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    params.delivery = args.delivery;
    // Refused before anything starts: exactly-once without storage.
    weir::apps::delivery_guarantee(
        params.delivery,
        params.checkpoint_url.is_some(),
        String::new(),
    )
    .map_err(anyhow::Error::msg)?;
    let report = etl_job(&params).run_local().context("kafka_etl failed")?;
    tracing::info!(status = ?report.status, dead_letters = report.dead_letters, "kafka_etl stopped");
    Ok(())
}
