//! `headcount-load`: where every performance claim of headcount comes from. Single measurements (`hold`, `churn`,
//! `converge`, `count`, in `measure`) print a JSON report on stdout and a summary line on stderr for any node you
//! point them at; `suite`, `scale` and `hostile` (in `runs`) start the servers themselves, measure headcount against
//! the bare baseline (or a calm run) in the same run on this shared, noisy machine, and the first two write the
//! ratios into BENCHMARKS.md through `report`. Imports only go downwards: runs → report → measure.

mod measure;
mod report;
mod runs;

use std::process::ExitCode;

use clap::Parser;
use measure::{churn, converge, count, hold, summary};
use runs::suite;

/// Load generator for headcount: measurements, the standard suite, the scale run.
#[derive(Debug, Parser)]
#[command(name = "headcount-load", version, about)]
enum Mode {
    /// Open C websocket connections over T topics and hold them; handshake rate, connect latency, server memory.
    Hold(hold::HoldArgs),
    /// Join and leave at a rate (or as fast as possible) for a while; cycles/s and latency.
    Churn(churn::ChurnArgs),
    /// Join on one node, time until every node counts it; p50/p99 over many trials.
    Converge(converge::ConvergeArgs),
    /// GET /count latency p50/p99/p99.9 at a fixed request rate.
    Count(count::CountArgs),
    /// The standard suite against headcount and the bare baseline; rewrites BENCHMARKS.md.
    Suite(suite::SuiteArgs),
    /// 100k connections (or --connections over --nodes) over several nodes and load processes; rewrites BENCHMARKS.md.
    Scale(runs::ScaleArgs),
    /// Gossip bytes per node against cluster size, quiet and changing topics; crash detection; optional UDP loss.
    Gossip(runs::gossip::GossipArgs),
    /// Honest clients on one node under slowloris, a gRPC stream flood and garbage UDP, against a calm run.
    Hostile,
    /// Rewrites the generated section of BENCHMARKS.md from the last results.
    Render(report::RenderArgs),
}

fn emit(report: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    eprintln!("{}", summary(report));
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let done = match Mode::parse() {
        Mode::Hold(args) => hold::run(args).await.and_then(|r| emit(&r)),
        Mode::Churn(args) => churn::run(args).await.and_then(|r| emit(&r)),
        Mode::Converge(args) => converge::run(args).await.and_then(|r| emit(&r)),
        Mode::Count(args) => count::run(args).await.and_then(|r| emit(&r.0)),
        Mode::Suite(args) => suite::run(args).await.and_then(|r| emit(&r)),
        Mode::Scale(args) => runs::scale(args).await.and_then(|r| emit(&r)),
        Mode::Gossip(args) => runs::gossip::run(args).await.and_then(|r| emit(&r)),
        Mode::Hostile => runs::hostile::run().await.and_then(|r| emit(&r)),
        Mode::Render(args) => report::render(&args),
    };
    let Err(error) = done else { return ExitCode::SUCCESS };
    eprintln!("error: {error:#}");
    ExitCode::FAILURE
}
