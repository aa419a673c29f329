//! The one query layer: HTTP, websocket and gRPC all read counts here, so no
//! counting rule is written twice. It only reads: joins go to the counting
//! table itself.
//!
//! A topic's cluster-wide count is this node's live local count plus the sum
//! of the latest counts of the other live nodes, taken from the newest
//! cluster view snapshot.

use std::{
    cmp::Reverse,
    sync::Arc,
    time::{Duration, Instant},
};

use headcount_cluster::{ClusterView, MemberState};
use headcount_counter::{CounterTable, Topic};
use serde::Serialize;
use tokio::sync::{Semaphore, watch};

/// A topic's count as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicCount {
    /// The topic.
    pub topic: String,
    /// Cluster-wide count.
    pub count: u64,
    /// This node's own count.
    pub local: u64,
    /// Live nodes the count includes, this one too.
    pub nodes: u32,
}

/// One row of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicTotal {
    /// The topic.
    pub topic: String,
    /// Cluster-wide count.
    pub count: u64,
}

/// Topics matching a prefix, biggest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicList {
    /// Cluster-wide sum over every matching topic, listed or not.
    pub total: u64,
    /// The biggest `limit` matching topics; ties by topic.
    pub topics: Vec<TopicTotal>,
}

/// One member in a cluster listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// Gossip address.
    pub addr: String,
    /// SWIM's verdict; each edge spells it its own way.
    #[serde(skip)]
    pub state: MemberState,
    /// Connections counted on the member.
    pub connections: u64,
    /// Topics with live connections on the member.
    pub topics: u64,
    /// Milliseconds since its counts were last heard (0 for this node).
    pub last_update_ms: u64,
    /// Alive for SWIM but its count gossip stopped arriving.
    pub stale: bool,
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Members {
    /// This node's name.
    #[serde(rename = "self")]
    pub self_name: String,
    /// This node first, then the others by name.
    pub members: Vec<Member>,
}

/// Listings computed at once for requests (`/counts`, `ListTopics`): each
/// walks every topic, so a flood of them may take one core, never all.
const LISTING_SLOTS: usize = 1;
/// How long a listing request waits for a slot before it is turned away.
const LISTING_WAIT: Duration = Duration::from_secs(2);

/// Every listing slot stayed busy for [`LISTING_WAIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many listings at once; try again")]
pub struct ListingBusy;

/// Reads counts for every API.
#[derive(Clone)]
pub struct Query {
    table: CounterTable,
    view: watch::Receiver<Arc<ClusterView>>,
    listing_slots: Arc<Semaphore>,
}

impl Query {
    /// Reads `table` (local) and the views published on `view` (remote).
    pub fn new(table: CounterTable, view: watch::Receiver<Arc<ClusterView>>) -> Self {
        Self {
            table,
            view,
            listing_slots: Arc::new(Semaphore::new(LISTING_SLOTS)),
        }
    }

    /// [`Query::list`] for a request: on a blocking thread, one at a time,
    /// so listings never starve websocket joins and count reads.
    pub async fn list_for_request(&self, prefix: &str, limit: usize) -> Result<TopicList, ListingBusy> {
        let slot = tokio::time::timeout(LISTING_WAIT, Arc::clone(&self.listing_slots).acquire_owned())
            .await
            .map_err(|_| ListingBusy)?
            .map_err(|_| ListingBusy)?;
        let (query, prefix) = (self.clone(), prefix.to_owned());
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            query.list(&prefix, limit)
        })
        .await
        .map_err(|_| ListingBusy)
    }

    /// The newest cluster view.
    pub fn view(&self) -> Arc<ClusterView> {
        Arc::clone(&self.view.borrow())
    }

    /// A topic's cluster-wide and local counts.
    pub fn count(&self, topic: &Topic) -> TopicCount {
        let view = self.view();
        let local = self.table.count(topic);
        TopicCount {
            topic: topic.to_string(),
            count: local.saturating_add(view.remote_count(topic)),
            local,
            nodes: nodes(&view),
        }
    }

    /// Connections across the cluster, every topic together.
    pub fn total(&self) -> u64 {
        self.table
            .connections()
            .saturating_add(self.view().remote_connections())
    }

    /// Topics starting with `prefix`, biggest first, at most `limit`.
    pub fn list(&self, prefix: &str, limit: usize) -> TopicList {
        let counts = self.counts(prefix);
        let total = counts.values().fold(0u64, |sum, count| sum.saturating_add(*count));
        let mut topics: Vec<(Topic, u64)> = counts.into_iter().collect();
        let limit = limit.min(topics.len());
        let by_count = |a: &(Topic, u64), b: &(Topic, u64)| (Reverse(a.1), &a.0).cmp(&(Reverse(b.1), &b.0));
        if limit < topics.len() {
            topics.select_nth_unstable_by(limit, by_count);
            topics.truncate(limit);
        }
        topics.sort_unstable_by(by_count);
        let topics = topics
            .into_iter()
            .map(|(topic, count)| TopicTotal {
                topic: topic.to_string(),
                count,
            })
            .collect();
        TopicList { total, topics }
    }

    /// The cluster-wide count of every topic under `prefix` with one.
    pub fn counts(&self, prefix: &str) -> std::collections::HashMap<Topic, u64> {
        let view = self.view();
        let mut counts: std::collections::HashMap<Topic, u64> = view
            .remote_counts()
            .filter(|(topic, _)| topic.starts_with(prefix))
            .map(|(t, c)| (t.clone(), c))
            .collect();
        for (topic, local) in self.table.snapshot() {
            if topic.starts_with(prefix) {
                let count = counts.entry(topic).or_default();
                *count = count.saturating_add(local);
            }
        }
        counts
    }

    /// The cluster-wide count of every topic with connections on this node.
    pub fn local_topic_counts(&self) -> Vec<(Topic, u64)> {
        let view = self.view();
        self.table
            .snapshot()
            .into_iter()
            .map(|(topic, local)| {
                let count = local.saturating_add(view.remote_count(&topic));
                (topic, count)
            })
            .collect()
    }

    /// Every member, this node first.
    pub fn members(&self) -> Members {
        let view = self.view();
        let now = Instant::now();
        let own = Member {
            name: view.self_name.clone(),
            addr: view.self_addr.to_string(),
            state: MemberState::Alive,
            connections: self.table.connections(),
            topics: self.table.topics() as u64,
            last_update_ms: 0,
            stale: false,
        };
        let mut others: Vec<Member> = view
            .members
            .iter()
            .map(|member| Member {
                name: member.name.clone(),
                addr: member.addr.to_string(),
                state: member.state,
                connections: member.connections,
                topics: member.topics,
                last_update_ms: member.last_heard.map_or(0, |heard| {
                    u64::try_from(now.duration_since(heard).as_millis()).unwrap_or(u64::MAX)
                }),
                stale: member.stale,
            })
            .collect();
        others.sort_by(|a, b| (&a.name, &a.addr).cmp(&(&b.name, &b.addr)));
        let mut members = vec![own];
        members.extend(others);
        Members {
            self_name: view.self_name.clone(),
            members,
        }
    }

    /// Live nodes whose counts are included, this one too.
    pub fn count_nodes(&self) -> u32 {
        nodes(&self.view.borrow())
    }

    /// Whether this node has joined a cluster (has a live peer).
    pub fn joined(&self) -> bool {
        self.view.borrow().joined
    }
}

