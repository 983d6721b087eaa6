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

/// The `--delivery` flag of the Kafka example binaries: `exactly-once`,
/// `at-least-once` or `none`; absent, exactly-once with checkpoint storage
/// and at least once without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Transactions bound to durable checkpoints.
    ExactlyOnce,
    /// Checkpoints wait for every acknowledgement.
    AtLeastOnce,
    /// Checkpoints wait for nothing.
    None,
}

impl std::str::FromStr for Delivery {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exactly-once" => Ok(Delivery::ExactlyOnce),
            "at-least-once" => Ok(Delivery::AtLeastOnce),
            "none" => Ok(Delivery::None),
            other => Err(format!(
                "{other:?}: want exactly-once, at-least-once or none"
            )),
        }
    }
}

/// The output sink's guarantee for `--delivery` (`None`: the default) with
/// or without durable checkpoint storage; exactly-once uses
/// `transactional_id` and needs the storage.
///
/// ```
/// use weir::apps::{delivery_guarantee, Delivery};
/// use weir::connectors::kafka::DeliveryGuarantee;
/// assert_eq!(delivery_guarantee(None, false, "t".into()), Ok(DeliveryGuarantee::AtLeastOnce));
/// assert_eq!(
///     delivery_guarantee(None, true, "t".into()),
///     Ok(DeliveryGuarantee::ExactlyOnce { transactional_id: "t".into() })
/// );
/// assert_eq!(delivery_guarantee(Some(Delivery::None), true, "t".into()), Ok(DeliveryGuarantee::None));
/// assert!(delivery_guarantee(Some(Delivery::ExactlyOnce), false, "t".into()).is_err());
/// ```
#[cfg(feature = "kafka")]
pub fn delivery_guarantee(
    choice: Option<Delivery>,
    durable: bool,
    transactional_id: String,
) -> Result<crate::connectors::kafka::DeliveryGuarantee, String> {
    use crate::connectors::kafka::DeliveryGuarantee as G;
    match (choice, durable) {
        (Some(Delivery::ExactlyOnce), false) => Err(
            "--delivery exactly-once needs durable checkpoints (--checkpoint-dir or --checkpoint-url)"
                .into(),
        ),
        (Some(Delivery::ExactlyOnce), true) | (None, true) => Ok(G::ExactlyOnce { transactional_id }),
        (Some(Delivery::AtLeastOnce), _) | (None, false) => Ok(G::AtLeastOnce),
        (Some(Delivery::None), _) => Ok(G::None),
    }
}

/// [`delivery_guarantee`] for a job builder, which cannot fail: a choice it
/// refuses (checked by the binaries before they build the job) runs at
/// least once, with a warning.
#[cfg(feature = "kafka")]
pub(crate) fn output_guarantee(
    choice: Option<Delivery>,
    durable: bool,
    transactional_id: String,
) -> crate::connectors::kafka::DeliveryGuarantee {
    delivery_guarantee(choice, durable, transactional_id).unwrap_or_else(|e| {
        tracing::warn!("{e}: running at least once");
        crate::connectors::kafka::DeliveryGuarantee::AtLeastOnce
    })
}
