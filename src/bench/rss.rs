//! Resident memory readings of the bench's processes (`/proc/<pid>/status`
//! and `clear_refs`), and handing freed memory back before a measurement.

/// A field of this process's `/proc/self/status` in KiB (0 when
/// unreadable).
pub(super) fn status_kib(field: &str) -> f64 {
    process_status_kib("self", field).unwrap_or(0.0)
}

/// A field of `/proc/<pid>/status` in KiB.
pub(super) fn process_status_kib(pid: &str, field: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
}

/// Returns freed memory to the system before a measurement: the bench's
/// own preloading producer and baseline consumer leave tens of MiB behind
/// that a production process never had, and that would otherwise count as
/// the pipeline's.
pub(super) fn release_freed_memory() {
    crate::allocator::release_freed_memory();
}

/// Resets the peak RSS of process `pid` (`self` or a number).
pub(super) fn reset_peak_rss(pid: &str) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}
