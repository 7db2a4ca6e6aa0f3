//! `glichen bench`: times the parts of a GLIGEN generation at Stable Diffusion 1.4 sizes (CLIP
//! ViT-L/14 text tower, the gated UNet at 512×512 with classifier-free guidance and 30 boxes, the
//! KL VAE), with random weights built in memory (nothing to download) or a model folder, and with
//! `--compare` runs `benches/diffusers_bench.py` in the same invocation so that both sides are
//! measured on the same machine, with the same thread count and the same shapes, and printed as one
//! table with the ratio Glichen / diffusers per row.
//!
//! The parts: `random` builds the SD 1.4-sized model with random weights, `workload` the inputs
//! both sides share, `timing` times the Glichen rows, `diffusers` runs the Python side, `rows`
//! holds the results and formats the table cells, `system` probes the machine (CPU, RSS, load),
//! `breakdown` times the UNet's parts for `--breakdown`.

mod breakdown;
mod diffusers;
mod random;
mod rows;
mod system;
mod timing;
mod workload;

use anyhow::{bail, Context, Result};
use candle_core::DType;
use diffusers::{bench_diffusers, PythonMeta};
use glichen::pipeline;
use rows::{cell, fmt_bytes, row_label, RowResult, CONTENDED, ROW_KEYS};
use std::io::Write;
use std::path::PathBuf;
use system::{cpu_model, gpu_name};
use timing::bench_glichen;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Also run the diffusers script (benches/diffusers_bench.py) in this invocation and print the
    /// ratio Glichen / diffusers per row.
    #[arg(long)]
    pub compare: bool,
    /// Python for --compare [default: $GLICHEN_PYTHON, else /opt/glichen-venv/bin/python, else python3].
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The diffusers script [default: benches/diffusers_bench.py of this source tree].
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Threads for both sides (RAYON_NUM_THREADS here, torch.set_num_threads there) [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed runs per row; the table shows their median.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// f32, bf16, f16, or all (each dtype the device supports).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Also time a whole PLMS generation (prompt, phrases, all steps, VAE decode) and the time from
    /// its start to the first preview.
    #[arg(long)]
    pub full: bool,
    /// Sampling steps of the --full generation.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// The sampler of the --full generation (ddim, pndm, dpmpp_2m, dpmpp_2m_karras, euler, unipc);
    /// diffusers makes the same class `from_config` of SD 1.4's scheduler config.
    #[arg(long, default_value = "pndm", value_parser = clap::builder::ValueParser::new(parse_scheduler))]
    pub scheduler: glichen::layout::SchedulerKind,
    /// Timed --full generations (no warm-up: the rows before it warm everything up).
    #[arg(long, default_value_t = 1)]
    pub full_runs: usize,
    /// Only these rows (comma separated): clip_prompt, clip_phrases, position_net, unet_fuser_on,
    /// unet_fuser_off, vae_decode, taesd_decode, generation, first_preview, cancel_latency.
    #[arg(long, value_delimiter = ',')]
    pub rows: Vec<String>,
    /// Image size in pixels (square); 512 is SD 1.4's.
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    /// Grounded boxes (1..=30); the model always has 30 slots.
    #[arg(long, default_value_t = 30)]
    pub boxes: usize,
    /// Time this model (folder, catalogue name or hub id) instead of random SD 1.4-sized weights.
    #[arg(long)]
    pub model: Option<String>,
    /// Skip the Glichen side (with --compare: time diffusers only).
    #[arg(long)]
    pub diffusers_only: bool,
    /// Instead of the rows: time the UNet's parts (resnet, norms, self-attention, fuser,
    /// cross-attention, feed-forward, ...) at each of its resolutions, with the number of calls per
    /// step, to see where a step's time goes.
    #[arg(long)]
    pub breakdown: bool,
    /// Also write every measurement as JSON lines to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "?",
    }
}

