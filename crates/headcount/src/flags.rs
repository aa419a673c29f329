//! Command-line flags, each also read from `HEADCOUNT_<FLAG>`. A bad value
//! exits non-zero with one line naming the flag. Defaults of node settings
//! are read from [`NodeConfig::default`], their one home.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, sync::LazyLock, time::Duration};

use clap::{Parser, ValueEnum};
use headcount_server::{HistoryConfig, NodeConfig, NodeName};

/// The node defaults that flags show and fall back to.
static DEFAULTS: LazyLock<NodeConfig> = LazyLock::new(NodeConfig::default);
/// The history defaults, likewise.
static HISTORY: LazyLock<HistoryConfig> = LazyLock::new(HistoryConfig::default);

fn default_count(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// headcount: live, cluster-wide visitor counts over websockets.
#[derive(Debug, Parser)]
#[command(name = "headcount", version, about)]
pub struct Flags {
    /// HTTP + websocket listen address.
    #[arg(long, env = "HEADCOUNT_HTTP", default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub http: SocketAddr,

    /// gRPC listen address.
    #[arg(long, env = "HEADCOUNT_GRPC", default_value = "127.0.0.1:9090", value_name = "ADDR")]
    pub grpc: SocketAddr,

    /// UDP address for cluster gossip.
    #[arg(
        long,
        env = "HEADCOUNT_GOSSIP",
        default_value = "127.0.0.1:7946",
        value_name = "ADDR"
    )]
    pub gossip: SocketAddr,

    /// Gossip address other nodes use to reach this one [default: the --gossip address,
    /// or this host's address when --gossip listens on all interfaces].
    #[arg(long, env = "HEADCOUNT_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,

    /// Comma-separated host:port gossip addresses to join; resolved again until joined.
    #[arg(long, env = "HEADCOUNT_SEEDS", value_delimiter = ',', value_name = "HOST:PORT,...")]
    pub seeds: Vec<String>,

    /// Stable human name shown in /cluster [default: host name].
    #[arg(long, env = "HEADCOUNT_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<NodeName>,

    /// How often a node disseminates its changed counts (X).
    #[arg(long, env = "HEADCOUNT_GOSSIP_INTERVAL", default_value_t = Interval(DEFAULTS.timings.gossip_interval), value_name = "DURATION")]
    pub gossip_interval: Interval,

    /// How long a suspected node may answer before it is declared down.
    #[arg(long, env = "HEADCOUNT_SUSPECT_TIMEOUT", default_value_t = Interval(DEFAULTS.timings.suspect_timeout), value_name = "DURATION")]
    pub suspect_timeout: Interval,

    /// The most often a websocket or gRPC watcher is sent a changed count.
    #[arg(long, env = "HEADCOUNT_PUSH_INTERVAL", default_value_t = Interval(DEFAULTS.push_interval), value_name = "DURATION")]
    pub push_interval: Interval,

    /// Local counter shards that connections are spread over [default: number of CPUs].
    #[arg(long, env = "HEADCOUNT_SHARDS", allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..=1024), value_name = "N")]
    pub shards: Option<u16>,

    /// Shared key; when set, every gossip and sync message is authenticated (HMAC-SHA256).
    #[arg(
        long,
        env = "HEADCOUNT_CLUSTER_SECRET",
        hide_env_values = true,
        conflicts_with = "cluster_secret_file",
        value_name = "SECRET"
    )]
    pub cluster_secret: Option<String>,

    /// File holding the shared key (trailing newline ignored).
    #[arg(long, env = "HEADCOUNT_CLUSTER_SECRET_FILE", value_name = "PATH")]
    pub cluster_secret_file: Option<PathBuf>,

    /// Token that the dashboard, listings, stats, /cluster, /metrics and gRPC admin calls need
    /// (Authorization: Bearer TOKEN) [default: none, all open].
    #[arg(
        long,
        env = "HEADCOUNT_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "admin_token_file",
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,

    /// File holding the admin token (trailing newline ignored).
    #[arg(long, env = "HEADCOUNT_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,

    /// Comma-separated topic prefixes whose listings and stats stay open with --admin-token.
    #[arg(
        long,
        env = "HEADCOUNT_PUBLIC_PREFIXES",
        value_delimiter = ',',
        value_name = "PREFIX,..."
    )]
    pub public_prefixes: Vec<String>,

    /// Comma-separated proxies (CIDRs or addresses) whose Forwarded / X-Forwarded-For name the
    /// client [default: none: the TCP peer is the client].
    #[arg(
        long,
        env = "HEADCOUNT_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR,..."
    )]
    pub trusted_proxies: Vec<String>,

    /// PEM certificate chain: serve HTTP, websockets and gRPC over TLS (reloaded when it changes).
    #[arg(long, env = "HEADCOUNT_TLS_CERT", requires = "tls_key", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "HEADCOUNT_TLS_KEY", requires = "tls_cert", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// Websocket connections this node accepts.
    #[arg(long, env = "HEADCOUNT_MAX_CONNECTIONS", allow_negative_numbers = true, default_value_t = default_count(DEFAULTS.max_connections), value_parser = clap::value_parser!(u64).range(1..=100_000_000), value_name = "N")]
    pub max_connections: u64,

    /// Websocket connections per client IP.
    #[arg(long, env = "HEADCOUNT_MAX_CONNECTIONS_PER_IP", allow_negative_numbers = true, default_value_t = DEFAULTS.max_connections_per_ip, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_connections_per_ip: u32,

    /// Distinct topics with live connections on this node.
    #[arg(long, env = "HEADCOUNT_MAX_TOPICS", allow_negative_numbers = true, default_value_t = default_count(DEFAULTS.max_topics), value_parser = clap::value_parser!(u64).range(1..=100_000_000), value_name = "N")]
    pub max_topics: u64,

    /// Comma-separated Origins allowed to open websockets [default: any].
    #[arg(
        long,
        env = "HEADCOUNT_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN,..."
    )]
    pub allowed_origins: Vec<String>,

    /// Where visit history is kept (an embedded store; created if missing).
    #[arg(long, env = "HEADCOUNT_DATA_DIR", default_value_os_t = HISTORY.data_dir.clone(), value_name = "PATH")]
    pub data_dir: PathBuf,

    /// Keep no visit history (no views, visitors or peaks; /stats answers 404).
    #[arg(long, env = "HEADCOUNT_NO_HISTORY")]
    pub no_history: bool,

    /// How often counted views are written to the store, in one batch.
    #[arg(long, env = "HEADCOUNT_FLUSH_INTERVAL", default_value_t = Interval(HISTORY.flush_interval), value_name = "DURATION")]
    pub flush_interval: Interval,

    /// Days of history kept, e.g. `400d`.
    #[arg(long, env = "HEADCOUNT_RETENTION", default_value_t = Days(HISTORY.retention_days), value_name = "DAYS")]
    pub retention: Days,

    /// Log format.
    #[arg(long, env = "HEADCOUNT_LOG_FORMAT", default_value = "text", value_name = "FORMAT")]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A duration flag: `500ms`, `1s`, `2m`; never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Duration);

