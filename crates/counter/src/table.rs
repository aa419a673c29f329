//! The local counting table: one entry per topic with live presences, each an
//! array of cache-line-padded atomic slots, one per shard.
//!
//! Invariants:
//! - A presence increments the slot of the shard it was created on and
//!   decrements that same slot on drop, so every slot is always `>= 0` and a
//!   topic's count is the sum of its slots.
//! - Increments only happen while the topic's map entry is held for reading;
//!   reclaiming an entry checks that every slot is zero while holding it for
//!   writing. So an entry is never removed while a join is landing on it, and a
//!   topic whose count returns to zero leaves the map: memory follows the live
//!   topics, not the topics ever seen.
//! - Each slot carries a `dirty` flag. The first change after a drain pushes the
//!   entry on its shard's changed list; [`CounterTable::drain_changed`] clears
//!   the flag before it reads the count, so a change is never lost between two
//!   drains.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use crossbeam_utils::CachePadded;
use dashmap::{DashMap, mapref::entry::Entry};

use crate::Topic;

/// Why a presence could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The topic is new and the table already holds its limit of topics.
    #[error("this node already counts {limit} topics")]
    TooManyTopics {
        /// The configured limit.
        limit: usize,
    },
}

/// Per-topic, per-node presence counts, striped over shards.
///
/// Cloning is cheap and shares the table.
#[derive(Clone)]
pub struct CounterTable {
    inner: Arc<Inner>,
}

struct Inner {
    topics: DashMap<Topic, Arc<TopicEntry>>,
    shards: Box<[CachePadded<ShardState>]>,
    live_topics: AtomicUsize,
    max_topics: usize,
}

/// What one shard owns outside the topic entries: its connection total and
/// the entries that changed on it since the last drain.
#[derive(Default)]
struct ShardState {
    connections: AtomicU64,
    changed: Mutex<Vec<Arc<TopicEntry>>>,
}

struct TopicEntry {
    topic: Topic,
    slots: Box<[CachePadded<Slot>]>,
}

#[derive(Default)]
struct Slot {
    count: AtomicU64,
    dirty: AtomicBool,
}

impl TopicEntry {
    fn new(topic: Topic, shards: usize) -> Self {
        let slots = (0..shards).map(|_| CachePadded::default()).collect();
        Self { topic, slots }
    }

    fn total(&self) -> u64 {
        self.slots.iter().map(|slot| slot.count.load(Ordering::SeqCst)).sum()
    }
}

impl CounterTable {
    /// A table with `shards` stripes (at least one) that accepts at most
    /// `max_topics` distinct live topics.
    pub fn new(shards: usize, max_topics: usize) -> Self {
        let shards = shards.max(1);
        let inner = Inner {
            topics: DashMap::new(),
            shards: (0..shards).map(|_| CachePadded::default()).collect(),
            live_topics: AtomicUsize::new(0),
            max_topics,
        };
        Self { inner: Arc::new(inner) }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inner.shards.len()
    }

    /// Counts one presence on `topic` until the returned guard is dropped.
    ///
    /// The shard is chosen from the calling thread, so presences created on
    /// different worker threads touch different cache lines.
    pub fn join(&self, topic: &Topic) -> Result<Presence, JoinError> {
        self.join_on_shard(topic, current_thread_shard(self.shards()))
    }

    /// Like [`CounterTable::join`] with an explicit shard (taken modulo the
    /// number of shards).
    pub fn join_on_shard(&self, topic: &Topic, shard: usize) -> Result<Presence, JoinError> {
        let shard = shard % self.shards();
        let inner = &self.inner;
        // Fast path: the topic exists. The increment happens under the read
        // guard so a concurrent reclaim cannot remove the entry under us.
        if let Some(entry) = inner.topics.get(topic.as_str()) {
            return Ok(self.increment(entry.value(), shard));
        }
        match inner.topics.entry(topic.clone()) {
            Entry::Occupied(entry) => Ok(self.increment(entry.get(), shard)),
            Entry::Vacant(vacant) => {
                if inner.live_topics.fetch_add(1, Ordering::SeqCst) >= inner.max_topics {
                    inner.live_topics.fetch_sub(1, Ordering::SeqCst);
                    return Err(JoinError::TooManyTopics {
                        limit: inner.max_topics,
                    });
                }
                let entry = Arc::new(TopicEntry::new(topic.clone(), self.shards()));
                let presence = self.increment(&entry, shard);
                vacant.insert(entry);
                Ok(presence)
            }
        }
    }

    fn increment(&self, entry: &Arc<TopicEntry>, shard: usize) -> Presence {
        entry.slots[shard].count.fetch_add(1, Ordering::SeqCst);
        self.inner.shards[shard].connections.fetch_add(1, Ordering::Relaxed);
        self.inner.mark_changed(entry, shard);
        Presence {
            table: Arc::clone(&self.inner),
            entry: Arc::clone(entry),
            shard,
        }
    }

