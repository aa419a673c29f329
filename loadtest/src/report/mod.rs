//! The report half: what a run measured, as written to `target/loadtest/NAME.json` (filled in by `runs`, read back
//! by `render`; every field has a default so older files still load; times are in the unit their name ends with, X
//! is the gossip interval), the targets it is judged against, and the marked section of BENCHMARKS.md.
//!
//! The section between `<!-- loadtest:begin -->` and `<!-- loadtest:end -->` belongs to the load tools; everything
//! outside it is left byte for byte, and that is where the hand-written analysis of the figures lives, so a
//! regenerated section never loses the explanation of a missed target. Inside, each run owns a part, so running one
//! keeps the others' last results.

mod markdown;

use std::path::{Path, PathBuf};

use anyhow::Context;

use serde::{Deserialize, Serialize};

use crate::measure::hold::HoldReport;
use crate::measure::{LatencySummary, Machine, churn::ChurnReport, converge::ConvergeReport, count::CountReport};

const BEGIN: &str = "<!-- loadtest:begin -->";
const END: &str = "<!-- loadtest:end -->";
/// The parts of the section, in order.
const PARTS: [&str; 2] = ["suite", "scale"];

const INTRO: &str = "\
## Load tests

Every performance figure of headcount comes from `headcount-load` (crate
`loadtest/`), as a ratio to a baseline measured in the same run: this machine
is shared and noisy, so absolute numbers move from run to run while ratios
hold. The baseline is `headcount-bare`, a minimal axum websocket server with
headcount's buffer settings that sends one small frame on connect and does
nothing else.

| command | what it does | time |
| --- | --- | --- |
| `bash loadtest/suite.sh` | builds release, runs the standard suite, rewrites the suite part below | ≤ 10 min |
| `bash loadtest/scale.sh` | builds release, holds 100k connections on 6 nodes, rewrites the scale part below | ≈ 1–2 min |
| `target/release/headcount-load render` | rewrites this section from the last results | 1 s |
| `target/release/headcount-load <hold\\|churn\\|converge\\|count> --help` | one measurement against nodes you started | |

Raw JSON of the last runs: `target/loadtest/suite.json`, `target/loadtest/scale.json`;
server and load logs in `target/loadtest/logs/`.
";

/// `current` (the file, if any) with part `name` of the section set to `body`, the others kept, markers added.
fn rewrite(current: Option<String>, name: &str, body: &str) -> String {
    let current = current.unwrap_or_else(|| format!("# Benchmarks\n\n{BEGIN}\n{END}\n"));
    let marked = current.find(BEGIN).zip(current.find(END));
    let marked = marked.filter(|(begin, end)| begin < end);
    let (before, inside, after) = if let Some((begin, end)) = marked {
        let inside = &current[begin + BEGIN.len()..end];
        (current[..begin].to_owned(), inside, &current[end + END.len()..])
    } else {
        let gap = if current.ends_with('\n') { "\n" } else { "\n\n" };
        (format!("{current}{gap}"), "", "\n")
    };
    let parts = PARTS.map(|part| {
        let begin = format!("<!-- loadtest:{part}:begin -->");
        let end = format!("<!-- loadtest:{part}:end -->");
        let start = inside.find(&begin).map(|start| start + begin.len());
        let kept = start.and_then(|start| Some(inside[start..start + inside[start..].find(&end)?].trim().to_owned()));
        let text = if part == name { Some(body.to_owned()) } else { kept };
        let text = text.unwrap_or_else(|| format!("_No {part} run recorded yet: `bash loadtest/{part}.sh`._"));
        format!("{begin}\n{}\n{end}\n", text.trim_end())
    });
    format!("{before}{BEGIN}\n{INTRO}\n{}{END}{after}", parts.join("\n"))
}

/// Rewrites the part `name` of the marked section of the file at `path`.
pub fn write_section(path: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let current = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error).with_context(|| path.display().to_string()),
    };
    std::fs::write(path, rewrite(current, name, body)).with_context(|| path.display().to_string())
}

/// `current` (the file, if any) with the section `name` of its own (`<!-- loadtest:NAME:begin -->` … `end`, kept
/// outside the generated section, which [`render`] rewrites) set to `body`; a missing one goes at the end.
fn rewrite_own(current: Option<String>, name: &str, body: &str) -> String {
    let (begin, end) = (
        format!("<!-- loadtest:{name}:begin -->"),
        format!("<!-- loadtest:{name}:end -->"),
    );
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let current = current.unwrap_or_else(|| "# Benchmarks\n".to_owned());
    let generated = current
        .find(BEGIN)
        .zip(current.find(END))
        .map(|(from, to)| from..to + END.len());
    let outside = |at: &usize| !generated.as_ref().is_some_and(|inside| inside.contains(at));
    let start = current.match_indices(&begin).map(|(at, _)| at).find(outside);
    let stop = start.and_then(|start| Some(start + current[start..].find(&end)? + end.len()));
    match start.zip(stop) {
        Some((start, stop)) => format!("{}{section}{}", &current[..start], &current[stop..]),
        None => format!("{}\n\n{section}\n", current.trim_end()),
    }
}

