//! Which topic a connection joins and which addresses it uses. Uniform spreading is round-robin, so C connections
//! over T topics put exactly C/T on each and counts can be checked exactly; Zipf (`rand_distr`, s = 1, seeded) is
//! the shape of page popularity. Clients bind to several 127.0.0.x source addresses because a socket bound to
//! (address, port 0) takes its port from that address's ~28k ephemeral ports. Only loopback addresses parse: no
//! traffic of these tools leaves the machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use clap::{Args, ValueEnum};
use rand::{SeedableRng, rngs::SmallRng};
use rand_distr::{Distribution, Zipf};

/// How connections spread over topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dist {
    /// Round-robin: every topic gets the same share.
    Uniform,
    /// Zipf: rank k gets a share proportional to 1/k.
    Zipf,
}

/// Topic selection flags shared by every mode.
#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    /// Number of distinct topics.
    #[arg(long, default_value_t = 100)]
    pub topics: u64,
    /// How connections spread over the topics.
    #[arg(long, value_enum, default_value_t = Dist::Uniform)]
    pub dist: Dist,
    /// Topic names are this prefix followed by the topic's rank.
    #[arg(long, default_value = "load/")]
    pub topic_prefix: String,
}

impl TopicArgs {
    /// The topics of connections `0..n`, the same on every call.
    pub fn names(&self, n: u64) -> Vec<String> {
        let (topics, mut rng) = (self.topics.max(1), SmallRng::seed_from_u64(1));
        let zipf = Zipf::new(topics as f64, 1.0).ok().filter(|_| self.dist == Dist::Zipf);
        let rank = |i| zipf.map_or(i % topics, |zipf| zipf.sample(&mut rng) as u64 - 1);
        let name = |rank| format!("{}{rank}", self.topic_prefix);
        (0..n).map(rank).map(name).collect()
    }
}

/// A list of client source addresses: `127.0.0.2-5,127.0.1.9`, or `none` to let the kernel choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources(pub Vec<IpAddr>);

impl FromStr for Sources {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut addrs = Vec::new();
        let items = text.split(',').map(str::trim);
        for item in items.filter(|item| !["", "none"].contains(item)) {
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

/// Where connections go and where they come from.
#[derive(Debug, Clone, Args)]
pub struct NetArgs {
    /// HTTP addresses of the nodes, comma-separated; connections go round-robin.
    #[arg(long, alias = "nodes", value_delimiter = ',', required = true, value_parser = loopback_addr)]
    pub targets: Vec<SocketAddr>,
    /// Client source addresses (e.g. `127.0.0.2-5,127.0.1.7`), or `none`.
    #[arg(long, default_value = "127.0.0.2-5")]
    pub sources: Sources,
}

impl NetArgs {
    /// The (target, source) of connection `sequence`: targets round-robin, then sources, so every pair gets the
    /// same share.
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
    let remote = || format!("{text}: only loopback targets are allowed");
    addr.ip().is_loopback().then_some(addr).ok_or_else(remote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    #[test]
    fn sources_and_targets_stay_on_loopback() {
        let sources: Sources = "127.0.0.2-4,127.0.1.9".parse().expect("parses");
        assert_eq!(sources.0.len(), 4);
        assert_eq!("none".parse::<Sources>(), Ok(Sources(vec![])));
        assert!("10.0.0.1".parse::<Sources>().is_err() && "127.0.0.9-3".parse::<Sources>().is_err());
        assert!(loopback_addr("192.168.1.1:80").is_err());
        let targets = [loopback_addr("127.0.0.1:1"), loopback_addr("127.0.0.1:2")].map(|a| a.expect("addr"));
        let (targets, sources) = (targets.to_vec(), "127.0.0.2-3".parse().expect("sources"));
        let net = NetArgs { targets, sources };
        let pairs: std::collections::HashSet<_> = (0..4).map(|i| net.endpoint(i)).collect();
        assert_eq!(pairs.len(), 4);
    }

    #[test]
    fn uniform_is_round_robin_and_zipf_favours_low_ranks() {
        let topics = |line: &str| TopicArgs::augment_args(clap::Command::new("t")).get_matches_from(line.split(' '));
        let topics = |line| TopicArgs::from_arg_matches(&topics(line)).expect("topics");
        let names = topics("t --topics 3 --topic-prefix t/").names(6);
        assert_eq!(names, ["t/0", "t/1", "t/2", "t/0", "t/1", "t/2"]);
        let mut hits = [0u64; 100];
        for name in topics("t --topics 100 --dist zipf --topic-prefix z").names(20_000) {
            hits[name[1..].parse::<usize>().expect("rank")] += 1;
        }
        assert!(hits[0] > hits[1] && hits[1] > hits[9] && hits[9] > hits[99], "{hits:?}");
    }
}
