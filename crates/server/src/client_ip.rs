//! Which address a request comes from. The TCP peer, unless the peer is one
//! of `--trusted-proxies`: then the address that proxy saw, from `Forwarded`
//! (RFC 7239) or else `X-Forwarded-For`. Walking the list from the right,
//! the first address that is not itself a trusted proxy is the client, so a
//! client cannot choose its address by sending the header itself.
//!
//! The client address feeds the per-IP caps (and is never stored as is).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Why a `--trusted-proxies` entry is not an address or a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or a CIDR block such as 10.0.0.0/8")]
pub struct InvalidProxy(String);

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8`, `2001:db8::/32` or a single address.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, InvalidProxy> {
        entries
            .into_iter()
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(|ip| IpNet::from(canonical(ip))))
                    .map_err(|_| InvalidProxy(entry.to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that reached this node from `peer`.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer.ip());
        if !self.contains(peer) {
            return peer;
        }
        let header = |name: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
        };
        let forwarded = header("forwarded");
        let hops: Vec<IpAddr> = if forwarded.is_empty() {
            header("x-forwarded-for")
                .iter()
                .flat_map(|value| value.split(','))
                .filter_map(parse_node)
                .collect()
        } else {
            forwarded
                .iter()
                .flat_map(|value| value.split(','))
                .filter_map(forwarded_for)
                .filter_map(parse_node)
                .collect()
        };
        hops.into_iter().rev().find(|hop| !self.contains(*hop)).unwrap_or(peer)
    }
}

/// The `for=` parameter of one `Forwarded` element.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then_some(value)
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`,
/// `"[2001:db8::1]:4711"`, `2001:db8::1`. Obfuscated names (`_hidden`,
/// `unknown`) are not addresses.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok().map(canonical);
    }
    node.parse::<SocketAddr>().ok().map(|addr| canonical(addr.ip()))
}

/// IPv4-mapped IPv6 addresses are the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    axum::http::HeaderName::from_static(name),
                    HeaderValue::from_str(value).expect("header"),
                )
            })
            .collect()
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("ip"), 40_000)
    }

    fn ip(ip: &str) -> IpAddr {
        ip.parse().expect("ip")
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_it_claims() {
        let none = TrustedProxies::default();
        let claims = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(none.client_ip(peer("203.0.113.9"), &claims), ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_proxy_forwards_the_rightmost_untrusted_hop() {
        let proxies = TrustedProxies::parse(["10.0.0.0/8", "192.0.2.7"]).expect("valid");
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.1.1.1")]);
        assert_eq!(proxies.client_ip(peer("10.0.0.2"), &xff), ip("198.51.100.4"));
        let forwarded = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::17]:4711\";proto=https, for=192.0.2.7",
        )]);
        assert_eq!(proxies.client_ip(peer("192.0.2.7"), &forwarded), ip("2001:db8::17"));
        let both = headers(&[("forwarded", "for=198.51.100.9"), ("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(
            proxies.client_ip(peer("10.0.0.2"), &both),
            ip("198.51.100.9"),
            "Forwarded wins"
        );
        let hidden = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(
            proxies.client_ip(peer("10.0.0.2"), &hidden),
            ip("10.0.0.2"),
            "no address: the proxy"
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(TrustedProxies::parse(["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(["proxy.example"]).is_err());
        assert!(TrustedProxies::parse(["::ffff:10.0.0.1", "fd00::/8", ""]).is_ok());
    }
}
