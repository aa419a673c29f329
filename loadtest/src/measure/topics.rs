//! Which topic a connection joins and which addresses it uses. Uniform
//! spreading is round-robin, so C connections over T topics put exactly C/T
//! on each and counts can be checked exactly; Zipf draws from a seeded RNG
//! over a precomputed CDF, the shape of page popularity. Clients bind to
//! several 127.0.0.x source addresses because a socket bound to (address,
//! port 0) takes its port from that address's ~28k ephemeral ports.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    str::FromStr,
};

use clap::{Args, ValueEnum};
use rand::{RngExt, SeedableRng, rngs::SmallRng};
use serde::Serialize;

/// How connections spread over topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dist {
    /// Round-robin: every topic gets the same share.
    Uniform,
    /// Zipf: rank k gets a share proportional to 1/k^s.
    Zipf,
}

/// Topic selection flags shared by every mode.
#[derive(Debug, Clone, Args, Serialize)]
pub struct TopicArgs {
    /// Number of distinct topics.
    #[arg(long, default_value_t = 100)]
    pub topics: u64,
    /// How connections spread over the topics.
    #[arg(long, value_enum, default_value_t = Dist::Uniform)]
    pub dist: Dist,
    /// Zipf exponent.
    #[arg(long, default_value_t = 1.0)]
    pub zipf_s: f64,
    /// Topic names are this prefix followed by the topic's rank.
    #[arg(long, default_value = "load/")]
    pub topic_prefix: String,
    /// Seed of the Zipf draw.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl TopicArgs {
    /// Uniform topics `prefix0..prefix{topics-1}`.
    pub fn uniform(prefix: impl Into<String>, topics: u64) -> Self {
        Self { topics, dist: Dist::Uniform, zipf_s: 1.0, topic_prefix: prefix.into(), seed: 1 }
    }

    /// A picker for these flags.
    pub fn picker(&self) -> TopicPicker {
        let topics = self.topics.max(1);
        let cdf = (self.dist == Dist::Zipf).then(|| {
            let weights: Vec<f64> = (1..=topics).map(|k| 1.0 / (k as f64).powf(self.zipf_s)).collect();
            let total: f64 = weights.iter().sum();
            let cumulative = |acc: &mut f64, w: &f64| {
                *acc += w / total;
                Some(*acc)
            };
            weights.iter().scan(0.0, cumulative).collect()
        });
        TopicPicker { prefix: self.topic_prefix.clone(), topics, cdf, rng: SmallRng::seed_from_u64(self.seed) }
    }
}

/// Maps a connection's sequence number to a topic name.
pub struct TopicPicker {
    prefix: String,
    topics: u64,
    cdf: Option<Vec<f64>>,
    rng: SmallRng,
}

impl TopicPicker {
    /// The topic of connection `sequence`.
    pub fn topic(&mut self, sequence: u64) -> String {
        let rank = match &self.cdf {
            None => sequence % self.topics,
            Some(cdf) => {
                let draw: f64 = self.rng.random_range(0.0..1.0);
                cdf.partition_point(|&p| p < draw).min(cdf.len() - 1) as u64
            }
        };
        self.name(rank)
    }

    /// The name of the topic of rank `rank`.
    pub fn name(&self, rank: u64) -> String {
        format!("{}{rank}", self.prefix)
    }
}

/// A list of client source addresses: `127.0.0.2-5,127.0.1.9`, or `none` to
/// let the kernel choose. Only loopback addresses: traffic stays here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources(pub Vec<IpAddr>);

