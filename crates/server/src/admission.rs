//! Who may open a websocket: the origin allow-list, the per-IP cap and the
//! node-wide connection cap. Each admitted connection holds permits that give
//! their place back when dropped, so no error path leaks capacity.
//!
//! Client IPs are never stored: the per-IP table is keyed by a SHA-256 of the
//! address with a random per-process salt. An IPv6 client is keyed by its
//! /64, the block one subscriber gets, so one host cannot take a fresh
//! address for every connection.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use dashmap::{DashMap, mapref::entry::Entry};
use sha2::{Digest, Sha256};

use axum::http::HeaderMap;

use crate::client_ip::TrustedProxies;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections one client IP may hold beyond its websocket cap: room for API
/// calls and for an upgrade that is refused with 429 rather than cut.
const ACCEPT_HEADROOM: u32 = 64;

/// The per-IP cap on open TCP connections for a `--max-connections-per-ip`.
pub fn accept_cap(max_per_ip: u32) -> u32 {
    max_per_ip.saturating_add(ACCEPT_HEADROOM)
}

/// Why a connection is refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The Origin header is missing or not in `--allowed-origins`.
    #[error("origin not allowed")]
    Origin,
    /// The client IP holds `--max-connections-per-ip` connections.
    #[error("too many connections from this address")]
    PerIp,
    /// The node holds `--max-connections` connections.
    #[error("node is full")]
    NodeFull,
}

impl Refusal {
    /// The reason label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::PerIp => "per_ip",
            Self::NodeFull => "max_connections",
        }
    }
}

/// The limits of one node.
pub struct Admission {
    allowed_origins: Option<Vec<String>>,
    trusted_proxies: TrustedProxies,
    per_ip: Arc<IpCounts>,
    max_per_ip: u32,
    sockets_per_ip: Arc<IpCounts>,
    max_sockets_per_ip: u32,
    connections: Arc<Semaphore>,
}

/// What an admitted connection holds until it ends.
#[derive(Debug)]
pub struct Admitted {
    _ip: IpPermit,
    _connection: OwnedSemaphorePermit,
}

impl Admission {
    /// `allowed_origins`: none allows any origin.
    pub fn new(
        allowed_origins: Option<Vec<String>>,
        trusted_proxies: TrustedProxies,
        max_connections: usize,
        max_per_ip: u32,
    ) -> Self {
        let allowed_origins =
            allowed_origins.map(|origins| origins.into_iter().map(|origin| normalize(&origin)).collect());
        let salt = rand::random();
        let counts = || {
            Arc::new(IpCounts {
                salt,
                counts: DashMap::new(),
            })
        };
        Self {
            allowed_origins,
            trusted_proxies,
            per_ip: counts(),
            max_per_ip,
            sockets_per_ip: counts(),
            max_sockets_per_ip: accept_cap(max_per_ip),
            connections: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Takes a place for one more open TCP connection from `ip` (HTTP or
    /// gRPC, at accept time); `None` when it holds its cap already. A
    /// trusted proxy carries many clients and is not capped here.
    pub fn accept(&self, ip: IpAddr) -> Option<SocketPermit> {
        if self.trusted_proxies.contains(ip) {
            return Some(SocketPermit { _place: None });
        }
        self.sockets_per_ip
            .acquire(ip, self.max_sockets_per_ip)
            .map(|place| SocketPermit { _place: Some(place) })
    }

    /// The client of a request that arrived from `peer` with `headers`.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        self.trusted_proxies.client_ip(peer, headers)
    }

    /// Whether every origin is allowed (no `--allowed-origins`).
    pub fn any_origin(&self) -> bool {
        self.allowed_origins.is_none()
    }

    /// Checks the origin (403).
    pub fn check_origin(&self, origin: Option<&str>) -> Result<(), Refusal> {
        match (&self.allowed_origins, origin) {
            (None, _) => Ok(()),
            (Some(allowed), Some(origin)) if allowed.contains(&normalize(origin)) => Ok(()),
            (Some(_), _) => Err(Refusal::Origin),
        }
    }

    /// Takes a place for `ip` (429), then one on the node (503).
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        let ip = self.per_ip.acquire(ip, self.max_per_ip).ok_or(Refusal::PerIp)?;
        let connection = Arc::clone(&self.connections)
            .try_acquire_owned()
            .map_err(|_| Refusal::NodeFull)?;
        Ok(Admitted {
            _ip: ip,
            _connection: connection,
        })
    }

    /// Distinct client addresses with open connections.
    #[cfg(test)]
    fn distinct_ips(&self) -> usize {
        self.per_ip.counts.len()
    }
}

fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

type IpKey = [u8; 16];

struct IpCounts {
    salt: [u8; 16],
    counts: DashMap<IpKey, u32>,
}

impl IpCounts {
    fn key(&self, ip: IpAddr) -> IpKey {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        match ip {
            IpAddr::V4(v4) => hasher.update(v4.octets()),
            IpAddr::V6(v6) => hasher.update(&v6.octets()[..8]),
        }
        let digest = hasher.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }

