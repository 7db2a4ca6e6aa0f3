//! Probes of the machine and this process (Linux /proc): peak and current resident memory, the
//! CPU time other processes use while a row runs, the CPU and GPU names.

use candle_core::Device;
use std::process::Command;
use std::time::Instant;

pub(super) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub(super) fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
}

pub(super) fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

/// Clock ticks (USER_HZ, 100 on Linux) of busy CPU time, machine-wide (/proc/stat) and of this
/// process (/proc/self/stat, all threads).
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = cpu
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .take(7)
        .map(|(_, v)| v)
        .sum();
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest: Vec<&str> = me.rsplit_once(')')?.1.split_whitespace().collect();
    let own = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    Some((busy, own))
}

/// Measures how busy the rest of the machine was between `start` and now.
pub(super) struct LoadProbe {
    ticks: Option<(u64, u64)>,
    at: Instant,
}

impl LoadProbe {
    pub(super) fn start() -> Self {
        Self {
            ticks: cpu_ticks(),
            at: Instant::now(),
        }
    }
    pub(super) fn other_load(&self) -> Option<f64> {
        let (b0, o0) = self.ticks?;
        let (b1, o1) = cpu_ticks()?;
        let cpus = std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(1) as f64;
        let wall = self.at.elapsed().as_secs_f64();
        if wall < 0.5 {
            return None; // ticks are 10 ms: too coarse for short rows
        }
        let other = (b1.saturating_sub(b0) as f64 - o1.saturating_sub(o0) as f64).max(0.0) / 100.0;
        Some(other / (wall * cpus))
    }
}

pub(super) fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let has = |f: &str| flags.contains(&f);
    let mut isa = Vec::new();
    for (flag, label) in [
        ("avx2", "AVX2"),
        ("avx512f", "AVX-512"),
        ("avx512_bf16", "AVX512-BF16"),
        ("amx_bf16", "AMX-BF16"),
    ] {
        if has(flag) {
            isa.push(label);
        }
    }
    let cores = std::thread::available_parallelism()
        .map(std::num::NonZero::get)
        .unwrap_or(1);
    if isa.is_empty() {
        format!("{name}, {cores} logical CPUs")
    } else {
        format!("{name}, {cores} logical CPUs, {}", isa.join(" "))
    }
}

pub(super) fn gpu_name(dev: &Device) -> Option<String> {
    if !dev.is_cuda() {
        return None;
    }
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .to_string();
    (!s.is_empty()).then_some(s)
}
