//! weir: a stream processor on actix actors, Kafka and ZooKeeper.
pub mod coord;
