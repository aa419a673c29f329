//! Visit history: views, unique visitors and peaks per topic and UTC day,
//! kept on every node with no external database and nothing about any
//! single visitor (`docs/history.md`, SPEC section 9).
//!
//! - The join path calls [`History::record_view`]: a sum and a sketch
//!   update in memory ([`tally`]), never a disk write.
//! - The replication task ([`History::start`]) writes the tally as one
//!   transaction every flush interval and on shutdown ([`store`]), pushes
//!   what it wrote to every live member, and pulls what it lacks from one
//!   member every flush interval ([`sync`]).
//! - Readers ask [`History::topic_stats`] and [`History::list_stats`]; the
//!   answers add this node's unflushed tally to what is stored ([`stats`]).
//!
//! IO-free parts: [`day`], [`salt`], [`sketch`], [`replica`] (merge rules)
//! and [`stats`].

pub mod day;
mod metrics;
pub mod replica;
pub mod salt;
pub mod sketch;
pub mod stats;
pub mod store;
mod sync;
pub mod tally;

use std::{net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use headcount_cluster::{ClusterView, PeerLink};
use headcount_counter::Topic;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

pub use day::{Day, InvalidDay};
pub use stats::{DayStats, MAX_RANGE_DAYS, StatsList, TopicDayStats, TopicStats};
pub use store::StoreError;
pub use sync::HistorySync;

use crate::{
    metrics::HistoryMetrics,
    salt::Salts,
    stats::{DEFAULT_RANGE_DAYS, PrefixSites},
    store::Store,
    tally::{Tally, site_of},
};

/// How history is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// How often counted views are written, in one batch.
    pub flush_interval: Duration,
    /// Days of history kept (today included).
    pub retention_days: u32,
}

impl Default for HistoryConfig {
    /// The product contract's defaults.
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("headcount-data"),
            flush_interval: Duration::from_secs(10),
            retention_days: 400,
        }
    }
}

/// A range or listing that cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// `from` is after `to`, or the range is too long.
    #[error("{0}")]
    Range(String),
    /// The store failed.
    #[error("history store: {0}")]
    Store(#[from] StoreError),
    /// The node is shutting down.
    #[error("node is shutting down")]
    Stopped,
}

/// The visit history of one node: cheap to clone, shared by the join path,
/// the readers and the replication task.
#[derive(Clone)]
pub struct History(Arc<Shared>);

struct Shared {
    config: HistoryConfig,
    store: Store,
    tally: Tally,
    salts: Salts,
    metrics: HistoryMetrics,
}

impl History {
    /// Opens the store under the configured directory (creating it). Blocks
    /// on the disk: call it at start-up.
    pub fn open(config: HistoryConfig, registry: &mut Registry) -> Result<Self, StoreError> {
        let store = Store::open(&config.data_dir)?;
        let metrics = HistoryMetrics::register(registry);
        Ok(Self(Arc::new(Shared {
            config,
            store,
            tally: Tally::new(metrics.pending_views.clone()),
            salts: Salts::default(),
            metrics,
        })))
    }

    /// Counts a view of `topic` by the client at `client` with `user_agent`.
    /// The visitor key is made, put into the day's sketch of the topic, and
    /// dropped.
    pub fn record_view(&self, topic: &Topic, client: IpAddr, user_agent: &str) {
        let day = Day::today();
        let key = self.0.salts.key(day, client, user_agent, site_of(topic));
        self.0.tally.view(day, topic, key);
        self.0.metrics.views.inc();
    }

    /// Records that `topic` is at `count` cluster-wide now (peaks).
    pub fn record_count(&self, topic: &Topic, count: u64) {
        self.0.tally.peak(Day::today(), topic, count);
    }

    /// The first day still kept on `today`.
    fn keep_from(&self, today: Day) -> Day {
        today.minus(self.0.config.retention_days.saturating_sub(1))
    }

    /// A topic's history from `from` to `to` (default: the last 30 days up
    /// to today).
    pub async fn topic_stats(
        &self,
        topic: Topic,
        from: Option<Day>,
        to: Option<Day>,
    ) -> Result<TopicStats, StatsError> {
        let last = to.unwrap_or_else(Day::today);
        let first = from.unwrap_or_else(|| last.minus(DEFAULT_RANGE_DAYS - 1));
        if first > last {
            return Err(StatsError::Range(format!("from {first} is after to {last}")));
        }
        if first < last.minus(MAX_RANGE_DAYS - 1) {
            return Err(StatsError::Range(format!(
                "a range spans at most {MAX_RANGE_DAYS} days"
            )));
        }
        let history = self.clone();
        self.blocking(move || {
            let stored = history.0.store.topic_days(&topic, first, last)?;
            Ok(history
                .0
                .tally
                .read(|pending| stats::topic_stats(&topic, first, last, stored, pending)))
        })
        .await
    }

    /// The topics under `prefix` on `day` (default today), most views first.
    pub async fn list_stats(&self, day: Option<Day>, prefix: String, limit: usize) -> Result<StatsList, StatsError> {
        let day = day.unwrap_or_else(Day::today);
        let history = self.clone();
        self.blocking(move || {
            let store = &history.0.store;
            let stored = store.day_topics(day, &prefix)?;
            let sites = match PrefixSites::of(&prefix) {
                PrefixSites::All => Some(store.site_visitors(day, None)?),
                PrefixSites::One(site) => Some(store.site_visitors(day, Some(site))?),
                PrefixSites::None => None,
            };
            Ok(history
                .0
                .tally
                .read(|pending| stats::list_stats(day, &prefix, limit, stored, sites, pending)))
        })
        .await
    }

