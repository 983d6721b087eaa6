//! kafka_etl: payments from a Kafka topic, validated and converted to cents.
//!
//! ```text
//! cargo run --release --example kafka_etl -- --brokers 127.0.0.1:9092 \
//!     --input payments --output payments-cents [--group G] [--parallelism N]
//! ```
//!
//! Input JSON `{"id": <u64>, "user": "<string>", "amount": <number>}`;
//! records with `amount < 0` are dropped; output JSON
//! `{"id": .., "user": .., "amount_cents": <i64>}` keyed by user. Malformed
//! input goes unchanged to `<input>.dlq`. Runs until stopped: Ctrl-C or
//! SIGTERM drains (the sink flushes) and exits. Logs go to stderr.

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
}

fn main() -> anyhow::Result<()> {
    weir::logging::init_stderr();
    let args = Args::parse();
    let mut params = EtlParams::new(&args.brokers, &args.input, &args.output);
    params.group = args.group;
    params.parallelism = args.parallelism;
    params.partitions = args.partitions;
    let report = etl_job(&params).run_local().context("kafka_etl failed")?;
    tracing::info!(status = ?report.status, dead_letters = report.dead_letters, "kafka_etl stopped");
    Ok(())
}
