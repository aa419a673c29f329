//! `gossip`: what gossip costs each node as the cluster grows, and how fast and how reliably SWIM tells a crash from
//! a lost datagram, on real processes. For each cluster size it reads every node's UDP bytes sent (the
//! `headcount_gossip_sent_bytes_total` counter) over a window three times: idle, with topics held that do not change
//! (one connection each, spread over every node), and with topics changing every round (open-loop joins and leaves
//! on every node); then it kills nodes with SIGKILL, one at a time, and times until every survivor's `/cluster`
//! shows the victim down and its counts are gone from every `/counts` total, restarting the victim under its name
//! after each trial. False suspicions are counted while nothing is killed: rising edges of each node's
//! `headcount_cluster_members{state="suspect"}` and `{state="down"}` gauges, polled, so a suspicion refuted between
//! two polls is missed and the count is a lower bound.
//!
//! `--loss P` drops P % of the UDP datagrams arriving on 127.0.0.0/8 (an nftables rule; this kernel has no
//! `netem`). That would drop other people's loopback traffic too, so it is refused unless `lo` is the only network
//! interface, i.e. the run is in a network namespace of its own (`loadtest/gossip.sh --loss 10` makes one); TCP
//! (websockets, repair pulls over gRPC) is left alone.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::future::join_all;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::lab::{Lab, Server, UNCAPPED};
use super::{RunArgs, flags, list, quiet, say, slowest_ms};
use crate::measure::{churn, client::Api, client::samples};
use crate::report::{CrashTrial, GossipResults, ScaleResults, SizeResults};

/// The nftables table `--loss` adds (and removes at the end).
const LOSS_TABLE: &str = "headcount_loss";

