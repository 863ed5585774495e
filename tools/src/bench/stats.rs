//! Measuring helpers shared by the benchmarks: percentiles of latency samples and the
//! CPU time the process used, which tells a CPU-bound phase from a disk-bound one.

use std::time::{Duration, Instant};

/// Percentiles of a set of latency samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Summarises latency samples given in nanoseconds.
pub fn summarize(mut nanos: Vec<u64>) -> Summary {
    nanos.sort_unstable();
    let at = |q: f64| Duration::from_nanos(percentile(&nanos, q).unwrap_or(0));
    Summary { count: nanos.len(), p50: at(0.50), p99: at(0.99), max: at(1.0) }
}

/// The value at quantile `q` (0..=1) of sorted samples, nearest-rank.
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Nanoseconds since `base`, as a compact sample (u64 nanoseconds last 584 years).
pub fn nanos_since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// User + system CPU time used by this process so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Measures how many cores a phase kept busy on average (CPU time / wall time): this
/// process's ([`CpuMeter::start`]) or the whole machine's ([`CpuMeter::machine`]).
pub struct CpuMeter {
    /// Busy CPU time so far, of whatever this meter measures.
    read: fn() -> Duration,
    cpu: Duration,
    wall: Instant,
}

impl CpuMeter {
    /// This process's CPU time.
    pub fn start() -> CpuMeter {
        CpuMeter::reading(cpu_time)
    }

    /// Every process's: next to [`CpuMeter::start`], it tells how much of the machine
    /// other processes took meanwhile (a shared machine makes every figure noisier).
    pub fn machine() -> CpuMeter {
        CpuMeter::reading(machine_busy)
    }

    fn reading(read: fn() -> Duration) -> CpuMeter {
        CpuMeter { read, cpu: read(), wall: Instant::now() }
    }

    /// Average busy cores since the start (2.0 = both cores of a 2-core machine).
    pub fn cores_busy(&self) -> f64 {
        let wall = self.wall.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        (self.read)().saturating_sub(self.cpu).as_secs_f64() / wall
    }
}

/// Busy CPU time of the whole machine so far (every process, user + system + irq),
/// from the first line of `/proc/stat`, in clock ticks converted to a duration.
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next().filter(|l| l.starts_with("cpu ")) else {
        return Duration::ZERO;
    };
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq: all but idle and iowait. Steal (time
    // the hypervisor gave to other machines) is left out: it is not this machine's.
    let busy: u64 =
        fields.iter().take(7).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(busy.saturating_mul(1_000_000_000 / hz))
}

/// Events (or operations) per second.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// CPU time used so far by this process's threads whose name starts with `prefix`
/// (`hydra-ledger` is the writer, `sled-io` sled's I/O pool), from
/// `/proc/self/task/*/schedstat`. Threads that already exited are not counted.
pub fn threads_cpu(prefix: &str) -> Duration {
    threads_sched(prefix).0
}

/// (time on a CPU, time runnable but waiting for a CPU) of the threads named
/// `prefix…`: the first two fields of `/proc/self/task/*/schedstat`, in nanoseconds.
/// The second tells a thread starved by others on a busy machine from one that is
/// blocked (on a disk flush, a lock, or waiting for work).
pub fn threads_sched(prefix: &str) -> (Duration, Duration) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (Duration::ZERO, Duration::ZERO);
    };
    let (mut cpu, mut wait) = (0u64, 0u64);
    for task in tasks.flatten() {
        let dir = task.path();
        let named = std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.starts_with(prefix));
        if !named {
            continue;
        }
        if let Ok(s) = std::fs::read_to_string(dir.join("schedstat")) {
            let mut fields = s.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
            cpu += fields.next().unwrap_or(0);
            wait += fields.next().unwrap_or(0);
        }
    }
    (Duration::from_nanos(cpu), Duration::from_nanos(wait))
}

/// How busy the threads named `prefix…` were over a phase, in cores.
pub struct ThreadMeter {
    prefix: &'static str,
    cpu: Duration,
    wait: Duration,
    wall: Instant,
}

impl ThreadMeter {
    pub fn start(prefix: &'static str) -> ThreadMeter {
        let (cpu, wait) = threads_sched(prefix);
        ThreadMeter { prefix, cpu, wait, wall: Instant::now() }
    }

    pub fn cores_busy(&self) -> f64 {
        self.shares().0
    }

    /// (cores on a CPU, cores' worth of time runnable but waiting for a CPU) since
    /// `start`. For one thread: the share of the wall time it ran, and the share it
    /// was ready to run but the CPUs were taken.
    pub fn shares(&self) -> (f64, f64) {
        let wall = self.wall.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return (0.0, 0.0);
        }
        let (cpu, wait) = threads_sched(self.prefix);
        (
            cpu.saturating_sub(self.cpu).as_secs_f64() / wall,
            wait.saturating_sub(self.wait).as_secs_f64() / wall,
        )
    }
}

/// Resident memory of this process now and at its peak, in MB (from /proc).
pub fn memory_mb() -> (u64, u64) {
    process_memory_mb("self")
}

/// Resident and peak resident memory of process `pid` (a number or `self`) in MB,
/// from /proc (0 where unavailable).
pub fn process_memory_mb(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 1.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile::<u64>(&[], 0.5), None);
    }
}
