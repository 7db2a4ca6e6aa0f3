//! The benchmark's rows: their keys and labels, one measurement ([`RowResult`], also what the
//! diffusers script prints as JSON), and the formatting of the table's cells.

use super::workload::PHRASE_TOKENS;
use super::BenchArgs;
use serde::{Deserialize, Serialize};

/// Every row the benchmark knows, in table order. The diffusers script uses the same keys.
pub(super) const ROW_KEYS: [&str; 10] = [
    "clip_prompt",
    "clip_phrases",
    "position_net",
    "unet_fuser_on",
    "unet_fuser_off",
    "vae_decode",
    "taesd_decode",
    "generation",
    "first_preview",
    "cancel_latency",
];

/// One row's measurement on one side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RowResult {
    pub(super) row: String,
    pub(super) dtype: String,
    #[serde(default)]
    pub(super) median_s: Option<f64>,
    #[serde(default)]
    pub(super) times_s: Vec<f64>,
    /// Peak resident memory of the process while the row ran (VmHWM, reset before the row).
    #[serde(default)]
    pub(super) peak_rss_bytes: Option<u64>,
    #[serde(default)]
    pub(super) error: Option<String>,
    /// Share of the machine's CPU time that other processes used during the timed runs (0 = the
    /// machine was otherwise idle; 0.5 on 2 CPUs = one core busy elsewhere): a contention flag.
    #[serde(default)]
    pub(super) other_load: Option<f64>,
}

impl RowResult {
    pub(super) fn failed(row: &str, dtype: &str, error: String) -> Self {
        Self {
            row: row.into(),
            dtype: dtype.into(),
            median_s: None,
            times_s: vec![],
            peak_rss_bytes: None,
            error: Some(error),
            other_load: None,
        }
    }
    pub(super) fn from_times(
        row: &str,
        dtype: &str,
        times: Vec<f64>,
        peak: Option<u64>,
        other_load: Option<f64>,
    ) -> Self {
        Self {
            row: row.into(),
            dtype: dtype.into(),
            median_s: median(&times),
            times_s: times,
            peak_rss_bytes: peak,
            error: None,
            other_load,
        }
    }
}

fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

pub(super) fn row_label(key: &str, args: &BenchArgs) -> String {
    let s = args.size;
    let l = s / 8;
    let n = args.boxes;
    match key {
        "clip_prompt" => "CLIP prompt encoding (1×77 tokens)".into(),
        "clip_phrases" => format!("phrase encoding ({n}×{PHRASE_TOKENS} tokens, pooled)"),
        "position_net" => format!("position net (2×30 slots, {n} boxes)"),
        "unet_fuser_on" => {
            format!("UNet step {s}² ({l}×{l} latents), CFG batch 2, {n} boxes, fuser on")
        }
        "unet_fuser_off" => format!("UNet step {s}², CFG batch 2, fuser off"),
        "vae_decode" => format!("VAE decode {s}²"),
        "taesd_decode" => format!("TAESD decode {s}² (preview decoder)"),
        "generation" => format!(
            "whole {}-step {} generation {s}², {n} boxes, α₀ 0.3 (incl. text + decode)",
            args.steps, args.scheduler
        ),
        "first_preview" => "start of generation → first preview".into(),
        "cancel_latency" => format!("Cancel during a {s}² UNet evaluation → generation stopped"),
        other => other.into(),
    }
}

pub(super) fn fmt_secs(s: f64) -> String {
    if s >= 100.0 {
        format!("{s:.0} s")
    } else if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.01 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}

pub(super) fn fmt_bytes(b: Option<u64>) -> String {
    match b {
        Some(b) if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        Some(b) => format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64),
        None => "–".into(),
    }
}

/// Rows during which other processes used more than this share of the machine are flagged.
pub(super) const CONTENDED: f64 = 0.05;

pub(super) fn cell(r: Option<&RowResult>) -> String {
    match r {
        None => "–".into(),
        Some(RowResult {
            median_s: Some(m),
            other_load,
            ..
        }) => match other_load {
            Some(l) if *l > CONTENDED => format!("{} ⚠{:.0}%", fmt_secs(*m), l * 100.0),
            _ => fmt_secs(*m),
        },
        Some(RowResult { error: Some(e), .. }) => {
            let short: String = e.lines().next().unwrap_or("").chars().take(40).collect();
            format!("n/a ({short})")
        }
        Some(_) => "n/a".into(),
    }
}
