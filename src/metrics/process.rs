//! Process metrics read from `/proc` at each scrape: CPU time, memory, file descriptors,
//! threads and start time, under the conventional `process_` names that stock dashboards and
//! alerts expect.
//!
//! Linux only in effect: where `/proc/self` cannot be read (another system, a locked-down
//! mount), the collector writes nothing and the scrape goes on without error. Each value that
//! cannot be read is left out alone.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Clock ticks per second of the CPU and start times in `/proc/<pid>/stat`: the kernel's
/// `USER_HZ`, which is 100 on every architecture Linux exposes to user space this way
/// (Prometheus' own procfs library relies on the same constant). Reading it with `sysconf`
/// would need unsafe code, which this crate forbids.
const USER_HZ: f64 = 100.0;

/// The collector; it holds nothing and reads `/proc` when encoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCollector;

/// What one read of `/proc` found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time of every thread, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident memory, in bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory, in bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit of open file descriptors.
    pub max_fds: Option<u64>,
    /// Threads of the process.
    pub threads: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads this process's numbers; every one that cannot be read is `None`.
    pub fn read() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let stat = read("/proc/self/stat");
        let status = read("/proc/self/status");
        let fields = stat.as_deref().map(stat_fields).unwrap_or_default();
        let field = |index: usize| fields.get(index).and_then(|v| v.parse::<u64>().ok());
        // Fields after the command name, from the state (field 3 of proc(5)) on.
        let (utime, stime, starttime) = (field(11), field(12), field(19));
        #[expect(
            clippy::cast_precision_loss,
            reason = "tick counts stay far below 2^52"
        )]
        let ticks = |t: u64| t as f64 / USER_HZ;
        let boot = read("/proc/stat").and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        let kib = |key: &str| status.as_deref().and_then(|s| status_value(s, key));
        #[expect(
            clippy::cast_precision_loss,
            reason = "seconds since the epoch stay far below 2^52"
        )]
        let start_time_seconds = match (boot, starttime) {
            (Some(boot), Some(start)) => Some(boot as f64 + ticks(start)),
            _ => None,
        };
        ProcessStats {
            cpu_seconds: utime.zip(stime).map(|(u, s)| ticks(u.saturating_add(s))),
            resident_bytes: kib("VmRSS:").map(|v| v.saturating_mul(1024)),
            virtual_bytes: kib("VmSize:").map(|v| v.saturating_mul(1024)),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| u64::try_from(dir.count()).unwrap_or(u64::MAX)),
            max_fds: read("/proc/self/limits").and_then(|text| max_open_files(&text)),
            threads: kib("Threads:"),
            start_time_seconds,
        }
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and
/// parentheses, so it is skipped up to its last `)`), starting with the state.
fn stat_fields(text: &str) -> Vec<&str> {
    text.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// The first number of a `Key: value [kB]` line of `/proc/<pid>/status`.
fn status_value(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soft limit of the `Max open files` line of `/proc/<pid>/limits` (`None` when unlimited).
fn max_open_files(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: Option<u64>,
) -> Result<(), std::fmt::Error> {
    let Some(value) = value.and_then(|v| i64::try_from(v).ok()) else {
        return Ok(());
    };
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = ProcessStats::read();
        if let Some(seconds) = stats.cpu_seconds {
            let metric = ConstCounter::new(seconds);
            metric.encode(encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent",
                Some(&Unit::Seconds),
                metric.metric_type(),
            )?)?;
        }
        gauge(
            &mut encoder,
            "process_resident_memory",
            "Resident memory size",
            Some(&Unit::Bytes),
            stats.resident_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory",
            "Virtual memory size",
            Some(&Unit::Bytes),
            stats.virtual_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Open file descriptors",
            None,
            stats.open_fds,
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "The limit of open file descriptors",
            None,
            stats.max_fds,
        )?;
        gauge(
            &mut encoder,
            "process_threads",
            "Threads of the process",
            None,
            stats.threads,
        )?;
        if let Some(seconds) = stats.start_time_seconds {
            let metric = ConstGauge::new(seconds);
            metric.encode(encoder.encode_descriptor(
                "process_start_time",
                "Start time of the process since the Unix epoch",
                Some(&Unit::Seconds),
                metric.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 \
                    9 0 123456 1000 200";
        let fields = stat_fields(line);
        assert_eq!(fields.first(), Some(&"S"));
        assert_eq!(fields.get(11), Some(&"250"));
        assert_eq!(fields.get(12), Some(&"75"));
        assert_eq!(fields.get(19), Some(&"123456"));
        assert!(stat_fields("garbage").is_empty());
    }

    #[test]
    fn status_and_limits_lines_are_read() {
        let status = "Name:\tcattery\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\nThreads:\t7\n";
        assert_eq!(status_value(status, "VmRSS:"), Some(10240));
        assert_eq!(status_value(status, "Threads:"), Some(7));
        assert_eq!(status_value(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            max_open_files("Max open files            unlimited            unlimited files\n"),
            None
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_is_read_from_proc() {
        let stats = ProcessStats::read();
        assert!(stats.resident_bytes.is_some_and(|b| b > 0), "{stats:?}");
        assert!(stats.open_fds.is_some_and(|n| n >= 3), "{stats:?}");
        assert!(stats.threads.is_some_and(|n| n >= 1), "{stats:?}");
        assert!(stats.cpu_seconds.is_some(), "{stats:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = stats.start_time_seconds.unwrap();
        assert!(start <= now + 1.0 && start > now - 3_600.0, "{start}");
    }
}
