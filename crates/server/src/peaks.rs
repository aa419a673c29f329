//! Peaks for the visit history: the highest cluster-wide count of each topic
//! each day.
//!
//! Every second (the chart's step) one task reads the cluster-wide count of
//! every topic with connections on this node and hands the history only the
//! topics that rose above the highest count it already handed over today,
//! so a steady site costs the history nothing and a rising one a few entries
//! per flush. A topic's peak is recorded by the nodes that hold it (every
//! connection sits on one of them, and they all read the same cluster-wide
//! count), not by every node: peaks replicate like views, and recording
//! every topic everywhere would multiply that by the cluster size.

use std::collections::HashMap;

use headcount_counter::Topic;
use headcount_history::{Day, History};
use tokio_util::sync::CancellationToken;

use crate::{chart::every_step, query::Query};

/// The highest counts already handed over, for one day.
#[derive(Debug, Default)]
struct Seen {
    day: Option<Day>,
    highest: HashMap<Topic, u64>,
}

impl Seen {
    /// The counts of `counts` that beat what was seen on `day`.
    fn rises(&mut self, day: Day, counts: Vec<(Topic, u64)>) -> Vec<(Topic, u64)> {
        if self.day != Some(day) {
            self.day = Some(day);
            self.highest.clear();
        }
        let mut rises = Vec::new();
        for (topic, count) in counts {
            let highest = self.highest.entry(topic.clone()).or_default();
            if count > *highest {
                *highest = count;
                rises.push((topic, count));
            }
        }
        rises
    }
}

/// Samples counts every [`STEP`](crate::chart::STEP) and records rises in `history` until
/// `shutdown`.
pub(crate) async fn run(query: Query, history: History, shutdown: CancellationToken) {
    let mut seen = Seen::default();
    every_step(shutdown, || {
        for (topic, count) in seen.rises(Day::today(), query.local_topic_counts()) {
            history.record_count(&topic, count);
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> Vec<(Topic, u64)> {
        pairs
            .iter()
            .map(|(topic, count)| (Topic::new(topic).expect("valid"), *count))
            .collect()
    }

    #[test]
    fn only_rises_are_handed_over_and_a_new_day_starts_afresh() {
        let today = Day::parse("2026-11-30").expect("valid");
        let mut seen = Seen::default();
        assert_eq!(seen.rises(today, counts(&[("a", 3)])).len(), 1);
        assert!(seen.rises(today, counts(&[("a", 2)])).is_empty(), "a fall is no peak");
        assert!(seen.rises(today, counts(&[("a", 3)])).is_empty(), "nor a repeat");
        let rises = seen.rises(today, counts(&[("a", 5)]));
        assert_eq!(rises, [(Topic::new("a").expect("valid"), 5)]);
        assert_eq!(seen.rises(today.next(), counts(&[("a", 1)])).len(), 1, "a new day");
    }
}