    /// Whether a join on `topic` would pass the topic limit right now.
    pub fn has_room_for(&self, topic: &Topic) -> bool {
        self.inner.live_topics.load(Ordering::SeqCst) < self.inner.max_topics
            || self.inner.topics.contains_key(topic.as_str())
    }

    /// This node's live count for `topic` (0 when unknown).
    pub fn count(&self, topic: &str) -> u64 {
        self.inner.topics.get(topic).map_or(0, |entry| entry.total())
    }

    /// Number of topics with at least one live presence.
    pub fn topics(&self) -> usize {
        self.inner.live_topics.load(Ordering::SeqCst)
    }

    /// Number of live presences over all topics.
    pub fn connections(&self) -> u64 {
        self.inner
            .shards
            .iter()
            .map(|shard| shard.connections.load(Ordering::Relaxed))
            .sum()
    }

    /// Every live topic with its count.
    pub fn snapshot(&self) -> Vec<(Topic, u64)> {
        let mut counts = Vec::with_capacity(self.topics());
        for entry in self.inner.topics.iter() {
            let count = entry.total();
            if count > 0 {
                counts.push((entry.key().clone(), count));
            }
        }
        counts
    }

    /// The topics whose count changed since the previous call, with their
    /// current count (0 for a topic that is gone). Each topic appears once.
    pub fn drain_changed(&self) -> Vec<(Topic, u64)> {
        let mut seen = HashSet::new();
        for (index, shard) in self.inner.shards.iter().enumerate() {
            let changed = std::mem::take(&mut *shard.changed.lock().unwrap_or_else(PoisonError::into_inner));
            for entry in changed {
                entry.slots[index].dirty.store(false, Ordering::SeqCst);
                seen.insert(entry.topic.clone());
            }
        }
        self.inner.shrink_if_sparse();
        seen.into_iter()
            .map(|topic| {
                let count = self.count(&topic);
                (topic, count)
            })
            .collect()
    }
}

impl Inner {
    fn mark_changed(&self, entry: &Arc<TopicEntry>, shard: usize) {
        let dirty = &entry.slots[shard].dirty;
        if !dirty.load(Ordering::SeqCst) && !dirty.swap(true, Ordering::SeqCst) {
            self.shards[shard]
                .changed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::clone(entry));
        }
    }

    fn leave(&self, entry: &Arc<TopicEntry>, shard: usize) {
        let before = entry.slots[shard].count.fetch_sub(1, Ordering::SeqCst);
        self.shards[shard].connections.fetch_sub(1, Ordering::Relaxed);
        self.mark_changed(entry, shard);
        if before == 1 && entry.total() == 0 {
            self.reclaim(entry);
        }
    }

    fn reclaim(&self, entry: &Arc<TopicEntry>) {
        let removed = self.topics.remove_if(entry.topic.as_str(), |_, current| {
            Arc::ptr_eq(current, entry) && current.total() == 0
        });
        if removed.is_some() {
            self.live_topics.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A burst of topics leaves the map's capacity behind; give it back once
    /// the live topics are a small fraction of it.
    fn shrink_if_sparse(&self) {
        const SLACK: usize = 4096;
        if self.topics.capacity() > 4 * self.topics.len() + SLACK {
            self.topics.shrink_to_fit();
        }
    }
}

/// One counted presence on one topic. Dropping it uncounts it, whatever
/// path the connection took to its end.
#[must_use = "the presence is uncounted as soon as the guard is dropped"]
pub struct Presence {
    table: Arc<Inner>,
    entry: Arc<TopicEntry>,
    shard: usize,
}

impl Presence {
    /// The topic this presence counts toward.
    pub fn topic(&self) -> &Topic {
        &self.entry.topic
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.table.leave(&self.entry, self.shard);
    }
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("topic", &self.entry.topic)
            .field("shard", &self.shard)
            .finish()
    }
}

