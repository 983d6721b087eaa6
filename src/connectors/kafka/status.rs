//! Connection state of Kafka clients and the client contexts that feed it.
//!
//! Owns [`KafkaStatus`] (shared by every reader/writer of one source or
//! sink: "connected" or "waiting for broker HOST:PORT", with a counter of
//! outages) and the rdkafka contexts: [`ProducerCtx`] (delivery reports
//! counted, first failure kept) and the logging/error/statistics hooks both
//! contexts share. Transient errors (all brokers down, transport failures)
//! only change the state and log a warning: they never fail a task here;
//! librdkafka reconnects by itself.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether a connector's clients currently reach a broker.
///
/// ```
/// use weir::connectors::kafka::KafkaStatus;
/// let s = KafkaStatus::new("127.0.0.1:9092");
/// assert_eq!(s.describe(), "connected");
/// s.set_waiting("Connection refused");
/// assert!(s.is_waiting());
/// assert!(s.describe().starts_with("waiting for broker 127.0.0.1:9092"));
/// ```
#[derive(Clone, Debug)]
pub struct KafkaStatus(Arc<StatusInner>);

#[derive(Debug)]
struct StatusInner {
    brokers: String,
    waiting: AtomicBool,
    outages: AtomicU64,
    last_error: Mutex<(String, Option<Instant>)>,
}

impl KafkaStatus {
    /// A fresh status ("connected") for clients of `brokers`.
    pub fn new(brokers: &str) -> Self {
        KafkaStatus(Arc::new(StatusInner {
            brokers: brokers.to_string(),
            waiting: AtomicBool::new(false),
            outages: AtomicU64::new(0),
            last_error: Mutex::new((String::new(), None)),
        }))
    }

    /// True while no broker answers.
    pub fn is_waiting(&self) -> bool {
        self.0.waiting.load(Relaxed)
    }

    /// How many times the clients lost every broker.
    pub fn outages(&self) -> u64 {
        self.0.outages.load(Relaxed)
    }

    /// `connected`, or `waiting for broker HOST:PORT: <last error>`.
    pub fn describe(&self) -> String {
        if self.is_waiting() {
            let last = self
                .0
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .clone();
            format!("waiting for broker {}: {last}", self.0.brokers)
        } else {
            "connected".to_string()
        }
    }

    /// A transient failure: log (at most every 5 s) and show "waiting".
    pub fn set_waiting(&self, reason: &str) {
        let first = !self.0.waiting.swap(true, Relaxed);
        if first {
            self.0.outages.fetch_add(1, Relaxed);
        }
        let mut last = self.0.last_error.lock().unwrap_or_else(|p| p.into_inner());
        last.0 = reason.to_string();
        let due = match last.1 {
            Some(t) => t.elapsed() >= Duration::from_secs(5),
            None => true,
        };
        if first || due {
            last.1 = Some(Instant::now());
            tracing::warn!(brokers = %self.0.brokers, error = %reason, "waiting for broker {}", self.0.brokers);
        }
    }

    /// A broker answered again.
    pub fn set_connected(&self) {
        if self.0.waiting.swap(false, Relaxed) {
            self.0
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .1 = None;
            tracing::info!(brokers = %self.0.brokers, "broker {} reachable again", self.0.brokers);
        }
    }
}

/// Error codes that mean "the broker is (temporarily) out of reach".
pub(crate) fn is_transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        AllBrokersDown
            | BrokerTransportFailure
            | Resolve
            | OperationTimedOut
            | RequestTimedOut
            | MessageTimedOut
            | NetworkException
            | NotCoordinator
            | CoordinatorNotAvailable
            | CoordinatorLoadInProgress
            | LeaderNotAvailable
            | NotLeaderForPartition
            | UnknownTopicOrPartition
            | UnknownTopic
            | UnknownPartition
            | UnknownMemberId
            | RebalanceInProgress
            | IllegalGeneration
            | NotEnoughReplicas
            | BrokerNotAvailable
            | ReplicaNotAvailable
            | FencedLeaderEpoch
            | UnknownLeaderEpoch
            | OffsetNotAvailable
            | NotController
            | UnknownProducerId
            | TimedOutQueue
            | Partial
            | NoOffset
    )
}

