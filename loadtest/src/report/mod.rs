//! The report half: result types, the targets they are judged against, and the marked section of BENCHMARKS.md
//! written from them.
//!
//! The section between `<!-- loadtest:begin -->` and `<!-- loadtest:end -->` belongs to the load tools; everything
//! outside it is left byte for byte, and that is where the hand-written analysis of the figures lives, so a
//! regenerated section never loses the explanation of a missed target. Inside, each run owns a part, so running one
//! keeps the others' last results.

mod markdown;
pub mod results;
pub mod targets;

use std::path::{Path, PathBuf};

use anyhow::Context;

use self::results::{RunInfo, ScaleResults, SuiteResults};

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

/// `current` (the file's text, if it exists) with the part `name` of the marked section set to `body` and the other
/// parts kept; adds the markers when missing.
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
fn write_section(path: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let current = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error).with_context(|| path.display().to_string()),
    };
    std::fs::write(path, rewrite(current, name, body)).with_context(|| path.display().to_string())
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
    let suite = render_part::<SuiteResults>(dir, file)?;
    let rendered = [suite, render_part::<ScaleResults>(dir, file)?];
    let rendered: Vec<&str> = rendered.into_iter().flatten().collect();
    if rendered.is_empty() {
        anyhow::bail!("no suite.json or scale.json in {}", dir.display());
    }
    eprintln!("render: rewrote {} ({})", file.display(), rendered.join(", "));
    Ok(())
}

/// What a run does when it ends: writes `results` as JSON into `dir` and, given `benchmarks`, their part of its
/// section.
pub fn save<R: Section>(results: &R, dir: &Path, benchmarks: Option<&Path>) -> anyhow::Result<()> {
    let (name, json) = (R::NAME, dir.join(format!("{}.json", R::NAME)));
    std::fs::write(&json, serde_json::to_string_pretty(results)?).with_context(|| json.display().to_string())?;
    eprintln!("[{name}] raw results in {}", json.display());
    if let Some(path) = benchmarks {
        write_section(path, name, &results.markdown())?;
        eprintln!("[{name}] rewrote the {name} section of {}", path.display());
    }
    Ok(())
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
}
