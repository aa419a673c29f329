//! The `headcount` binary: parses flags, sets up logging, binds the sockets,
//! runs one node and shuts it down gracefully on SIGTERM or SIGINT.

mod flags;

use std::{io::IsTerminal, net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::{Context, anyhow};
use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
use headcount_server::{
    AdminToken, ClusterSecret, HistoryConfig, Listeners, Node, NodeConfig, TlsFiles, TrustedProxies,
};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::flags::{Flags, LogFormat};

/// Accept queue of the HTTP and gRPC listeners (the kernel caps it at
/// `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// How long shutdown may take before the process exits anyway.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let parsed = Flags::command()
        .try_get_matches()
        .and_then(|matches| Flags::from_arg_matches(&matches).map(|flags| (flags, matches)));
    let (flags, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            let rendered = error.to_string();
            eprintln!("{}", rendered.lines().next().unwrap_or("error: invalid arguments"));
            return ExitCode::from(2);
        }
    };
    init_logging(flags.log_format);
    let exposed: Vec<&str> = [("--cluster-secret", "cluster_secret"), ("--admin-token", "admin_token")]
        .into_iter()
        .filter(|(_, id)| matches.value_source(id) == Some(ValueSource::CommandLine))
        .map(|(flag, _)| flag)
        .collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(flags, &exposed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs the node; `exposed` are the secret flags given on the command line,
/// warned about once their values are known to be valid.
async fn run(flags: Flags, exposed: &[&str]) -> anyhow::Result<()> {
    let config = node_config(&flags).await?;
    for flag in exposed {
        warn!("{flag} on the command line is visible to every local user; use {flag}-file or its environment variable");
    }
    let listeners = Listeners {
        http: listen(flags.http).with_context(|| format!("--http {}", flags.http))?,
        grpc: listen(flags.grpc).with_context(|| format!("--grpc {}", flags.grpc))?,
        gossip: UdpSocket::bind(flags.gossip)
            .await
            .with_context(|| format!("--gossip {}", flags.gossip))?,
    };
    let shutdown = CancellationToken::new();
    let node = Node::start(config, listeners, shutdown.clone()).await?;
    wait_for_signal().await?;
    info!("shutting down");
    shutdown.cancel();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, node.stopped()).await.is_err() {
        warn!("shutdown deadline passed; exiting with tasks still running");
    }
    Ok(())
}

/// Binds a TCP listener with a deep accept queue: after a node restarts, its
/// clients reconnect all at once, and a short queue turns that into 1 s
/// SYN retries.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn node_config(flags: &Flags) -> anyhow::Result<NodeConfig> {
    let mut config = NodeConfig::default();
    if let Some(name) = &flags.node_name {
        config.node_name = name.clone();
    }
    config.advertise = Some(advertise_addr(flags).await?);
    config.seeds = flags
        .seeds
        .iter()
        .map(|seed| seed.trim().to_owned())
        .filter(|seed| !seed.is_empty())
        .collect();
    config.timings.gossip_interval = flags.gossip_interval.0;
    config.timings.suspect_timeout = flags.suspect_timeout.0;
    config.push_interval = flags.push_interval.0;
    if let Some(shards) = flags.shards {
        config.shards = usize::from(shards);
    }
    config.cluster_secret = cluster_secret(flags)?;
    config.admin_token = admin_token(flags)?;
    if let (Some(cert), Some(key)) = (&flags.tls_cert, &flags.tls_key) {
        config.tls = Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    config.trusted_proxies = TrustedProxies::parse(flags.trusted_proxies.iter().map(String::as_str))
        .map_err(|error| anyhow!("--trusted-proxies: {error}"))?;
    config.public_prefixes = flags
        .public_prefixes
        .iter()
        .map(|prefix| prefix.trim().to_owned())
        .filter(|prefix| !prefix.is_empty())
        .collect();
    config.max_connections = usize::try_from(flags.max_connections)?;
    config.max_connections_per_ip = flags.max_connections_per_ip;
    config.max_topics = usize::try_from(flags.max_topics)?;
    if !flags.allowed_origins.is_empty() {
        config.allowed_origins = Some(flags.allowed_origins.clone());
    }
    config.history = (!flags.no_history).then(|| HistoryConfig {
        data_dir: flags.data_dir.clone(),
        flush_interval: flags.flush_interval.0,
        retention_days: flags.retention.0,
    });
    Ok(config)
}

