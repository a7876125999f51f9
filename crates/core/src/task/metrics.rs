//! Task statistics of the instance process, in the cgroup v1 metrics shape containerd expects.
//! Read from /proc until the container has a cgroup of its own.

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};

use crate::error::{IoContext, Result};

pub fn read(pid: u32) -> Result<Metrics> {
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