/// Rewrites the section `name` of its own in the file at `path` (see [`rewrite_own`]).
pub fn write_own_section(path: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let current = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error).with_context(|| path.display().to_string()),
    };
    std::fs::write(path, rewrite_own(current, name, body)).with_context(|| path.display().to_string())
}

/// Flags of `render`.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// File whose marked section is rewritten.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub benchmarks: PathBuf,
    /// Where the runs' JSON results (`suite.json`, `scale.json`) are.
    #[arg(long, default_value = "target/loadtest")]
    pub results: PathBuf,
    /// Instead, rewrite the section `NAME` of its own (`million`, `gossip`, …) from `NAME.json`.
    #[arg(long, value_name = "NAME")]
    pub section: Option<String>,
}

/// Results that own the part `NAME` of the section, saved as `NAME.json`.
pub trait Section: serde::Serialize + serde::de::DeserializeOwned + Default {
    const NAME: &'static str;
    fn markdown(&self) -> String;
    /// What the run records of itself.
    fn run(&mut self) -> &mut RunInfo;
}

/// `Section` for results with a `run` field, written by a function of `markdown`.
macro_rules! section {
    ($results:ty, $name:literal, $markdown:path) => {
        impl Section for $results {
            const NAME: &'static str = $name;
            fn markdown(&self) -> String {
                $markdown(self)
            }
            fn run(&mut self) -> &mut RunInfo {
                &mut self.run
            }
        }
    };
}
section!(SuiteResults, "suite", markdown::suite);
section!(ScaleResults, "scale", markdown::scale);
section!(GossipResults, "gossip", markdown::gossip_cost);

/// Rewrites `R`'s part from `R`'s JSON in `dir`, if it is there.
fn render_part<R: Section>(dir: &Path, benchmarks: &Path) -> anyhow::Result<Option<&'static str>> {
    let Ok(text) = std::fs::read_to_string(dir.join(format!("{}.json", R::NAME))) else {
        return Ok(None);
    };
    let results: R = serde_json::from_str(&text).with_context(|| format!("{}.json", R::NAME))?;
    write_section(benchmarks, R::NAME, &results.markdown())?;
    Ok(Some(R::NAME))
}

/// Rewrites the section from saved results, each part only if its results exist (the others are kept as they are).
pub fn render(args: &RenderArgs) -> anyhow::Result<()> {
    let (dir, file) = (&args.results, &args.benchmarks);
    if let Some(name) = &args.section {
        let path = dir.join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        let body = if name.starts_with("gossip") {
            serde_json::from_str::<GossipResults>(&text).map(|results| results.markdown())
        } else {
            serde_json::from_str::<ScaleResults>(&text).map(|results| results.markdown())
        };
        write_own_section(file, name, &body.with_context(|| path.display().to_string())?)?;
        eprintln!("render: rewrote {} ({name})", file.display());
        return Ok(());
    }
    let suite = render_part::<SuiteResults>(dir, file)?;
    let rendered = [suite, render_part::<ScaleResults>(dir, file)?];
    let rendered: Vec<&str> = rendered.into_iter().flatten().collect();
    if rendered.is_empty() {
        anyhow::bail!("no suite.json or scale.json in {}", dir.display());
    }
    eprintln!("render: rewrote {} ({})", file.display(), rendered.join(", "));
    Ok(())
}

/// What every run records: mode, start (`YYYY-MM-DD HH:MM UTC`), wall time, machine, problems seen (product bugs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunInfo {
    pub mode: String,
    pub started: String,
    pub wall_secs: f64,
    pub machine: Option<Machine>,
    pub problems: Vec<String>,
}

/// Everything one suite run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SuiteResults {
    #[serde(flatten)]
    pub run: RunInfo,
    /// Connections held per node and the topics they spread over.
    pub connections: u64,
    pub topics: u64,
    pub node: NodeResults,
    pub clusters: Vec<ClusterResults>,
}

