//! The report half: result types, the targets they are judged against, and
//! the marked section of BENCHMARKS.md written from them.
//!
//! The section between `<!-- loadtest:begin -->` and `<!-- loadtest:end -->`
//! belongs to the load tools; everything outside it is left byte for byte.
//! Inside, the suite and the scale run each own a sub-section, so running one
//! keeps the other's last results; hand-written analysis lives in
//! `loadtest/FINDINGS.md` and is copied in on every rewrite, so a regenerated
//! section never loses the explanation of a missed target.

mod markdown;
pub mod results;
mod table;
pub mod targets;

use std::path::{Path, PathBuf};

use anyhow::Context;

use results::{ScaleResults, SuiteResults};

const BEGIN: &str = "<!-- loadtest:begin -->";
const END: &str = "<!-- loadtest:end -->";

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
| `target/release/headcount-load render` | rewrites this section from the last results (e.g. after editing `loadtest/FINDINGS.md`) | 1 s |
| `target/release/headcount-load <hold\\|churn\\|converge\\|count> --help` | one measurement against nodes you started | |

Raw JSON of the last runs: `target/loadtest/suite.json`, `target/loadtest/scale.json`;
server and load logs in `target/loadtest/logs/`.
";

/// The sub-sections: the suite's and the scale run's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Suite,
    Scale,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Self::Suite => "suite",
            Self::Scale => "scale",
        }
    }

    /// This part's text inside the section, or the placeholder of a part never run.
    fn current(self, inside: &str) -> String {
        let (begin, end) = (
            format!("<!-- loadtest:{}:begin -->", self.name()),
            format!("<!-- loadtest:{}:end -->", self.name()),
        );
        let found = inside.find(&begin).map(|start| start + begin.len()).and_then(|start| {
            let stop = inside[start..].find(&end)? + start;
            Some(inside[start..stop].trim().to_owned() + "\n")
        });
        found.unwrap_or_else(|| format!("_No {0} run recorded yet: `bash loadtest/{0}.sh`._\n", self.name()))
    }

    fn wrap(self, body: &str) -> String {
        format!(
            "<!-- loadtest:{0}:begin -->\n{1}\n<!-- loadtest:{0}:end -->\n",
            self.name(),
            body.trim_end()
        )
    }
}

/// Rewrites `part` inside the marked section of `path`, creating the file
/// or the markers when missing.
pub fn write_section(path: &Path, part: Part, body: &str) -> anyhow::Result<()> {
    let current = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => format!("# Benchmarks\n\n{BEGIN}\n{END}\n"),
        Err(error) => return Err(error).with_context(|| path.display().to_string()),
    };
    let (before, inside, after) = match (current.find(BEGIN), current.find(END)) {
        (Some(begin), Some(end)) if begin < end => (
            current[..begin].to_owned(),
            &current[begin + BEGIN.len()..end],
            &current[end + END.len()..],
        ),
        _ => (
            format!("{current}{}", if current.ends_with('\n') { "\n" } else { "\n\n" }),
            "",
            "\n",
        ),
    };
    let [suite, scale] =
        [Part::Suite, Part::Scale].map(|p| p.wrap(&if p == part { body.to_owned() } else { p.current(inside) }));
    let findings = (path.parent())
        .and_then(|dir| std::fs::read_to_string(dir.join("loadtest").join("FINDINGS.md")).ok())
        .map(|text| format!("\n{}\n", text.trim_end()))
        .unwrap_or_default();
    let section = format!("{BEGIN}\n{INTRO}\n{suite}\n{scale}{findings}{END}");
    std::fs::write(path, format!("{before}{section}{after}")).with_context(|| path.display().to_string())
}

/// Flags of `render`.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// File whose marked section is rewritten.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub benchmarks: PathBuf,
    /// Where `suite.json` and `scale.json` are.
    #[arg(long, default_value = "target/loadtest")]
    pub results: PathBuf,
}

/// Results that own a part of the section.
pub trait Section: serde::Serialize + serde::de::DeserializeOwned {
    /// Their part.
    const PART: Part;
    /// The part's Markdown.
    fn markdown(&self) -> String;
}

impl Section for SuiteResults {
    const PART: Part = Part::Suite;
    fn markdown(&self) -> String {
        markdown::suite_markdown(self)
    }
}

impl Section for ScaleResults {
    const PART: Part = Part::Scale;
    fn markdown(&self) -> String {
        markdown::scale_markdown(self)
    }
}

/// Rewrites `R`'s part from `R`'s JSON in `dir`; whether that JSON was there.
fn render_part<R: Section>(dir: &Path, benchmarks: &Path) -> anyhow::Result<bool> {
    let file = format!("{}.json", R::PART.name());
    let Ok(text) = std::fs::read_to_string(dir.join(&file)) else {
        return Ok(false);
    };
    let results: R = serde_json::from_str(&text).context(file)?;
    write_section(benchmarks, R::PART, &results.markdown())?;
    Ok(true)
}

/// Rewrites the section from saved results, each part only if its results
/// exist (the other part is kept as it is).
pub fn render(args: &RenderArgs) -> anyhow::Result<()> {
    let suite = render_part::<SuiteResults>(&args.results, &args.benchmarks)?;
    let scale = render_part::<ScaleResults>(&args.results, &args.benchmarks)?;
    let rendered: Vec<&str> = [(suite, "suite"), (scale, "scale")]
        .iter()
        .filter(|p| p.0)
        .map(|p| p.1)
        .collect();
    if rendered.is_empty() {
        anyhow::bail!("no suite.json or scale.json in {}", args.results.display());
    }
    eprintln!(
        "render: rewrote {} ({})",
        args.benchmarks.display(),
        rendered.join(", ")
    );
    Ok(())
}

/// What a run does when it ends: writes `results` as JSON into `dir` and,
/// given `benchmarks`, their part of its section.
pub fn save<R: Section>(results: &R, dir: &Path, benchmarks: Option<&Path>) -> anyhow::Result<()> {
    let name = R::PART.name();
    let json = dir.join(format!("{name}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(results)?).with_context(|| json.display().to_string())?;
    eprintln!("[{name}] raw results in {}", json.display());
    if let Some(path) = benchmarks {
        write_section(path, R::PART, &results.markdown())?;
        eprintln!("[{name}] rewrote the {name} section of {}", path.display());
    }
    Ok(())
}
