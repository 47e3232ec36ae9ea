//! What `/proc` says about the server (CPU, memory, threads, context switches) and about the
//! machine (load from other processes).

use std::process::Command;
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
    /// Voluntary + involuntary context switches, summed over the live threads.
    pub ctx_switches: u64,
    /// Machine-wide busy and total CPU ticks (`/proc/stat`), and this bench's own CPU ticks:
    /// what is left of busy is other processes, which skew every figure.
    pub machine_busy: u64,
    pub machine_total: u64,
    pub bench_ticks: u64,
}

fn clock_ticks_per_sec() -> f64 {
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (`pid` or `self`), in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

pub fn proc_stats(pid: u32) -> ProcStats {
    let mut stats = ProcStats {
        cpu_ticks: cpu_ticks(&pid.to_string()),
        bench_ticks: cpu_ticks("self"),
        ..ProcStats::default()
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|v| v.parse().ok())
            .collect();
        stats.machine_total = ticks.iter().sum();
        // idle and iowait are fields 4 and 5.
        stats.machine_busy =
            stats.machine_total - ticks.get(3).unwrap_or(&0) - ticks.get(4).unwrap_or(&0);
    }
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let value = |l: &str| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("VmRSS:") {
                stats.rss_kib = value(line);
            } else if line.starts_with("VmHWM:") {
                stats.hwm_kib = value(line);
            } else if line.starts_with("Threads:") {
                stats.threads = value(line);
            }
        }
    }
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            stats.ctx_switches += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    stats
}

/// What else ran during the window, as shares of the whole machine: this bench's own CPU (the
/// clients, and the floor server), then other processes (neither the server nor this bench).
/// Above a few percent of `other_load` the machine was not quiet.
pub fn other_load(from: ProcStats, to: ProcStats) -> String {
    let total = to.machine_total.saturating_sub(from.machine_total);
    if total == 0 {
        return "n/a".into();
    }
    let busy = to.machine_busy.saturating_sub(from.machine_busy);
    let bench = to.bench_ticks.saturating_sub(from.bench_ticks);
    let ours = to.cpu_ticks.saturating_sub(from.cpu_ticks) + bench;
    let share = |ticks: u64| 100.0 * ticks as f64 / total as f64;
    format!(
        "bench_cpu={:.0}% other_load={:.0}%",
        share(bench),
        share(busy.saturating_sub(ours))
    )
}

/// Server context switches per unit of work between two snapshots.
pub fn switches_per(from: ProcStats, to: ProcStats, units: u64) -> String {
    if units == 0 {
        return "n/a".into();
    }
    format!(
        "{:.1}",
        to.ctx_switches.saturating_sub(from.ctx_switches) as f64 / units as f64
    )
}

/// Server CPU time per unit of work, in µs.
pub fn cpu_us_per(from: ProcStats, to: ProcStats, units: u64) -> String {
    if units == 0 {
        return "n/a".into();
    }
    format!("{:.0}", cpu_secs(from, to) * 1e6 / units as f64)
}

pub fn cpu_secs(from: ProcStats, to: ProcStats) -> f64 {
    to.cpu_ticks.saturating_sub(from.cpu_ticks) as f64 / clock_ticks_per_sec()
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The 1/5/15-minute load averages, from `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}