fn parse_dtypes(s: &str) -> Result<Vec<DType>> {
    if s == "all" {
        return Ok(vec![DType::F32, DType::BF16, DType::F16]);
    }
    s.split(',')
        .map(|d| pipeline::parse_dtype(d.trim()).map_err(anyhow::Error::msg))
        .collect()
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if args.boxes == 0 || args.boxes > pipeline::MAX_GROUNDING_SLOTS {
        bail!(
            "--boxes must be between 1 and {}",
            pipeline::MAX_GROUNDING_SLOTS
        );
    }
    if args.size < 64 || !args.size.is_multiple_of(64) {
        bail!("--size must be a multiple of 64 (SD's UNet halves 64×64 latents three times)");
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(1)
    });
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    // Before anything starts a rayon pool: candle's matmul (gemm) and its other kernels read this.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", threads.to_string());

    let dev = pipeline::parse_device(&args.device).map_err(anyhow::Error::msg)?;
    // candle runs f16 and bf16 on every device (on CPUs without native half-precision arithmetic
    // its kernels convert); a dtype a device cannot run shows as n/a with the error.
    let dtypes = parse_dtypes(&args.dtype)?;
    if args.breakdown {
        return breakdown::run_breakdown(&args, &dev, &dtypes, threads);
    }
    let mut rows: Vec<&str> = if args.rows.is_empty() {
        ROW_KEYS[..7].to_vec()
    } else {
        let mut v = Vec::new();
        for r in &args.rows {
            match ROW_KEYS.iter().find(|k| **k == r.as_str()) {
                Some(k) => v.push(*k),
                None => bail!("unknown row {r:?} (rows: {})", ROW_KEYS.join(", ")),
            }
        }
        v
    };
    if args.full {
        for k in ["generation", "first_preview"] {
            if !rows.contains(&k) {
                rows.push(k);
            }
        }
    }

    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let machine = match gpu_name(&dev) {
        Some(g) => format!("{g} ({})", cpu_model()),
        None => cpu_model(),
    };
    eprintln!(
        "glichen bench: {machine}; {threads} threads; device {}; dtypes {:?}",
        args.device, dtypes
    );

    let mut glichen_rows = Vec::new();
    if !args.diffusers_only {
        for &dt in &dtypes {
            glichen_rows.extend(bench_glichen(&args, &rows, &dev, dt));
        }
    }

    let (diffusers_rows, meta) = if args.compare {
        bench_diffusers(&args, threads, &dtypes, &rows)?
    } else {
        (Vec::new(), PythonMeta::default())
    };

    if let Some(path) = &args.json {
        let mut f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        for (side, rs) in [("glichen", &glichen_rows), ("diffusers", &diffusers_rows)] {
            for r in rs {
                let mut v = serde_json::to_value(r)?;
                v["side"] = serde_json::Value::from(side);
                writeln!(f, "{v}")?;
            }
        }
    }

    // The table (Markdown, so it can go into the README as printed).
    let weights_desc = match &args.model {
        Some(m) => format!("model {m}"),
        None => "random weights with SD 1.4 GLIGEN shapes".into(),
    };
    println!();
    println!("glichen bench ({weights_desc}), `{command_line}`");
    println!("machine: {machine}; device: {}", args.device);
    let torch_threads = meta
        .threads
        .map(|t| format!(", torch threads {t}"))
        .unwrap_or_default();
    println!(
        "threads: {threads} (RAYON_NUM_THREADS{torch_threads}); warm-up {}, median of {} runs",
        args.warmup, args.runs
    );
    if args.compare {
        let cap = meta
            .cpu_capability
            .as_deref()
            .map(|c| format!(", torch CPU capability {c}"))
            .unwrap_or_default();
        let dn = meta
            .device_name
            .as_deref()
            .map(|c| format!(", {c}"))
            .unwrap_or_default();
        println!(
            "Glichen {} (candle 0.11) vs diffusers {} / torch {}{cap}{dn}",
            env!("CARGO_PKG_VERSION"),
            meta.diffusers,
            meta.torch
        );
    } else {
        println!("Glichen {} (candle 0.11)", env!("CARGO_PKG_VERSION"));
    }
    println!();
    let find = |rs: &Vec<RowResult>, dt: &str, key: &str| {
        rs.iter().find(|r| r.dtype == dt && r.row == key).cloned()
    };
    if args.compare {
        println!("| dtype | row | Glichen | diffusers | Glichen / diffusers | Glichen peak RSS | diffusers peak RSS |");
        println!("|---|---|---:|---:|---:|---:|---:|");
    } else {
        println!("| dtype | row | Glichen | peak RSS |");
        println!("|---|---|---:|---:|");
    }
    for &dt in &dtypes {
        let dn = dtype_name(dt);
        for &key in &rows {
            let g = find(&glichen_rows, dn, key);
            let label = row_label(key, &args);
            if args.compare {
                let d = find(&diffusers_rows, dn, key);
                let ratio = match (
                    g.as_ref().and_then(|r| r.median_s),
                    d.as_ref().and_then(|r| r.median_s),
                ) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                    _ => "–".into(),
                };
                println!(
                    "| {dn} | {label} | {} | {} | {ratio} | {} | {} |",
                    cell(g.as_ref()),
                    cell(d.as_ref()),
                    fmt_bytes(g.as_ref().and_then(|r| r.peak_rss_bytes)),
                    fmt_bytes(d.as_ref().and_then(|r| r.peak_rss_bytes)),
                );
            } else {
                println!(
                    "| {dn} | {label} | {} | {} |",
                    cell(g.as_ref()),
                    fmt_bytes(g.as_ref().and_then(|r| r.peak_rss_bytes))
                );
            }
        }
    }
    println!();
    let all = glichen_rows.iter().chain(diffusers_rows.iter());
    if all
        .clone()
        .any(|r| r.other_load.is_some_and(|l| l > CONTENDED))
    {
        println!("⚠N%: other processes used N% of the machine's CPU time while that row ran; its time is inflated.");
    }
    let peak = |rs: &Vec<RowResult>| rs.iter().filter_map(|r| r.peak_rss_bytes).max();
    if args.compare {
        println!(
            "peak RSS over all rows: Glichen {}, diffusers {}",
            fmt_bytes(peak(&glichen_rows)),
            fmt_bytes(peak(&diffusers_rows))
        );
    } else {
        println!("peak RSS over all rows: {}", fmt_bytes(peak(&glichen_rows)));
    }
    for r in all {
        if let Some(e) = &r.error {
            eprintln!("{} {}: {e}", r.dtype, r.row);
        }
    }
    Ok(())
}

fn parse_scheduler(s: &str) -> std::result::Result<glichen::layout::SchedulerKind, String> {
    s.parse::<glichen::layout::SchedulerKind>()
        .map_err(|e| e.to_string())
}
