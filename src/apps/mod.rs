//! Ready-made pipelines: the jobs behind the example binaries.
//!
//! Owns the pipeline builders ([`etl::etl_job`], [`clicks::clicks_job`])
//! and their parameter and record types, so the example binaries stay
//! small and the coordinated worker service can register the very same
//! pipelines as job types. Each builder only assembles a
//! [`RunnableJob`](crate::pipeline::RunnableJob); it never runs it, parses
//! arguments or installs logging.

#[cfg(feature = "kafka")]
pub mod clicks;
#[cfg(feature = "kafka")]
pub mod etl;
