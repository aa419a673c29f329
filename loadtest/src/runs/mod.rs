//! The orchestrating half: `suite` and `scale` start servers and load
//! processes through the [`lab`], drive the measurements, fill in the result
//! types of `report::results` and hand them to the report; what both runs do
//! (flags of child measurements, reading a cluster that holds many quiet
//! connections) is here.

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
        hold::HoldArgs,
        topics::{NetArgs, TopicArgs},
    },
    report::{self, Section, results::ScaleResults},
};
use lab::{Lab, PULLS, Server};

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
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    format!("{} UTC", now.replacen('T', " ", 1).get(..16).unwrap_or(&now))
}

fn net(targets: &[SocketAddr], sources: &str) -> anyhow::Result<NetArgs> {
    Ok(NetArgs { targets: targets.to_vec(), sources: sources.parse().map_err(anyhow::Error::msg)? })
}

/// Flags of a `hold` child process. With no `pids` it reports ready as soon
/// as the last join is done (no settle pause).
pub fn hold_flags(
    to: &[SocketAddr],
    from: &str,
    connections: u64,
    topics: TopicArgs,
    pids: &[u32],
) -> anyhow::Result<HoldArgs> {
    Ok(HoldArgs {
        net: net(to, from)?,
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

/// Flags of a churn over `topics` for `duration`, at `rate` cycles per
/// second with at most `concurrency` in flight (rate 0: closed loop).
pub fn churn_flags(
    to: &[SocketAddr],
    from: &str,
    topics: TopicArgs,
    (rate, concurrency): (f64, usize),
    duration: Duration,
    pids: &[u32],
) -> anyhow::Result<ChurnArgs> {
    let (net, timeout, server_pid) = (net(to, from)?, Duration::from_secs(5), pids.to_vec());
    Ok(ChurnArgs { net, topics, rate, concurrency, duration, timeout, server_pid })
}

/// The slowest of `waits` in ms, `None` if one did not end.
pub fn slowest_ms(waits: &[Option<Duration>]) -> Option<f64> {
    let slowest = waits.iter().try_fold(Duration::ZERO, |slowest, took| took.map(|took| slowest.max(took)));
    slowest.map(|took| took.as_secs_f64() * 1000.0)
}

/// Unless every node's total reaches `want` within 5 s, a problem saying
/// what they were instead.
pub async fn check_totals(lab: &Lab, nodes: &[SocketAddr], want: u64, when: &str, problems: &mut Vec<String>) {
    let waits = lab.wait_totals(nodes, want, Duration::from_millis(50), Duration::from_secs(5)).await;
    if slowest_ms(&waits).is_none() {
        let seen = lab.totals(nodes).await;
        problems.push(format!("{when}: /counts totals [{seen}] never reached {want} within 5 s"));
    }
}

/// How a quiet reading goes: on which nodes (`tag` names them in messages),
/// the longest `wait` for agreement, the gossip tail and every total at 0,
/// the pause between agreement and the memory reading (counted in the
/// tail), and the gossip window.
pub struct QuietPlan<'a> {
    pub tag: &'a str,
    pub nodes: &'a [Server],
    pub wait: Duration,
    pub settle: Duration,
    pub window: Duration,
}

/// The core of a scale run, also the suite's quiet reading: starts `holds`
/// as `hold` processes, waits for every node to agree on the total, reads
/// memory, the gossip tail (against `r.gossip_idle`) and steady gossip,
/// releases everything and waits for every total to be 0. The figures go
/// into `r`, any product misbehaviour into `r.problems`.
pub async fn quiet(lab: &Lab, plan: QuietPlan<'_>, holds: &[HoldArgs], r: &mut ScaleResults) -> anyhow::Result<()> {
    let QuietPlan { tag, wait, .. } = plan;
    let https: Vec<SocketAddr> = plan.nodes.iter().map(|node| node.http).collect();
    let (pulls_before, connecting) = (lab.counters(&https, [PULLS]).await, Instant::now());
    let mut holders = Vec::new();
    for (i, flags) in holds.iter().enumerate() {
        holders.push(lab.holder(&format!("{tag}-hold-{i}"), flags)?);
    }
    for holder in &mut holders {
        let ready = holder.ready(Duration::from_secs(300)).await?;
        r.held += ready.held;
        if ready.failed > 0 {
            r.problems.push(format!("{tag}: a load process had {} failed joins", ready.failed));
        }
    }
    r.connect_secs = connecting.elapsed().as_secs_f64();
    say(tag, format_args!("{} held after {:.1} s; waiting for every node to agree", r.held, r.connect_secs));
    let agreed = lab.wait_totals(&https, r.held, Duration::from_millis(10), wait).await;
    (r.agree_each_ms, r.agree_ms) = (agreed.iter().map(|took| slowest_ms(&[*took])).collect(), slowest_ms(&agreed));
    let pulls_after = lab.counters(&https, [PULLS]).await;
    r.pulls_each = pulls_after.iter().zip(&pulls_before).map(|((_, [a]), (_, [b]))| a - b).collect();
    if r.agree_ms.is_none() {
        let seen = lab.totals(&https).await;
        r.problems.push(format!("{tag}: with {} held, node totals were [{seen}] {wait:?} after the last join", r.held));
    }
    tokio::time::sleep(plan.settle).await;
    r.rss_held_kib = plan.nodes.iter().map(Server::rss_kib).collect();
    let tail = lab.wait_quiet(&https, &r.gossip_idle, wait).await;
    r.quiet_tail_secs = tail.map(|took| (took + plan.settle).as_secs_f64());
    r.gossip_steady = lab.gossip(&https, plan.window).await;
    let (agree, each, tail, max) = (r.agree_ms, &r.agree_each_ms, r.quiet_tail_secs, r.gossip_steady.max_sent());
    say(tag, format_args!("agreed in {agree:?} ms ({each:?}), gossip tail {tail:?} s, then {max:.0} B/s per node"));

    holders.iter_mut().for_each(lab::Holder::start_release);
    let releases = futures_util::future::join_all(holders.into_iter().map(|holder| holder.release(wait * 2)));
    let (zero, reports) = tokio::join!(lab.wait_totals(&https, 0, Duration::from_millis(10), wait), releases);
    for report in reports {
        let report = report?;
        if report.dropped_while_held > 0 {
            let (dropped, held) = (report.dropped_while_held, report.held);
            r.problems
                .push(format!("{tag}: nodes closed {dropped} of {held} connections of a load process while held"));
        }
        r.release_secs = r.release_secs.max(report.release_secs);
        r.holds.push(report);
    }
    r.release_agree_ms = slowest_ms(&zero);
    if r.release_agree_ms.is_none() {
        let seen = lab.totals(&https).await;
        r.problems.push(format!("{tag}: node totals were [{seen}], not 0, {wait:?} after the release started"));
    }
    Ok(())
}
