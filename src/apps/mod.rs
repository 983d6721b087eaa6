//! Ready-made pipelines: the jobs behind the example binaries.
//!
//! Owns the pipeline builders ([`etl::etl_job`], [`clicks::clicks_job`],
//! [`clicks_stages::parse_job`] and [`clicks_stages::count_job`],
//! [`window_totals::count_to_totals_job`] and [`window_totals::totals_job`])
//! and their parameter and record types, so the example binaries stay
//! small and the coordinated worker service can register the very same
//! pipelines as job types. Each builder only assembles a
//! [`RunnableJob`](crate::pipeline::RunnableJob); it never runs it, parses
//! arguments or installs logging.

#[cfg(feature = "kafka")]
pub mod clicks;
#[cfg(feature = "kafka")]
pub mod clicks_stages;
#[cfg(feature = "kafka")]
pub mod etl;
#[cfg(feature = "kafka")]
pub mod window_totals;

/// The checkpoint storage URL of `--checkpoint-dir DIR` (created, made
/// absolute: `file:///abs/DIR`) or `--checkpoint-url URL` (as given); at
/// most one of them.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let url = weir::apps::checkpoint_url(Some(dir.path()), None).unwrap().unwrap();
/// assert!(url.starts_with("file:///"));
/// assert_eq!(weir::apps::checkpoint_url(None, None).unwrap(), None);
/// assert!(weir::apps::checkpoint_url(Some(dir.path()), Some("file:///x")).is_err());
/// ```
pub fn checkpoint_url(
    dir: Option<&std::path::Path>,
    url: Option<&str>,
) -> Result<Option<String>, String> {
    match (dir, url) {
        (Some(_), Some(_)) => Err("give --checkpoint-dir or --checkpoint-url, not both".into()),
        (None, url) => Ok(url.map(str::to_string)),
        (Some(dir), None) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("--checkpoint-dir {}: {e}", dir.display()))?;
            let abs = dir
                .canonicalize()
                .map_err(|e| format!("--checkpoint-dir {}: {e}", dir.display()))?;
            Ok(Some(format!("file://{}", abs.display())))
        }
    }
}
