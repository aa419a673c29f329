//! What HTTP handlers, websocket sessions and live streams share: one
//! [`AppState`] behind an `Arc`, built once by the node.

use std::{sync::Arc, time::Duration};

use headcount_counter::CounterTable;
use headcount_history::History;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    access::Access,
    admission::{Admission, Refusal},
    chart::ChartSnapshot,
    error::ApiError,
    metrics::NodeMetrics,
    push::Hub,
    query::Query,
};

/// What HTTP handlers and websocket sessions share. Every field is either
/// immutable, an atomic-backed table, or a channel: no lock is held across
/// an `.await`.
pub(crate) struct AppState {
    /// Counts, read-only.
    pub(crate) query: Query,
    /// The local counting table, where counted sessions join.
    pub(crate) table: CounterTable,
    /// Visit history, where counted joins are recorded; none: `--no-history`.
    pub(crate) history: Option<History>,
    /// Per-topic change channels for watchers.
    pub(crate) hub: Arc<Hub>,
    /// Who may read what (`--admin-token`).
    pub(crate) access: Arc<Access>,
    /// Connection limits.
    pub(crate) admission: Arc<Admission>,
    /// Edge metrics.
    pub(crate) metrics: NodeMetrics,
    /// Every metric of the node, for `/metrics`.
    pub(crate) registry: Arc<Registry>,
    /// Whether readiness waits for joining a cluster (seeds were given).
    pub(crate) needs_join: bool,
    /// Websocket ping and idle timings.
    pub(crate) timings: SessionTimings,
    /// The most often a live stream is sent a change.
    pub(crate) push_interval: Duration,
    /// The last hour of the cluster total.
    pub(crate) chart: watch::Receiver<Arc<ChartSnapshot>>,
    /// Cancelled when the node shuts down.
    pub(crate) shutdown: CancellationToken,
    /// Tracks websocket sessions so shutdown waits for their close.
    pub(crate) tracker: TaskTracker,
}

impl AppState {
    /// Counts a refusal in `/metrics` and turns it into its HTTP answer.
    pub(crate) fn refuse(&self, refusal: Refusal) -> ApiError {
        self.metrics.refused.get_or_create(&[("reason", refusal.label())]).inc();
        ApiError::from(refusal)
    }
}

/// Timings of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimings {
    /// Silence after which the server sends a ping.
    pub ping_after: Duration,
    /// Silence after which the server closes the connection.
    pub idle_timeout: Duration,
    /// How long a send may wait for a client that does not read (its
    /// buffers are full) before the session ends.
    pub send_timeout: Duration,
}

impl Default for SessionTimings {
    fn default() -> Self {
        Self {
            ping_after: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            send_timeout: Duration::from_secs(10),
        }
    }
}
