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

/// Client source addresses: `127.0.0.2-5` (a range of the last byte), one address, or `none` (the kernel's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources(pub Vec<IpAddr>);

impl FromStr for Sources {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "none" {
            return Ok(Self(Vec::new()));
        }
        let bad = |error: &dyn std::fmt::Display| format!("{text}: {error}");
        let (first, last) = text.split_once('-').unwrap_or((text, ""));
        let [a, b, c, start] = first.parse::<Ipv4Addr>().map_err(|e| bad(&e))?.octets();
        let last = if last.is_empty() { Ok(start) } else { last.parse() };
        let last = last.map_err(|e| bad(&e))?;
        let addrs: Vec<IpAddr> = (start..=last).map(|d| Ipv4Addr::new(a, b, c, d).into()).collect();
        if addrs.is_empty() || !addrs.iter().all(IpAddr::is_loopback) {
            return Err(bad(&"source addresses must be loopback (127.0.0.0/8), first to last"));
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
    /// Client source addresses: `127.0.0.2-5`, one address, or `none`.
    #[arg(long, default_value = "127.0.0.2-5")]
    pub sources: Sources,
}

impl NetArgs {
    /// The (target, source) of connection `sequence`: targets round-robin, then sources, every pair alike.
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
