//! The bench lab: starts headcount nodes, bare servers and `hold` processes on kernel-chosen loopback ports (other
//! people run tests here too), logs them to `target/loadtest/logs/`, reads the nodes while a run goes on, and stops
//! them; every child is killed when its handle drops, so an error halfway through a run leaves no server behind.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::future::join_all;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::measure::{self, client::Api, hold::HoldReport};
use crate::report::GossipReading;

/// The counter of full-state pulls a node made.
pub const PULLS: &str = "headcount_cluster_full_pulls_total";
/// Node flags of the suite and the scale run: no per-IP cap in the way.
pub const UNCAPPED: &str = "--max-connections-per-ip 1000000";

/// A running server process; `name` is also its node name and its log's.
pub struct Server {
    pub name: String,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub gossip: SocketAddr,
    pub pid: u32,
    child: Child,
}

impl Server {
    /// Kills it with SIGKILL, as a crash would, and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Stops `servers` (SIGTERM, then killed after 10 s); a problem for each that had exited already (a crash).
    pub async fn stop(servers: Vec<Server>, problems: &mut Vec<String>) {
        for mut server in servers {
            if let Ok(Some(status)) = server.child.try_wait() {
                problems.push(format!("node {} exited during the run ({status})", server.name));
            }
            let pid = server.pid.to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
            let grace = Duration::from_secs(10);
            if tokio::time::timeout(grace, server.child.wait()).await.is_err() {
                let _ = server.child.kill().await;
            }
        }
    }
}

/// A `hold` child process: its report so far once connected, its final report once released (stdin closed).
pub struct Holder(Child, Option<ChildStdin>, Lines<BufReader<ChildStdout>>);

impl Holder {
    /// The next report line, within `timeout`.
    pub async fn report(&mut self, timeout: Duration) -> anyhow::Result<HoldReport> {
        let line = async {
            while let Some(line) = self.2.next_line().await? {
                if let Ok(report) = serde_json::from_str(&line) {
                    return Ok(report);
                }
            }
            Err(anyhow!("hold process ended early"))
        };
        let silent = |_| anyhow!("hold process silent for {timeout:?}");
        tokio::time::timeout(timeout, line).await.map_err(silent)?
    }

    /// Closes its stdin, so the process closes its connections, and reads its final report.
    pub async fn release(mut self, timeout: Duration) -> anyhow::Result<HoldReport> {
        drop(self.1.take());
        let report = self.report(timeout).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.0.wait()).await;
        report
    }
}

/// Where binaries and logs (`dir`: `target/loadtest`) are, when the run started, a client for the nodes' API.
pub struct Lab {
    pub dir: PathBuf,
    pub started: Instant,
    pub api: Api,
    bin: PathBuf,
    headcount: PathBuf,
}

impl Lab {
    /// Finds the binaries next to this one.
    pub fn new() -> anyhow::Result<Self> {
        let load = std::env::current_exe().context("own executable")?;
        let bin = load.parent().context("executable has no directory")?.to_path_buf();
        let headcount = bin.join("headcount");
        for binary in [&headcount, &bin.join("headcount-bare")] {
            let build = "cargo build --release -p headcount -p headcount-load";
            anyhow::ensure!(binary.exists(), "{} not found: {build}", binary.display());
        }
        let dir = bin.parent().unwrap_or(&bin).join("loadtest");
        std::fs::create_dir_all(dir.join("logs"))?;
        let api = Api::new(Duration::from_secs(10), usize::MAX, None)?;
        let started = Instant::now();
        Ok(Self {
            dir,
            started,
            api,
            bin,
            headcount,
        })
    }

