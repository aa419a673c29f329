//! What this node counted since its last flush, in memory.
//!
//! The websocket join path writes here and nowhere else: a view adds one to
//! its (day, topic) and the visitor key goes into that day's sketch of the
//! topic. A site's visitors are the union of its topics' sketches (the key
//! does not depend on the path), so they are derived when flushed or read,
//! not kept here. Entries live in a [`DashMap`], so joins on different
//! topics do not wait for each other; the flush swaps the whole tally out
//! under a write lock held only for the swap.

use std::{
    collections::BTreeMap,
    mem,
    sync::{PoisonError, RwLock},
};

use dashmap::DashMap;
use headcount_counter::Topic;
use prometheus_client::metrics::gauge::Gauge;

use crate::{day::Day, sketch::Visitors};

/// This node's counting of one topic on one day since the last flush.
#[derive(Debug, Clone, Default)]
pub struct TopicTally {
    /// Views taken.
    pub views: u64,
    /// Highest cluster-wide count seen.
    pub peak: u64,
    /// Visitors of the views taken.
    pub visitors: Visitors,
}

/// Everything counted since the last flush.
#[derive(Debug, Default)]
pub struct Pending {
    /// Per (day, topic).
    pub topics: DashMap<(Day, Topic), TopicTally>,
}

impl Pending {
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// The visitors of every (day, site) counted, each the union of its
    /// topics' sketches.
    pub fn sites(&self) -> BTreeMap<(Day, String), Visitors> {
        let mut by_site: BTreeMap<(Day, String), Vec<Visitors>> = BTreeMap::new();
        for entry in self.topics.iter().filter(|entry| !entry.visitors.is_empty()) {
            let (day, topic) = entry.key();
            by_site
                .entry((*day, site_of(topic).to_owned()))
                .or_default()
                .push(entry.visitors.clone());
        }
        by_site
            .into_iter()
            .map(|(key, sketches)| (key, Visitors::union(&sketches)))
            .collect()
    }
}

/// The site a topic belongs to: its first path segment (`example.com` for
/// `example.com/blog/post-1`).
pub fn site_of(topic: &str) -> &str {
    topic.split('/').next().unwrap_or(topic)
}

/// The tally the join path writes to, and how many views are not on disk
/// yet (a gauge in `/metrics`, lowered once a flush wrote them).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pending: RwLock<Pending>,
    views: Gauge,
}

impl Tally {
    /// A tally that reports its views on `views`.
    pub(crate) fn new(views: Gauge) -> Self {
        Self {
            pending: RwLock::default(),
            views,
        }
    }

    /// Counts a view of `topic` on `day` by the visitor keyed `key`.
    pub(crate) fn view(&self, day: Day, topic: &Topic, key: u64) {
        let pending = self.pending.read().unwrap_or_else(PoisonError::into_inner);
        self.views.inc();
        let mut entry = pending.topics.entry((day, topic.clone())).or_default();
        entry.views = entry.views.saturating_add(1);
        entry.visitors.insert(key);
    }

    /// Records that `topic` was seen at `count` cluster-wide on `day`.
    pub(crate) fn peak(&self, day: Day, topic: &Topic, count: u64) {
        let pending = self.pending.read().unwrap_or_else(PoisonError::into_inner);
        let mut entry = pending.topics.entry((day, topic.clone())).or_default();
        entry.peak = entry.peak.max(count);
    }

    /// Takes everything counted so far, leaving an empty tally.
    pub(crate) fn take(&self) -> Pending {
        mem::take(&mut *self.pending.write().unwrap_or_else(PoisonError::into_inner))
    }

    /// Marks `written`'s views as on disk (or lost: a failed flush).
    pub(crate) fn written(&self, written: &Pending) {
        let views = written
            .topics
            .iter()
            .fold(0u64, |sum, entry| sum.saturating_add(entry.views));
        self.views.dec_by(i64::try_from(views).unwrap_or(i64::MAX));
    }

    /// Reads the tally without taking it.
    pub(crate) fn read<T>(&self, read: impl FnOnce(&Pending) -> T) -> T {
        read(&self.pending.read().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::new(name).expect("valid")
    }

    #[test]
    fn sites_are_first_path_segments() {
        assert_eq!(site_of("example.com/blog/post-1"), "example.com");
        assert_eq!(site_of("example.com"), "example.com");
        assert_eq!(site_of("/blog"), "");
    }

    #[test]
    fn views_and_peaks_accumulate_until_taken() {
        let tally = Tally::new(Gauge::default());
        let day = Day::parse("2026-11-30").expect("valid");
        let post = topic("example.com/post");
        tally.view(day, &post, 1);
        tally.view(day, &post, 1);
        tally.view(day, &topic("example.com/about"), 2);
        tally.peak(day, &post, 5);
        tally.peak(day, &post, 3);
        assert_eq!(tally.views.get(), 3, "views waiting for a flush");
        let pending = tally.take();
        assert_eq!(tally.views.get(), 3, "taken is not written");
        tally.written(&pending);
        assert_eq!(tally.views.get(), 0);
        let entry = pending.topics.get(&(day, post)).expect("counted");
        assert_eq!((entry.views, entry.peak, entry.visitors.estimate()), (2, 5, 1));
        let sites = pending.sites();
        let site = sites.get(&(day, "example.com".to_owned())).expect("site");
        assert_eq!(site.estimate(), 2, "visitors 1 and 2 over the site's two pages");
        assert!(tally.take().is_empty(), "taking empties the tally");
    }
}
