//! The edges of a headcount node and their wiring.
//!
//! A count travels: websocket session ([`ws`]) → presence in the local
//! counting table → gossip (headcount-cluster) → cluster view → the query
//! layer ([`query`]) → HTTP ([`http`]), websocket pushes ([`push`]) and gRPC
//! ([`grpc`]). [`node::Node`] starts all of it under one shutdown token.

pub mod admission;
mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod node;
pub mod push;
pub mod query;
pub mod ws;

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use error::ApiError;
pub use headcount_cluster::MAX_NODE_NAME_BYTES;
pub use node::{Listeners, Node, NodeConfig, StartError};

/// What HTTP handlers and websocket sessions share. Every field is either
/// immutable, an atomic-backed table, or a channel: no lock is held across
/// an `.await`.
pub struct AppState {
    /// Counts.
    pub query: query::Query,
    /// Per-topic change channels for watchers.
    pub hub: Arc<push::Hub>,
    /// Connection limits.
    pub admission: admission::Admission,
    /// Edge metrics.
    pub metrics: metrics::NodeMetrics,
    /// Every metric of the node, for `/metrics`.
    pub registry: Arc<Registry>,
    /// Whether readiness waits for joining a cluster (seeds were given).
    pub needs_join: bool,
    /// Websocket ping and idle timings.
    pub timings: ws::SessionTimings,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// Tracks websocket sessions so shutdown waits for their close.
    pub tracker: TaskTracker,
}