impl FromStr for Interval {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let duration = humantime::parse_duration(value).map_err(|error| format!("{error} (use e.g. 500ms, 1s, 2m)"))?;
        if duration.is_zero() {
            return Err("must be greater than zero".into());
        }
        Ok(Self(duration))
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

/// A whole number of days, at least one: `400d` (or `400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days(pub u32);

impl FromStr for Days {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let number = value.strip_suffix('d').unwrap_or(value);
        match number.parse::<u32>() {
            Ok(days) if days >= 1 => Ok(Self(days)),
            _ => Err("must be a whole number of days from 1, e.g. 400d".into()),
        }
    }
}

impl fmt::Display for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}d", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        Flags::try_parse_from(std::iter::once("headcount").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_follow_the_contract() {
        let flags = parse(&[]).expect("parses");
        assert_eq!(flags.http, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(flags.grpc, "127.0.0.1:9090".parse().expect("addr"));
        assert_eq!(flags.gossip, "127.0.0.1:7946".parse().expect("addr"));
        assert_eq!(flags.gossip_interval, Interval(Duration::from_secs(1)));
        assert_eq!(flags.push_interval, Interval(Duration::from_secs(1)));
        assert_eq!(
            (flags.max_connections, flags.max_connections_per_ip, flags.max_topics),
            (1_000_000, 1_000, 100_000)
        );
        assert_eq!(flags.log_format, LogFormat::Text);
        assert!(flags.seeds.is_empty() && flags.allowed_origins.is_empty());
        assert_eq!(flags.data_dir, PathBuf::from("headcount-data"));
        assert_eq!(flags.flush_interval, Interval(Duration::from_secs(10)));
        assert_eq!(flags.retention, Days(400));
        assert!(!flags.no_history);
    }

    #[test]
    fn durations_and_lists_parse() {
        let flags = parse(&[
            "--gossip-interval",
            "500ms",
            "--push-interval",
            "2m",
            "--seeds",
            "a:1,b:2",
        ])
        .expect("parses");
        assert_eq!(flags.gossip_interval, Interval(Duration::from_millis(500)));
        assert_eq!(flags.push_interval, Interval(Duration::from_secs(120)));
        assert_eq!(flags.seeds, vec!["a:1".to_owned(), "b:2".to_owned()]);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (&["--http", "nope"][..], "--http"),
            (&["--gossip-interval", "0s"][..], "--gossip-interval"),
            (&["--push-interval", "soon"][..], "--push-interval"),
            (&["--shards", "0"][..], "--shards"),
            (&["--max-connections", "-1"][..], "--max-connections"),
            (&["--log-format", "xml"][..], "--log-format"),
            (&["--node-name", ""][..], "--node-name"),
            (&["--flush-interval", "0s"][..], "--flush-interval"),
            (&["--retention", "0d"][..], "--retention"),
            (&["--retention", "1.5d"][..], "--retention"),
            (&["--retention", "2w"][..], "--retention"),
        ] {
            let error = parse(args).expect_err("refused").to_string();
            assert!(
                error.lines().next().is_some_and(|line| line.contains(flag)),
                "{args:?}: {error}"
            );
        }
    }

    #[test]
    fn one_secret_source_only() {
        assert!(parse(&["--cluster-secret", "a", "--cluster-secret-file", "/x"]).is_err());
    }
}
