//! The orchestrating half: `suite` and `scale` start servers and load
//! processes through the [`lab`], drive the measurements, fill in the result
//! types of `report::results`, and hand them to the report.

pub mod lab;
pub mod scale;
pub mod suite;

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use clap::Args;

use crate::{
    measure::{
        churn::ChurnArgs,
        hold::{HoldArgs, HoldReport},
        topics::{NetArgs, Sources, TopicArgs},
    },
    report::{self, Section, results::GossipReading},
};
use lab::{Lab, Server, slowest};

/// Flags every run shares: the binary it measures and where results go.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The headcount binary [default: next to this one].
    #[arg(long)]
    pub headcount: Option<PathBuf>,
    /// File whose marked section is rewritten.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub benchmarks: PathBuf,
    /// Do not touch BENCHMARKS.md.
    #[arg(long)]
    pub no_write: bool,
}

impl RunArgs {
    /// Saves a finished run's results as JSON and, unless `--no-write`, into BENCHMARKS.md.
    pub fn save(&self, lab: &Lab, results: &impl Section) -> anyhow::Result<()> {
        report::save(results, &lab.dir, (!self.no_write).then_some(self.benchmarks.as_path()))
    }
}

/// Progress on stderr.
pub fn say(run: &str, message: impl std::fmt::Display) {
    eprintln!("[{run}] {message}");
}

/// UTC now as `YYYY-MM-DD HH:MM UTC`.
pub fn now_utc() -> String {
    let rfc3339 = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replacen('T', " ", 1);
    format!("{} UTC", rfc3339.get(..16).unwrap_or(&rfc3339))
}

fn sources(text: &str) -> anyhow::Result<Sources> {
    text.parse().map_err(anyhow::Error::msg)
}

/// Flags of a `hold` child process over uniform topics. With no `pids` it
/// reports ready as soon as the last join is done (no settle pause).
pub fn hold_flags(
    targets: &[SocketAddr],
    from: &str,
    connections: u64,
    topics: TopicArgs,
    pids: &[u32],
) -> anyhow::Result<HoldArgs> {
    Ok(HoldArgs {
        net: NetArgs {
            targets: targets.to_vec(),
            sources: sources(from)?,
        },
        topics,
        connections,
        concurrency: 100,
        hold: Duration::ZERO,
        wait_stdin: true,
        settle: Duration::from_secs(if pids.is_empty() { 0 } else { 2 }),
        server_pid: pids.to_vec(),
        timeout: Duration::from_secs(15),
    })
}

/// Flags of a churn run (`rate` 0: closed loop with `concurrency` workers).
pub fn churn_flags(
    targets: &[SocketAddr],
    from: &str,
    topics: TopicArgs,
    (rate, concurrency): (f64, usize),
    duration: Duration,
    pids: &[u32],
) -> anyhow::Result<ChurnArgs> {
    let net = NetArgs {
        targets: targets.to_vec(),
        sources: sources(from)?,
    };
    let timeout = Duration::from_secs(5);
    Ok(ChurnArgs {
        net,
        topics,
        rate,
        concurrency,
        duration,
        timeout,
        server_pid: pids.to_vec(),
    })
}

/// What a cluster showed while connections were held and nothing changed.
#[derive(Debug, Default)]
pub struct Quiet {
    /// Connections held, and from starting the load processes to the last one ready, seconds.
    pub held: u64,
    pub connect_secs: f64,
    /// From the last join to each node's total agreeing, ms.
    pub agree_each_ms: Vec<Option<f64>>,
    /// Full-state pulls each node made from the first join to agreement.
    pub pulls_each: Vec<f64>,
    /// Node VmRSS with everything held, `settle` after agreement, KiB.
    pub rss_held_kib: Vec<u64>,
    /// From agreement until gossip was back near its idle rate, seconds.
    pub tail_secs: Option<f64>,
    /// Gossip with everything held, after the tail.
    pub gossip: GossipReading,
    /// Seconds the slowest load process took to close its connections.
    pub release_secs: f64,
    /// From the start of the release to every total at 0, ms.
    pub release_agree_ms: Option<f64>,
    /// Each load process's report.
    pub holds: Vec<HoldReport>,
}

impl Quiet {
    /// The slowest node's agreement, ms.
    pub fn agree_ms(&self) -> Option<f64> {
        self.agree_each_ms
            .iter()
            .try_fold(0.0f64, |slowest, took| took.map(|took| slowest.max(took)))
    }
}