/// Per node, headcount against bare on fresh processes; GET /count (bare's is static) all rounds merged, and each p99.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeResults {
    pub hold_headcount: Option<HoldReport>,
    pub hold_bare: Option<HoldReport>,
    pub count_headcount: Option<CountReport>,
    pub count_bare: Option<CountReport>,
    pub count_rounds_p99_headcount: Vec<f64>,
    pub count_rounds_p99_bare: Vec<f64>,
    pub churn_headcount: Vec<ChurnReport>,
    pub churn_bare: Vec<ChurnReport>,
}

/// Figures read back from JSON, where serde_json wrote NaN (a node that did not answer) as `null`.
fn nan_for_null<'de, D: serde::Deserializer<'de>>(values: D) -> Result<Vec<f64>, D::Error> {
    let values: Vec<Option<f64>> = Deserialize::deserialize(values)?;
    Ok(values.into_iter().map(|value| value.unwrap_or(f64::NAN)).collect())
}

/// One figure read back from JSON (see [`nan_for_null`]).
fn nan_if_null<'de, D: serde::Deserializer<'de>>(value: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(value)?.unwrap_or(f64::NAN))
}

/// Gossip of every node over one window: UDP bytes sent and received per second each; full-state pulls in all.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GossipReading {
    #[serde(deserialize_with = "nan_for_null")]
    pub sent_bps: Vec<f64>,
    #[serde(deserialize_with = "nan_for_null")]
    pub received_bps: Vec<f64>,
    #[serde(deserialize_with = "nan_if_null")]
    pub pulls: f64,
}

impl GossipReading {
    /// The busiest node's sent bytes per second.
    pub fn max_sent(&self) -> f64 {
        self.sent_bps.iter().copied().fold(0.0, f64::max)
    }

    /// Mean sent bytes per second over the nodes that could be read (an overloaded node may not answer).
    pub fn mean_sent(&self) -> f64 {
        let read: Vec<f64> = self.sent_bps.iter().copied().filter(|bps| bps.is_finite()).collect();
        read.iter().sum::<f64>() / read.len().max(1) as f64
    }
}

/// One cluster of the suite: convergence, gossip idle and with 10 topics churning, and a quiet reading (`quiet_`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterResults {
    pub nodes: usize,
    pub interval_ms: f64,
    pub converge: Option<ConvergeReport>,
    pub gossip_idle: GossipReading,
    pub gossip_busy: GossipReading,
    pub busy_churn: Option<ChurnReport>,
    /// Topics held, one connection each, and gossip while nothing changes.
    pub quiet_topics: u64,
    pub gossip_quiet: GossipReading,
    pub quiet_agree_ms: Option<f64>,
    pub quiet_agree_each_ms: Vec<Option<f64>>,
    pub quiet_tail_secs: Option<f64>,
    #[serde(deserialize_with = "nan_for_null")]
    pub quiet_pulls_each: Vec<f64>,
    pub quiet_release_secs: f64,
    pub quiet_release_agree_ms: Option<f64>,
}

/// Everything one `gossip` run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GossipResults {
    #[serde(flatten)]
    pub run: RunInfo,
    pub interval_ms: f64,
    pub window_secs: f64,
    pub loss_percent: u8,
    pub quiet_topics: u64,
    pub churn_rate: f64,
    pub churn_topics: u64,
    pub sizes: Vec<SizeResults>,
}

/// One cluster size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SizeResults {
    pub nodes: usize,
    /// Gossip bytes per node: idle, quiet topics held (once agreed and back near idle), topics changing.
    pub idle: GossipReading,
    pub quiet: GossipReading,
    pub quiet_agree_ms: Option<f64>,
    pub changing: GossipReading,
    pub churn: Option<ChurnReport>,
    pub crashes: Vec<CrashTrial>,
    /// While nothing was killed: seconds watched, polls of each node's gauges, period, rising edges summed.
    pub watched_secs: f64,
    pub watch_period_ms: f64,
    pub suspicions: u64,
    pub false_downs: u64,
}

impl SizeResults {
    /// Node-hours watched for false suspicions.
    pub fn node_hours(&self) -> f64 {
        self.nodes as f64 * self.watched_secs / 3600.0
    }
}

/// One node killed with SIGKILL: from the kill until each survivor lists it down (or no more), and until its
/// connections are out of each survivor's total; the slowest survivor, ms (`None`: not within the deadline).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CrashTrial {
    pub victim: String,
    pub held_on_victim: u64,
    pub down_ms: Option<f64>,
    pub down_each_ms: Vec<Option<f64>>,
    pub pruned_ms: Option<f64>,
    pub poll_ms: f64,
}