/// Gives every thread a stable index, handed out round-robin, so that the
/// worker threads of a runtime land on distinct shards.
fn current_thread_shard(shards: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|index| index % shards)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn topic(name: &str) -> Topic {
        Topic::new(name).expect("valid topic")
    }

    #[test]
    fn presences_count_until_dropped() {
        let table = CounterTable::new(4, 100);
        let news = topic("news");
        let a = table.join_on_shard(&news, 0).expect("room");
        let b = table.join_on_shard(&news, 3).expect("room");
        assert_eq!((table.count("news"), table.connections(), table.topics()), (2, 2, 1));
        drop(a);
        assert_eq!(table.count("news"), 1);
        drop(b);
        assert_eq!((table.count("news"), table.connections(), table.topics()), (0, 0, 0));
    }

    #[test]
    fn a_topic_at_zero_is_reclaimed() {
        let table = CounterTable::new(2, 1_000);
        for i in 0..50_000 {
            let presence = table.join(&topic(&format!("page-{i}"))).expect("room");
            drop(presence);
            if i % 1_000 == 0 {
                table.drain_changed();
            }
        }
        table.drain_changed();
        assert_eq!(table.topics(), 0);
        assert_eq!(table.inner.topics.len(), 0);
        assert!(
            table.inner.topics.capacity() < 10_000,
            "capacity {}",
            table.inner.topics.capacity()
        );
        for shard in table.inner.shards.iter() {
            assert!(shard.changed.lock().expect("lock").is_empty());
        }
    }

    #[test]
    fn the_topic_limit_refuses_new_topics_only() {
        let table = CounterTable::new(1, 2);
        let _a = table.join(&topic("a")).expect("room");
        let _b = table.join(&topic("b")).expect("room");
        assert_eq!(
            table.join(&topic("c")).err(),
            Some(JoinError::TooManyTopics { limit: 2 })
        );
        assert!(!table.has_room_for(&topic("c")));
        assert!(table.has_room_for(&topic("a")));
        let _a2 = table.join(&topic("a")).expect("existing topic joins");
        drop(_b);
        assert!(table.join(&topic("c")).is_ok());
    }

    #[test]
    fn drain_lists_each_changed_topic_once_with_its_current_count() {
        let table = CounterTable::new(2, 100);
        let a = table.join_on_shard(&topic("a"), 0).expect("room");
        let _a2 = table.join_on_shard(&topic("a"), 1).expect("room");
        let b = table.join_on_shard(&topic("b"), 1).expect("room");
        let mut first = table.drain_changed();
        first.sort();
        assert_eq!(first, vec![(topic("a"), 2), (topic("b"), 1)]);
        assert!(table.drain_changed().is_empty(), "nothing changed since");
        drop(a);
        drop(b);
        let mut second = table.drain_changed();
        second.sort();
        assert_eq!(second, vec![(topic("a"), 1), (topic("b"), 0)]);
    }

    #[test]
    fn a_change_between_drains_is_never_lost() {
        let table = CounterTable::new(2, 100);
        let news = topic("news");
        let mut held = Vec::new();
        let mut last_drained = 0;
        for round in 0..100 {
            if round % 3 == 0 {
                held.pop();
            } else {
                held.push(table.join_on_shard(&news, round).expect("room"));
            }
            for (_, count) in table.drain_changed() {
                last_drained = count;
            }
            assert_eq!(last_drained, held.len() as u64);
        }
    }

    #[test]
    fn threads_joining_and_leaving_on_one_topic_end_at_the_exact_count() {
        let table = CounterTable::new(4, 100);
        let news = topic("news");
        let held: Vec<Vec<Presence>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let mut held = Vec::new();
                        for i in 0..20_000 {
                            if i % 3 == 2 {
                                held.pop();
                            } else {
                                held.push(table.join(&news).expect("room"));
                            }
                        }
                        held
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("thread")).collect()
        });
        let expected: usize = held.iter().map(Vec::len).sum();
        assert_eq!(table.count("news"), expected as u64);
        drop(held);
        assert_eq!((table.count("news"), table.topics()), (0, 0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join { topic: u8, shard: u8 },
        Leave { pick: u16 },
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            (0u8..4, 0u8..8).prop_map(|(topic, shard)| Op::Join { topic, shard }),
            any::<u16>().prop_map(|pick| Op::Leave { pick }),
        ];
        proptest::collection::vec(op, 0..200)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any interleaving of joins and leaves from several threads ends at
        /// the exact count: each thread replays its own script and keeps what
        /// it holds; the table must match the expected totals.
        #[test]
        fn any_interleaving_ends_at_the_exact_count(scripts in proptest::collection::vec(ops(), 1..4)) {
            let table = CounterTable::new(3, 1_000);
            let topics: Vec<Topic> = (0..4).map(|i| topic(&format!("t{i}"))).collect();
            let held: Vec<Vec<Presence>> = std::thread::scope(|scope| {
                let handles: Vec<_> = scripts.iter().map(|script| {
                    let (table, topics) = (&table, &topics);
                    scope.spawn(move || {
                        let mut held: Vec<Presence> = Vec::new();
                        for op in script {
                            match *op {
                                Op::Join { topic, shard } => held.push(
                                    table.join_on_shard(&topics[topic as usize], shard as usize).expect("room"),
                                ),
                                Op::Leave { pick } if !held.is_empty() => {
                                    let at = pick as usize % held.len();
                                    drop(held.swap_remove(at));
                                }
                                Op::Leave { .. } => {}
                            }
                        }
                        held
                    })
                }).collect();
                handles.into_iter().map(|h| h.join().expect("thread")).collect()
            });
            let mut expected: HashMap<&str, u64> = HashMap::new();
            for presence in held.iter().flatten() {
                *expected.entry(presence.topic().as_str()).or_default() += 1;
            }
            for t in &topics {
                prop_assert_eq!(table.count(t), expected.get(t.as_str()).copied().unwrap_or(0));
            }
            prop_assert_eq!(table.connections(), expected.values().sum::<u64>());
            prop_assert_eq!(table.topics(), expected.len());
            let mut drained: HashMap<Topic, u64> = table.drain_changed().into_iter().collect();
            drained.retain(|_, count| *count > 0);
            prop_assert_eq!(drained.len(), expected.len());
            drop(held);
            prop_assert_eq!((table.connections(), table.topics()), (0, 0));
        }
    }
}
