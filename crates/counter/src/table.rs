//! The local counting table: per topic, a cache-line-padded atomic slot on
//! each shard that has held a connection to it; a connection counts in the
//! slot of its shard. A slot is made on its shard's first join of the topic,
//! so a topic with one connection costs one slot, not one per shard.
//!
//! The join and leave of a connection touch only memory of their own shard:
//! the shard's own topic index (a `DashMap` that only that shard's threads
//! use), the shard's slot of the topic, the slot's `Arc` and the shard's
//! connection total. So joins and leaves on one hot topic from different
//! threads never contend on one atomic, lock or cache line. The shared
//! per-topic map is only taken on a shard's first join of a topic, to read
//! counts, and to reclaim a topic.
//!
//! Invariants:
//! - A slot's count is the number of live [`Presence`]s on it, so it is
//!   never below zero and a topic's count is the sum of its slots.
//! - Slots are made and reclaimed only under the shared map's write lock.
//!   Reclaiming a topic happens only if every slot it has can be swapped
//!   from 0 to `RETIRED`. A join through a shard
//!   index refuses a retired slot and takes the slow path, which waits for
//!   that lock; so no join ever lands on a reclaimed topic, and memory follows
//!   the live topics, not the topics ever seen.
//! - Each slot carries a `dirty` flag. The first change after a drain puts the
//!   slot on its shard's changed list; [`CounterTable::drain_changed`] clears
//!   the flag before it reads the count, so no change is lost between drains.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use ahash::RandomState;
use crossbeam_utils::CachePadded;
use dashmap::{DashMap, mapref::entry::Entry};

use crate::Topic;

/// Marks a slot of a topic being reclaimed; joins must not land on it.
const RETIRED: u64 = 1 << 63;

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
    topics: DashMap<Topic, TopicEntry, RandomState>,
    shards: Box<[Arc<Shard>]>,
    live_topics: AtomicUsize,
    max_topics: usize,
}

/// What one shard owns: its route to its slots, its connection total, and
/// its slots that changed since the last drain.
struct Shard {
    index: DashMap<Topic, Arc<Slot>, RandomState>,
    connections: CachePadded<AtomicU64>,
    changed: CachePadded<Mutex<Vec<Arc<Slot>>>>,
}

/// A topic's slots, by shard: none on a shard that never held it.
struct TopicEntry {
    slots: Box<[Option<Arc<Slot>>]>,
}

/// One shard's share of one topic.
struct Slot {
    hot: CachePadded<Hot>,
    topic: Topic,
    shard: usize,
    table: Weak<Inner>,
}

#[derive(Default)]
struct Hot {
    count: AtomicU64,
    dirty: AtomicBool,
}

