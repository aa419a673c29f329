//! The measuring half: one module per measurement (`hold`, `churn`, `count`,
//! `converge`), each a clap flag struct, a serde report and a `run`, and what
//! they share (websocket client, node API, topics and source addresses,
//! latency histograms, `/proc`). Nothing here starts a server.

pub mod api;
pub mod churn;
pub mod client;
pub mod converge;
pub mod count;
pub mod hold;
pub mod procfs;
pub mod stats;
pub mod topics;

use std::time::Duration;

use serde::{Serialize, Serializer};
use serde_json::Value;

/// A one-line summary of a report: its numbers and words, and the p50/p99
/// of each latency in it.
pub fn summary(report: &impl Serialize) -> String {
    let Ok(Value::Object(fields)) = serde_json::to_value(report) else { return String::new() };
    let field = |(name, value): (&String, &Value)| match value {
        Value::Number(n) if n.is_f64() => Some(format!("{name} {:.2}", n.as_f64()?)),
        Value::Number(_) | Value::String(_) => {
            Some(format!("{name} {}", value.as_str().map_or(value.to_string(), str::to_owned)))
        }
        Value::Object(latency) => {
            let [p50, p99] = ["p50_ms", "p99_ms"].map(|p| latency.get(p).and_then(Value::as_f64));
            Some(format!("{name} p50 {:.2} / p99 {:.2} ms", p50?, p99?))
        }
        _ => None,
    };
    fields.iter().filter_map(field).collect::<Vec<_>>().join(", ")
}

/// The command line that parses back to `flags`: each field becomes
/// `--field-name value` (lists comma-separated, `true` a bare flag; `false`,
/// `None` and empty lists left out; durations through [`human`]). This is
/// how a run starts a child measurement.
pub fn argv(flags: &impl Serialize) -> anyhow::Result<Vec<String>> {
    let Value::Object(fields) = serde_json::to_value(flags)? else {
        anyhow::bail!("flags must serialize to a map");
    };
    let plain = |value: &Value| value.as_str().map_or_else(|| value.to_string(), str::to_owned);
    let mut argv = Vec::new();
    for (name, value) in fields {
        let flag = format!("--{}", name.replace('_', "-"));
        match value {
            Value::Bool(true) => argv.push(flag),
            Value::Bool(false) | Value::Null => {}
            Value::Array(items) if items.is_empty() => {}
            Value::Array(items) => argv.extend([flag, items.iter().map(plain).collect::<Vec<_>>().join(",")]),
            other => argv.extend([flag, plain(&other)]),
        }
    }
    Ok(argv)
}

/// Serializes a duration the way `humantime::parse_duration` reads it.
pub fn human<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Hold {
        #[command(flatten)]
        flags: super::hold::HoldArgs,
    }

    #[test]
    fn argv_parses_back_to_the_same_flags() {
        let argv = "hold --targets 127.0.0.1:1,127.0.0.1:2 --sources 127.0.0.2-3 --wait-stdin --dist zipf --settle 65s";
        let mut flags = Hold::parse_from(argv.split(' ')).flags;
        flags.server_pid = vec![7, 8];
        let again = Hold::parse_from(["hold".to_owned()].into_iter().chain(super::argv(&flags).expect("argv")));
        assert_eq!(format!("{flags:?}"), format!("{:?}", again.flags));
    }
}
