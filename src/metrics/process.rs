//! The standard process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_start_time_seconds`),
//! read from `/proc/self` at each scrape, and `hookstream_build_info`.
//!
//! On systems without `/proc` only the build info is rendered.

use super::names;
use super::text::{family, sample};

/// What `/proc/self` says of this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: f64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: f64,
    /// Open file descriptors.
    pub open_fds: f64,
    /// The soft limit on open file descriptors.
    pub max_fds: f64,
    /// Start of the process, in Unix seconds.
    pub start_time_seconds: f64,
}

/// Reads the process's statistics (`None` where `/proc` is missing).
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    // SAFETY: sysconf and getrlimit only read process-wide values into
    // locals.
    let (ticks, page, max_fds) = unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let max_fds = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur as f64
        } else {
            f64::NAN
        };
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
            max_fds,
        )
    };
    parse(&stat, &boot, ticks as f64, page as f64, open_fds, max_fds)
}

/// The statistics from the texts of `/proc/self/stat` and `/proc/stat`.
fn parse(
    stat: &str,
    boot: &str,
    ticks_per_second: f64,
    page_bytes: f64,
    open_fds: f64,
    max_fds: f64,
) -> Option<ProcessStats> {
    // The command name (2nd field) is in parentheses and may hold spaces:
    // count fields after its closing one. Field 3 (state) is fields[0].
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let boot_time: f64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    if ticks_per_second <= 0.0 {
        return None;
    }
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) / ticks_per_second,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page_bytes,
        start_time_seconds: boot_time + field(22)? / ticks_per_second,
        open_fds,
        max_fds,
    })
}

/// Appends the process families, when `/proc` can be read.
pub fn render(out: &mut String) {
    let Some(p) = read() else {
        return;
    };
    for (name, kind, help, value) in [
        (
            names::PROCESS_CPU,
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        ),
        (
            names::PROCESS_RESIDENT_MEMORY,
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes,
        ),
        (
            names::PROCESS_VIRTUAL_MEMORY,
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_bytes,
        ),
        (
            names::PROCESS_OPEN_FDS,
            "gauge",
            "Number of open file descriptors.",
            p.open_fds,
        ),
        (
            names::PROCESS_MAX_FDS,
            "gauge",
            "Maximum number of open file descriptors.",
            p.max_fds,
        ),
        (
            names::PROCESS_START_TIME,
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
    ] {
        family(out, name, kind, help);
        sample(out, name, &[], value);
    }
}

/// Appends `hookstream_build_info`.
pub fn render_build_info(out: &mut String) {
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    family(
        out,
        names::BUILD_INFO,
        "gauge",
        "Always 1; the labels say which build runs: hookstream version, librdkafka version, target",
    );
    sample(
        out,
        names::BUILD_INFO,
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("librdkafka", &librdkafka),
            ("arch", std::env::consts::ARCH),
            ("os", std::env::consts::OS),
        ],
        1u64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis, as the kernel
        // shows it; fields 14/15 utime/stime, 22 starttime, 23 vsize,
        // 24 rss (pages).
        let stat = "4242 (hook (stream) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 9 0 1000 104857600 512 18446744073709551615";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let p = parse(stat, boot, 100.0, 4096.0, 12.0, 1024.0).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.virtual_bytes, 104_857_600.0);
        assert_eq!(p.resident_bytes, 512.0 * 4096.0);
        assert_eq!(p.start_time_seconds, 1_700_000_010.0);
        assert_eq!((p.open_fds, p.max_fds), (12.0, 1024.0));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_as_running_with_memory_and_descriptors() {
        let p = read().expect("/proc on Linux");
        assert!(p.resident_bytes > 0.0 && p.open_fds >= 3.0 && p.max_fds >= p.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0 * 365.0);
    }
}
