//! This process's resources, read from Linux's `/proc` at scrape time. Elsewhere (or when
//! `/proc` is not mounted) there are no figures and the series are left out.

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`): fixed at 100 in
/// Linux's user ABI on every architecture Depot builds for, whatever the kernel's own HZ.
const USER_HZ: f64 = 100.0;

/// What `/proc` says about this process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident memory, in bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory, in bytes.
    pub virtual_bytes: Option<u64>,
    /// User and system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    /// The soft limit on open descriptors (`None` when unlimited).
    pub max_fds: Option<u64>,
    pub threads: Option<u64>,
}

/// Reads the figures of the running process; each one that cannot be read is `None`.
pub fn read() -> ProcessStats {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| boot_time(&s));
    let fields = stat.as_deref().and_then(stat_fields);
    let limits = std::fs::read_to_string("/proc/self/limits").ok();
    ProcessStats {
        resident_bytes: status.as_deref().and_then(|s| status_kib(s, "VmRSS:")).map(|k| k.saturating_mul(1024)),
        virtual_bytes: status.as_deref().and_then(|s| status_kib(s, "VmSize:")).map(|k| k.saturating_mul(1024)),
        cpu_seconds: fields.map(|f| (f.utime.saturating_add(f.stime)) as f64 / USER_HZ),
        start_time_seconds: fields.zip(boot).map(|(f, boot)| boot as f64 + f.start_ticks as f64 / USER_HZ),
        open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64),
        max_fds: limits.as_deref().and_then(max_open_files),
        threads: fields.map(|f| f.threads),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StatFields {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
}

/// The fields of `/proc/<pid>/stat` after the command name, which is in parentheses and may
/// itself hold spaces and parentheses: the fields start after the *last* `)`.
fn stat_fields(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // proc(5) numbers the fields from 1 with the pid; `rest` starts at field 3 (state).
    let field = |n: usize| fields.get(n.checked_sub(3)?)?.parse::<u64>().ok();
    Some(StatFields { utime: field(14)?, stime: field(15)?, threads: field(20)?, start_ticks: field(22)? })
}

/// A `Name:   N kB` line of `/proc/<pid>/status`, in KiB.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// `btime` of `/proc/stat`: when the system booted, in seconds since the Unix epoch.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

/// The soft limit of the `Max open files` line of `/proc/<pid>/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_hostile_command_name() {
        let stat = "4242 (de pot) (x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 7 0 123456 \
                    1000000 2500 18446744073709551615 1 1 0 0 0 0 0 4096 17663 0 0 0 17 1 0 0 0 0 0";
        let f = stat_fields(stat).unwrap_or_else(|| panic!("no fields"));
        assert_eq!(f, StatFields { utime: 250, stime: 75, threads: 7, start_ticks: 123456 });
        for bad in ["", "no parenthesis", "1 (x)", "1 (x) S 1 2", ")))", "1 (x) S 1 2 3 4 5 6 7 8 9 10 11 x y"] {
            assert_eq!(stat_fields(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_status_stat_and_limits() {
        let status = "Name:\tdepot\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\nThreads:\t7\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2048));
        assert_eq!(status_kib(status, "VmSize:"), Some(123456));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        assert_eq!(status_kib("VmRSS:\tlots kB\n", "VmRSS:"), None);
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1765000000\nprocesses 9\n"), Some(1_765_000_000));
        assert_eq!(boot_time("btime soon\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(max_open_files("Max open files            unlimited            unlimited files\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let s = read();
        assert!(s.resident_bytes.is_some_and(|b| b > 0), "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n > 0), "{s:?}");
        assert!(s.threads.is_some_and(|n| n > 0), "{s:?}");
        assert!(s.start_time_seconds.is_some_and(|t| t > 1.0e9), "{s:?}");
        assert!(s.cpu_seconds.is_some(), "{s:?}");
    }
}