    /// `program` with `args`, logging to `logs/{name}.log` and `.err.log`.
    fn command(&self, program: &Path, args: &[String], name: &str) -> anyhow::Result<Command> {
        let log = |suffix| std::fs::File::create(self.dir.join(format!("logs/{name}{suffix}.log")));
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).kill_on_drop(true);
        command.stdout(log("")?).stderr(log(".err")?);
        Ok(command)
    }

    /// Starts a headcount node gossiping every `interval` with `flags`, or without `interval` the bare server.
    pub fn server(&self, name: &str, interval: Option<Duration>, flags: &str) -> anyhow::Result<Server> {
        let free = || TcpListener::bind("127.0.0.1:0")?.local_addr();
        let (http, grpc, gossip) = (free()?, free()?, UdpSocket::bind("127.0.0.1:0")?.local_addr()?);
        let (program, args) = match interval {
            None => (self.bin.join("headcount-bare"), format!("--http {http}")),
            Some(x) => {
                // Each node keeps its visit history in a fresh directory of its own.
                let data = self.dir.join("data").join(name);
                let _ = std::fs::remove_dir_all(&data);
                let data = data.display();
                let node =
                    format!("--http {http} --grpc {grpc} --gossip {gossip} --node-name {name} --data-dir {data}");
                let args = format!("{node} --gossip-interval {}ms {flags}", x.as_millis());
                (self.headcount.clone(), args)
            }
        };
        let args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
        let mut command = self.command(&program, &args, name)?;
        let child = command.spawn().context(format!("starting {name}"))?;
        let pid = child.id().context(format!("{name} exited at once"))?;
        let name = name.to_owned();
        Ok(Server {
            name,
            http,
            grpc,
            gossip,
            pid,
            child,
        })
    }

    /// Waits (30 s at most) until every server answers `/healthz` and sees `members` cluster members alive.
    pub async fn wait_up(&self, servers: &mut [Server], members: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let alive = |node| async move { self.api.alive_members(node).await.unwrap_or(0) };
        for server in servers {
            while self.api.text(server.http, "/healthz").await.is_err()
                || (members > 1 && alive(server.http).await < members)
            {
                if let Ok(Some(status)) = server.child.try_wait() {
                    let logs = self.dir.join("logs");
                    bail!("{} exited ({status}); see {}", server.name, logs.display());
                }
                if Instant::now() > deadline {
                    bail!("{} not up with {members} members alive after 30 s", server.name);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Starts `n` nodes named `tag-n0…` that join the first one, and waits until each sees all `n` alive. Each node
    /// answers `/healthz` before the next starts: a port found free is only reserved once its node has bound it, and
    /// with dozens of nodes starting at once one of them found its port taken by another.
    pub async fn cluster(&self, tag: &str, n: usize, interval: Duration) -> anyhow::Result<Vec<Server>> {
        let mut nodes = vec![self.server(&format!("{tag}-n0"), Some(interval), UNCAPPED)?];
        self.wait_up(&mut nodes, 1).await?;
        let seeds = format!("{UNCAPPED} --seeds {}", nodes[0].gossip);
        for i in 1..n {
            let mut node = [self.server(&format!("{tag}-n{i}"), Some(interval), &seeds)?];
            self.wait_up(&mut node, 1).await?;
            nodes.extend(node);
        }
        self.wait_up(&mut nodes, n).await?;
        Ok(nodes)
    }

    /// Starts a `headcount-load hold --wait-stdin` process with these flags.
    pub fn holder(&self, name: &str, flags: &str) -> anyhow::Result<Holder> {
        let args = format!("hold --wait-stdin {flags}");
        let args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
        let mut command = self.command(&std::env::current_exe()?, &args, name)?;
        let command = command.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = command.spawn().context(format!("starting {name}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (stdin, lines) = (child.stdin.take(), BufReader::new(stdout).lines());
        Ok(Holder(child, stdin, lines))
    }

    /// Lines of `servers`' logs (stderr) holding `needle`, e.g. `member down`: each a node declaring a peer down.
    pub fn log_lines(&self, servers: &[Server], needle: &str) -> u64 {
        let log = |server: &Server| std::fs::read_to_string(self.dir.join(format!("logs/{}.err.log", server.name)));
        let count = |text: String| text.lines().filter(|line| line.contains(needle)).count() as u64;
        servers.iter().map(|server| log(server).map_or(0, count)).sum()
    }

    /// Resident memory of each server now, KiB.
    pub fn rss_kib(servers: &[Server]) -> Vec<u64> {
        let rss = |server: &Server| measure::rss_kib(server.pid).unwrap_or(0);
        servers.iter().map(rss).collect()
    }

    /// How often each of `n` nodes is polled while a run waits for it: every 10 ms up to 10 nodes, then slower, so
    /// the poller sends at most ~1,000 requests a second however big the cluster (each `/counts` walks the node's
    /// whole cluster view, and the nodes and the poller share two cores). Waits are upper bounds by one period.
    pub fn poll_period(n: usize) -> Duration {
        Duration::from_millis(10).max(Duration::from_millis(n as u64))
    }

    /// How long each node took (polled every [`Lab::poll_period`]) to show `want` as its `/counts` total, `None`
    /// after `timeout`.
    pub async fn wait_totals(&self, nodes: &[SocketAddr], want: u64, timeout: Duration) -> Vec<Option<Duration>> {
        let (started, period) = (Instant::now(), Self::poll_period(nodes.len()));
        join_all(nodes.iter().map(|&node| async move {
            while started.elapsed() <= timeout {
                let asked = Instant::now();
                if self.api.total(node).await.ok() == Some(want) {
                    return Some(started.elapsed());
                }
                tokio::time::sleep_until((asked + period).into()).await;
            }
            None
        }))
        .await
    }

    /// The counters `names` on every node, NaN where unreadable.
    pub async fn counters<const N: usize>(&self, nodes: &[SocketAddr], names: [&str; N]) -> Vec<[f64; N]> {
        let read = |node| async move { self.api.metrics(node, names).await.unwrap_or([f64::NAN; N]) };
        join_all(nodes.iter().map(|&node| read(node))).await
    }

    /// Reads gossip counters on every node over `window`.
    pub async fn gossip(&self, nodes: &[SocketAddr], window: Duration) -> GossipReading {
        let sent = "headcount_gossip_sent_bytes_total";
        let names = [sent, "headcount_gossip_received_bytes_total", PULLS];
        let (before, started) = (self.counters(nodes, names).await, Instant::now());
        tokio::time::sleep(window).await;
        let (after, secs) = (self.counters(nodes, names).await, started.elapsed().as_secs_f64());
        let mut reading = GossipReading::default();
        for ([sent, received, pulls], after) in before.into_iter().zip(after) {
            reading.sent_bps.push((after[0] - sent) / secs);
            reading.received_bps.push((after[1] - received) / secs);
            reading.pulls += after[2] - pulls;
        }
        reading
    }

    /// How long until every node sent at most 1.5× (+200 B/s) its idle gossip over a second (`None` after `max_wait`):
    /// broadcasts are retransmitted for a while after a burst of changes, and that tail is not the steady state.
    pub async fn wait_quiet(&self, nodes: &[SocketAddr], idle: &GossipReading, max_wait: Duration) -> Option<Duration> {
        let (limit, started) = (idle.max_sent() * 1.5 + 200.0, Instant::now());
        while started.elapsed() < max_wait {
            let second = self.gossip(nodes, Duration::from_secs(1)).await;
            if second.sent_bps.iter().all(|&bps| bps <= limit) {
                return Some(started.elapsed());
            }
        }
        None
    }
}
