//! The orchestrating half: `suite`, `scale` and `hostile` start servers and load processes through the [`lab`],
//! drive the measurements and hand the results to the report (`hostile` only saves its JSON).
//!
//! `scale` holds 100,000 websocket connections on one machine, each on its own topic, and checks the cluster agrees
//! on the total. No process may have more than 20,000 open files, so the load is split over several nodes and
//! several `hold` processes (one per node by default, ~17k sockets each), and clients bind to two 127.0.1.x source
//! addresses per process (a bound source address has ~28k ports). With one topic per connection this is also the
//! "100k quiet topics" reading of gossip: once the joins stop, nothing changes, and every node should send little
//! but SWIM probes. The suite's quiet reading of each cluster is the same run, smaller.

pub mod gossip;
pub mod hostile;
pub mod lab;
pub mod suite;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use futures_util::future::join_all;

use crate::measure;
use crate::report::{self, ScaleResults, Section};
use lab::{Lab, PULLS, Server};

/// Flags every run shares: where results go.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// File whose marked section is rewritten.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub benchmarks: PathBuf,
    /// Do not touch BENCHMARKS.md.
    #[arg(long)]
    pub no_write: bool,
}

impl RunArgs {
    /// Starts a run of `mode`: its lab, and its results with what the run records of itself.
    pub fn start<R: Section>(&self, mode: &str) -> anyhow::Result<(Lab, R)> {
        let mut results = R::default();
        let run = results.run();
        (run.mode, run.started, run.machine) = (mode.into(), now_utc(), Some(measure::machine()));
        Ok((Lab::new()?, results))
    }

    /// Ends a run: load average and wall time, then the results as JSON and (unless `--no-write`) in BENCHMARKS.md.
    pub fn finish<R: Section>(&self, lab: &Lab, results: &mut R) -> anyhow::Result<()> {
        let json = self.save(lab, results, R::NAME)?;
        say(R::NAME, format!("raw results in {}", json.display()));
        if !self.no_write {
            report::write_section(&self.benchmarks, R::NAME, &results.markdown())?;
        }
        Ok(())
    }

    /// Ends a run whose results are the section `name` of their own, outside the generated one: `render` leaves it
    /// alone, so a run too long to repeat often (a million connections) keeps its figures until it runs again.
    pub fn finish_own<R: Section>(&self, lab: &Lab, results: &mut R, name: &str) -> anyhow::Result<()> {
        let json = self.save(lab, results, name)?;
        say(name, format!("raw results in {}", json.display()));
        if !self.no_write {
            report::write_own_section(&self.benchmarks, name, &results.markdown())?;
        }
        Ok(())
    }

    /// Load average and wall time into `results`, then `results` as `name.json` in the lab; that file's path.
    fn save<R: Section>(&self, lab: &Lab, results: &mut R, name: &str) -> anyhow::Result<PathBuf> {
        let run = results.run();
        if let Some(machine) = &mut run.machine {
            machine.load_end = measure::loadavg();
        }
        run.wall_secs = lab.started.elapsed().as_secs_f64();
        let json = lab.dir.join(format!("{name}.json"));
        std::fs::write(&json, serde_json::to_string_pretty(results)?).with_context(|| json.display().to_string())?;
        Ok(json)
    }
}

/// Flags of `scale`: by default 100,000 connections, one topic each, on 6 nodes from 6 load processes.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Gossip interval X.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub nodes: u64,
    /// Connections to hold, over every node.
    #[arg(long, default_value_t = 100_000)]
    pub connections: u64,
    /// Topics shared by every load process (round-robin, so each topic is on every node); without it each
    /// connection has a topic of its own.
    #[arg(long)]
    pub topics: Option<u64>,
    /// Load processes, each on one node and two 127.0.1.x source addresses (at most ~19k connections each, the
    /// open-files limit); default one per node.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub procs: Option<u64>,
    /// The load processes stop opening connections once the machine's MemAvailable is below this (MiB); 0: never.
    #[arg(long, default_value_t = 0)]
    pub min_available_mib: u64,
    /// The load processes stop opening connections this long after they started (a time budget); default: never.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub connect_for: Option<Duration>,
    /// How long a load process may take to connect all of its connections.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Write the results as the section `NAME` outside the generated one (between `<!-- loadtest:NAME:begin -->`
    /// and `…:end`, added at the end of the file the first time) and to `NAME.json`, instead of the scale part.
    #[arg(long, value_name = "NAME")]
    pub section: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
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

