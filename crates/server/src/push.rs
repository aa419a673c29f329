//! Pushing count changes to watchers (websocket sessions, gRPC streams and
//! live listings).
//!
//! One `watch` channel per watched topic holds its cluster-wide count, and
//! one per watched listing (prefix and limit) holds the listing. A single
//! task refreshes every watched topic and listing once per `--push-interval`
//! and only bumps a channel when its value changed, so a watcher is woken at
//! most once per interval and only for a change, idle watchers cost no
//! timer, and a thousand pages showing one site's total cost one listing a
//! round, not a thousand.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use headcount_counter::Topic;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    params::ListRequest,
    query::{Query, TopicList},
};

/// Distinct listings (prefix and limit) watched at once.
pub const MAX_LISTINGS: usize = 256;

/// Per-topic channels of cluster-wide counts.
///
/// Closing the hub (on shutdown) drops every sender: each watcher's
/// `changed()` then fails, which is how sessions learn that the node is
/// going away.
#[derive(Default)]
pub struct Hub {
    topics: DashMap<Topic, watch::Sender<u64>>,
    listings: DashMap<ListRequest, watch::Sender<Arc<TopicList>>>,
    closed: AtomicBool,
}

impl Hub {
    /// Watches `topic`; `current` seeds a channel the topic does not have yet.
    /// The returned receiver has seen the current value: it wakes on the next
    /// change only, or fails at once if the hub is closed.
    pub fn subscribe(&self, topic: &Topic, current: u64) -> watch::Receiver<u64> {
        let entry = self.topics.entry(topic.clone());
        // Checked under the entry's lock: `close` sets the flag before it
        // clears, so a channel is either cleared or never created.
        if self.closed.load(Ordering::SeqCst) {
            return watch::channel(current).1;
        }
        let mut receiver = entry.or_insert_with(|| watch::channel(current).0).subscribe();
        receiver.borrow_and_update();
        receiver
    }

    /// Watches a listing; a listing nobody watched yet is read from `query`
    /// now. The receiver's current value is the listing to send first.
    /// `None` when [`MAX_LISTINGS`] other listings are watched already: each
    /// costs a walk over every topic per round.
    pub fn subscribe_listing(&self, request: &ListRequest, query: &Query) -> Option<watch::Receiver<Arc<TopicList>>> {
        if self.listings.len() >= MAX_LISTINGS && !self.listings.contains_key(request) {
            return None;
        }
        let entry = self.listings.entry(request.clone());
        let current = || Arc::new(query.list(&request.prefix, request.limit));
        if self.closed.load(Ordering::SeqCst) {
            return Some(watch::channel(current()).1);
        }
        Some(entry.or_insert_with(|| watch::channel(current()).0).subscribe())
    }

    /// Ends every watch: current and future receivers see the channel closed.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.topics.clear();
        self.listings.clear();
    }

    /// Topics with at least one watcher channel.
    pub fn topics(&self) -> usize {
        self.topics.len()
    }

    /// Refreshes every watched topic and listing from `query`; forgets
    /// those nobody watches.
    pub fn refresh(&self, query: &Query) {
        self.listings.retain(|request, sender| {
            if sender.receiver_count() == 0 {
                return false;
            }
            let list = query.list(&request.prefix, request.limit);
            sender.send_if_modified(|current| {
                let changed = **current != list;
                if changed {
                    *current = Arc::new(list);
                }
                changed
            });
            true
        });
        self.topics.retain(|topic, sender| {
            if sender.receiver_count() == 0 {
                return false;
            }
            let count = query.count(topic).count;
            sender.send_if_modified(|current| {
                let changed = *current != count;
                *current = count;
                changed
            });
            true
        });
    }

    /// Refreshes every `interval` until `shutdown`.
    pub async fn run(&self, query: Query, interval: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => self.refresh(&query),
            }
        }
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headcount_cluster::ClusterView;
    use headcount_counter::CounterTable;
    use std::sync::Arc;

    fn setup() -> (Hub, Query, CounterTable) {
        let table = CounterTable::new(1, 10);
        let view = ClusterView::alone("a".into(), "127.0.0.1:1".parse().expect("addr"));
        let (_tx, rx) = watch::channel(Arc::new(view));
        (Hub::default(), Query::new(table.clone(), rx), table)
    }

    #[test]
    fn a_watcher_wakes_only_when_the_count_changed() {
        let (hub, query, table) = setup();
        let news = Topic::new("news").expect("valid");
        let mut watcher = hub.subscribe(&news, 0);
        hub.refresh(&query);
        assert!(!watcher.has_changed().expect("open"), "no change, no wake");
        let presence = table.join(&news).expect("room");
        hub.refresh(&query);
        assert!(watcher.has_changed().expect("open"));
        assert_eq!(*watcher.borrow_and_update(), 1);
        drop(presence);
        let _again = table.join(&news).expect("room");
        hub.refresh(&query);
        assert!(
            !watcher.has_changed().expect("open"),
            "1 -> 0 -> 1 between refreshes is no change"
        );
    }

    #[test]
    fn closing_ends_current_and_later_watchers() {
        let (hub, _query, _table) = setup();
        let news = Topic::new("news").expect("valid");
        let before = hub.subscribe(&news, 0);
        hub.close();
        let after = hub.subscribe(&news, 0);
        assert!(before.has_changed().is_err(), "an open watcher sees the close");
        assert!(
            after.has_changed().is_err(),
            "a watcher after the close is closed at once"
        );
        assert_eq!(hub.topics(), 0);
    }

    #[test]
    fn a_listing_watcher_wakes_only_when_the_listing_changed() {
        let (hub, query, table) = setup();
        let site = ListRequest {
            prefix: "site/".into(),
            limit: 0,
        };
        let mut watcher = hub.subscribe_listing(&site, &query).expect("room");
        assert_eq!(watcher.borrow_and_update().total, 0);
        let _elsewhere = table.join(&Topic::new("other/x").expect("valid")).expect("room");
        hub.refresh(&query);
        assert!(!watcher.has_changed().expect("open"), "a topic outside the prefix");
        let _here = table.join(&Topic::new("site/a").expect("valid")).expect("room");
        hub.refresh(&query);
        assert!(watcher.has_changed().expect("open"));
        assert_eq!(watcher.borrow_and_update().total, 1);
        hub.close();
        assert!(watcher.has_changed().is_err(), "closing ends listing watchers too");
    }

    #[test]
    fn distinct_listings_are_bounded() {
        let (hub, query, _table) = setup();
        let listing = |i: usize| ListRequest {
            prefix: format!("site-{i}/"),
            limit: 1,
        };
        let held: Vec<_> = (0..MAX_LISTINGS)
            .map(|i| hub.subscribe_listing(&listing(i), &query).expect("room"))
            .collect();
        assert!(hub.subscribe_listing(&listing(MAX_LISTINGS), &query).is_none());
        assert!(
            hub.subscribe_listing(&listing(0), &query).is_some(),
            "a watched one is shared"
        );
        drop(held);
        hub.refresh(&query);
        assert!(
            hub.subscribe_listing(&listing(MAX_LISTINGS), &query).is_some(),
            "room again"
        );
    }

    #[test]
    fn unwatched_topics_are_forgotten() {
        let (hub, query, _table) = setup();
        let watcher = hub.subscribe(&Topic::new("x").expect("valid"), 0);
        hub.refresh(&query);
        assert_eq!(hub.topics(), 1);
        drop(watcher);
        hub.refresh(&query);
        assert_eq!(hub.topics(), 0);
    }
}
