//! The measuring half: one module per measurement (`hold`, `churn`, `count`, `converge`), each a clap flag struct,
//! a serde report and a `run`, and what they share (websocket client, node API, topics and source addresses,
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

use serde_json::Value;

/// A one-line summary of a report: its numbers and words, and the p50/p99 of each latency in it.
pub fn summary(report: &impl serde::Serialize) -> String {
    let Ok(Value::Object(fields)) = serde_json::to_value(report) else {
        return String::new();
    };
    let field = |(name, value): (&String, &Value)| match value {
        Value::Number(n) if n.is_f64() => Some(format!("{name} {:.2}", n.as_f64()?)),
        Value::Number(_) => Some(format!("{name} {value}")),
        Value::String(text) => Some(format!("{name} {text}")),
        Value::Object(latency) => {
            let [p50, p99] = ["p50_ms", "p99_ms"].map(|p| latency.get(p).and_then(Value::as_f64));
            Some(format!("{name} p50 {:.2} / p99 {:.2} ms", p50?, p99?))
        }
        _ => None,
    };
    fields.iter().filter_map(field).collect::<Vec<_>>().join(", ")
}