/// The error code of a client error, when it has one.
pub(crate) fn code_of(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code()
}

/// Shared hooks of all weir client contexts: librdkafka logs into
/// `tracing`; request and session timeouts (a frozen broker keeps its
/// connections open and only stops answering) mark the status "waiting".
pub(crate) fn log(status: &KafkaStatus, level: RDKafkaLogLevel, fac: &str, msg: &str) {
    if fac == "REQTMOUT" || fac == "SESSTMOUT" {
        status.set_waiting(msg);
    }
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error
        | RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {msg}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "{fac}: {msg}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {msg}"),
    }
}

pub(crate) fn on_error(status: &KafkaStatus, error: &KafkaError, reason: &str) {
    match code_of(error) {
        // The end of a partition's log (the source's idle rule asks for
        // these events) is news, not an outage.
        Some(RDKafkaErrorCode::PartitionEOF) => {}
        Some(c) if is_transient(c) => status.set_waiting(reason),
        _ => tracing::error!(error = %error, reason, "Kafka client error"),
    }
}

/// librdkafka statistics: a broker (not a bootstrap placeholder) is UP.
pub(crate) fn on_stats(status: &KafkaStatus, json: &[u8]) {
    if status.is_waiting() && any_broker_up(json) {
        status.set_connected();
    }
}

/// Whether librdkafka statistics show a broker (not a bootstrap
/// placeholder) in state UP.
pub(crate) fn any_broker_up(json: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Stats {
        #[serde(default)]
        brokers: std::collections::HashMap<String, Broker>,
    }
    #[derive(serde::Deserialize)]
    struct Broker {
        state: String,
        nodeid: i32,
    }
    serde_json::from_slice::<Stats>(json)
        .map(|s| s.brokers.values().any(|b| b.state == "UP" && b.nodeid >= 0))
        .unwrap_or(false)
}

/// The consumer group join state librdkafka's statistics report
/// (`cgrp.join_state`: `steady` once the member has its assignment), or
/// `None` for a client without a group.
pub(crate) fn group_join_state(json: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Stats {
        cgrp: Option<Cgrp>,
    }
    #[derive(serde::Deserialize)]
    struct Cgrp {
        join_state: String,
    }
    serde_json::from_slice::<Stats>(json)
        .ok()?
        .cgrp
        .map(|c| c.join_state)
}

/// Delivery-report bookkeeping of one producer.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    pub(crate) failed: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) first_error: Mutex<Option<String>>,
}

impl Deliveries {
    pub(crate) fn first_error(&self) -> String {
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }
}

/// Context of every weir producer.
pub(crate) struct ProducerCtx {
    pub(crate) status: KafkaStatus,
    pub(crate) deliveries: Arc<Deliveries>,
}

impl ProducerCtx {
    pub(crate) fn new(status: KafkaStatus) -> Self {
        ProducerCtx {
            status,
            deliveries: Arc::default(),
        }
    }
}

impl ClientContext for ProducerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        log(&self.status, level, fac, msg)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        on_error(&self.status, &error, reason)
    }
    fn stats_raw(&self, json: &[u8]) {
        on_stats(&self.status, json)
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.deliveries.acked.fetch_add(1, Relaxed);
                if self.status.is_waiting() {
                    self.status.set_connected();
                }
            }
            Err((e, msg)) => {
                self.deliveries.failed.fetch_add(1, Relaxed);
                let mut first = self
                    .deliveries
                    .first_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if first.is_none() {
                    *first = Some(format!(
                        "{e} (topic {} partition {})",
                        msg.topic(),
                        msg.partition()
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_group_join_state_from_statistics() {
        // Trimmed from a librdkafka 2.12 consumer's statistics.
        let joining = br#"{"name":"c#consumer-1","type":"consumer","brokers":{},
            "cgrp":{"state":"up","stateage":4010,"join_state":"wait-join","rebalance_age":3950,
            "rebalance_cnt":3,"rebalance_reason":"","assignment_size":0}}"#;
        assert_eq!(group_join_state(joining).as_deref(), Some("wait-join"));
        let producer = br#"{"name":"p#producer-1","type":"producer","brokers":{}}"#;
        assert_eq!(group_join_state(producer), None);
        assert_eq!(group_join_state(b"not json"), None);
    }
}
