//! Members declared down: listed in the view for a while, and announced to
//! so that the two sides of a healed partition find each other again.
//!
//! Announces back off per member (1 s, 2 s, 4 s, … up to
//! [`Timings::announce_backoff_max`]) and stop after
//! [`Timings::list_down_for`]; at most
//! [`MAX_DOWN_LISTED`] members are kept, the oldest forgotten first. So a
//! forged member with someone else's address turns this node into a
//! reflector of at most a few packets a minute, for a few minutes. Plain
//! data with time passed in.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::{identity::NodeId, timings::Timings};

/// Most down members remembered.
pub(crate) const MAX_DOWN_LISTED: usize = 256;

#[derive(Debug, Clone)]
struct Down {
    id: NodeId,
    since: Instant,
    next_announce: Instant,
    wait: Duration,
}

/// The members declared down, by gossip address.
#[derive(Debug)]
pub(crate) struct DownMembers {
    members: HashMap<SocketAddr, Down>,
    first_wait: Duration,
    max_wait: Duration,
    listed_for: Duration,
}

impl DownMembers {
    /// An empty list that announces and forgets on `timings`.
    pub(crate) fn new(timings: &Timings) -> Self {
        Self {
            members: HashMap::new(),
            first_wait: timings.announce_interval,
            max_wait: timings.announce_backoff_max,
            listed_for: timings.list_down_for,
        }
    }

    /// `id` was declared down at `now`.
    pub(crate) fn went_down(&mut self, id: &NodeId, now: Instant) {
        self.members.insert(
            id.gossip,
            Down {
                id: id.clone(),
                since: now,
                next_announce: now + self.first_wait,
                wait: self.first_wait,
            },
        );
        while self.members.len() > MAX_DOWN_LISTED {
            let oldest = self
                .members
                .iter()
                .min_by_key(|(_, down)| down.since)
                .map(|(addr, _)| *addr);
            if let Some(oldest) = oldest {
                self.members.remove(&oldest);
            }
        }
    }

    /// `addr` is up again.
    pub(crate) fn came_up(&mut self, addr: SocketAddr) {
        self.members.remove(&addr);
    }

    /// Whether `addr` is listed as down.
    #[cfg(test)]
    fn contains(&self, addr: SocketAddr) -> bool {
        self.members.contains_key(&addr)
    }

    /// The members listed as down.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &NodeId> {
        self.members.values().map(|down| &down.id)
    }

    /// Forgets members listed for longer than they are to be; returns those
    /// due an announce at `now`, and schedules their next one.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<SocketAddr> {
        let listed_for = self.listed_for;
        self.members
            .retain(|_, down| now.duration_since(down.since) < listed_for);
        self.members
            .iter_mut()
            .filter(|(_, down)| down.next_announce <= now)
            .map(|(addr, down)| {
                down.wait = (down.wait * 2).min(self.max_wait);
                down.next_announce = now + down.wait;
                *addr
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn id(port: u16) -> NodeId {
        NodeId::seed(addr(port))
    }

    #[test]
    fn announces_back_off_then_stop() {
        let start = Instant::now();
        let timings = Timings::DEFAULT;
        let mut down = DownMembers::new(&timings);
        down.went_down(&id(1), start);
        let mut announced = Vec::new();
        for second in 0..400 {
            let now = start + Duration::from_secs(second);
            if !down.due(now).is_empty() {
                announced.push(second);
            }
        }
        assert_eq!(&announced[..5], &[1, 3, 7, 15, 31], "doubling from 1 s");
        let gaps: Vec<u64> = announced.windows(2).map(|pair| pair[1] - pair[0]).collect();
        assert!(
            gaps.iter().all(|gap| *gap <= timings.announce_backoff_max.as_secs()),
            "{gaps:?}"
        );
        assert!(announced.len() < 20, "a few a minute at most: {announced:?}");
        assert!(
            announced.iter().all(|second| *second < timings.list_down_for.as_secs()),
            "none after {:?}",
            timings.list_down_for
        );
        assert!(!down.contains(addr(1)), "forgotten");
    }

    #[test]
    fn the_list_is_bounded_and_a_member_that_comes_up_leaves_it() {
        let now = Instant::now();
        let mut down = DownMembers::new(&Timings::DEFAULT);
        for port in 0..(MAX_DOWN_LISTED as u16 + 10) {
            down.went_down(&id(port), now + Duration::from_millis(u64::from(port)));
        }
        assert!(!down.contains(addr(0)), "the oldest is forgotten first");
        assert!(down.contains(addr(MAX_DOWN_LISTED as u16 + 9)));
        down.came_up(addr(300));
        assert!(!down.contains(addr(300)));
    }
}