/// Flags of `gossip`.
#[derive(Debug, Clone, clap::Args)]
pub struct GossipArgs {
    /// Cluster sizes, measured one after the other.
    #[arg(long, value_delimiter = ',', default_value = "3,10,50")]
    pub sizes: Vec<usize>,
    /// Gossip interval X.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// How long each gossip reading lasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Quiet topics held for the quiet reading, one connection each, over every node.
    #[arg(long, default_value_t = 10_000)]
    pub quiet_topics: u64,
    /// Join-and-leave cycles started per second for the changing reading, over every node.
    #[arg(long, default_value_t = 200.0)]
    pub churn_rate: f64,
    /// Topics those cycles spread over.
    #[arg(long, default_value_t = 100)]
    pub churn_topics: u64,
    /// Nodes killed (one at a time, each restarted after) per cluster size.
    #[arg(long, default_value_t = 3)]
    pub crashes: usize,
    /// Extra time per cluster size, after the readings, spent only counting false suspicions.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub observe: Duration,
    /// Percent of UDP datagrams to 127.0.0.0/8 dropped on arrival (only in a network namespace of its own).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub loss: u8,
    /// The section of BENCHMARKS.md (outside the generated one) and the JSON file the results go to; default
    /// `gossip`, or `gossip-lossP` with `--loss P`.
    #[arg(long, value_name = "NAME")]
    pub section: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `gossip`.
pub async fn run(args: GossipArgs) -> anyhow::Result<GossipResults> {
    let section = args.section.clone().unwrap_or_else(|| match args.loss {
        0 => "gossip".into(),
        loss => format!("gossip-loss{loss}"),
    });
    let (lab, mut r) = args.run.start::<GossipResults>(&section)?;
    (r.interval_ms, r.window_secs, r.loss_percent) = (
        args.interval.as_secs_f64() * 1000.0,
        args.window.as_secs_f64(),
        args.loss,
    );
    (r.quiet_topics, r.churn_rate, r.churn_topics) = (args.quiet_topics, args.churn_rate, args.churn_topics);
    if args.loss > 0 {
        drop_udp(args.loss).await?;
    }
    for &n in &args.sizes {
        // A size that fails (a cluster that never forms) is a finding; the other sizes still run and are written.
        match size_part(&lab, &args, n, &mut r.run.problems).await {
            Ok(size) => r.sizes.push(size),
            Err(error) => r.run.problems.push(format!("{n} nodes: {error:#}")),
        }
    }
    if args.loss > 0 {
        let _ = nft(&["delete", "table", "ip", LOSS_TABLE]).await;
    }
    args.run.finish_own(&lab, &mut r, &section)?;
    Ok(r)
}

/// `nft` with these arguments; an error with its stderr unless it succeeds.
async fn nft(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("nft")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running nft")?;
    if !output.status.success() {
        bail!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Drops `percent` % of the UDP datagrams arriving on 127.0.0.0/8, once sure this is a namespace of its own.
async fn drop_udp(percent: u8) -> anyhow::Result<()> {
    let interfaces = std::fs::read_to_string("/proc/net/dev").context("/proc/net/dev")?;
    let names: Vec<&str> = interfaces
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(str::trim)
        .collect();
    if names != ["lo"] {
        let found = names.join(", ");
        bail!(
            "--loss drops loopback UDP for everyone in this network namespace ({found}): run it in one of its own (loadtest/gossip.sh)"
        );
    }
    nft(&["add", "table", "ip", LOSS_TABLE]).await?;
    nft(&[
        "add",
        "chain",
        "ip",
        LOSS_TABLE,
        "input",
        "{ type filter hook input priority 0; }",
    ])
    .await?;
    let rule = format!("ip daddr 127.0.0.0/8 meta l4proto udp numgen random mod 100 < {percent} drop");
    let rule: Vec<&str> = rule.split(' ').collect();
    nft(&[["add", "rule", "ip", LOSS_TABLE, "input"].as_slice(), &rule].concat()).await
}

/// One cluster size: readings and watched time first, then the crash trials.
async fn size_part(lab: &Lab, args: &GossipArgs, n: usize, problems: &mut Vec<String>) -> anyhow::Result<SizeResults> {
    let (tag, x, window) = (format!("g{n}"), args.interval, args.window);
    say(&tag, format!("cluster of {n} nodes, X = {x:?}"));
    let mut nodes = lab.cluster(&tag, n, x).await?;
    let https: Vec<SocketAddr> = nodes.iter().map(|node| node.http).collect();
    let mut s = SizeResults {
        nodes: n,
        ..SizeResults::default()
    };
    let period = Lab::poll_period(n).max(Duration::from_millis(100));
    let (stop, watching) = (CancellationToken::new(), Instant::now());
    let watcher = tokio::spawn(watch(lab.api.clone(), https.clone(), period, stop.clone()));

    s.idle = lab.gossip(&https, window).await;
    let to = list(&https);
    let quiet_topics = args.quiet_topics;
    let topics = format!("--connections {quiet_topics} --topics {quiet_topics} --topic-prefix quiet/");
    let holds = [format!("--targets {to} --sources 127.0.0.30-33 {topics} --settle 0s")];
    let mut q = ScaleResults {
        gossip_idle: s.idle.clone(),
        ..ScaleResults::default()
    };
    let times = [
        Duration::from_secs(300),
        Duration::from_secs(60),
        Duration::ZERO,
        window,
    ];
    quiet(lab, (&tag, &nodes), times, &holds, &mut q).await?;
    (s.quiet, s.quiet_agree_ms) = (q.gossip_steady, q.agree_ms);
    problems.extend(q.run.problems);

    // The release's broadcasts are still retransmitted for a while: not part of the changing reading.
    let _ = lab.wait_quiet(&https, &s.idle, Duration::from_secs(60)).await;
    let ms = window.as_millis() + 2000;
    let (rate, topics) = (args.churn_rate, args.churn_topics);
    let load = format!("--rate {rate} --concurrency 64 --duration {ms}ms --topics {topics} --topic-prefix busy/");
    let churning = tokio::spawn(churn::run(flags(&format!(
        "--targets {to} --sources 127.0.0.24-27 {load}"
    ))?));
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.changing = lab.gossip(&https, window).await;
    s.churn = Some(churning.await??);
    let (idle, quiet, changing) = (s.idle.mean_sent(), s.quiet.mean_sent(), s.changing.mean_sent());
    say(
        &tag,
        format!("gossip sent per node, mean: idle {idle:.0} B/s, quiet {quiet:.0}, changing {changing:.0}"),
    );
    tokio::time::sleep(args.observe).await;
    stop.cancel();
    let (suspicions, downs) = watcher.await?;
    (s.suspicions, s.false_downs) = (suspicions, downs);
    (s.watched_secs, s.watch_period_ms) = (watching.elapsed().as_secs_f64(), period.as_secs_f64() * 1000.0);
    say(
        &tag,
        format!(
            "{suspicions} suspicions, {downs} false downs in {:.1} node-hours",
            s.node_hours()
        ),
    );

    for trial in 0..args.crashes.min(n.saturating_sub(1)) {
        let crash = crash(lab, &mut nodes, 1 + trial % (n - 1), x, trial).await?;
        say(
            &tag,
            format!(
                "killed {}: down everywhere after {:?} ms, pruned after {:?} ms",
                crash.victim, crash.down_ms, crash.pruned_ms
            ),
        );
        if crash.down_ms.is_none() || crash.pruned_ms.is_none() {
            problems.push(format!(
                "{tag}: {} killed, not down and pruned everywhere within 30 s",
                crash.victim
            ));
        }
        s.crashes.push(crash);
    }
    Server::stop(nodes, problems).await;
    Ok(s)
}

/// Rising edges of the suspect and down member gauges of every node, polled every `period` until `stop`.
async fn watch(api: Api, nodes: Vec<SocketAddr>, period: Duration, stop: CancellationToken) -> (u64, u64) {
    let gauge = |state: &str| format!("headcount_cluster_members{{state=\"{state}\"}}");
    let (suspect, down) = (gauge("suspect"), gauge("down"));
    let mut last = vec![(0.0, 0.0); nodes.len()];
    let (mut suspicions, mut downs) = (0.0, 0.0);
    let mut ticks = tokio::time::interval(period);
    while !stop.is_cancelled() {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let api = &api;
        let read = |node| async move { api.text(node, "/metrics").await.ok() };
        let texts = join_all(nodes.iter().map(|&node| read(node))).await;
        for (text, (last_suspect, last_down)) in texts.into_iter().zip(&mut last) {
            let Some(text) = text else { continue };
            let all = samples(&text);
            let value = |series: &str| all.iter().find(|(name, _)| name == series).map_or(0.0, |(_, v)| *v);
            let (now_suspect, now_down) = (value(&suspect), value(&down));
            suspicions += f64::max(now_suspect - *last_suspect, 0.0);
            downs += f64::max(now_down - *last_down, 0.0);
            (*last_suspect, *last_down) = (now_suspect, now_down);
        }
    }
    (suspicions as u64, downs as u64)
}

/// Kills `nodes[victim]` once connections on it are counted everywhere, times the survivors, restarts it.
async fn crash(
    lab: &Lab,
    nodes: &mut [Server],
    victim: usize,
    x: Duration,
    trial: usize,
) -> anyhow::Result<CrashTrial> {
    const HELD: u64 = 100;
    let mut c = CrashTrial {
        victim: nodes[victim].name.clone(),
        held_on_victim: HELD,
        ..CrashTrial::default()
    };
    let https: Vec<SocketAddr> = nodes.iter().map(|node| node.http).collect();
    let line = format!(
        "--targets {} --sources 127.0.0.40-41 --connections {HELD} --topics 10",
        https[victim]
    );
    let mut holder = lab.holder(
        &format!("{}-crash-{trial}", c.victim),
        &format!("{line} --topic-prefix crash/ --settle 0s"),
    )?;
    holder.report(Duration::from_secs(60)).await?;
    let deadline = Duration::from_secs(30);
    if slowest_ms(&lab.wait_totals(&https, HELD, deadline).await).is_none() {
        bail!("{}: {HELD} connections never counted on every node", c.victim);
    }
    let survivors: Vec<SocketAddr> = https
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, &a)| a)
        .collect();
    let period = Lab::poll_period(survivors.len() * 2);
    c.poll_ms = period.as_secs_f64() * 1000.0;
    let killed = Instant::now();
    nodes[victim].kill().await;
    let name = c.victim.as_str();
    let down = join_all(survivors.iter().map(|&node| async move {
        while killed.elapsed() < deadline {
            let asked = Instant::now();
            if lab
                .api
                .member_state(node, name)
                .await
                .is_ok_and(|state| state.as_deref().is_none_or(|s| s == "down"))
            {
                return Some(killed.elapsed());
            }
            tokio::time::sleep_until((asked + period).into()).await;
        }
        None
    }));
    let (down, pruned) = tokio::join!(down, lab.wait_totals(&survivors, 0, deadline));
    (c.down_ms, c.pruned_ms) = (slowest_ms(&down), slowest_ms(&pruned));
    c.down_each_ms = down.iter().map(|took| slowest_ms(&[*took])).collect();
    let _ = holder.release(Duration::from_secs(10)).await;
    let seeds = format!("{UNCAPPED} --seeds {}", nodes[0].gossip);
    nodes[victim] = lab.server(&c.victim, Some(x), &seeds)?;
    lab.wait_up(nodes, nodes.len()).await?;
    Ok(c)
}