impl FromStr for Sources {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut addrs = Vec::new();
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty() && *item != "none") {
            let bad = |error: &dyn std::fmt::Display| format!("{item}: {error}");
            let Some((first, last)) = item.split_once('-') else {
                addrs.push(item.parse::<IpAddr>().map_err(|e| bad(&e))?);
                continue;
            };
            let [a, b, c, start] = first.parse::<Ipv4Addr>().map_err(|e| bad(&e))?.octets();
            let last: u8 = last.parse().map_err(|e| bad(&e))?;
            if last < start {
                return Err(bad(&"range runs backwards"));
            }
            addrs.extend((start..=last).map(|d| IpAddr::V4(Ipv4Addr::new(a, b, c, d))));
        }
        if addrs.iter().any(|addr| !addr.is_loopback()) {
            return Err("source addresses must be loopback (127.0.0.0/8): traffic stays on this machine".into());
        }
        Ok(Self(addrs))
    }
}

impl Serialize for Sources {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        serializer.serialize_str(&if list.is_empty() { "none".into() } else { list.join(",") })
    }
}

/// Where connections go and where they come from.
#[derive(Debug, Clone, Args, Serialize)]
pub struct NetArgs {
    /// HTTP addresses of the nodes to connect to, comma-separated; connections go round-robin.
    #[arg(long, value_delimiter = ',', required = true, value_parser = loopback_addr)]
    pub targets: Vec<SocketAddr>,
    /// Client source addresses (e.g. `127.0.0.2-5,127.0.1.7`), or `none`.
    #[arg(long, default_value = "127.0.0.2-5")]
    pub sources: Sources,
}

impl NetArgs {
    /// The (target, source) of connection `sequence`: targets round-robin,
    /// then sources, so every pair gets the same share.
    pub fn endpoint(&self, sequence: u64) -> (SocketAddr, Option<IpAddr>) {
        let (targets, sources) = (&self.targets, &self.sources.0);
        let per_target = sequence / targets.len().max(1) as u64;
        let source = (!sources.is_empty()).then(|| sources[(per_target % sources.len() as u64) as usize]);
        (targets[(sequence % targets.len().max(1) as u64) as usize], source)
    }
}

/// Parses a socket address and refuses any that is not on this machine.
pub fn loopback_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text.parse().map_err(|error| format!("{text}: {error}"))?;
    addr.ip().is_loopback().then_some(addr).ok_or_else(|| format!("{text}: only loopback targets are allowed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_expand_ranges_and_refuse_remote() {
        let sources: Sources = "127.0.0.2-4,127.0.1.9".parse().expect("parses");
        assert_eq!(serde_json::json!(sources), "127.0.0.2,127.0.0.3,127.0.0.4,127.0.1.9");
        assert_eq!(serde_json::json!("none".parse::<Sources>().expect("parses")), "none");
        assert!("10.0.0.1".parse::<Sources>().is_err() && "127.0.0.9-3".parse::<Sources>().is_err());
        assert!(loopback_addr("192.168.1.1:80").is_err());
    }

    #[test]
    fn uniform_is_round_robin_and_zipf_favours_low_ranks() {
        let mut picker = TopicArgs::uniform("t/", 3).picker();
        assert_eq!((0..6).map(|i| picker.topic(i)).collect::<Vec<_>>(), ["t/0", "t/1", "t/2", "t/0", "t/1", "t/2"]);
        let mut picker = TopicArgs { dist: Dist::Zipf, ..TopicArgs::uniform("", 100) }.picker();
        let mut hits = [0u64; 100];
        for i in 0..20_000 {
            hits[picker.topic(i).parse::<usize>().expect("rank")] += 1;
        }
        assert!(hits[0] > hits[1] && hits[1] > hits[9] && hits[9] > hits[99], "{hits:?}");
    }

    #[test]
    fn endpoints_cover_every_pair() {
        let targets = vec!["127.0.0.1:1".parse().expect("addr"), "127.0.0.1:2".parse().expect("addr")];
        let net = NetArgs { targets, sources: "127.0.0.2-3".parse().expect("sources") };
        assert_eq!((0..4).map(|i| net.endpoint(i)).collect::<std::collections::HashSet<_>>().len(), 4);
    }
}
