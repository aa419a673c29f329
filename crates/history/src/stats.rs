//! The answers of `/stats`: what the store holds, plus what this node
//! counted since its last flush, so a view shows up on the node that took it
//! at once and on the others after the next flush reaches them.

use std::collections::BTreeMap;

use headcount_counter::Topic;
use serde::Serialize;

use crate::{day::Day, sketch::Visitors, store::DayTotals, tally::Pending};

/// Most days one `/stats/{topic}` range may span.
pub const MAX_RANGE_DAYS: u32 = 400;
/// Days `/stats/{topic}` covers without `from`: the last 30 up to today.
pub const DEFAULT_RANGE_DAYS: u32 = 30;

/// A topic over a range of days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicStats {
    /// The topic.
    pub topic: String,
    /// First day, `YYYY-MM-DD`.
    pub from: String,
    /// Last day, `YYYY-MM-DD`.
    pub to: String,
    /// Views over the range.
    pub views: u64,
    /// Distinct visitors over the range (the union, not the sum of days).
    pub visitors: u64,
    /// Highest cluster-wide count over the range.
    pub peak: u64,
    /// Every day of the range, oldest first.
    pub days: Vec<DayStats>,
}

/// One day of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayStats {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Views that day.
    pub views: u64,
    /// Distinct visitors that day.
    pub visitors: u64,
    /// Highest cluster-wide count that day.
    pub peak: u64,
}

/// The topics under a prefix on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsList {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Views over every matching topic.
    pub views: u64,
    /// Distinct visitors over every matching topic.
    pub visitors: u64,
    /// Most views first, ties by topic; at most the limit asked for.
    pub topics: Vec<TopicDayStats>,
}

/// One topic on one day, in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicDayStats {
    /// The topic.
    pub topic: String,
    /// Views that day.
    pub views: u64,
    /// Distinct visitors that day.
    pub visitors: u64,
    /// Highest cluster-wide count that day.
    pub peak: u64,
}

/// Adds what `pending` holds for (`day`, `topic`) to `totals`.
fn overlay(totals: &mut DayTotals, pending: &Pending, day: Day, topic: &str) {
    let Ok(topic) = Topic::new(topic) else {
        return;
    };
    if let Some(tally) = pending.topics.get(&(day, topic)) {
        totals.views = totals.views.saturating_add(tally.views);
        totals.peak = totals.peak.max(tally.peak);
        totals.visitors.merge(&tally.visitors);
    }
}

/// A topic's range from stored days plus the pending tally.
pub(crate) fn topic_stats(
    topic: &str,
    first: Day,
    last: Day,
    mut stored: BTreeMap<Day, DayTotals>,
    pending: &Pending,
) -> TopicStats {
    let mut days = Vec::new();
    let (mut views, mut peak) = (0u64, 0u64);
    let mut sketches = Vec::new();
    for day in first.through(last) {
        let mut totals = stored.remove(&day).unwrap_or_default();
        overlay(&mut totals, pending, day, topic);
        views = views.saturating_add(totals.views);
        peak = peak.max(totals.peak);
        days.push(DayStats {
            date: day.to_string(),
            views: totals.views,
            visitors: totals.visitors.estimate(),
            peak: totals.peak,
        });
        sketches.push(totals.visitors);
    }
    TopicStats {
        topic: topic.to_owned(),
        from: first.to_string(),
        to: last.to_string(),
        views,
        visitors: Visitors::union(&sketches).estimate(),
        peak,
        days,
    }
}

/// Which sketches hold the visitors of a whole prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrefixSites<'a> {
    /// The empty prefix: every site.
    All,
    /// `example.com/`: that site.
    One(&'a str),
    /// Anything else: the matching topics, united.
    None,
}

impl<'a> PrefixSites<'a> {
    /// The sites `prefix` covers whole.
    pub(crate) fn of(prefix: &'a str) -> Self {
        if prefix.is_empty() {
            return Self::All;
        }
        match prefix.strip_suffix('/') {
            Some(site) if !site.is_empty() && !site.contains('/') => Self::One(site),
            _ => Self::None,
        }
    }

    /// Whether `site` is one of them.
    pub(crate) fn covers(self, site: &str) -> bool {
        match self {
            Self::All => true,
            Self::One(one) => one == site,
            Self::None => false,
        }
    }
}