    fn acquire(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<IpPermit> {
        let key = self.key(ip);
        let mut count = self.counts.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(IpPermit {
            counts: Arc::clone(self),
            key,
        })
    }
}

/// An accepted socket's place in the per-IP table (none for a trusted proxy).
#[derive(Debug)]
pub struct SocketPermit {
    _place: Option<IpPermit>,
}

/// One place in a per-IP table, given back when dropped.
#[derive(Debug)]
pub struct IpPermit {
    counts: Arc<IpCounts>,
    key: IpKey,
}

impl std::fmt::Debug for IpCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpCounts")
            .field("addresses", &self.counts.len())
            .finish()
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        if let Entry::Occupied(mut entry) = self.counts.counts.entry(self.key) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn per_ip_cap_refuses_then_frees_on_drop() {
        let admission = Admission::new(None, TrustedProxies::default(), 100, 2);
        let a = admission.admit(ip("10.0.0.1")).expect("first");
        let _b = admission.admit(ip("10.0.0.1")).expect("second");
        assert_eq!(admission.admit(ip("10.0.0.1")).err(), Some(Refusal::PerIp));
        assert!(
            admission.admit(ip("::ffff:10.0.0.1")).is_err(),
            "v4-mapped v6 is the same client"
        );
        let _other = admission.admit(ip("10.0.0.2")).expect("other ip");
        drop(a);
        assert!(admission.admit(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn ipv6_clients_are_capped_per_slash_64() {
        let admission = Admission::new(None, TrustedProxies::default(), 100, 2);
        let _a = admission.admit(ip("2001:db8:1:2::1")).expect("first");
        let _b = admission.admit(ip("2001:db8:1:2:ffff::9")).expect("second, same /64");
        assert_eq!(admission.admit(ip("2001:db8:1:2::abcd")).err(), Some(Refusal::PerIp));
        assert!(admission.admit(ip("2001:db8:1:3::1")).is_ok(), "another /64");
    }

    #[test]
    fn open_sockets_are_capped_per_ip_above_the_websocket_cap() {
        let admission = Admission::new(None, TrustedProxies::default(), 100, 2);
        let held: Vec<SocketPermit> = (0..accept_cap(2))
            .map(|_| admission.accept(ip("10.0.0.1")).expect("under the cap"))
            .collect();
        assert!(admission.accept(ip("10.0.0.1")).is_none());
        assert!(admission.accept(ip("10.0.0.2")).is_some(), "another client");
        let _ws = admission
            .admit(ip("10.0.0.1"))
            .expect("websocket places are counted apart");
        drop(held);
        assert!(admission.accept(ip("10.0.0.1")).is_some());
    }

    #[test]
    fn node_cap_refuses_and_gives_the_ip_place_back() {
        let admission = Admission::new(None, TrustedProxies::default(), 1, 10);
        let _a = admission.admit(ip("10.0.0.1")).expect("first");
        assert_eq!(admission.admit(ip("10.0.0.2")).err(), Some(Refusal::NodeFull));
        assert_eq!(admission.distinct_ips(), 1, "the refused ip holds nothing");
    }

    #[test]
    fn origins_are_matched_exactly_ignoring_case_and_trailing_slash() {
        let admission = Admission::new(
            Some(vec!["https://Example.com/".into()]),
            TrustedProxies::default(),
            1,
            1,
        );
        assert!(admission.check_origin(Some("https://example.com")).is_ok());
        assert_eq!(admission.check_origin(Some("https://evil.com")), Err(Refusal::Origin));
        assert_eq!(
            admission.check_origin(Some("https://example.com.evil.com")),
            Err(Refusal::Origin)
        );
        assert_eq!(admission.check_origin(None), Err(Refusal::Origin));
        assert!(
            Admission::new(None, TrustedProxies::default(), 1, 1)
                .check_origin(None)
                .is_ok()
        );
    }

    #[test]
    fn raw_ips_are_not_stored() {
        let admission = Admission::new(None, TrustedProxies::default(), 10, 10);
        let _a = admission.admit(ip("192.168.77.1")).expect("admitted");
        let stored: Vec<IpKey> = admission.per_ip.counts.iter().map(|entry| *entry.key()).collect();
        assert_eq!(stored.len(), 1);
        assert!(!stored[0].windows(4).any(|w| w == [192, 168, 77, 1]));
    }
}
