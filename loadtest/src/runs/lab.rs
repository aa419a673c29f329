//! The bench lab: starts headcount nodes, bare servers and `hold` processes
//! on kernel-chosen loopback ports (other people run tests here too), logs
//! them to `target/loadtest/logs/`, reads the nodes while a run goes on, and
//! stops them; every child is killed when its handle drops, so an error
//! halfway through a run leaves no server behind.

use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
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

/// A running server process; `name` is also its node name and its log's.
pub struct Server {
    pub name: String,
    pub http: SocketAddr,
    /// Gossip address (headcount only).
    pub gossip: Option<SocketAddr>,
    pub pid: u32,
    child: Child,
}

impl Server {
    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> u64 {
        procfs::rss_kib(self.pid).unwrap_or(0)
    }

    /// Asks the process to stop (SIGTERM), then kills it after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status().await;
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }

    /// How the process exited, if it has (a crash, if we did not stop it).
    pub fn exited(&mut self) -> Option<String> {
        self.child.try_wait().ok().flatten().map(|status| status.to_string())
    }
}

/// A `hold` child process: `ready` once connected, `release` when stdin closes.
pub struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Holder {
    /// Waits for the `ready` line.
    pub async fn ready(&mut self, timeout: Duration) -> anyhow::Result<Ready> {
        let deadline = (Instant::now() + timeout).into();
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line()).await;
            let line = line.map_err(|_| anyhow!("hold process not ready after {timeout:?}"))??;
            let line = line.ok_or_else(|| anyhow!("hold process exited before it was ready"))?;
            if let Ok(ready) = serde_json::from_str::<Ready>(&line)
                && ready.event == "ready"
            {
                return Ok(ready);
            }
        }
    }

    /// Closes its stdin: the process starts closing its connections.
    pub fn start_release(&mut self) {
        drop(self.stdin.take());
    }

    /// Releases (if not started yet) and reads the process's report.
    pub async fn release(mut self, timeout: Duration) -> anyhow::Result<HoldReport> {
        self.start_release();
        let report = tokio::time::timeout(timeout, async {
            while let Some(line) = self.lines.next_line().await? {
                if let Ok(report) = serde_json::from_str::<HoldReport>(&line) {
                    return Ok(report);
                }
            }
            Err(anyhow!("hold process ended without a report"))
        });
        let report = report.await.map_err(|_| anyhow!("hold process did not report within {timeout:?}"))??;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        Ok(report)
    }
}

/// Where the binaries and logs are (`dir` is `target/loadtest`), and a
/// client for the nodes' API.
pub struct Lab {
    pub dir: PathBuf,
    load: PathBuf,
    bare: PathBuf,
    headcount: PathBuf,
    pub api: Api,
}

impl Lab {
    /// Finds the binaries next to this one (or `headcount`).
    pub fn new(headcount: Option<PathBuf>) -> anyhow::Result<Self> {
        let load = std::env::current_exe().context("own executable")?;
        let bin = load.parent().ok_or_else(|| anyhow!("executable has no directory"))?.to_path_buf();
        let (headcount, bare) = (headcount.unwrap_or_else(|| bin.join("headcount")), bin.join("headcount-bare"));
        for binary in [&headcount, &bare] {
            if !binary.exists() {
                let build = "build with `cargo build --release -p headcount -p headcount-load`";
                bail!("{} not found: {build}", binary.display());
            }
        }
        let dir = bin.parent().map_or_else(|| bin.clone(), Path::to_path_buf).join("loadtest");
        std::fs::create_dir_all(dir.join("logs"))?;
        Ok(Self { dir, load, bare, headcount, api: Api::new(Duration::from_secs(10), usize::MAX)? })
    }

    fn log(&self, name: &str) -> anyhow::Result<Stdio> {
        Ok(std::fs::File::create(self.dir.join("logs").join(format!("{name}.log")))?.into())
    }

    /// Starts a headcount node gossiping every `interval`, joining `seed` if given.
    pub fn headcount(&self, name: &str, interval: Duration, seed: Option<SocketAddr>) -> anyhow::Result<Server> {
        let (http, grpc, gossip) = (free_tcp()?, free_tcp()?, UdpSocket::bind("127.0.0.1:0")?.local_addr()?);
        let mut command = Command::new(&self.headcount);
        for (flag, addr) in
            [("--http", Some(http)), ("--grpc", Some(grpc)), ("--gossip", Some(gossip)), ("--seeds", seed)]
        {
            command.args(addr.map(|addr| [flag.to_owned(), addr.to_string()]).into_iter().flatten());
        }
        command.args(["--node-name", name, "--max-connections-per-ip", "1000000"]);
        command.arg("--gossip-interval").arg(format!("{}ms", interval.as_millis()));
        self.spawn(command, name, http, Some(gossip))
    }

