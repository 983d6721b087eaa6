//! Client settings shared by the Kafka source, sink and dead-letter outputs.
//!
//! Owns [`KafkaConfig`]: the bootstrap servers, user overrides (any
//! librdkafka option, passed through `.set(key, value)`), the startup wait,
//! and the metadata lookup every connector does when it opens (bounded wait
//! for a broker, "unknown topic" as an error). Defaults are applied first and
//! user overrides last. Never opens a connection except in [`wait_for_topic`].

use rdkafka::client::{Client, ClientContext};
use rdkafka::config::ClientConfig;
use std::time::{Duration, Instant};

use super::error::KafkaConnectorError;
use super::status::KafkaStatus;

/// Bootstrap servers and client options.
///
/// ```
/// use weir::connectors::kafka::KafkaConfig;
/// let c = KafkaConfig::new("127.0.0.1:9092").set("fetch.wait.max.ms", "50");
/// assert_eq!(c.brokers(), "127.0.0.1:9092");
/// ```
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    brokers: String,
    overrides: Vec<(String, String)>,
    startup_timeout: Duration,
}

impl KafkaConfig {
    /// Settings for `brokers` (`host:port[,host:port..]`).
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            overrides: Vec::new(),
            startup_timeout: Duration::from_secs(30),
        }
    }

    /// The bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Sets any librdkafka option (overrides weir's defaults). Invalid
    /// options are reported by `validate`/`open`, naming the option.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.overrides.retain(|(k, _)| *k != key);
        self.overrides.push((key, value.into()));
        self
    }

    /// How long opening waits for a broker before failing (default 30 s).
    pub fn startup_timeout(mut self, d: Duration) -> Self {
        self.startup_timeout = d;
        self
    }

    pub(crate) fn startup_wait(&self) -> Duration {
        self.startup_timeout
    }

    /// The value a user set for `key`, if any.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.overrides
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `defaults`, then the bootstrap servers, then the user's overrides.
    pub(crate) fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        c.set("bootstrap.servers", &self.brokers);
        // librdkafka's own debug contexts (e.g. `cgrp,topic,fetch`) for a
        // whole process, without changing the job: `WEIR_RDKAFKA_DEBUG`.
        if let Ok(debug) = std::env::var("WEIR_RDKAFKA_DEBUG") {
            if !debug.is_empty() {
                c.set("debug", debug);
            }
        }
        for (k, v) in &self.overrides {
            c.set(k, v);
        }
        c
    }

    /// Checks every option with librdkafka without connecting.
    pub(crate) fn check(&self, defaults: &[(&str, &str)]) -> Result<(), KafkaConnectorError> {
        self.client_config(defaults)
            .create_native_config()
            .map(|_| ())
            .map_err(|e| KafkaConnectorError::client("configuration", e))
    }
}

/// Waits (bounded by the startup timeout) until a broker answers a metadata
/// request for `topic` and the topic exists; returns its partition count.
pub(crate) fn wait_for_topic<C: ClientContext>(
    client: &Client<C>,
    config: &KafkaConfig,
    topic: &str,
    status: &KafkaStatus,
) -> Result<usize, KafkaConnectorError> {
    let start = Instant::now();
    let limit = config.startup_wait();
    let mut warned = false;
    loop {
        let left = limit.saturating_sub(start.elapsed());
        let attempt = left.clamp(Duration::from_millis(100), Duration::from_secs(2));
        match client.fetch_metadata(Some(topic), attempt) {
            Ok(md) => {
                let found = md.topics().iter().find(|t| t.name() == topic);
                match found {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                        status.set_connected();
                        return Ok(t.partitions().len());
                    }
                    _ => {
                        // The broker answers but has no such topic: it may
                        // be about to be created (a broker that just came
                        // back empty): wait within the startup bound.
                        status.set_connected();
                        if start.elapsed() >= limit {
                            return Err(KafkaConnectorError::UnknownTopic {
                                topic: topic.to_string(),
                                brokers: config.brokers().to_string(),
                            });
                        }
                        if !warned {
                            warned = true;
                            tracing::warn!(topic, brokers = %config.brokers(), "waiting up to {limit:?} for topic {topic} to exist");
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            Err(e) => {
                status.set_waiting(&e.to_string());
                if start.elapsed() >= limit {
                    return Err(KafkaConnectorError::Unreachable {
                        brokers: config.brokers().to_string(),
                        waited: limit,
                        reason: e.to_string(),
                    });
                }
            }
        }
    }
}
