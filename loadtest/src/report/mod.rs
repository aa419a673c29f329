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

use self::results::{ScaleResults, SuiteResults};

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

/// Rewrites the part `name` (`suite` or `scale`) of the marked section of
/// `path` with `body`, keeping the other part; creates the file or the
/// markers when missing.
pub fn write_section(path: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let current = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => format!("# Benchmarks\n\n{BEGIN}\n{END}\n"),
        Err(error) => return Err(error).with_context(|| path.display().to_string()),
    };
    let (before, inside, after) = match (current.find(BEGIN), current.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            (current[..begin].to_owned(), &current[begin + BEGIN.len()..end], &current[end + END.len()..])
        }
        _ => (format!("{current}{}", if current.ends_with('\n') { "\n" } else { "\n\n" }), "", "\n"),
    };
    let [suite, scale] = ["suite", "scale"].map(|part| {
        let (begin, end) = (format!("<!-- loadtest:{part}:begin -->"), format!("<!-- loadtest:{part}:end -->"));
        let start = inside.find(&begin).map(|start| start + begin.len());
        let kept = start.and_then(|start| Some(inside[start..start + inside[start..].find(&end)?].trim().to_owned()));
        let text = if part == name { Some(body.to_owned()) } else { kept };
        let text = text.unwrap_or_else(|| format!("_No {part} run recorded yet: `bash loadtest/{part}.sh`._"));
        format!("{begin}\n{}\n{end}\n", text.trim_end())
    });
    let findings = std::fs::read_to_string(path.with_file_name("loadtest").join("FINDINGS.md"));
    let findings = findings.map(|text| format!("\n{}\n", text.trim_end())).unwrap_or_default();
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

/// Results that own the part `NAME` of the section, saved as `NAME.json`.
pub trait Section: serde::Serialize + serde::de::DeserializeOwned {
    const NAME: &'static str;
    fn markdown(&self) -> String;
}

impl Section for SuiteResults {
    const NAME: &'static str = "suite";
    fn markdown(&self) -> String {
        markdown::suite(self)
    }
}

impl Section for ScaleResults {
    const NAME: &'static str = "scale";
    fn markdown(&self) -> String {
        markdown::scale(self)
    }
}

/// Rewrites `R`'s part from `R`'s JSON in `dir`, if it is there.
fn render_part<R: Section>(dir: &Path, benchmarks: &Path) -> anyhow::Result<Option<&'static str>> {
    let Ok(text) = std::fs::read_to_string(dir.join(format!("{}.json", R::NAME))) else { return Ok(None) };
    let results: R = serde_json::from_str(&text).with_context(|| format!("{}.json", R::NAME))?;
    write_section(benchmarks, R::NAME, &results.markdown())?;
    Ok(Some(R::NAME))
}

/// Rewrites the section from saved results, each part only if its results
/// exist (the other part is kept as it is).
pub fn render(args: &RenderArgs) -> anyhow::Result<()> {
    let suite = render_part::<SuiteResults>(&args.results, &args.benchmarks)?;
    let rendered: Vec<_> =
        suite.into_iter().chain(render_part::<ScaleResults>(&args.results, &args.benchmarks)?).collect();
    if rendered.is_empty() {
        anyhow::bail!("no suite.json or scale.json in {}", args.results.display());
    }
    eprintln!("render: rewrote {} ({})", args.benchmarks.display(), rendered.join(", "));
    Ok(())
}

/// What a run does when it ends: writes `results` as JSON into `dir` and,
/// given `benchmarks`, their part of its section.
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
        let dir = std::env::temp_dir().join(format!("headcount-load-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("BENCHMARKS.md");
        std::fs::write(&file, "# Mine\n<!-- loadtest:begin -->\nold\n<!-- loadtest:end -->\ntail\n").expect("write");
        for (part, body) in [("scale", "scale numbers"), ("suite", "suite numbers"), ("suite", "suite again")] {
            super::write_section(&file, part, body).expect("section");
        }
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(text.starts_with("# Mine\n<!-- loadtest:begin -->") && text.ends_with("<!-- loadtest:end -->\ntail\n"));
        assert!(text.contains("scale numbers") && text.contains("suite again") && !text.contains("suite numbers"));
        std::fs::remove_file(&file).expect("remove");
        super::write_section(&file, "suite", "new").expect("create");
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(text.contains(super::BEGIN) && text.contains("new") && text.contains("No scale run"), "{text}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