    /// Starts a bare baseline server.
    pub fn bare(&self, name: &str) -> anyhow::Result<Server> {
        let http = free_tcp()?;
        let mut command = Command::new(&self.bare);
        command.arg("--http").arg(http.to_string());
        self.spawn(command, name, http, None)
    }

    fn spawn(
        &self,
        mut command: Command,
        name: &str,
        http: SocketAddr,
        gossip: Option<SocketAddr>,
    ) -> anyhow::Result<Server> {
        command.stdin(Stdio::null()).stdout(self.log(name)?).stderr(self.log(&format!("{name}.err"))?);
        let child = command.kill_on_drop(true).spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        Ok(Server { name: name.into(), http, gossip, pid, child })
    }

    /// Waits until `/healthz` answers on every server (20 s at most).
    pub async fn wait_healthy(&self, servers: &mut [Server]) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        for server in servers {
            while !self.api.healthy(server.http).await {
                if let Some(status) = server.exited() {
                    bail!("{} exited ({status}); see {}", server.name, self.dir.join("logs").display());
                }
                if Instant::now() > deadline {
                    bail!("{} not healthy after 20 s", server.name);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Starts `n` nodes that join the first one and waits until each sees all
    /// `n` alive.
    pub async fn cluster(&self, tag: &str, n: usize, interval: Duration) -> anyhow::Result<Vec<Server>> {
        let mut nodes = vec![self.headcount(&format!("{tag}-n0"), interval, None)?];
        for i in 1..n {
            nodes.push(self.headcount(&format!("{tag}-n{i}"), interval, nodes[0].gossip)?);
        }
        self.wait_healthy(&mut nodes).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            while self.api.alive_members(node.http).await.unwrap_or(0) < n {
                if Instant::now() > deadline {
                    bail!("{} does not see {n} alive members after 30s", node.name);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(nodes)
    }

    /// Starts a `hold` process with these flags (and `--wait-stdin`).
    pub fn holder(&self, name: &str, flags: &HoldArgs) -> anyhow::Result<Holder> {
        let mut command = Command::new(&self.load);
        command.arg("hold").args(argv(&HoldArgs { wait_stdin: true, ..flags.clone() })?);
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(self.log(name)?);
        let mut child = command.kill_on_drop(true).spawn().with_context(|| format!("starting {name}"))?;
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

    /// Each of the counters `names` on every node (NaN where unreadable).
    pub async fn counters<const N: usize>(&self, nodes: &[SocketAddr], names: [&str; N]) -> Vec<[f64; N]> {
        let mut values = Vec::new();
        for &node in nodes {
            values.push(self.api.metrics(node, names).await.unwrap_or([f64::NAN; N]));
        }
        values
    }

    /// Reads gossip counters on every node over `window`.
    pub async fn gossip(&self, nodes: &[SocketAddr], window: Duration) -> GossipReading {
        let names = ["headcount_gossip_sent_bytes_total", "headcount_gossip_received_bytes_total", PULLS];
        let mut before = Vec::new();
        for &node in nodes {
            before.push((Instant::now(), self.api.metrics(node, names).await.unwrap_or([f64::NAN; 3])));
        }
        tokio::time::sleep(window).await;
        let mut reading = GossipReading::default();
        for (&node, (at, [sent, received, pulls])) in nodes.iter().zip(before) {
            let after = self.api.metrics(node, names).await.unwrap_or([f64::NAN; 3]);
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
        let limit = idle.max_sent() * 1.5 + 200.0;
        let started = Instant::now();
        while started.elapsed() < max_wait {
            if self.gossip(nodes, Duration::from_secs(1)).await.sent_bps.iter().all(|&bps| bps <= limit) {
                return Some(started.elapsed());
            }
        }
        None
    }
}

/// The counter of full-state pulls a node made.
pub const PULLS: &str = "headcount_cluster_pulls_total";

fn free_tcp() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
