//! Word count: the classic first stream job.
//!
//! Reads lines from a file (first argument), from stdin (`-`), or from the
//! bundled sample text (no argument); splits them on whitespace; counts each
//! word; and prints one `word count` line per distinct word when the input
//! ends. Logs go to stderr, so stdout carries only the counts.
//!
//! ```text
//! cargo run --example wordcount                       # the bundled sample
//! cargo run --example wordcount -- book.txt --parallelism 4
//! cat book.txt | cargo run --example wordcount -- -
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use weir::actors::{JobReport, RunError};
use weir::connectors::{FileSource, StdinSource, StdoutSink};
use weir::pipeline::{Count, Job, Source, Windowed, Windows};

/// Counts the words of a text.
#[derive(Parser)]
struct Args {
    /// Text file to read, or `-` for stdin (default: the bundled sample).
    input: Option<String>,
    /// Parallel instances of each stage.
    #[arg(long, default_value_t = 2)]
    parallelism: usize,
}

/// The job, over any source of lines.
fn count_words<S: Source<Out = String>>(
    lines: S,
    parallelism: usize,
) -> Result<JobReport, RunError> {
    Job::new("wordcount")
        .parallelism(parallelism)
        .source(lines)
        .flat_map(|line: String| {
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .key_by(|word: &String| word.clone())
        // One window over the whole input: it fires when the input ends.
        .window(Windows::global())
        .aggregate(Count)
        .map(|w: Windowed<String, u64>| format!("{} {}", w.key, w.value))
        .sink(StdoutSink::lines())
        .run_local()
}

fn main() -> ExitCode {
    weir::logging::init_stderr();
    let args = Args::parse();
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/data/sample.txt");
    let result = match args.input.as_deref() {
        Some("-") => count_words(StdinSource::lines(), args.parallelism),
        Some(path) => count_words(FileSource::lines(path), args.parallelism),
        None => count_words(FileSource::lines(sample), args.parallelism),
    };
    match result {
        Ok(report) => {
            tracing::info!(status = ?report.status, "wordcount done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wordcount: {e}");
            ExitCode::FAILURE
        }
    }
}