/// What a scale run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ScaleResults {
    #[serde(flatten)]
    pub run: RunInfo,
    /// Nodes, load processes and the source addresses they used.
    pub nodes: usize,
    pub procs: usize,
    pub sources: usize,
    pub interval_ms: f64,
    /// Topics shared by all load processes; 0: each connection on a topic of its own.
    pub topics: u64,
    /// How often each node was polled while waiting for agreement, ms (waits are upper bounds by one period).
    pub poll_ms: f64,
    /// Connections asked for and held.
    pub requested: u64,
    pub held: u64,
    /// Why load processes stopped opening connections early (the memory floor), one line each.
    pub stopped: Vec<String>,
    /// MemAvailable of the machine before the joins and with everything held, MiB.
    pub mem_available_before_mib: u64,
    pub mem_available_held_mib: u64,
    /// VmRSS of all load processes together once connected, KiB.
    pub rss_load_kib: u64,
    /// UDP datagrams the kernel dropped on full socket buffers from the first join to agreement (machine-wide, or
    /// the run's own network namespace).
    pub udp_rcvbuf_errors: u64,
    /// "member down" lines the nodes logged before the shutdown (nothing is killed, so each one is false).
    pub member_downs: u64,
    /// From starting the load processes to the last one ready, seconds.
    pub connect_secs: f64,
    /// The worst p99 among the load processes' connect latencies.
    pub connect_worst: LatencySummary,
    /// From the last join to every node agreeing on the total, ms: the slowest node, and each.
    pub agree_ms: Option<f64>,
    pub agree_each_ms: Vec<Option<f64>>,
    /// Full-state pulls each node made from the first join to agreement.
    #[serde(deserialize_with = "nan_for_null")]
    pub pulls_each: Vec<f64>,
    /// Node VmRSS before the joins and with everything held, KiB.
    pub rss_before_kib: Vec<u64>,
    pub rss_held_kib: Vec<u64>,
    pub gossip_idle: GossipReading,
    /// From agreement until gossip was back near its idle rate, seconds.
    pub quiet_tail_secs: Option<f64>,
    /// Gossip with every connection held and nothing changing.
    pub gossip_steady: GossipReading,
    /// Seconds the slowest load process took to close its connections.
    pub release_secs: f64,
    /// From the start of the release to every total at 0, ms.
    pub release_agree_ms: Option<f64>,
    pub holds: Vec<HoldReport>,
}

impl ScaleResults {
    /// Resident bytes per held connection over all nodes.
    pub fn bytes_per_connection(&self) -> Option<f64> {
        let grown = self.rss_held_kib.iter().zip(&self.rss_before_kib);
        let grown = grown.map(|(held, before)| *held as i64 - *before as i64);
        (self.held > 0).then(|| grown.sum::<i64>() as f64 * 1024.0 / self.held as f64)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sections_keep_the_outside_and_the_other_part() {
        let mut text = "# Mine\n<!-- loadtest:begin -->\nold\n<!-- loadtest:end -->\ntail\n".to_owned();
        for (part, body) in [("scale", "scale 1"), ("suite", "suite 1"), ("suite", "suite 2")] {
            text = super::rewrite(Some(text), part, body);
        }
        assert!(text.starts_with("# Mine\n<!-- loadtest:begin -->") && text.ends_with("<!-- loadtest:end -->\ntail\n"));
        assert!(text.contains("scale 1") && text.contains("suite 2") && !text.contains("suite 1"));
        let text = super::rewrite(None, "suite", "new");
        assert!(text.contains("\nnew\n") && text.contains("No scale run"), "{text}");
    }

    #[test]
    fn own_sections_stay_outside_the_generated_one() {
        let generated = "<!-- loadtest:begin -->\n<!-- loadtest:million:begin -->\nx\n<!-- loadtest:million:end -->\n";
        let text = format!("# Mine\n{generated}<!-- loadtest:end -->\ntail\n");
        let once = super::rewrite_own(Some(text.clone()), "million", "first");
        assert_eq!(
            once,
            format!(
                "{}\n\n<!-- loadtest:million:begin -->\nfirst\n<!-- loadtest:million:end -->\n",
                text.trim_end()
            )
        );
        let twice = super::rewrite_own(Some(once.replace("tail", "tail\nmore")), "million", "second\n");
        assert!(twice.contains("more\n\n<!-- loadtest:million:begin -->\nsecond\n<!-- loadtest:million:end -->\n"));
        assert!(!twice.contains("first") && twice.contains(generated), "{twice}");
        let rendered = super::rewrite(Some(twice.clone()), "scale", "s");
        assert!(
            rendered.contains("\nsecond\n") && rendered.contains("\ns\n"),
            "{rendered}"
        );
    }
}