/// A mode's flags parsed from `line`: runs drive measurements as a person would type them (hold children too).
pub fn flags<T: clap::Args>(line: &str) -> anyhow::Result<T> {
    #[derive(clap::Parser)]
    struct Line<T: clap::Args> {
        #[command(flatten)]
        flags: T,
    }
    Ok(<Line<T> as clap::Parser>::try_parse_from([""].into_iter().chain(line.split_whitespace()))?.flags)
}

/// Addresses as a flag value: `127.0.0.1:1,127.0.0.1:2`.
pub fn list(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// The slowest of `waits` in ms, `None` if one did not end.
pub fn slowest_ms(waits: &[Option<Duration>]) -> Option<f64> {
    let slowest = waits.iter().try_fold(Duration::ZERO, |max, &took| Some(max.max(took?)));
    slowest.map(|took| took.as_secs_f64() * 1000.0)
}

/// Unless every node's total reaches `want` within 5 s, a problem saying what they were instead.
pub async fn check_totals(lab: &Lab, nodes: &[SocketAddr], want: u64, when: &str, problems: &mut Vec<String>) {
    if slowest_ms(&lab.wait_totals(nodes, want, Duration::from_secs(5)).await).is_none() {
        problems.push(format!("{when}: /counts totals never all reached {want} within 5 s"));
    }
}

/// The scale run's core, also the suite's quiet reading: `holds` (`hold` flags) on `nodes`, each connected within
/// `connect`; agreement (at most `wait`), memory after `settle`, gossip tail (from `r.gossip_idle`) and steady over
/// `window`, release, totals to 0.
pub async fn quiet(
    lab: &Lab,
    (tag, nodes): (&str, &[Server]),
    [connect, wait, settle, window]: [Duration; 4],
    holds: &[String],
    r: &mut ScaleResults,
) -> anyhow::Result<()> {
    let https: Vec<SocketAddr> = nodes.iter().map(|node| node.http).collect();
    let (pulls_before, connecting) = (lab.counters(&https, [PULLS]).await, Instant::now());
    let dropped_before = measure::udp_rcvbuf_errors();
    let mut holders = Vec::new();
    for (i, args) in holds.iter().enumerate() {
        holders.push(lab.holder(&format!("{tag}-hold-{i}"), args)?);
    }
    for holder in &mut holders {
        let ready = holder.report(connect).await?;
        r.held += ready.held;
        r.rss_load_kib += ready.rss_self_kib;
        if ready.failed > 0 {
            let problem = format!("{tag}: a load process had {} failed joins", ready.failed);
            r.run.problems.push(problem);
        }
        r.stopped.extend(ready.stopped);
    }
    let (held, secs) = (r.held, connecting.elapsed().as_secs_f64());
    say(tag, format!("{held} held after {secs:.1} s; waiting for agreement"));
    let agreed = lab.wait_totals(&https, held, wait).await;
    let dropped = measure::udp_rcvbuf_errors().zip(dropped_before);
    r.udp_rcvbuf_errors = dropped.map_or(0, |(after, before)| after.saturating_sub(before));
    (r.connect_secs, r.agree_ms) = (secs, slowest_ms(&agreed));
    r.agree_each_ms = agreed.iter().map(|took| slowest_ms(&[*took])).collect();
    let pulls = lab.counters(&https, [PULLS]).await.into_iter().zip(pulls_before);
    r.pulls_each = pulls.map(|([after], [before])| after - before).collect();
    if r.agree_ms.is_none() {
        let problem =
            format!("{tag}: with {held} held, not every node's total was {held} {wait:?} after the last join");
        r.run.problems.push(problem);
    }
    tokio::time::sleep(settle).await;
    (r.rss_held_kib, r.mem_available_held_mib) = (Lab::rss_kib(nodes), measure::mem_available_mib().unwrap_or(0));
    let tail = lab.wait_quiet(&https, &r.gossip_idle, wait).await;
    r.quiet_tail_secs = tail.map(|took| (took + settle).as_secs_f64());
    r.gossip_steady = lab.gossip(&https, window).await;
    let (agree, tail, max) = (r.agree_ms, r.quiet_tail_secs, r.gossip_steady.max_sent());
    let line = format!("agreed in {agree:?} ms, gossip tail {tail:?} s, then {max:.0} B/s");
    say(tag, line);

    let releases = join_all(holders.into_iter().map(|holder| holder.release(wait * 2)));
    let (zero, reports) = tokio::join!(lab.wait_totals(&https, 0, wait), releases);
    for report in reports {
        let report = report?;
        let (dropped, held) = (report.dropped_while_held, report.held);
        if dropped > 0 {
            let problem = format!("{tag}: nodes closed {dropped} of {held} connections of a load process while held");
            r.run.problems.push(problem);
        }
        r.release_secs = r.release_secs.max(report.release_secs);
        r.holds.push(report);
    }
    r.release_agree_ms = slowest_ms(&zero);
    if r.release_agree_ms.is_none() {
        let problem = format!("{tag}: not every node's total was 0 {wait:?} after the release started");
        r.run.problems.push(problem);
    }
    Ok(())
}

/// Runs `scale`: one `hold` process per node by default (~17k sockets each, under the 20,000 open files of a
/// process), each on its own node and its own two source addresses (~28k ports each).
pub async fn scale(args: ScaleArgs) -> anyhow::Result<ScaleResults> {
    let (nodes, connections, x) = (args.nodes as usize, args.connections, args.interval);
    let procs = args.procs.map_or(nodes, |procs| procs as usize);
    anyhow::ensure!(
        procs * 2 + 10 < 255,
        "{procs} load processes need more than 127.0.1.10-254"
    );
    let per_proc = connections.div_ceil(procs as u64);
    let mode = args.section.as_deref().unwrap_or("scale");
    let (lab, mut r) = args.run.start::<ScaleResults>(mode)?;
    (r.nodes, r.procs, r.sources, r.requested) = (nodes, procs, procs * 2, connections);
    (r.topics, r.interval_ms) = (args.topics.unwrap_or(0), x.as_secs_f64() * 1000.0);
    r.poll_ms = Lab::poll_period(nodes).as_secs_f64() * 1000.0;
    say(mode, format!("starting {nodes} nodes, X = {x:?}"));
    let servers = lab.cluster(mode, nodes, x).await?;
    let https: Vec<SocketAddr> = servers.iter().map(|node| node.http).collect();
    (r.gossip_idle, r.rss_before_kib) = (lab.gossip(&https, Duration::from_secs(5)).await, Lab::rss_kib(&servers));
    r.mem_available_before_mib = measure::mem_available_mib().unwrap_or(0);
    let mut holds = Vec::new();
    for p in 0..procs {
        let count = per_proc.min(connections.saturating_sub(per_proc * p as u64));
        let (to, from) = (https[p % https.len()], format!("127.0.1.{}-{}", 10 + 2 * p, 11 + 2 * p));
        let topics = match args.topics {
            None => format!("--topics {count} --topic-prefix scale/p{p}/"),
            Some(topics) => format!("--topics {topics} --topic-prefix scale/"),
        };
        let floor = args.min_available_mib;
        let budget = args
            .connect_for
            .map(|budget| format!(" --connect-for {}ms", budget.as_millis()));
        let load = format!("--connections {count} {topics} --settle 0s --min-available-mib {floor}");
        let load = load + &budget.unwrap_or_default();
        holds.push(format!("--targets {to} --sources {from} {load}"));
    }
    let line = format!("{procs} load processes opening {connections} connections");
    say(mode, line);
    let times = [
        args.connect_timeout,
        Duration::from_secs(60),
        x * 2,
        Duration::from_secs(10),
    ];
    quiet(&lab, (mode, &servers), times, &holds, &mut r).await?;
    let worst = r.holds.iter().map(|h| h.first_frame);
    r.connect_worst = worst.max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms)).unwrap_or_default();
    // Nothing was killed, so every member declared down before the shutdown was a false down.
    r.member_downs = lab.log_lines(&servers, "member down");
    Server::stop(servers, &mut r.run.problems).await;
    match &args.section {
        None => args.run.finish(&lab, &mut r)?,
        Some(name) => args.run.finish_own(&lab, &mut r, name)?,
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use crate::measure::hold::HoldArgs;

    #[test]
    fn flags_parse_like_the_command_line_and_stay_on_loopback() {
        let line = "--targets 127.0.0.1:1,127.0.0.1:2 --sources 127.0.0.2-3 --wait-stdin --server-pid 5,6 --topics 3";
        let hold: HoldArgs = super::flags(line).expect("parses");
        assert!(hold.wait_stdin && hold.server_pid == [5, 6] && hold.net.sources.0.len() == 2);
        let pairs: std::collections::HashSet<_> = (0..4).map(|i| hold.net.endpoint(i)).collect();
        assert_eq!(
            (pairs.len(), hold.topics.names(4).join(" ").as_str()),
            (4, "load/0 load/1 load/2 load/0")
        );
        let remote = [
            "--targets 10.0.0.1:80",
            "--targets [::1]:1 --sources 10.0.0.1",
            "--targets [::1]:1 --sources 127.0.0.9-3",
        ];
        assert!(remote.iter().all(|line| super::flags::<HoldArgs>(line).is_err()));
    }
}
