//! What a server process costs and what machine it ran on, from `/proc`: resident memory (`VmRSS`, the unit of the
//! memory targets), CPU time (the steadiest figure on a shared two-core machine: contention changes how long a
//! handshake waits, not how many cycles the server spends on it), the kernel's network counters, and the machine's
//! CPU, memory, kernel and load.

use serde::{Deserialize, Serialize};

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

/// The machine a run happened on: CPU model, cores available, total memory, kernel release, load averages when the
/// run started and ended.
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
