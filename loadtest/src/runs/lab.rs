//! The bench lab: starts headcount nodes, bare servers and `hold` processes
//! on kernel-chosen loopback ports (other people run tests here too), logs
//! them to `target/loadtest/logs/`, reads the nodes while a run goes on, and
//! stops them; every child is killed when its handle drops, so an error
//! halfway through a run leaves no server behind.

use std::{
    ffi::OsStr,
    io,
    net::{SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use serde::de::DeserializeOwned;
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

use crate::{
    measure::{
        api::Api,
        argv,
        hold::{HoldArgs, HoldReport, Ready},
        procfs,
    },
    report::results::GossipReading,
};

/// The counter of full-state pulls a node made.
pub const PULLS: &str = "headcount_cluster_pulls_total";

/// A running server process; `name` is also its node name and its log's.
pub struct Server {
    pub name: String,
    pub http: SocketAddr,
    pub pid: u32,
    gossip: SocketAddr,
    child: Child,
}

impl Server {
    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> u64 {
        procfs::rss_kib(self.pid).unwrap_or(0)
    }

    /// Asks the process to stop (SIGTERM), then kills it after `grace`;
    /// how it had exited before if it had (a crash).
    pub async fn stop(mut self, grace: Duration) -> Option<String> {
        let crashed = self.child.try_wait().ok().flatten().map(|status| status.to_string());
        let _ = Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status().await;
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
        crashed
    }
}

/// A `hold` child process: a `ready` line once connected, its report once
/// released (stdin closed).
pub struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Holder {
    async fn next<T: DeserializeOwned>(&mut self, timeout: Duration) -> anyhow::Result<T> {
        let line = async {
            while let Some(line) = self.lines.next_line().await? {
                if let Ok(value) = serde_json::from_str(&line) {
                    return Ok(value);
                }
            }
            Err(anyhow!("hold process ended early"))
        };
        tokio::time::timeout(timeout, line).await.map_err(|_| anyhow!("hold process silent for {timeout:?}"))?
    }

    /// Waits for the `ready` line.
    pub async fn ready(&mut self, timeout: Duration) -> anyhow::Result<Ready> {
        self.next(timeout).await
    }

    /// Closes its stdin: the process starts closing its connections.
    pub fn start_release(&mut self) {
        drop(self.stdin.take());
    }

    /// Releases (if not started yet) and reads the process's report.
    pub async fn release(mut self, timeout: Duration) -> anyhow::Result<HoldReport> {
        self.start_release();
        let report = self.next(timeout).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        report
    }
}

/// Where the binaries and logs are (`dir` is `target/loadtest`), and a
/// client for the nodes' API.
pub struct Lab {
    pub dir: PathBuf,
    pub api: Api,
    bin: PathBuf,
    headcount: PathBuf,
}

impl Lab {
    /// Finds the binaries next to this one (or `headcount`).
    pub fn new(headcount: Option<PathBuf>) -> anyhow::Result<Self> {
        let load = std::env::current_exe().context("own executable")?;
        let bin = load.parent().ok_or_else(|| anyhow!("executable has no directory"))?.to_path_buf();
        let headcount = headcount.unwrap_or_else(|| bin.join("headcount"));
        for binary in [&headcount, &bin.join("headcount-bare")] {
            if !binary.exists() {
                bail!("{} not found: cargo build --release -p headcount -p headcount-load", binary.display());
            }
        }
        let dir = bin.parent().map_or_else(|| bin.clone(), Path::to_path_buf).join("loadtest");
        std::fs::create_dir_all(dir.join("logs"))?;
        Ok(Self { dir, api: Api::new(Duration::from_secs(10), usize::MAX)?, bin, headcount })
    }

    fn command<S: AsRef<OsStr>>(
        &self,
        program: &Path,
        args: impl IntoIterator<Item = S>,
        name: &str,
    ) -> io::Result<Command> {
        let log = |suffix| std::fs::File::create(self.dir.join("logs").join(format!("{name}{suffix}.log")));
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).stdout(log("")?).stderr(log(".err")?).kill_on_drop(true);
        Ok(command)
    }

    /// Starts a headcount node gossiping every `interval` (or, with no
    /// `interval`, the bare baseline server), joining `seed` if given.
    pub fn server(&self, name: &str, interval: Option<Duration>, seed: Option<&Server>) -> anyhow::Result<Server> {
        let free = || TcpListener::bind("127.0.0.1:0")?.local_addr();
        let (http, grpc, gossip) = (free()?, free()?, UdpSocket::bind("127.0.0.1:0")?.local_addr()?);
        let (program, args) = match interval {
            None => (self.bin.join("headcount-bare"), format!("--http {http}")),
            Some(x) => {
                let seeds = seed.map(|seed| format!(" --seeds {}", seed.gossip)).unwrap_or_default();
                let node = format!("--http {http} --grpc {grpc} --gossip {gossip} --node-name {name}");
                let x = x.as_millis();
                (
                    self.headcount.clone(),
                    format!("{node} --gossip-interval {x}ms --max-connections-per-ip 1000000{seeds}"),
                )
            }
        };
        let child =
            self.command(&program, args.split(' '), name)?.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        Ok(Server { name: name.into(), http, pid, gossip, child })
    }

    /// Waits (30 s at most) until every server answers `/healthz` and, with
    /// `members` above 1, sees that many cluster members alive.
    pub async fn wait_up(&self, servers: &mut [Server], members: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for server in servers {
            let alive = |node| async move { self.api.alive_members(node).await.unwrap_or(0) };
            while !self.api.healthy(server.http).await || (members > 1 && alive(server.http).await < members) {
                if let Ok(Some(status)) = server.child.try_wait() {
                    bail!("{} exited ({status}); see {}", server.name, self.dir.join("logs").display());
                }
                if Instant::now() > deadline {
                    bail!("{} not up with {members} members alive after 30 s", server.name);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Starts `n` nodes named `tag-n0…` that join the first one, and waits
    /// until each sees all `n` alive.
    pub async fn cluster(&self, tag: &str, n: usize, interval: Duration) -> anyhow::Result<Vec<Server>> {
        let mut nodes = vec![self.server(&format!("{tag}-n0"), Some(interval), None)?];
        for i in 1..n {
            nodes.push(self.server(&format!("{tag}-n{i}"), Some(interval), nodes.first())?);
        }
        self.wait_up(&mut nodes, n).await?;
        Ok(nodes)
    }

    /// Starts a `hold` process with these flags (and `--wait-stdin`).
    pub fn holder(&self, name: &str, flags: &HoldArgs) -> anyhow::Result<Holder> {
        let args = [vec!["hold".into()], argv(&HoldArgs { wait_stdin: true, ..flags.clone() })?].concat();
        let mut command = self.command(&std::env::current_exe()?, &args, name)?;
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("{name}: no stdout"))?;
        Ok(Holder { stdin: child.stdin.take(), child, lines: BufReader::new(stdout).lines() })
    }

    /// Polls every node (each on its own, every `poll`) until it reports
    /// `want` as its `/counts` total: how long each took, `None` for a node
    /// that had not after `timeout`.
    pub async fn wait_totals(
        &self,
        nodes: &[SocketAddr],
        want: u64,
        poll: Duration,
        timeout: Duration,
    ) -> Vec<Option<Duration>> {
        let started = Instant::now();
        let waits = nodes.iter().map(|&node| async move {
            loop {
                let asked = Instant::now();
                if self.api.total(node).await.ok() == Some(want) {
                    return Some(started.elapsed());
                }
                if started.elapsed() > timeout {
                    return None;
                }
                tokio::time::sleep_until((asked + poll).into()).await;
            }
        });
        futures_util::future::join_all(waits).await
    }

    /// Every node's `/counts` total, for a problem report.
    pub async fn totals(&self, nodes: &[SocketAddr]) -> String {
        let mut totals = Vec::new();
        for &node in nodes {
            totals.push(self.api.total(node).await.map_or_else(|e| format!("error {e}"), |t| t.to_string()));
        }
        totals.join(", ")
    }

    /// The counters `names` on every node (NaN where unreadable), each with
    /// when it was read.
    pub async fn counters<const N: usize>(&self, nodes: &[SocketAddr], names: [&str; N]) -> Vec<(Instant, [f64; N])> {
        let mut values = Vec::new();
        for &node in nodes {
            values.push((Instant::now(), self.api.metrics(node, names).await.unwrap_or([f64::NAN; N])));
        }
        values
    }

    /// Reads gossip counters on every node over `window`.
    pub async fn gossip(&self, nodes: &[SocketAddr], window: Duration) -> GossipReading {
        let names = ["headcount_gossip_sent_bytes_total", "headcount_gossip_received_bytes_total", PULLS];
        let before = self.counters(nodes, names).await;
        tokio::time::sleep(window).await;
        let mut reading = GossipReading::default();
        for (&node, (at, [sent, received, pulls])) in nodes.iter().zip(before) {
            let Some((_, after)) = self.counters(&[node], names).await.pop() else { continue };
            let secs = at.elapsed().as_secs_f64();
            reading.sent_bps.push((after[0] - sent) / secs);
            reading.received_bps.push((after[1] - received) / secs);
            reading.pulls += after[2] - pulls;
        }
        reading
    }

    /// Waits until gossip has quieted down after a burst of changes: every
    /// node sends at most 1.5× (+200 B/s) what it sent when the cluster was
    /// idle, over a full second. Broadcasts are retransmitted for a while
    /// after a change and that tail is not the steady state; how long it
    /// lasts is returned (`None` if it had not ended after `max_wait`).
    pub async fn wait_quiet(&self, nodes: &[SocketAddr], idle: &GossipReading, max_wait: Duration) -> Option<Duration> {
        let (limit, started) = (idle.max_sent() * 1.5 + 200.0, Instant::now());
        while started.elapsed() < max_wait {
            if self.gossip(nodes, Duration::from_secs(1)).await.sent_bps.iter().all(|&bps| bps <= limit) {
                return Some(started.elapsed());
            }
        }
        None
    }
}