/// `--advertise` if given (a host name is resolved once, at start); else the
/// gossip address; when that listens on all interfaces, this host's address.
async fn advertise_addr(flags: &Flags) -> anyhow::Result<SocketAddr> {
    if let Some(advertise) = &flags.advertise {
        return tokio::net::lookup_host(advertise.as_str())
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| anyhow!("--advertise {advertise}: not a resolvable host:port"));
    }
    if !flags.gossip.ip().is_unspecified() {
        return Ok(flags.gossip);
    }
    let own = format!(
        "{}:{}",
        gethostname::gethostname().to_string_lossy(),
        flags.gossip.port()
    );
    tokio::net::lookup_host(own.as_str())
        .await
        .ok()
        .and_then(|addrs| addrs.filter(|addr| !addr.ip().is_loopback()).find(SocketAddr::is_ipv4))
        .ok_or_else(|| {
            anyhow!(
                "--gossip {} listens on all interfaces and the host name does not resolve: set --advertise",
                flags.gossip
            )
        })
}

/// The secret from `--cluster-secret` or `--cluster-secret-file` (a trailing
/// newline ignored); one shorter than 16 bytes is refused, naming its flag.
fn cluster_secret(flags: &Flags) -> anyhow::Result<Option<ClusterSecret>> {
    let (flag, secret) = match (&flags.cluster_secret, &flags.cluster_secret_file) {
        (Some(secret), _) => ("--cluster-secret", secret.clone().into_bytes()),
        (None, Some(path)) => (
            "--cluster-secret-file",
            std::fs::read(path).with_context(|| format!("--cluster-secret-file {}", path.display()))?,
        ),
        (None, None) => return Ok(None),
    };
    let secret = ClusterSecret::new(secret.trim_ascii_end().to_vec()).map_err(|error| anyhow!("{flag}: {error}"))?;
    Ok(Some(secret))
}

/// The token from `--admin-token` or `--admin-token-file`, checked.
fn admin_token(flags: &Flags) -> anyhow::Result<Option<AdminToken>> {
    let (flag, token) = match (&flags.admin_token, &flags.admin_token_file) {
        (Some(token), _) => ("--admin-token", token.clone()),
        (None, Some(path)) => (
            "--admin-token-file",
            std::fs::read_to_string(path).with_context(|| format!("--admin-token-file {}", path.display()))?,
        ),
        (None, None) => return Ok(None),
    };
    let token = AdminToken::new(token.trim_end()).map_err(|error| anyhow!("{flag}: {error}"))?;
    Ok(Some(token))
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn a_weak_admin_token_is_refused_naming_its_flag() {
        let flags = Flags::try_parse_from(["headcount", "--admin-token", "short"]).expect("parses");
        let error = admin_token(&flags).expect_err("refused").to_string();
        assert!(error.starts_with("--admin-token:"), "{error}");
    }

    #[test]
    fn a_short_cluster_secret_is_refused_naming_its_flag() {
        let flags = Flags::try_parse_from(["headcount", "--cluster-secret", "short"]).expect("parses");
        let error = cluster_secret(&flags).expect_err("refused").to_string();
        assert!(error.starts_with("--cluster-secret:"), "{error}");
        let flags = Flags::try_parse_from(["headcount", "--cluster-secret", "sixteen-bytes-ok\n"]).expect("parses");
        assert!(cluster_secret(&flags).expect("accepted").is_some());
    }

    #[tokio::test]
    async fn default_flags_give_the_library_defaults() {
        let flags = Flags::try_parse_from(["headcount"]).expect("parses");
        let config = node_config(&flags).await.expect("configures");
        let expected = NodeConfig {
            advertise: Some(flags.gossip),
            ..NodeConfig::default()
        };
        assert_eq!(config, expected);
    }
}
