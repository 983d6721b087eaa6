//! weir: a stream processor on actix actors, Kafka and ZooKeeper.
//!
//! A job is a typed graph — sources, operators, sinks — built with
//! [`pipeline::Job`] and run by actix actors that exchange batches of
//! records with backpressure, under a per-job supervisor. `run_local()`
//! runs a job in-process with no external service.
//!
//! ```
//! use weir::pipeline::{Job, Count};
//! use weir::connectors::{VecSource, CollectSink};
//! let (sink, out) = CollectSink::new();
//! Job::new("count-words")
//!     .source(VecSource::new(vec!["a b", "b"]))
//!     .flat_map(|line: &str| line.split_whitespace().map(str::to_string).collect::<Vec<_>>())
//!     .key_by(|w: &String| w.clone())
//!     .window(weir::pipeline::Windows::global())
//!     .aggregate(Count)
//!     .sink(sink)
//!     .run_local()
//!     .unwrap();
//! let mut counts: Vec<_> = out.take().into_iter().map(|w| (w.key, w.value)).collect();
//! counts.sort();
//! assert_eq!(counts, vec![("a".to_string(), 1), ("b".to_string(), 2)]);
//! ```

pub mod actors;
pub mod apps;
pub mod checkpoint;
pub mod connectors;
pub mod coord;
pub mod logging;
pub mod pipeline;
pub mod service;
pub mod web;