/// How a quiet reading goes: on which nodes, how long each wait may last.
pub struct QuietPlan<'a> {
    /// Names the run in messages and problems.
    pub tag: &'a str,
    pub nodes: &'a [Server],
    /// Gossip of the idle cluster, against which the tail is judged.
    pub idle: &'a GossipReading,
    /// Longest wait for agreement, for the gossip tail and for every total at 0.
    pub wait: Duration,
    /// Pause between agreement and the memory reading, counted in the tail.
    pub settle: Duration,
    /// How long the gossip reading lasts.
    pub window: Duration,
}

/// Starts `holds` as `hold` processes, waits for every node to agree on the
/// total, reads memory, the gossip tail and steady gossip, releases
/// everything and waits for every total to be 0; any product misbehaviour
/// seen goes to `problems`.
pub async fn quiet(
    lab: &Lab,
    plan: QuietPlan<'_>,
    holds: &[HoldArgs],
    problems: &mut Vec<String>,
) -> anyhow::Result<Quiet> {
    let QuietPlan { tag, wait, .. } = plan;
    let https: Vec<SocketAddr> = plan.nodes.iter().map(|node| node.http).collect();
    let pulls_before = lab.counter_each(&https, "headcount_cluster_pulls_total").await;
    let connecting = Instant::now();
    let mut holders = Vec::new();
    for (i, flags) in holds.iter().enumerate() {
        holders.push(lab.holder(&format!("{tag}-hold-{i}"), flags)?);
    }
    let mut quiet = Quiet::default();
    for holder in &mut holders {
        let ready = holder.ready(Duration::from_secs(300)).await?;
        quiet.held += ready.held;
        if ready.failed > 0 {
            problems.push(format!("{tag}: a load process had {} failed joins", ready.failed));
        }
    }
    quiet.connect_secs = connecting.elapsed().as_secs_f64();
    say(
        tag,
        format_args!(
            "{} held after {:.1} s; waiting for every node to agree",
            quiet.held, quiet.connect_secs
        ),
    );
    let agreed = lab
        .wait_totals_each(&https, quiet.held, Duration::from_millis(10), wait)
        .await;
    quiet.agree_each_ms = agreed
        .iter()
        .map(|took| took.map(|took| took.as_secs_f64() * 1000.0))
        .collect();
    let pulls_after = lab.counter_each(&https, "headcount_cluster_pulls_total").await;
    quiet.pulls_each = pulls_after.iter().zip(&pulls_before).map(|(a, b)| a - b).collect();
    if slowest(&agreed).is_none() {
        let seen = lab.totals(&https).await;
        problems.push(format!(
            "{tag}: with {} held, node totals were [{seen}] {wait:?} after the last join",
            quiet.held
        ));
    }
    tokio::time::sleep(plan.settle).await;
    quiet.rss_held_kib = plan.nodes.iter().map(Server::rss_kib).collect();
    let tail = lab.wait_quiet(&https, plan.idle, wait).await;
    quiet.tail_secs = tail.map(|took| (took + plan.settle).as_secs_f64());
    quiet.gossip = lab.gossip(&https, plan.window).await;
    say(
        tag,
        format_args!(
            "agreed in {:?} ms (per node {:?}), gossip tail {:?} s, then {:.0} B/s per node (max)",
            quiet.agree_ms(),
            quiet.agree_each_ms,
            quiet.tail_secs,
            quiet.gossip.max_sent()
        ),
    );

    holders.iter_mut().for_each(lab::Holder::start_release);
    let releases = holders.into_iter().map(|holder| holder.release(wait * 2));
    let (zero, reports) = tokio::join!(
        lab.wait_totals(&https, 0, Duration::from_millis(10), wait),
        futures_util::future::join_all(releases)
    );
    for report in reports {
        let report = report?;
        if report.dropped_while_held > 0 {
            let (dropped, held) = (report.dropped_while_held, report.held);
            problems.push(format!(
                "{tag}: nodes closed {dropped} of {held} connections of a load process while held"
            ));
        }
        quiet.release_secs = quiet.release_secs.max(report.release_secs);
        quiet.holds.push(report);
    }
    quiet.release_agree_ms = zero.map(|took| took.as_secs_f64() * 1000.0);
    if zero.is_none() {
        let seen = lab.totals(&https).await;
        problems.push(format!(
            "{tag}: node totals were [{seen}], not 0, {wait:?} after the release started"
        ));
    }
    Ok(quiet)
}
