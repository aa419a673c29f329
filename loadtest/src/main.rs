//! `headcount-load`: where every performance claim of headcount comes from.
//! Single measurements (`hold`, `churn`, `converge`, `count`, in `measure`)
//! print a JSON report on stdout and a summary line on stderr for any node
//! you point them at; `suite` and `scale` (in `runs`) start the servers
//! themselves, measure headcount against the bare baseline in the same run on
//! this shared, noisy machine, and write the ratios into BENCHMARKS.md through
//! `report`. Imports only go downwards: runs → report → measure.

mod measure;
mod report;
mod runs;

use std::process::ExitCode;

use clap::Parser;
use measure::{churn, converge, count, hold, summary};
use runs::{scale, suite};

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
    /// 100k connections over several nodes and load processes; rewrites BENCHMARKS.md.
    Scale(scale::ScaleArgs),
    /// Rewrites BENCHMARKS.md from the last suite and scale results (after editing loadtest/FINDINGS.md).
    Render(report::RenderArgs),
}

fn emit(report: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    eprintln!("{}", summary(report));
    Ok(())
}

async fn run(mode: Mode) -> anyhow::Result<()> {
    match mode {
        Mode::Hold(args) => emit(&hold::run(args).await?),
        Mode::Churn(args) => emit(&churn::run(args).await?),
        Mode::Converge(args) => emit(&converge::run(args).await?),
        Mode::Count(args) => emit(&count::run(args).await?.0),
        Mode::Suite(args) => emit(&suite::run(args).await?),
        Mode::Scale(args) => emit(&scale::run(args).await?),
        Mode::Render(args) => report::render(&args),
    }
}

fn main() -> ExitCode {
    let mode = Mode::parse();
    let done = tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(run(mode)));
    if let Err(error) = done {
        eprintln!("error: {error:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
