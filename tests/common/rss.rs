//! Resident memory of the test process, for the soak tests (`tests/soak.rs` and the studio's).

/// Resident memory of this process in KiB (Linux `/proc/self/status`; 0 where it cannot be read).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