fn nodes(view: &ClusterView) -> u32 {
    u32::try_from(view.live_remote_nodes() + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::new(name).expect("valid")
    }

    fn query_with(local: &[(&str, usize)]) -> (Query, Vec<headcount_counter::Presence>) {
        let table = CounterTable::new(2, 100);
        let mut held = Vec::new();
        for (name, n) in local {
            for _ in 0..*n {
                held.push(table.join(&topic(name)).expect("room"));
            }
        }
        let view = ClusterView::alone("a".into(), "127.0.0.1:7946".parse().expect("addr"));
        let (_tx, rx) = watch::channel(Arc::new(view));
        (Query::new(table, rx), held)
    }

    #[test]
    fn count_of_an_unknown_topic_is_zero_with_this_node_included() {
        let (query, _held) = query_with(&[]);
        assert_eq!(
            query.count(&topic("nope")),
            TopicCount {
                topic: "nope".into(),
                count: 0,
                local: 0,
                nodes: 1
            }
        );
    }

    #[test]
    fn listing_sorts_by_count_then_topic_and_totals_every_match() {
        let (query, _held) = query_with(&[("blog/a", 2), ("blog/b", 5), ("blog/c", 2), ("news", 9)]);
        let list = query.list("blog/", 2);
        assert_eq!(list.total, 9);
        let names: Vec<_> = list.topics.iter().map(|t| (t.topic.as_str(), t.count)).collect();
        assert_eq!(names, vec![("blog/b", 5), ("blog/a", 2)]);
        assert_eq!(query.list("", 100).total, 18);
        assert_eq!(query.list("", 100).topics.len(), 4);
        assert_eq!(
            query.list("zzz", 100),
            TopicList {
                total: 0,
                topics: vec![]
            }
        );
    }

    /// A flood of listings (each walks every topic) runs one at a time:
    /// while one runs (here: its slot is held), the others wait at most
    /// [`LISTING_WAIT`] and are turned away, instead of all walking the
    /// topics at once as before. Time is paused, so the wait passes at once.
    #[tokio::test(start_paused = true)]
    async fn while_a_listing_runs_others_wait_then_are_turned_away() {
        let (query, _held) = query_with(&[("blog/a", 2), ("news", 1)]);
        let running = Arc::clone(&query.listing_slots)
            .acquire_many_owned(u32::try_from(LISTING_SLOTS).expect("few slots"))
            .await
            .expect("open");
        let started = tokio::time::Instant::now();
        let flood: Vec<_> = (0..16)
            .map(|_| {
                let query = query.clone();
                tokio::spawn(async move { query.list_for_request("", 10).await })
            })
            .collect();
        for request in flood {
            assert_eq!(request.await.expect("the request task ends"), Err(ListingBusy));
        }
        assert_eq!(
            started.elapsed(),
            LISTING_WAIT,
            "turned away after the wait, not before"
        );
        drop(running);
        let list = query.list_for_request("", 10).await.expect("a free slot");
        assert_eq!(list.total, 3);
    }

    #[test]
    fn members_list_this_node_first() {
        let (query, _held) = query_with(&[("x", 3)]);
        let members = query.members();
        assert_eq!(members.self_name, "a");
        assert_eq!(members.members[0].connections, 3);
        assert_eq!(members.members[0].state, MemberState::Alive);
    }
}
