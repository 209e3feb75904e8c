//! What the benchmark reads from `/proc`: a process's CPU time and memory, the PostgreSQL
//! server's CPU time, and the TCP connections to the scheduler.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// USER_HZ, the unit of the CPU times in `/proc/<pid>/stat`, is 100 on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// The fields of `/proc/<pid>/stat` after the command name (which is in parentheses and may
/// hold spaces): index 0 is field 3 (`state`), so field `n` is at index `n - 3`.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    // `state` is a letter; it reads as 0, and the numeric fields keep their places.
    Some(rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect())
}

/// CPU ticks (utime + stime) and the start time (which tells a reused pid apart).
fn ticks_and_start(pid: u32) -> Option<(u64, u64)> {
    let fields = stat_fields(pid)?;
    Some((fields.get(11)? + fields.get(12)?, *fields.get(19)?))
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let (ticks, _) = ticks_and_start(pid).unwrap();
    ticks as f64 / TICKS_PER_SECOND
}

/// A memory figure of `/proc/<pid>/status` in MiB: `VmRSS` (now) or `VmHWM` (the peak).
pub fn memory_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// The processes named `postgres` (`/proc/<pid>/comm`) with their process titles.
fn postgres_processes() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "postgres")
        })
        .filter_map(|pid| {
            let title = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&title).replace('\0', " ")))
        })
        .collect()
}

/// A client backend's title names its client: `postgres: 15/main: user db 127.0.0.1(5678) idle`.
fn is_client_backend(title: &str) -> bool {
    title.split_whitespace().any(|word| {
        word == "[local]"
            || word
                .strip_suffix(')')
                .and_then(|w| w.rsplit_once('('))
                .is_some_and(|(_, port)| {
                    !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
                })
    })
}

/// The PostgreSQL server's CPU time spent for one database, read from `/proc`.
///
/// Counted: every process whose `/proc/<pid>/comm` is `postgres`, that is the postmaster (it
/// forks the backends), the server-wide helpers (checkpointer, background writer, WAL writer,
/// ...: they write what the gateway commits) and the backends serving the benchmark's database
/// (their title names it). Left out: backends of other databases, which other work on this
/// shared server may run meanwhile. A process that ends between the two readings is lost with
/// all its CPU time, so the gateway stays running (its connections open) until the second one;
/// a process that starts between them counts in full.
pub struct PgCpu {
    database: String,
    before: HashMap<(u32, u64), u64>,
}

impl PgCpu {
    fn counted(&self) -> HashMap<(u32, u64), u64> {
        postgres_processes()
            .into_iter()
            .filter(|(_, title)| title.contains(&self.database) || !is_client_backend(title))
            .filter_map(|(pid, _)| {
                let (ticks, start) = ticks_and_start(pid)?;
                Some(((pid, start), ticks))
            })
            .collect()
    }

    /// Starts counting for `database`.
    pub fn start(database: &str) -> PgCpu {
        let mut probe = PgCpu {
            database: database.to_owned(),
            before: HashMap::new(),
        };
        probe.before = probe.counted();
        probe
    }

    /// CPU seconds the counted processes used since [`PgCpu::start`].
    pub fn seconds(&self) -> f64 {
        let ticks: u64 = self
            .counted()
            .into_iter()
            .map(|(key, now)| now.saturating_sub(self.before.get(&key).copied().unwrap_or(0)))
            .sum();
        ticks as f64 / TICKS_PER_SECOND
    }
}

/// Waits until no PostgreSQL backend serves `database` (those of a killed gateway end once the
/// server sees their connections closed); panics after `limit`.
pub fn wait_backends_gone(database: &str, limit: Duration) {
    let start = std::time::Instant::now();
    while postgres_processes()
        .iter()
        .any(|(_, title)| title.contains(database) && is_client_backend(title))
    {
        assert!(
            start.elapsed() < limit,
            "backends of {database} still run {limit:?} after their gateway was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// ESTABLISHED TCP connections from 127.0.0.1 to 127.0.0.1:`port` (the client's side of each,
/// in `/proc/net/tcp`).
pub fn connections_to(port: u16) -> usize {
    let remote = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// Samples [`connections_to`] every 250 ms on a thread of its own, keeping the peak. Reading
/// `/proc/net/tcp` walks every socket of the machine (thousands in TIME_WAIT after a run), so
/// sampling faster would take a good share of a core from the gateway being measured.
pub struct ConnectionSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

impl ConnectionSampler {
    /// Starts sampling connections to `port`.
    pub fn start(port: u16) -> ConnectionSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(0));
        let (stopped, seen) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                seen.fetch_max(connections_to(port), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        ConnectionSampler { stop, peak, thread }
    }

    /// Stops sampling; answers the peak.
    pub fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        self.peak.load(Ordering::SeqCst)
    }
}
