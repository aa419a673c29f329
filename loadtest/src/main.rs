//! `headcount-load`: where every performance claim of headcount comes from.
//!
//! The machine these numbers come from is shared (two cores for servers and
//! load generator, other people's builds running), so single measurements
//! (`hold`, `churn`, `converge`, `count`) print JSON for any node you point
//! them at, while `suite` and `scale` start the servers themselves, measure
//! headcount against the bare baseline in the same run, and write the ratios
//! into BENCHMARKS.md. Each run prints its JSON report on stdout (one line)
//! and one human summary line on stderr.

//!
//! The code is in three parts that import only downwards: `measure` (the
//! measurements and what they share), `report` (result types, targets,
//! BENCHMARKS.md; reads `measure`'s report types) and `runs` (the suite and
//! the scale run, which use both).

mod measure;
mod report;
mod runs;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use measure::{Report, churn, converge, count, hold};
use runs::{scale, suite};

/// Load generator for headcount: measurements, the standard suite, the scale run.
#[derive(Debug, Parser)]
#[command(name = "headcount-load", version, about)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
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

fn emit<R: Report>(report: &R) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    eprintln!("{}", report.summary());
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
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.mode)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
