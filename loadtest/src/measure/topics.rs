//! Which topic a connection joins, and which addresses it uses.
//!
//! Uniform spreading is round-robin, not random, so a run of C connections
//! over T topics puts exactly C/T on each and the counts a node reports can be
//! checked exactly. Zipf draws from a seeded RNG over a precomputed CDF, the
//! shape of real page popularity (a few hot pages, a long quiet tail).
//!
//! Client sockets bind to several 127.0.0.x source addresses because a socket
//! bound to (address, port 0) takes its port from that address's ~28k
//! ephemeral ports whatever the destination; 100k connections need at least
//! four addresses.

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
        Self {
            topics,
            dist: Dist::Uniform,
            zipf_s: 1.0,
            topic_prefix: prefix.into(),
            seed: 1,
        }
    }

    /// A picker for these flags.
    pub fn picker(&self) -> TopicPicker {
        let topics = self.topics.max(1);
        TopicPicker {
            prefix: self.topic_prefix.clone(),
            topics,
            cdf: (self.dist == Dist::Zipf).then(|| zipf_cdf(topics, self.zipf_s)),
            rng: SmallRng::seed_from_u64(self.seed),
        }
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
    /// The rank of connection `sequence`'s topic.
    pub fn rank(&mut self, sequence: u64) -> u64 {
        match &self.cdf {
            None => sequence % self.topics,
            Some(cdf) => {
                let draw: f64 = self.rng.random_range(0.0..1.0);
                cdf.partition_point(|&p| p < draw).min(cdf.len() - 1) as u64
            }
        }
    }

    /// The topic of connection `sequence`.
    pub fn topic(&mut self, sequence: u64) -> String {
        let rank = self.rank(sequence);
        self.name(rank)
    }

    /// The name of the topic of rank `rank`.
    pub fn name(&self, rank: u64) -> String {
        format!("{}{rank}", self.prefix)
    }
}

fn zipf_cdf(topics: u64, s: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=topics).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

/// A list of client source addresses: `127.0.0.2-5,127.0.1.9`, or `none` to
/// let the kernel choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources(pub Vec<IpAddr>);

impl FromStr for Sources {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim() == "none" {
            return Ok(Self(Vec::new()));
        }
        let mut addrs = Vec::new();
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            match item.split_once('-') {
                None => addrs.push(item.parse::<IpAddr>().map_err(|error| format!("{item}: {error}"))?),
                Some((first, last)) => {
                    let first: Ipv4Addr = first.parse().map_err(|error| format!("{item}: {error}"))?;
                    let last: u8 = last.parse().map_err(|error| format!("{item}: {error}"))?;
                    let [a, b, c, start] = first.octets();
                    if last < start {
                        return Err(format!("{item}: range runs backwards"));
                    }
                    addrs.extend((start..=last).map(|d| IpAddr::V4(Ipv4Addr::new(a, b, c, d))));
                }
            }
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
        let targets = self.targets.len().max(1) as u64;
        let target = self.targets[(sequence % targets) as usize];
        let source = (!self.sources.0.is_empty())
            .then(|| self.sources.0[((sequence / targets) % self.sources.0.len() as u64) as usize]);
        (target, source)
    }
}

/// Parses a socket address and refuses any that is not on this machine.
pub fn loopback_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text.parse().map_err(|error| format!("{text}: {error}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{text}: only loopback targets are allowed"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_expand_ranges_and_refuse_remote() {
        let sources: Sources = "127.0.0.2-4,127.0.1.9".parse().expect("parses");
        assert_eq!(serde_json::json!(sources), "127.0.0.2,127.0.0.3,127.0.0.4,127.0.1.9");
        assert_eq!(serde_json::json!("none".parse::<Sources>().expect("parses")), "none");
        assert!("10.0.0.1".parse::<Sources>().is_err());
        assert!("127.0.0.9-3".parse::<Sources>().is_err());
        assert!(loopback_addr("192.168.1.1:80").is_err());
    }

    #[test]
    fn uniform_is_exact_round_robin() {
        let mut picker = TopicArgs::uniform("t/", 3).picker();
        let names: Vec<String> = (0..6).map(|i| picker.topic(i)).collect();
        assert_eq!(names, ["t/0", "t/1", "t/2", "t/0", "t/1", "t/2"]);
    }

    #[test]
    fn zipf_favours_low_ranks_and_stays_in_range() {
        let args = TopicArgs {
            dist: Dist::Zipf,
            ..TopicArgs::uniform("t/", 100)
        };
        let mut picker = args.picker();
        let mut hits = [0u64; 100];
        for i in 0..20_000 {
            hits[picker.rank(i) as usize] += 1;
        }
        assert!(hits[0] > hits[1] && hits[1] > hits[9] && hits[9] > hits[99], "{hits:?}");
    }

    #[test]
    fn endpoints_cover_every_pair() {
        let net = NetArgs {
            targets: vec![
                "127.0.0.1:1".parse().expect("addr"),
                "127.0.0.1:2".parse().expect("addr"),
            ],
            sources: "127.0.0.2-3".parse().expect("sources"),
        };
        let pairs: std::collections::HashSet<_> = (0..4).map(|i| net.endpoint(i)).collect();
        assert_eq!(pairs.len(), 4);
    }
}
