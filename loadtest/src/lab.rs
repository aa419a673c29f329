//! The bench lab: starts headcount nodes, bare servers and `hold` processes
//! on this machine, waits for them, and stops them.
//!
//! Every child is killed when its handle is dropped, so an error halfway
//! through a suite leaves no server behind. Ports come from the kernel (bind
//! to port 0, read it, close) because other people run tests on this machine
//! at the same time; logs go to `target/loadtest/logs/`.

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
    api::Api,
    hold::{HoldReport, Ready},
    procfs,
};

/// Which server a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A headcount node.
    Headcount,
    /// The bare baseline.
    Bare,
}

/// A running server process.
pub struct Server {
    /// Name (node name for headcount).
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// HTTP and websocket address.
    pub http: SocketAddr,
    /// Gossip address (headcount only).
    pub gossip: Option<SocketAddr>,
    /// Process id.
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
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }

    /// Whether the process has exited (a crash, if we did not stop it).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }
}

/// A `hold` child process.
pub struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Holder {
    /// Waits for the `ready` line.
    pub async fn ready(&mut self, timeout: Duration) -> anyhow::Result<Ready> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, self.lines.next_line())
                .await
                .map_err(|_| anyhow!("hold process not ready after {timeout:?}"))??
                .ok_or_else(|| anyhow!("hold process exited before it was ready"))?;
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

    /// Closes its stdin (release) and reads its report.
    pub async fn release(mut self, timeout: Duration) -> anyhow::Result<HoldReport> {
        drop(self.stdin.take());
        let report = tokio::time::timeout(timeout, async {
            while let Some(line) = self.lines.next_line().await? {
                if let Ok(report) = serde_json::from_str::<HoldReport>(&line) {
                    return Ok(report);
                }
            }
            Err(anyhow!("hold process ended without a report"))
        })
        .await
        .map_err(|_| anyhow!("hold process did not report within {timeout:?}"))??;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        Ok(report)
    }
}

/// Where the binaries and logs are.
pub struct Lab {
    /// `target/loadtest`.
    pub dir: PathBuf,
    headcount: PathBuf,
    bare: PathBuf,
    load: PathBuf,
    /// HTTP client for the nodes.
    pub api: Api,
}

impl Lab {
    /// Finds the binaries next to this one (or `--headcount`).
    pub fn new(headcount: Option<PathBuf>) -> anyhow::Result<Self> {
        let load = std::env::current_exe().context("own executable")?;
        let bin_dir = load
            .parent()
            .ok_or_else(|| anyhow!("executable has no directory"))?
            .to_path_buf();
        let headcount = headcount.unwrap_or_else(|| bin_dir.join("headcount"));
        let bare = bin_dir.join("headcount-bare");
        for binary in [&headcount, &bare] {
            if !binary.exists() {
                bail!(
                    "{} not found: build with `cargo build --release -p headcount -p headcount-load`",
                    binary.display()
                );
            }
        }
        let dir = bin_dir
            .parent()
            .map_or_else(|| bin_dir.clone(), Path::to_path_buf)
            .join("loadtest");
        std::fs::create_dir_all(dir.join("logs"))?;
        Ok(Self {
            dir,
            headcount,
            bare,
            load,
            api: Api::new(Duration::from_secs(10))?,
        })
    }

    fn log(&self, name: &str) -> anyhow::Result<Stdio> {
        let file = std::fs::File::create(self.dir.join("logs").join(format!("{name}.log")))?;
        Ok(Stdio::from(file))
    }

