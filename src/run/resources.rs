//! What a stage cost the machine: the process's peak resident memory while it ran, read from
//! Linux's `/proc/self/status` (`VmHWM`), whose high-water mark is reset when a stage starts.

/// The peak resident set of this process since the last [`reset_peak_rss`], in bytes (`None`
/// where `/proc` is not there).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak to the current resident set (Linux: `echo 5 > /proc/self/clear_refs`).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