    /// Starts the replication task on `tracker`: flushes, pushes to and
    /// pulls from the live members of `view`, reaching them through `link`.
    /// On `shutdown` it writes a last flush and pushes it.
    pub fn start(
        &self,
        link: PeerLink,
        view: watch::Receiver<Arc<ClusterView>>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        let replicator = sync::Replicator {
            history: self.clone(),
            link,
            view,
            tracker: tracker.clone(),
            shutdown,
        };
        tracker.spawn(replicator.run().instrument(tracing::info_span!("history")));
    }

    /// Writes the tally as this node's next flush.
    pub(crate) async fn flush(&self) -> Result<Option<store::Flushed>, StatsError> {
        let history = self.clone();
        let keep_from = self.keep_from(Day::today());
        let flushed = self
            .blocking(move || {
                let pending = history.0.tally.take();
                let flushed = history.0.store.flush(&pending, keep_from);
                history.0.tally.written(&pending);
                Ok(flushed?)
            })
            .await?;
        if let Some(mut flushed) = flushed {
            self.0.metrics.flushes.inc();
            self.0
                .metrics
                .flushed_rows
                .inc_by(u64::try_from(flushed.batch.rows.len()).unwrap_or(u64::MAX));
            flushed.batch.salt = self.0.salts.current();
            return Ok(Some(flushed));
        }
        Ok(None)
    }

    /// Merges a batch from a peer (`how`: push or pull).
    pub(crate) async fn apply(
        &self,
        mut batch: replica::Batch,
        flushed: Option<(replica::Origin, u64)>,
        how: &'static str,
    ) -> Result<(), StatsError> {
        if let Some(salt) = batch.salt.take() {
            self.0.salts.offer(salt);
        }
        let rows = u64::try_from(batch.rows.len()).unwrap_or(u64::MAX);
        let history = self.clone();
        let keep_from = self.keep_from(Day::today());
        self.blocking(move || Ok(history.0.store.apply(&batch, flushed, keep_from)?))
            .await?;
        self.0.metrics.replicated.get_or_create(&[("how", how)]).inc_by(rows);
        Ok(())
    }

    /// What a peer holding `theirs` lacks.
    pub(crate) async fn changes_since(
        &self,
        theirs: std::collections::HashMap<replica::Origin, u64>,
    ) -> Result<replica::Batch, StatsError> {
        let history = self.clone();
        self.blocking(move || Ok(history.0.store.changes_since(&theirs, sync::MAX_ROWS_PER_MESSAGE)?))
            .await
    }

    /// Up to which flush this node holds each origin.
    pub(crate) async fn haves(&self) -> Result<std::collections::HashMap<replica::Origin, u64>, StatsError> {
        let history = self.clone();
        self.blocking(move || Ok(history.0.store.haves()?)).await
    }

    /// Deletes the days past retention on `today`.
    pub(crate) async fn prune(&self, today: Day) -> Result<u64, StatsError> {
        let history = self.clone();
        let keep_from = self.keep_from(today);
        self.blocking(move || Ok(history.0.store.prune(keep_from)?)).await
    }

    /// This data directory's origin id.
    pub(crate) fn origin(&self) -> replica::Origin {
        self.0.store.origin()
    }

    pub(crate) fn dropped(&self, reason: &'static str) {
        self.0.metrics.dropped.get_or_create(&[("reason", reason)]).inc();
    }

    pub(crate) fn peer_error(&self, operation: &'static str) {
        self.0
            .metrics
            .peer_errors
            .get_or_create(&[("operation", operation)])
            .inc();
    }

    async fn blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> Result<T, StatsError> + Send + 'static,
    ) -> Result<T, StatsError> {
        let answer = match tokio::task::spawn_blocking(read).await {
            Ok(answer) => answer,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(StatsError::Stopped),
        };
        if answer.is_err() {
            self.0.metrics.store_errors.inc();
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn open(dir: &std::path::Path) -> History {
        let config = HistoryConfig {
            data_dir: dir.to_path_buf(),
            ..HistoryConfig::default()
        };
        History::open(config, &mut Registry::default()).expect("open")
    }

    #[tokio::test]
    async fn ten_thousand_clients_are_ten_thousand_visitors_and_one_is_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let history = open(dir.path());
        let page = Topic::new("example.com/page").expect("valid");
        let other = Topic::new("example.org/").expect("valid");
        for i in 0..10_000u32 {
            let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i / 4));
            history.record_view(&page, client, &format!("Agent/{}", i % 4));
        }
        for _ in 0..50 {
            history.record_view(&other, IpAddr::V4(Ipv4Addr::LOCALHOST), "Firefox");
        }
        let flushed = history.flush().await.expect("flush");
        assert!(flushed.is_some());
        let stats = history.topic_stats(page, None, None).await.expect("stats");
        assert_eq!(stats.views, 10_000);
        assert!(
            (9_800..=10_200).contains(&stats.visitors),
            "{} visitors",
            stats.visitors
        );
        let site = history.list_stats(None, "example.org/".into(), 10).await.expect("list");
        assert_eq!((site.views, site.visitors), (50, 1));
    }
}