    /// Starts a headcount node.
    pub fn headcount(
        &self,
        name: &str,
        interval: Duration,
        seeds: &[SocketAddr],
        extra: &[String],
    ) -> anyhow::Result<Server> {
        let http = free_tcp()?;
        let gossip = free_udp()?;
        let mut command = Command::new(&self.headcount);
        command
            .arg("--http")
            .arg(http.to_string())
            .arg("--grpc")
            .arg(free_tcp()?.to_string())
            .arg("--gossip")
            .arg(gossip.to_string())
            .arg("--node-name")
            .arg(name)
            .arg("--gossip-interval")
            .arg(format!("{}ms", interval.as_millis()))
            .arg("--max-connections-per-ip")
            .arg("1000000")
            .args(extra);
        if !seeds.is_empty() {
            let seeds: Vec<String> = seeds.iter().map(ToString::to_string).collect();
            command.arg("--seeds").arg(seeds.join(","));
        }
        self.spawn(command, name, Kind::Headcount, http, Some(gossip))
    }

    /// Starts a bare baseline server.
    pub fn bare(&self, name: &str) -> anyhow::Result<Server> {
        let http = free_tcp()?;
        let mut command = Command::new(&self.bare);
        command.arg("--http").arg(http.to_string());
        self.spawn(command, name, Kind::Bare, http, None)
    }

    fn spawn(
        &self,
        mut command: Command,
        name: &str,
        kind: Kind,
        http: SocketAddr,
        gossip: Option<SocketAddr>,
    ) -> anyhow::Result<Server> {
        command
            .stdin(Stdio::null())
            .stdout(self.log(name)?)
            .stderr(self.log(&format!("{name}.err"))?)
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        Ok(Server {
            name: name.into(),
            kind,
            http,
            gossip,
            pid,
            child,
        })
    }

    /// Waits until `/healthz` answers on every server.
    pub async fn wait_healthy(&self, servers: &mut [Server], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for server in servers {
            while !self.api.healthy(server.http).await {
                if let Some(status) = server.exited() {
                    bail!(
                        "{} exited ({status}); see {}",
                        server.name,
                        self.dir.join("logs").display()
                    );
                }
                if Instant::now() > deadline {
                    bail!("{} not healthy after {timeout:?}", server.name);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Starts `n` nodes that join the first one and waits until each sees all
    /// `n` alive.
    pub async fn cluster(
        &self,
        tag: &str,
        n: usize,
        interval: Duration,
        extra: &[String],
    ) -> anyhow::Result<Vec<Server>> {
        let mut nodes = vec![self.headcount(&format!("{tag}-n0"), interval, &[], extra)?];
        let seed: Vec<SocketAddr> = nodes[0].gossip.into_iter().collect();
        for i in 1..n {
            nodes.push(self.headcount(&format!("{tag}-n{i}"), interval, &seed, extra)?);
        }
        self.wait_healthy(&mut nodes, Duration::from_secs(20)).await?;
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

    /// Starts a `hold` process with these arguments (plus `--wait-stdin`).
    pub fn holder(&self, name: &str, args: &[String]) -> anyhow::Result<Holder> {
        let mut child = Command::new(&self.load)
            .arg("hold")
            .arg("--wait-stdin")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(self.log(name)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("{name}: no stdout"))?;
        Ok(Holder {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// Polls every node (each on its own) until it reports `want` as its
    /// `/counts` total; returns how long the slowest took, or `None` if one
    /// had not after `timeout`.
    pub async fn wait_totals(
        &self,
        nodes: &[SocketAddr],
        want: u64,
        poll: Duration,
        timeout: Duration,
    ) -> Option<Duration> {
        let each = self.wait_totals_each(nodes, want, poll, timeout).await;
        each.into_iter()
            .try_fold(Duration::ZERO, |slowest, took| took.map(|took| slowest.max(took)))
    }

    /// Like [`Lab::wait_totals`], per node.
    pub async fn wait_totals_each(
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
}

fn free_tcp() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

/// A one-line description of this machine and how busy it is.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    Machine {
        cpu,
        cores,
        mem_gib,
        kernel,
        load_start: loadavg(),
        load_end: String::new(),
    }
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The machine a run happened on.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Cores available to this process.
    pub cores: usize,
    /// Total memory, GiB.
    pub mem_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// Load averages when the run started.
    pub load_start: String,
    /// Load averages when it ended.
    pub load_end: String,
}