impl Slot {
    /// Counts one more presence unless the slot is retired.
    fn try_increment(&self) -> bool {
        let mut current = self.hot.count.load(Ordering::SeqCst);
        loop {
            if current & RETIRED != 0 {
                return false;
            }
            match self
                .hot
                .count
                .compare_exchange_weak(current, current + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    fn count(&self) -> u64 {
        self.hot.count.load(Ordering::SeqCst) & !RETIRED
    }
}

impl TopicEntry {
    fn made(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.slots.iter().flatten()
    }

    fn total(&self) -> u64 {
        self.made().map(|slot| slot.count()).sum()
    }

    /// Retires every slot if all are zero; otherwise changes nothing.
    /// Called under the map's write lock.
    fn retire_if_empty(&self) -> bool {
        for (at, slot) in self.made().enumerate() {
            if slot
                .hot
                .count
                .compare_exchange(0, RETIRED, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                for retired in self.made().take(at) {
                    retired.hot.count.store(0, Ordering::SeqCst);
                }
                return false;
            }
        }
        true
    }
}

impl CounterTable {
    /// A table with `shards` stripes (at least one) that accepts at most
    /// `max_topics` distinct live topics.
    pub fn new(shards: usize, max_topics: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| {
                Arc::new(Shard {
                    index: DashMap::with_hasher(RandomState::new()),
                    connections: CachePadded::default(),
                    changed: CachePadded::default(),
                })
            })
            .collect();
        let inner = Inner {
            topics: DashMap::with_hasher(RandomState::new()),
            shards,
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
        let at = shard % self.shards();
        let shard = &self.inner.shards[at];
        if let Some(slot) = shard.index.get(topic.as_str())
            && slot.try_increment()
        {
            return Ok(Presence::counted(shard, Arc::clone(&slot)));
        }
        let slot = self.join_through_map(topic, at)?;
        shard.index.insert(topic.clone(), Arc::clone(&slot));
        Ok(Presence::counted(shard, slot))
    }

    /// The shard's first join of the topic, or its slot was retired: find or
    /// create the topic under the map's write lock and count there.
    fn join_through_map(&self, topic: &Topic, at: usize) -> Result<Arc<Slot>, JoinError> {
        let inner = &self.inner;
        match inner.topics.entry(topic.clone()) {
            Entry::Occupied(mut entry) => {
                // Under the write lock no slot of a mapped topic is retired.
                let slot = entry.get_mut().slots[at].get_or_insert_with(|| self.new_slot(topic, at));
                slot.hot.count.fetch_add(1, Ordering::SeqCst);
                Ok(Arc::clone(slot))
            }
            Entry::Vacant(vacant) => {
                if inner.live_topics.fetch_add(1, Ordering::SeqCst) >= inner.max_topics {
                    inner.live_topics.fetch_sub(1, Ordering::SeqCst);
                    return Err(JoinError::TooManyTopics {
                        limit: inner.max_topics,
                    });
                }
                let slot = self.new_slot(topic, at);
                slot.hot.count.fetch_add(1, Ordering::SeqCst);
                let mut slots: Box<[Option<Arc<Slot>>]> = (0..self.shards()).map(|_| None).collect();
                slots[at] = Some(Arc::clone(&slot));
                vacant.insert(TopicEntry { slots });
                Ok(slot)
            }
        }
    }

    /// A slot of `topic` on shard `at`, at 0.
    fn new_slot(&self, topic: &Topic, at: usize) -> Arc<Slot> {
        Arc::new(Slot {
            hot: CachePadded::default(),
            topic: topic.clone(),
            shard: at,
            table: Arc::downgrade(&self.inner),
        })
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
        for shard in &self.inner.shards {
            let changed = std::mem::take(&mut *shard.changed.lock().unwrap_or_else(PoisonError::into_inner));
            for slot in changed {
                slot.hot.dirty.store(false, Ordering::SeqCst);
                seen.insert(slot.topic.clone());
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

impl Shard {
    fn mark_changed(&self, slot: &Arc<Slot>) {
        let dirty = &slot.hot.dirty;
        if !dirty.load(Ordering::SeqCst) && !dirty.swap(true, Ordering::SeqCst) {
            self.changed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::clone(slot));
        }
    }
}

impl Inner {
    /// Removes the topic of `slot` if every slot is zero, then its routes.
    fn reclaim(&self, slot: &Arc<Slot>) {
        let removed = self.topics.remove_if(slot.topic.as_str(), |_, entry| {
            entry.slots[slot.shard]
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, slot))
                && entry.retire_if_empty()
        });
        let Some((topic, entry)) = removed else {
            return;
        };
        self.live_topics.fetch_sub(1, Ordering::SeqCst);
        for (shard, retired) in self.shards.iter().zip(entry.slots.iter()) {
            if let Some(retired) = retired {
                shard
                    .index
                    .remove_if(topic.as_str(), |_, routed| Arc::ptr_eq(routed, retired));
            }
        }
    }

    /// A burst of topics leaves the maps' capacity behind; give it back once
    /// the live topics are a small fraction of it.
    fn shrink_if_sparse(&self) {
        const SLACK: usize = 4096;
        if self.topics.capacity() > 4 * self.topics.len() + SLACK {
            self.topics.shrink_to_fit();
        }
        for shard in &self.shards {
            if shard.index.capacity() > 4 * shard.index.len() + SLACK {
                shard.index.shrink_to_fit();
            }
        }
    }
}

/// One counted presence on one topic. Dropping it uncounts it, whatever
/// path the connection took to its end.
#[must_use = "the presence is uncounted as soon as the guard is dropped"]
pub struct Presence {
    shard: Arc<Shard>,
    slot: Arc<Slot>,
}

impl Presence {
    /// Completes a join whose slot was already incremented.
    fn counted(shard: &Arc<Shard>, slot: Arc<Slot>) -> Self {
        shard.connections.fetch_add(1, Ordering::Relaxed);
        shard.mark_changed(&slot);
        Self {
            shard: Arc::clone(shard),
            slot,
        }
    }

    /// The topic this presence counts toward.
    pub fn topic(&self) -> &Topic {
        &self.slot.topic
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let before = self.slot.hot.count.fetch_sub(1, Ordering::SeqCst);
        self.shard.connections.fetch_sub(1, Ordering::Relaxed);
        self.shard.mark_changed(&self.slot);
        if before == 1
            && let Some(table) = self.slot.table.upgrade()
        {
            table.reclaim(&self.slot);
        }
    }
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("topic", &self.slot.topic)
            .field("shard", &self.slot.shard)
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
    fn a_topic_has_slots_only_on_the_shards_that_held_it() {
        let table = CounterTable::new(4, 100);
        let news = topic("news");
        let slots = |table: &CounterTable| table.inner.topics.get("news").map_or(0, |entry| entry.made().count());
        let first = table.join_on_shard(&news, 2).expect("room");
        assert_eq!(slots(&table), 1);
        let again = table.join_on_shard(&news, 2).expect("room");
        let other = table.join_on_shard(&news, 0).expect("room");
        assert_eq!((slots(&table), table.count("news")), (2, 3));
        drop((first, again));
        assert_eq!(table.count("news"), 1, "the other shard's presence still counts");
        drop(other);
        assert_eq!(
            (slots(&table), table.topics()),
            (0, 0),
            "reclaimed with every slot it had"
        );
        let back = table.join_on_shard(&news, 1).expect("room");
        assert_eq!((slots(&table), table.count("news")), (1, 1));
        drop(back);
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

    #[test]
    fn joins_racing_reclaims_always_land_on_the_live_topic() {
        let table = CounterTable::new(3, 100);
        let hot = topic("hot");
        std::thread::scope(|scope| {
            for shard in 0..3 {
                let (table, hot) = (&table, &hot);
                scope.spawn(move || {
                    for _ in 0..30_000 {
                        let presence = table.join_on_shard(hot, shard).expect("room");
                        // A join on a topic being reclaimed would be invisible here.
                        assert!(table.count("hot") >= 1, "a held presence is not counted");
                        drop(presence);
                    }
                });
            }
        });
        assert_eq!((table.count("hot"), table.topics(), table.connections()), (0, 0, 0));
        assert!(table.inner.shards.iter().all(|shard| shard.index.is_empty()));
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
