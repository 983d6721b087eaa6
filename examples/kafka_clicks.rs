//! kafka_clicks: clicks per user per 10-second event-time window.
//!
//! ```text
//! cargo run --release --example kafka_clicks -- --brokers 127.0.0.1:9092 \
//!     --input clicks --output clicks-per-user [--group G] [--parallelism N] \
//!     [--out-of-orderness-ms 2000] [--checkpoint-dir DIR | --checkpoint-url URL] [--drain]
//! ```
//!
//! Input JSON `{"user": "<string>", "ts": <epoch ms>}`; output one JSON
//! `{"user": .., "window_start": <ms>, "count": <n>}` per user per tumbling
//! window aligned to multiples of 10,000 ms. Watermark = max ts seen −
//! out-of-orderness; records later than that go to `<input>.dlq` with
//! header `error: late`, malformed input goes there unchanged. Runs until
//! stopped: Ctrl-C or SIGTERM drains (open windows fire, sinks flush).
//! With `--checkpoint-dir` it runs exactly-once: every window is written
//! once with its exact count whatever kills and restarts happen (start it
//! again with the same arguments), and a stop takes a savepoint (open
//! windows stay open for the next run; `--drain` fires them instead).

use anyhow::Context;
use clap::Parser;
use std::time::Duration;
use weir::apps::clicks::{clicks_job, ClicksParams};

/// Clicks per user per 10 s window.
#[derive(Parser, Debug)]
#[command(name = "kafka_clicks", version, about)]
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
    #[arg(long, default_value = "weir-kafka-clicks")]
    group: String,
    /// Parallel instances in this process.
    #[arg(long, default_value_t = 1)]
    parallelism: usize,
    /// Bounded out-of-orderness of `ts`, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    out_of_orderness_ms: u64,
    /// A quiet partition stops holding the watermark back after this long.
    #[arg(long, default_value_t = 10_000)]
    idle_timeout_ms: u64,
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
    /// On Ctrl-C / SIGTERM, drain (fire every open window) even with
    /// durable checkpoints.
    #[arg(long)]
    drain: bool,
}

fn main() -> anyhow::Result<()> {
    weir::logging::init_stderr();
    let args = Args::parse();
    let mut params = ClicksParams::new(&args.brokers, &args.input, &args.output);
    params.group = args.group;
    params.parallelism = args.parallelism;
    params.out_of_orderness = Duration::from_millis(args.out_of_orderness_ms);
    params.idle_timeout = Duration::from_millis(args.idle_timeout_ms);
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
    params.drain = args.drain;
    let report = clicks_job(&params)
        .run_local()
        .context("kafka_clicks failed")?;
    tracing::info!(status = ?report.status, "kafka_clicks stopped");
    Ok(())
}
