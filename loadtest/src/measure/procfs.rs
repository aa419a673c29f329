//! What a server process costs and what machine it ran on, from `/proc`:
//! resident memory (`VmRSS`, the unit of the memory targets), CPU time (the
//! steadiest figure on a shared two-core machine: contention changes how long
//! a handshake waits, not how many cycles the server spends on it),
//! listen-queue overflows, and the machine's CPU, memory, kernel and load.

use serde::{Deserialize, Serialize};

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(name))?.split_whitespace().next()?.parse().ok()
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    field(&read(&format!("/proc/{pid}/status")), "VmRSS:")
}

/// User plus system CPU time of `pid`, in microseconds.
pub fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = read(&format!("/proc/{pid}/stat"));
    // The command name may hold spaces and parentheses: fields are counted
    // after the last ')'. utime and stime are fields 14 and 15 (1-based), so
    // 12th and 13th after the name, in USER_HZ ticks: 100 a second on Linux.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11).map(str::parse::<u64>);
    Some((fields.next()?.ok()? + fields.next()?.ok()?) * 10_000)
}

/// Connections dropped machine-wide because a listen queue was full
/// (`TcpExt ListenOverflows`): other people's tests count too, but a jump
/// during a run is still telling.
pub fn listen_overflows() -> Option<u64> {
    let netstat = read("/proc/net/netstat");
    let mut lines = netstat.lines().filter(|line| line.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let index = names.split_whitespace().position(|name| name == "ListenOverflows")?;
    values.split_whitespace().nth(index)?.parse().ok()
}

/// The machine a run happened on: CPU model, cores available, total memory,
/// kernel release, load averages when the run started and ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']));
    Machine {
        cpu: cpu.unwrap_or("unknown CPU").to_owned(),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        mem_gib: field(&read("/proc/meminfo"), "MemTotal:").map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        load_start: loadavg(),
        load_end: String::new(),
    }
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> String {
    read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_process_and_machine() {
        let pid = std::process::id();
        assert!(super::rss_kib(pid).is_some_and(|kib| kib > 0) && super::cpu_micros(pid).is_some());
        assert!(super::listen_overflows().is_some() && super::machine().mem_gib > 0.0);
    }
}
