//! What a server process costs and what machine it ran on, read from
//! `/proc`: resident memory (`VmRSS`, the number the per-connection memory
//! targets are written in), CPU time (the steadiest number on a shared, noisy
//! two-core machine: contention changes how long a handshake waits, not how
//! many cycles the server spends on it), listen-queue overflows, and the
//! machine's CPU, memory, kernel and load.

use serde::{Deserialize, Serialize};

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    first_number(&status, "VmRSS:")?.parse().ok()
}

fn first_number<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(prefix))?
        .split_whitespace()
        .next()
}

/// User plus system CPU time of `pid`, in microseconds.
pub fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted
    // after the last ')'. utime and stime are fields 14 and 15 (1-based), so
    // 12th and 13th after the name, in USER_HZ ticks (100 per second on
    // every Linux architecture this runs on).
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 10_000)
}

/// Connections this network namespace dropped because a listen queue was
/// full (`TcpExt ListenOverflows`). Global to the machine, so other people's
/// tests count too; a jump during a run is still telling.
pub fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = netstat.lines().filter(|line| line.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let index = names.split_whitespace().position(|name| name == "ListenOverflows")?;
    values.split_whitespace().nth(index)?.parse().ok()
}

/// The machine a run happened on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Cores available to this process.
    pub cores: usize,
    /// Total memory, GiB.
    pub mem_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// Load averages when the run started.
    pub load_start: String,
    /// Load averages when it ended.
    pub load_end: String,
}

/// This machine, with its load now as `load_start`.
pub fn machine() -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map_or_else(
            || "unknown CPU".into(),
            |rest| rest.trim_start_matches([' ', '\t', ':']).to_owned(),
        );
    let mem_kib: f64 = first_number(&read("/proc/meminfo"), "MemTotal:")
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        mem_gib: mem_kib / 1024.0 / 1024.0,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        load_start: loadavg(),
        load_end: String::new(),
    }
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process_and_machine() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        assert!(cpu_micros(pid).is_some() && listen_overflows().is_some());
        assert!(machine().mem_gib > 0.0 && !loadavg().is_empty());
    }
}
