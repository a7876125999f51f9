//! Task statistics in the cgroup v1 metrics shape containerd and CRI read (they decode it by
//! type, so it also carries figures read from a cgroup v2 host). From the container's cgroup;
//! from /proc for a container whose spec names none.

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat, Throttle,
};

use crate::error::{IoContext, Result};
use crate::placement::CgroupStats;

pub fn from_cgroup(stats: &CgroupStats) -> Metrics {
    let mut metrics = Metrics::new();

    let mut usage = CPUUsage::new();
    usage.total = stats.cpu.usage.usage_total;
    usage.user = stats.cpu.usage.usage_user;
    usage.kernel = stats.cpu.usage.usage_kernel;
    usage.per_cpu = stats.cpu.usage.per_core_usage_total.clone();
    let mut throttling = Throttle::new();
    throttling.periods = stats.cpu.throttling.periods;
    throttling.throttled_periods = stats.cpu.throttling.throttled_periods;
    throttling.throttled_time = stats.cpu.throttling.throttled_time;
    let mut cpu = CPUStat::new();
    cpu.usage = Some(usage).into();
    cpu.throttling = Some(throttling).into();
    metrics.cpu = Some(cpu).into();

    let mem = &stats.memory;
    // memory.stat keys: v1 has `total_*` for the hierarchy, v2 names them plainly.
    let stat = |v1: &str, v2: &str| {
        mem.stats
            .get(v1)
            .or_else(|| mem.stats.get(v2))
            .copied()
            .unwrap_or(0)
    };
    let entry = |d: &libcgroups::stats::MemoryData| {
        let mut e = MemoryEntry::new();
        e.usage = d.usage;
        e.max = d.max_usage;
        e.failcnt = d.fail_count;
        e.limit = d.limit;
        e
    };
    let mut memory = MemoryStat::new();
    memory.cache = mem.cache;
    memory.rss = stat("rss", "anon");
    memory.total_rss = stat("total_rss", "anon");
    memory.inactive_file = stat("inactive_file", "inactive_file");
    memory.total_inactive_file = stat("total_inactive_file", "inactive_file");
    memory.active_file = stat("active_file", "active_file");
    memory.total_active_file = stat("total_active_file", "active_file");
    memory.pg_fault = stat("pgfault", "pgfault");
    memory.total_pg_fault = stat("total_pgfault", "pgfault");
    memory.pg_maj_fault = stat("pgmajfault", "pgmajfault");
    memory.total_pg_maj_fault = stat("total_pgmajfault", "pgmajfault");
    memory.usage = Some(entry(&mem.memory)).into();
    memory.swap = Some(entry(&mem.memswap)).into();
    memory.kernel = Some(entry(&mem.kernel)).into();
    metrics.memory = Some(memory).into();

    let mut pids = PidsStat::new();
    pids.current = stats.pids.current;
    pids.limit = stats.pids.limit;
    metrics.pids = Some(pids).into();
    metrics
}

pub fn from_proc(pid: u32) -> Result<Metrics> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .io_context(|| format!("reading /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .io_context(|| format!("reading /proc/{pid}/status"))?;

    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ns_per_tick = 1_000_000_000 / clock_ticks_per_second();
    let (user, kernel) = (ticks(11) * ns_per_tick, ticks(12) * ns_per_tick);

    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };

    let mut metrics = Metrics::new();
    let mut usage = CPUUsage::new();
    usage.total = user + kernel;
    usage.user = user;
    usage.kernel = kernel;
    let mut cpu = CPUStat::new();
    cpu.usage = Some(usage).into();
    metrics.cpu = Some(cpu).into();

    let mut entry = MemoryEntry::new();
    entry.usage = kib("VmRSS:");
    entry.max = kib("VmHWM:");
    let mut memory = MemoryStat::new();
    memory.rss = entry.usage;
    memory.usage = Some(entry).into();
    metrics.memory = Some(memory).into();

    let mut pids = PidsStat::new();
    pids.current = 1;
    metrics.pids = Some(pids).into();
    Ok(metrics)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}
