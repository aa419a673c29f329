//! The daily salt and the visitor key.
//!
//! A visitor key is SHA-256 over (salt, client IP, User-Agent, site), cut to
//! 64 bits, put into sketches and dropped. The salt is random, held in
//! memory only, and replaced when its UTC day ends, so yesterday's keys
//! cannot be recomputed by anyone, this node included.
//!
//! Every node must use the same salt, or one visitor seen by two nodes
//! counts twice. The rule that makes them agree without a leader: of two
//! salts for the same day, the one created first wins (ties by bytes). A
//! lone node makes its own; a node that starts mid-day makes one too but
//! adopts the older salt of any peer it hears from.

use std::{
    net::IpAddr,
    sync::RwLock,
    time::{SystemTime, UNIX_EPOCH},
};

use sha2::{Digest, Sha256};

use crate::day::Day;

/// The salt of one UTC day.
#[derive(Clone, PartialEq, Eq)]
pub struct Salt {
    /// The day it salts.
    pub day: Day,
    /// When it was made, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The secret bytes.
    pub bytes: [u8; 32],
}

impl Salt {
    fn fresh(day: Day) -> Self {
        let created_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        Self {
            day,
            created_ms,
            bytes: rand::random(),
        }
    }

    /// Whether this salt wins over `other` (same day: the older one).
    fn beats(&self, other: &Salt) -> bool {
        (self.day, std::cmp::Reverse((self.created_ms, self.bytes)))
            > (other.day, std::cmp::Reverse((other.created_ms, other.bytes)))
    }

    /// The visitor key of a client of `site` under this salt.
    fn key(&self, client: IpAddr, user_agent: &str, site: &str) -> u64 {
        let mut hash = Sha256::new();
        hash.update(self.bytes);
        let address = match client {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        for part in [&address[..], user_agent.as_bytes(), site.as_bytes()] {
            // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
            hash.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            hash.update(part);
        }
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }
}

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Salt({}, created {} ms, <redacted>)", self.day, self.created_ms)
    }
}

/// The salt in use: one, for the newest day seen.
#[derive(Debug, Default)]
pub struct Salts(RwLock<Option<Salt>>);

impl Salts {
    /// The visitor key of a client of `site` on `day`; makes the day's salt
    /// if this node has none (and forgets the previous day's).
    pub fn key(&self, day: Day, client: IpAddr, user_agent: &str, site: &str) -> u64 {
        if let Some(salt) = self.read().as_ref().filter(|salt| salt.day >= day) {
            return salt.key(client, user_agent, site);
        }
        let mut current = self.write();
        let salt = match current.take() {
            Some(salt) if salt.day >= day => salt,
            _ => Salt::fresh(day),
        };
        let key = salt.key(client, user_agent, site);
        *current = Some(salt);
        key
    }

    /// Takes `offered` if it wins over the salt in use.
    pub fn offer(&self, offered: Salt) {
        let mut current = self.write();
        if current.as_ref().is_none_or(|salt| offered.beats(salt)) {
            *current = Some(offered);
        }
    }

    /// The salt in use, to tell peers.
    pub fn current(&self) -> Option<Salt> {
        self.read().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Salt>> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<Salt>> {
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));

    fn day(text: &str) -> Day {
        Day::parse(text).expect("valid")
    }

    #[test]
    fn same_visitor_same_key_within_a_day_and_site() {
        let salts = Salts::default();
        let today = day("2026-11-30");
        let key = salts.key(today, CLIENT, "Firefox", "example.com");
        assert_eq!(salts.key(today, CLIENT, "Firefox", "example.com"), key);
        assert_ne!(salts.key(today, CLIENT, "Chrome", "example.com"), key);
        assert_ne!(salts.key(today, CLIENT, "Firefox", "example.org"), key);
        assert_ne!(
            salts.key(today, "203.0.113.8".parse().expect("ip"), "Firefox", "example.com"),
            key
        );
    }

    #[test]
    fn a_new_day_forgets_the_old_salt() {
        let salts = Salts::default();
        let key = salts.key(day("2026-11-30"), CLIENT, "Firefox", "example.com");
        assert_ne!(salts.key(day("2026-12-01"), CLIENT, "Firefox", "example.com"), key);
        assert_eq!(salts.current().map(|salt| salt.day), Some(day("2026-12-01")));
    }

    #[test]
    fn nodes_agree_on_the_oldest_salt_of_the_newest_day() {
        let today = day("2026-11-30");
        let older = Salt {
            day: today,
            created_ms: 1,
            bytes: [1; 32],
        };
        let newer = Salt {
            day: today,
            created_ms: 2,
            bytes: [0; 32],
        };
        let yesterday = Salt {
            day: today.minus(1),
            created_ms: 0,
            bytes: [0; 32],
        };
        for order in [
            [&older, &newer, &yesterday],
            [&yesterday, &newer, &older],
            [&newer, &older, &yesterday],
        ] {
            let salts = Salts::default();
            for salt in order {
                salts.offer(salt.clone());
            }
            assert_eq!(salts.current().as_ref(), Some(&older));
        }
    }
}
