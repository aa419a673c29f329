//! The measuring half: one module per measurement (`hold`, `churn`, `count`, `converge`), each a clap flag struct,
//! a serde report and a `run`, and what they share (websocket client, node API, topics and source addresses; here,
//! the latency histograms and `/proc`). Nothing here starts a server.
//!
//! Latencies are HdrHistogram (microseconds, 3 significant digits, up to 10 minutes), so a p99.9 over 100k samples
//! costs a few KiB and merging per-task histograms is exact; summaries are in milliseconds, the unit of every
//! target. From `/proc` come resident memory (`VmRSS`, the unit of the memory targets), CPU time (the steadiest
//! figure on a shared two-core machine: contention changes how long a handshake waits, not how many cycles the
//! server spends on it), the kernel's network counters, and the machine's CPU, memory, kernel and load.

pub mod churn;
pub mod client;
pub mod converge;
pub mod count;
pub mod hold;
pub mod topics;

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A one-line summary of a report: its numbers and words, and the p50/p99 of each latency in it.
pub fn summary(report: &impl Serialize) -> String {
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

const MAX_MICROS: u64 = 600_000_000;

/// A latency histogram in microseconds.
#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // Constant bounds that HdrHistogram accepts (low ≥ 1, high ≥ 2·low, 3 digits): cannot fail.
        Self(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds are valid"))
    }
}

impl Latency {
    /// Records one sample; longer than the bound records as the bound.
    pub fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(MAX_MICROS);
        self.0.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Adds every sample of `other` (same bounds on both sides, so it cannot fail).
    pub fn merge(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Percentiles in milliseconds (all zero without samples).
    pub fn summary(&self) -> LatencySummary {
        let (h, ms, mut s) = (&self.0, |micros: u64| micros as f64 / 1000.0, LatencySummary::default());
        if !h.is_empty() {
            (s.count, s.min_ms, s.max_ms, s.mean_ms) = (h.len(), ms(h.min()), ms(h.max()), h.mean() / 1000.0);
            let quantiles = [0.5, 0.9, 0.99, 0.999].map(|q| ms(h.value_at_quantile(q)));
            [s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms] = quantiles;
        }
        s
    }
}

/// Sample count and percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The first number after `name` on the line that starts with it.
fn field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find_map(|line| line.strip_prefix(name))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    field(&read(&format!("/proc/{pid}/status")), "VmRSS:")
}

/// MemAvailable of the machine (`/proc/meminfo`) in MiB: what can still be allocated without swapping or OOM.
pub fn mem_available_mib() -> Option<u64> {
    field(&read("/proc/meminfo"), "MemAvailable:").map(|kib| kib / 1024)
}

/// User plus system CPU time of `pid`, in microseconds.
pub fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = read(&format!("/proc/{pid}/stat"));
    // The command name may hold spaces and parentheses: fields are counted after the last ')'. utime and stime are
    // fields 14 and 15 (1-based), so 12th and 13th after the name, in USER_HZ ticks: 100 a second on Linux.
    let fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let mut ticks = fields.skip(11).map(str::parse::<u64>);
    Some((ticks.next()?.ok()? + ticks.next()?.ok()?) * 10_000)
}

/// A machine-wide kernel counter of `/proc/net/netstat` or `/proc/net/snmp` (`TcpExt:` `ListenOverflows`:
/// connections dropped on a full listen queue; `Udp:` `RcvbufErrors`: datagrams dropped on a full socket buffer).
/// Other people's tests count too, but a jump during a run is still telling.
pub fn net_counter(file: &str, section: &str, name: &str) -> Option<u64> {
    let text = read(file);
    let mut lines = text.lines().filter(|line| line.starts_with(section));
    let (names, values) = (lines.next()?, lines.next()?);
    let index = names.split_whitespace().position(|field| field == name)?;
    values.split_whitespace().nth(index)?.parse().ok()
}

/// `ListenOverflows` (see [`net_counter`]).
pub fn listen_overflows() -> Option<u64> {
    net_counter("/proc/net/netstat", "TcpExt:", "ListenOverflows")
}

/// `RcvbufErrors` of `Udp:` (see [`net_counter`]): gossip datagrams lost on a full socket buffer.
pub fn udp_rcvbuf_errors() -> Option<u64> {
    net_counter("/proc/net/snmp", "Udp:", "RcvbufErrors")
}

/// The machine: CPU model, cores, memory, kernel release, load averages when the run started and ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub mem_gib: f64,
    pub kernel: String,
    pub load_start: String,
    pub load_end: String,
}

/// This machine, loaded as it is now.
pub fn machine() -> Machine {
    let (cpuinfo, mut m) = (read("/proc/cpuinfo"), Machine::default());
    let cpu = cpuinfo.lines().find_map(|line| line.strip_prefix("model name"));
    m.cpu = cpu.unwrap_or("unknown CPU").trim_start_matches([' ', '\t', ':']).into();
    m.kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    m.cores = std::thread::available_parallelism().map_or(1, usize::from);
    m.mem_gib = field(&read("/proc/meminfo"), "MemTotal:").unwrap_or(0) as f64 / 1024.0 / 1024.0;
    m.load_start = loadavg();
    m
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> String {
    let averages: Vec<String> = read("/proc/loadavg").split(' ').take(3).map(str::to_owned).collect();
    averages.join(" ")
}