/// A day's listing from stored topics plus the pending tally. `sites` is
/// the stored visitors of the sites the prefix covers whole, if it does.
pub(crate) fn list_stats(
    day: Day,
    prefix: &str,
    limit: usize,
    mut stored: BTreeMap<String, DayTotals>,
    sites: Option<Visitors>,
    pending: &Pending,
) -> StatsList {
    for entry in pending.topics.iter() {
        let (tally_day, topic) = entry.key();
        if *tally_day == day && topic.starts_with(prefix) && !stored.contains_key(topic.as_str()) {
            stored.insert(topic.to_string(), DayTotals::default());
        }
    }
    let mut topics: Vec<(String, DayTotals)> = stored
        .into_iter()
        .map(|(topic, mut totals)| {
            overlay(&mut totals, pending, day, &topic);
            (topic, totals)
        })
        .collect();
    let views = topics
        .iter()
        .fold(0u64, |sum, (_, totals)| sum.saturating_add(totals.views));
    let visitors = match sites {
        Some(mut sites) => {
            let covered = PrefixSites::of(prefix);
            for ((site_day, site), visitors) in pending.sites() {
                if site_day == day && covered.covers(&site) {
                    sites.merge(&visitors);
                }
            }
            sites.estimate()
        }
        None => Visitors::union(topics.iter().map(|(_, totals)| &totals.visitors)).estimate(),
    };
    topics.sort_by(|(a, ta), (b, tb)| tb.views.cmp(&ta.views).then_with(|| a.cmp(b)));
    topics.truncate(limit);
    StatsList {
        date: day.to_string(),
        views,
        visitors,
        topics: topics
            .into_iter()
            .map(|(topic, totals)| TopicDayStats {
                topic,
                views: totals.views,
                visitors: totals.visitors.estimate(),
                peak: totals.peak,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Day {
        Day::parse(text).expect("valid")
    }

    #[test]
    fn a_range_lists_every_day_and_unites_visitors() {
        let (first, last) = (day("2026-11-28"), day("2026-11-30"));
        let mut stored = BTreeMap::new();
        let mut visitors = Visitors::new();
        visitors.insert(1);
        visitors.insert(2);
        stored.insert(
            first,
            DayTotals {
                views: 5,
                peak: 2,
                visitors: visitors.clone(),
            },
        );
        let pending = Pending::default();
        let mut tally = crate::tally::TopicTally {
            views: 3,
            peak: 4,
            ..Default::default()
        };
        tally.visitors.insert(2);
        tally.visitors.insert(3);
        pending.topics.insert((last, Topic::new("t").expect("valid")), tally);
        let stats = topic_stats("t", first, last, stored, &pending);
        assert_eq!(
            (stats.views, stats.peak, stats.visitors),
            (8, 4, 3),
            "visitor 2 counts once"
        );
        let per_day: Vec<(u64, u64)> = stats.days.iter().map(|d| (d.views, d.visitors)).collect();
        assert_eq!(per_day, [(5, 2), (0, 0), (3, 2)]);
        assert_eq!((stats.from.as_str(), stats.to.as_str()), ("2026-11-28", "2026-11-30"));
    }

    #[test]
    fn listings_sort_by_views_then_topic_and_count_all_before_the_limit() {
        let today = day("2026-11-30");
        let stored: BTreeMap<String, DayTotals> = [("s/a", 1), ("s/b", 7), ("s/c", 7)]
            .into_iter()
            .map(|(topic, views)| {
                (
                    topic.to_owned(),
                    DayTotals {
                        views,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let list = list_stats(today, "s/", 2, stored, None, &Pending::default());
        let names: Vec<&str> = list.topics.iter().map(|t| t.topic.as_str()).collect();
        assert_eq!(names, ["s/b", "s/c"]);
        assert_eq!(list.views, 15);
    }

    #[test]
    fn only_whole_sites_use_site_sketches() {
        assert_eq!(PrefixSites::of(""), PrefixSites::All);
        assert_eq!(PrefixSites::of("example.com/"), PrefixSites::One("example.com"));
        assert_eq!(
            PrefixSites::of("example.com"),
            PrefixSites::None,
            "would match example.com.evil/ too"
        );
        assert_eq!(PrefixSites::of("example.com/blog/"), PrefixSites::None);
        assert_eq!(PrefixSites::of("/"), PrefixSites::None);
    }
}
