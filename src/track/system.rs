//! System metrics while a run computes, as MLflow's own system-metrics logger names them
//! (`system/cpu_utilization_percentage`, `system/system_memory_usage_megabytes`,
//! `system/system_memory_usage_percentage`), sampled from Linux's `/proc` on a background thread
//! every `interval` and handed to the tracker by whoever logs next.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Metric, now_ms};

/// A sampler of the machine's load; stops when dropped.
pub struct SystemMetrics {
    samples: Arc<Mutex<Vec<Metric>>>,
    stop: Arc<AtomicBool>,
}

fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    Some((v.iter().sum(), idle))
}

fn memory() -> Option<(f64, f64)> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = |key: &str| -> Option<f64> {
        info.lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let (total, available) = (kb("MemTotal:")?, kb("MemAvailable:")?);
    let used = total - available;
    Some((used / 1024.0, 100.0 * used / total.max(1.0)))
}

impl SystemMetrics {
    /// Starts sampling every `interval`.
    pub fn start(interval: Duration) -> SystemMetrics {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, halt) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = cpu_times();
            let mut step = 0;
            while !halt.load(Ordering::Relaxed) {
                // Sleep in small slices so that a finished run does not wait for a sample.
                let mut slept = Duration::ZERO;
                while slept < interval && !halt.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    slept += Duration::from_millis(100);
                }
                let now = cpu_times();
                let ts = now_ms();
                let mut batch = Vec::new();
                if let (Some((t0, i0)), Some((t1, i1))) = (last, now)
                    && t1 > t0
                {
                    let busy = 100.0 * (1.0 - (i1 - i0) as f64 / (t1 - t0) as f64);
                    batch.push(("system/cpu_utilization_percentage", busy));
                }
                last = now;
                if let Some((mb, pct)) = memory() {
                    batch.push(("system/system_memory_usage_megabytes", mb));
                    batch.push(("system/system_memory_usage_percentage", pct));
                }
                if let Ok(mut s) = out.lock() {
                    s.extend(batch.into_iter().map(|(k, v)| Metric {
                        key: k.into(),
                        value: v,
                        step,
                        timestamp: ts,
                    }));
                }
                step += 1;
            }
        });
        SystemMetrics { samples, stop }
    }

    /// The samples taken since the last call.
    pub fn drain(&self) -> Vec<Metric> {
        self.samples
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

impl Drop for SystemMetrics {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
