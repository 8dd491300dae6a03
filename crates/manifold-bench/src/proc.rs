//! Sampling a process from /proc: CPU time (utime + stime of every thread, from
//! `/proc/<pid>/stat`), resident memory (`VmRSS`), and the whole machine's busy time
//! (`/proc/stat`), with wall-clock timestamps to cut out the steady part of a run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// When, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The process's user + system CPU time so far, seconds.
    pub cpu_s: f64,
    /// Its resident set, KiB.
    pub rss_kb: u64,
    /// The machine's busy time so far (all CPUs), seconds.
    pub machine_busy_s: f64,
    /// The machine's total time so far (all CPUs), seconds.
    pub machine_total_s: f64,
}

/// A thread sampling one process until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    join: JoinHandle<()>,
}

impl Sampler {
    /// Sample `pid` every `every`.
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let tick = clock_ticks();
        let join = {
            let (stop, samples) = (stop.clone(), samples.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(s) = read(pid, tick) {
                        samples.lock().expect("not poisoned").push(s);
                    }
                    std::thread::sleep(every);
                }
            })
        };
        Sampler {
            stop,
            samples,
            join,
        }
    }

    /// The latest reading.
    pub fn latest(&self) -> Option<Sample> {
        self.samples.lock().expect("not poisoned").last().cloned()
    }

    /// Stop; every reading.
    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.join.join();
        std::mem::take(&mut *self.samples.lock().expect("not poisoned"))
    }
}

fn read(pid: u32, tick: f64) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let machine = std::fs::read_to_string("/proc/stat").ok()?;
    let (utime, stime) = cpu_ticks(&stat)?;
    let (busy, total) = machine_ticks(&machine)?;
    Some(Sample {
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        cpu_s: (utime + stime) as f64 / tick,
        rss_kb: rss_kb(&status)?,
        machine_busy_s: busy as f64 / tick,
        machine_total_s: total as f64 / tick,
    })
}

/// utime and stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): field n is f[n - 3].
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// `VmRSS` of `/proc/<pid>/status`, KiB.
pub fn rss_kb(status: &str) -> Option<u64> {
    status_field(status, "VmRSS:")
}

/// The first number after `key` (e.g. `"Threads:"`) in `/proc/<pid>/status`.
pub fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Busy and total ticks of the `cpu` line of `/proc/stat` (idle and iowait are not busy).
pub fn machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guests are already
    // counted in user and nice.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// `getconf CLK_TCK`, 100 when it cannot be asked.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_odd_names() {
        let stat = "4242 (we ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1234 567 0 0 20 0 9 0 100 123456789 2000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some((1234, 567)));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_and_machine_lines_parse() {
        let status = "Name:\tmanifold\nVmPeak:\t  9000 kB\nVmRSS:\t   5120 kB\n";
        assert_eq!(rss_kb(status), Some(5120));
        let stat = "cpu  100 5 50 800 20 1 2 0 0 0\ncpu0 50 2 25 400 10 0 1 0 0 0\n";
        assert_eq!(machine_ticks(stat), Some((158, 978)));
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = read(std::process::id(), clock_ticks()).expect("own /proc entry");
        assert!(s.rss_kb > 0);
        assert!(s.machine_total_s > 0.0);
    }
}
