//! `glichen bench`: times the parts of a GLIGEN generation at Stable Diffusion 1.4 sizes (CLIP
//! ViT-L/14 text tower, the gated UNet at 512×512 with classifier-free guidance and 30 boxes, the
//! KL VAE), with random weights built in memory (nothing to download) or a model folder, and with
//! `--compare` runs `benches/diffusers_bench.py` in the same invocation so that both sides are
//! measured on the same machine, with the same thread count and the same shapes, and printed as one
//! table with the ratio Glichen / diffusers per row.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use glichen::layout::Layout;
use glichen::model::{
    AutoencoderKL, ClipTextConfig, ClipTextModel, Grounding, PositionNetInput,
    UNet2DConditionModel, UNetConfig, VaeConfig,
};
use glichen::pipeline::scheduler::{SchedulerConfig, SchedulerKind};
use glichen::pipeline::{self, CancelToken, GenerateOptions, GligenModel};
use glichen::weights::{self, ClipTokenizer};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

/// `unet/config.json` of masterful/gligen-1-4-generation-text-box (SD 1.4 with gated attention).
pub const SD14_GLIGEN_UNET_CONFIG: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "act_fn": "silu",
  "attention_head_dim": 8,
  "attention_type": "gated",
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}"#;

/// `text_encoder/config.json` of SD 1.x: the text tower of CLIP ViT-L/14.
pub const SD14_CLIP_CONFIG: &str = r#"{
  "hidden_act": "quick_gelu",
  "hidden_size": 768,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "vocab_size": 49408
}"#;

/// `vae/config.json` of SD 1.x.
pub const SD14_VAE_CONFIG: &str = r#"{
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 512,
  "scaling_factor": 0.18215
}"#;

/// Every row the benchmark knows, in table order. The diffusers script uses the same keys.
pub const ROW_KEYS: [&str; 8] = [
    "clip_prompt",
    "clip_phrases",
    "position_net",
    "unet_fuser_on",
    "unet_fuser_off",
    "vae_decode",
    "generation",
    "first_preview",
];

/// Tokens per phrase in the phrase-encoding row (start, 6 content tokens, end).
const PHRASE_TOKENS: usize = 8;
/// Content tokens of the benchmark prompt (the rest of the 77 is padding).
const PROMPT_TOKENS: usize = 20;
/// The timestep of the first PLMS evaluation of a 50-step SD schedule.
const BENCH_TIMESTEP: f64 = 981.0;
const FULL_PROMPT: &str = "a photograph of a cosy living room full of objects, highly detailed";

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
    /// Timed --full generations (no warm-up: the rows before it warm everything up).
    #[arg(long, default_value_t = 1)]
    pub full_runs: usize,
    /// Only these rows (comma separated): clip_prompt, clip_phrases, position_net, unet_fuser_on,
    /// unet_fuser_off, vae_decode, generation, first_preview.
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

/// One row's measurement on one side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowResult {
    pub row: String,
    pub dtype: String,
    #[serde(default)]
    pub median_s: Option<f64>,
    #[serde(default)]
    pub times_s: Vec<f64>,
    /// Peak resident memory of the process while the row ran (VmHWM, reset before the row).
    #[serde(default)]
    pub peak_rss_bytes: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
    /// Share of the machine's CPU time that other processes used during the timed runs (0 = the
    /// machine was otherwise idle; 0.5 on 2 CPUs = one core busy elsewhere): a contention flag.
    #[serde(default)]
    pub other_load: Option<f64>,
}

impl RowResult {
    fn failed(row: &str, dtype: &str, error: String) -> Self {
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
    fn from_times(
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

pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

pub fn row_label(key: &str, args: &BenchArgs) -> String {
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
        "generation" => format!(
            "whole {}-step PLMS generation {s}², {n} boxes, α₀ 0.3 (incl. text + decode)",
            args.steps
        ),
        "first_preview" => "start of generation → first preview".into(),
        other => other.into(),
    }
}

/// Random weights of whatever shape a network asks for: N(0, 0.02) for weights and biases, the
/// initialiser's constant for norm scales and shifts (ones / zeros), non-zero GLIGEN gates, random
/// null features. `unchecked` gives the shapes of tensors read without a shape (the position net's
/// MLP, whose widths are read from the weights).
struct RandomWeights {
    unchecked: HashMap<String, Shape>,
}

impl RandomWeights {
    fn random(shape: Shape, std: f32, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        Tensor::randn(0f32, std, shape, dev)?.to_dtype(dtype)
    }
}

impl candle_nn::var_builder::SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let leaf = name.rsplit('.').next().unwrap_or(name);
        if leaf == "alpha_attn" || leaf == "alpha_dense" {
            // diffusers initialises the gates at 0; a trained model's are non-zero.
            return Tensor::full(0.5f32, s, dev)?.to_dtype(dtype);
        }
        if leaf.starts_with("null_") {
            return Self::random(s, 1.0, dtype, dev);
        }
        match h {
            Init::Const(c) => Tensor::full(c as f32, s, dev)?.to_dtype(dtype),
            _ => Self::random(s, 0.02, dtype, dev),
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.unchecked.get(name) {
            Some(s) => Self::random(s.clone(), 0.02, dtype, dev),
            None => candle_core::bail!("random weights: no known shape for `{name}`"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        // Answers the networks' format probes: diffusers' names (`weight`, `to_q`), a text-only
        // position net (no keypoint or text-image tensors).
        let leaf = name.rsplit('.').next().unwrap_or(name);
        !matches!(leaf, "gamma" | "beta" | "keypoint_embeddings") && !name.contains("linears_text")
    }
}

fn random_var_builder(
    dtype: DType,
    dev: &Device,
    unchecked: HashMap<String, Shape>,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomWeights { unchecked }), dtype, dev.clone())
}

/// A full-size SD 1.4 GLIGEN pipeline with random weights, built in memory.
pub fn random_sd14_gligen(dev: &Device, dtype: DType) -> Result<GligenModel> {
    let clip_cfg: ClipTextConfig = serde_json::from_str(SD14_CLIP_CONFIG)?;
    let unet_cfg: UNetConfig = serde_json::from_str(SD14_GLIGEN_UNET_CONFIG)?;
    let vae_cfg: VaeConfig = serde_json::from_str(SD14_VAE_CONFIG)?;
    let text_encoder =
        ClipTextModel::new(random_var_builder(dtype, dev, HashMap::new()), &clip_cfg)?;
    // diffusers' GLIGENTextBoundingboxProjection: [positive_len + 64] → 512 → 512 → cross_attention_dim.
    let cross = clip_cfg.hidden_size;
    let pos = glichen::model::position_net::POSITION_DIM;
    let mut unchecked = HashMap::new();
    unchecked.insert(
        "position_net.linears.0.weight".to_string(),
        Shape::from((512, cross + pos)),
    );
    unchecked.insert(
        "position_net.linears.2.weight".to_string(),
        Shape::from((512, 512)),
    );
    unchecked.insert(
        "position_net.linears.4.weight".to_string(),
        Shape::from((cross, 512)),
    );
    let unet = UNet2DConditionModel::new(random_var_builder(dtype, dev, unchecked), &unet_cfg)?;
    let vae = AutoencoderKL::new(random_var_builder(dtype, dev, HashMap::new()), &vae_cfg)?;
    Ok(GligenModel {
        tokenizer: ClipTokenizer::builtin()?,
        text_encoder,
        unet,
        vae,
        image_grounding: None,
        scheduler_json: serde_json::to_string(&SchedulerConfig::stable_diffusion_v1())?,
        default_scheduler: SchedulerKind::Pndm,
        device: dev.clone(),
        dtype,
        name: "random SD 1.4 GLIGEN".into(),
        origin: glichen::pipeline::ModelOrigin::Diffusers,
    })
}

/// Deterministic content token of phrase `i`, position `j` (the diffusers script uses the same).
pub fn bench_token(i: usize, j: usize) -> u32 {
    400 + ((i * 97 + j * 31) % 40000) as u32
}

/// Phrase `i` of the benchmark layout (the diffusers script builds the same list).
pub fn bench_phrase(i: usize) -> String {
    const COLORS: [&str; 6] = ["red", "blue", "green", "yellow", "black", "white"];
    const THINGS: [&str; 5] = ["umbrella", "dog", "chair", "lamp", "car"];
    format!("a {} {}", COLORS[i % 6], THINGS[(i / 6) % 5])
}

/// Box `i` of the benchmark layout: cell `i` of a 6×5 grid.
pub fn bench_box(i: usize) -> [f64; 4] {
    let (c, r) = ((i % 6) as f64, ((i / 6) % 5) as f64);
    [c / 6.0, r / 5.0, (c + 1.0) / 6.0, (r + 1.0) / 5.0]
}

/// Box `i` as the diffusers script rounds it (f32).
fn bench_box_f32(i: usize) -> [f32; 4] {
    bench_box(i).map(|v| v as f32)
}

pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
}

pub fn peak_rss_bytes() -> Option<u64> {
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
struct LoadProbe {
    ticks: Option<(u64, u64)>,
    at: Instant,
}

impl LoadProbe {
    fn start() -> Self {
        Self {
            ticks: cpu_ticks(),
            at: Instant::now(),
        }
    }
    fn other_load(&self) -> Option<f64> {
        let (b0, o0) = self.ticks?;
        let (b1, o1) = cpu_ticks()?;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        let wall = self.at.elapsed().as_secs_f64();
        if wall < 0.5 {
            return None; // ticks are 10 ms: too coarse for short rows
        }
        let other = (b1.saturating_sub(b0) as f64 - o1.saturating_sub(o0) as f64).max(0.0) / 100.0;
        Some(other / (wall * cpus))
    }
}

pub fn cpu_model() -> String {
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
        .map(|n| n.get())
        .unwrap_or(1);
    if isa.is_empty() {
        format!("{name}, {cores} logical CPUs")
    } else {
        format!("{name}, {cores} logical CPUs, {}", isa.join(" "))
    }
}

fn gpu_name(dev: &Device) -> Option<String> {
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

/// Times `f`: `warmup` untimed calls, then `runs` timed ones; peak RSS over all of them.
fn measure(
    dev: &Device,
    key: &str,
    dtype: &str,
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> candle_core::Result<Tensor>,
) -> RowResult {
    reset_peak_rss();
    let mut run = || -> candle_core::Result<f64> {
        let start = Instant::now();
        let out = f()?;
        dev.synchronize()?;
        let elapsed = start.elapsed().as_secs_f64();
        drop(out);
        Ok(elapsed)
    };
    for i in 0..warmup {
        match run() {
            Ok(t) => eprintln!(
                "  glichen {dtype} {key}: warm-up {}/{warmup} {}",
                i + 1,
                fmt_secs(t)
            ),
            Err(e) => return RowResult::failed(key, dtype, format!("{e}")),
        }
    }
    let mut times = Vec::with_capacity(runs);
    let probe = LoadProbe::start();
    for i in 0..runs {
        match run() {
            Ok(t) => {
                eprintln!(
                    "  glichen {dtype} {key}: run {}/{runs} {}",
                    i + 1,
                    fmt_secs(t)
                );
                times.push(t);
            }
            Err(e) => return RowResult::failed(key, dtype, format!("{e}")),
        }
    }
    RowResult::from_times(key, dtype, times, peak_rss_bytes(), probe.other_load())
}

/// Every Glichen row of one dtype.
fn bench_glichen(args: &BenchArgs, rows: &[&str], dev: &Device, dtype: DType) -> Vec<RowResult> {
    let dn = dtype_name(dtype);
    let fail_all = |e: String| {
        rows.iter()
            .map(|k| RowResult::failed(k, dn, e.clone()))
            .collect::<Vec<_>>()
    };
    let started = Instant::now();
    let model = match &args.model {
        Some(spec) => weights::resolve_model(spec, true)
            .map_err(anyhow::Error::from)
            .and_then(|src| GligenModel::load(&src, dev, dtype).map_err(anyhow::Error::from)),
        None => random_sd14_gligen(dev, dtype),
    };
    let model = match model {
        Ok(m) => m,
        Err(e) => return fail_all(format!("building the model: {e:#}")),
    };
    eprintln!(
        "glichen {dn}: {} built in {:.1} s (resident {:.2} GiB)",
        model.name,
        started.elapsed().as_secs_f64(),
        status_kib("VmRSS:").unwrap_or(0) as f64 / (1024.0 * 1024.0)
    );
    match bench_glichen_rows(args, rows, &model) {
        Ok(r) => r,
        Err(e) => fail_all(format!("{e:#}")),
    }
}

fn bench_glichen_rows(
    args: &BenchArgs,
    rows: &[&str],
    model: &GligenModel,
) -> Result<Vec<RowResult>> {
    let dev = &model.device;
    let dtype = model.dtype;
    let dn = dtype_name(dtype);
    let n_boxes = args.boxes;
    let slots = pipeline::MAX_GROUNDING_SLOTS;
    let lat = args.size / model.vae_scale_factor();
    let hidden = model.text_encoder.config.hidden_size;
    let max_len = model.text_encoder.config.max_position_embeddings;
    let (bos, eos) = (model.tokenizer.bos_id, model.tokenizer.eos_id);
    let in_ch = model.unet.config.in_channels;
    let latent_ch = model.vae.config.latent_channels;

    // Inputs, the same shapes as the diffusers script's.
    let mut prompt = vec![bos];
    prompt.extend((0..PROMPT_TOKENS).map(|j| bench_token(0, j)));
    prompt.resize(max_len, eos);
    let prompt_ids = Tensor::from_vec(prompt, (1, max_len), dev)?;
    let mut phrase_ids = Vec::with_capacity(n_boxes * PHRASE_TOKENS);
    for i in 0..n_boxes {
        phrase_ids.push(bos);
        phrase_ids.extend((0..PHRASE_TOKENS - 2).map(|j| bench_token(i + 1, j)));
        phrase_ids.push(eos);
    }
    let phrase_ids = Tensor::from_vec(phrase_ids, (n_boxes, PHRASE_TOKENS), dev)?;
    let mut boxes = vec![0f32; 2 * slots * 4];
    let mut masks = vec![0f32; 2 * slots];
    for b in 0..2 {
        for i in 0..n_boxes {
            boxes[(b * slots + i) * 4..(b * slots + i) * 4 + 4].copy_from_slice(&bench_box_f32(i));
            // CFG: the unconditional half has every mask 0.
            masks[b * slots + i] = b as f32;
        }
    }
    let positive_len = model
        .unet
        .position_net
        .as_ref()
        .map(|p| p.positive_len)
        .unwrap_or(hidden);
    let pn_input = PositionNetInput {
        boxes: Tensor::from_vec(boxes, (2, slots, 4), dev)?,
        masks: Tensor::from_vec(masks, (2, slots), dev)?,
        phrase_embeddings: Tensor::randn(0f32, 1f32, (2, slots, positive_len), dev)?
            .to_dtype(dtype)?,
        phrase_masks: None,
        image_masks: None,
        image_embeddings: None,
    };
    let objs = model.unet.grounding_tokens(&pn_input)?;
    let sample = Tensor::randn(0f32, 1f32, (2, in_ch, lat, lat), dev)?.to_dtype(dtype)?;
    let context = Tensor::randn(0f32, 1f32, (2, max_len, hidden), dev)?.to_dtype(dtype)?;
    let latents = Tensor::randn(0f32, 1f32, (1, latent_ch, lat, lat), dev)?.to_dtype(dtype)?;
    let on = Grounding {
        objs: objs.clone(),
        gate_scale: 1.0,
    };
    let off = Grounding {
        objs,
        gate_scale: 0.0,
    };

    let (w, r) = (args.warmup, args.runs);
    let mut out = Vec::new();
    for &key in rows {
        let res = match key {
            "clip_prompt" => measure(dev, key, dn, w, r, || {
                Ok(model
                    .text_encoder
                    .forward(&prompt_ids, eos)?
                    .last_hidden_state)
            }),
            "clip_phrases" => measure(dev, key, dn, w, r, || {
                Ok(model.text_encoder.forward(&phrase_ids, eos)?.pooler_output)
            }),
            "position_net" => measure(dev, key, dn, w, r, || {
                model.unet.grounding_tokens(&pn_input)
            }),
            "unet_fuser_on" => measure(dev, key, dn, w, r, || {
                model
                    .unet
                    .forward(&sample, BENCH_TIMESTEP, &context, Some(&on))
            }),
            "unet_fuser_off" => measure(dev, key, dn, w, r, || {
                model
                    .unet
                    .forward(&sample, BENCH_TIMESTEP, &context, Some(&off))
            }),
            "vae_decode" => measure(dev, key, dn, w, r, || model.vae.decode(&latents)),
            "generation" | "first_preview" => continue,
            other => RowResult::failed(other, dn, "unknown row".into()),
        };
        out.push(res);
    }
    if rows.contains(&"generation") || rows.contains(&"first_preview") {
        out.extend(bench_generation(args, rows, model));
    }
    Ok(out)
}

/// The benchmark layout: `n` grid boxes with distinct phrases, PLMS, α₀ 0.3, guidance 7.5.
pub fn bench_layout(size: usize, n: usize, steps: usize) -> Result<Layout> {
    let entities: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"type": "text_box", "phrase": bench_phrase(i), "box": bench_box(i)}))
        .collect();
    let doc = serde_json::json!({
        "version": 1,
        "width": size,
        "height": size,
        "prompt": FULL_PROMPT,
        "negative_prompt": "",
        "entities": entities,
        "sampling": {"steps": steps, "guidance_scale": 7.5, "alpha0": 0.3, "seed": 42, "scheduler": "pndm"}
    });
    Ok(Layout::from_json_str(&doc.to_string())?)
}

fn bench_generation(args: &BenchArgs, rows: &[&str], model: &GligenModel) -> Vec<RowResult> {
    let dn = dtype_name(model.dtype);
    let wanted = |k: &str| rows.contains(&k);
    let fail = |e: String| -> Vec<RowResult> {
        ["generation", "first_preview"]
            .iter()
            .filter(|k| wanted(k))
            .map(|k| RowResult::failed(k, dn, e.clone()))
            .collect()
    };
    let layout = match bench_layout(args.size, args.boxes, args.steps) {
        Ok(l) => l,
        Err(e) => return fail(format!("{e:#}")),
    };
    let mut options = GenerateOptions::from_layout(&layout, SchedulerKind::Pndm);
    options.decode = true;
    let mut totals = Vec::new();
    let mut firsts = Vec::new();
    reset_peak_rss();
    let probe = LoadProbe::start();
    for run in 0..args.full_runs.max(1) {
        let start = Instant::now();
        let mut first = None;
        let cancel = CancelToken::new();
        let res = model.generate(
            &layout,
            &options,
            None,
            &mut |u| {
                // PLMS's first step evaluates the UNet twice; its first evaluation already
                // gives the preview (a partial update).
                if u.step == 0 && first.is_none() {
                    // What the studio shows: the cheap latent → RGB projection of the predicted x0.
                    let _ = pipeline::preview::latents_to_rgb(u.pred_x0);
                    first = Some(start.elapsed().as_secs_f64());
                }
                eprint!(
                    "\r  glichen {dn} generation {}/{}: step {}/{} {:.1} s   ",
                    run + 1,
                    args.full_runs.max(1),
                    u.step + 1,
                    u.total,
                    start.elapsed().as_secs_f64()
                );
            },
            &cancel,
        );
        eprintln!();
        if let Err(e) = res {
            return fail(format!("{e}"));
        }
        let total = start.elapsed().as_secs_f64();
        eprintln!(
            "  glichen {dn} generation: {} (first preview {})",
            fmt_secs(total),
            first.map(fmt_secs).unwrap_or_default()
        );
        totals.push(total);
        if let Some(f) = first {
            firsts.push(f);
        }
    }
    let peak = peak_rss_bytes();
    let load = probe.other_load();
    let mut out = Vec::new();
    if wanted("generation") {
        out.push(RowResult::from_times("generation", dn, totals, peak, load));
    }
    if wanted("first_preview") {
        out.push(RowResult::from_times(
            "first_preview",
            dn,
            firsts,
            peak,
            load,
        ));
    }
    out
}

fn resolve_python(args: &BenchArgs) -> PathBuf {
    if let Some(p) = &args.python {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("GLICHEN_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from("/opt/glichen-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

fn resolve_script(args: &BenchArgs) -> Result<PathBuf> {
    if let Some(s) = &args.script {
        return Ok(s.clone());
    }
    let candidates = [
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/diffusers_bench.py"
        )),
        PathBuf::from("benches/diffusers_bench.py"),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("benches/diffusers_bench.py not found; pass --script")
}

/// What the diffusers script says about itself and the machine.
#[derive(Debug, Clone, Default, Deserialize)]
struct PythonMeta {
    #[serde(default)]
    torch: String,
    #[serde(default)]
    diffusers: String,
    #[serde(default)]
    threads: Option<usize>,
    #[serde(default)]
    cpu_capability: Option<String>,
    #[serde(default)]
    device_name: Option<String>,
}

/// Runs the diffusers script and collects its JSON rows (its progress goes to our stderr).
fn bench_diffusers(
    args: &BenchArgs,
    threads: usize,
    dtypes: &[DType],
    rows: &[&str],
) -> Result<(Vec<RowResult>, PythonMeta)> {
    let python = resolve_python(args);
    let script = resolve_script(args)?;
    let dt: Vec<&str> = dtypes.iter().map(|d| dtype_name(*d)).collect();
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(["--threads", &threads.to_string()])
        .args(["--runs", &args.runs.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--dtype", &dt.join(",")])
        .args([
            "--device",
            if args.device.starts_with("cuda") {
                &args.device
            } else {
                "cpu"
            },
        ])
        .args(["--rows", &rows.join(",")])
        .args(["--size", &args.size.to_string()])
        .args(["--boxes", &args.boxes.to_string()])
        .args(["--steps", &args.steps.to_string()])
        .args(["--full-runs", &args.full_runs.to_string()])
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("MKL_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(m) = &args.model {
        let folder = PathBuf::from(m);
        if !folder.is_dir() {
            bail!("--compare with --model needs a model folder (diffusers loads it with from_pretrained), got {m}");
        }
        cmd.args(["--model", m]);
    }
    eprintln!("running {} {} ...", python.display(), script.display());
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "starting {} (set --python or GLICHEN_PYTHON)",
            python.display()
        )
    })?;
    let stdout = child.stdout.take().context("diffusers script stdout")?;
    let mut results = Vec::new();
    let mut meta = PythonMeta::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(v) if v.get("meta").is_some() => {
                meta = serde_json::from_value(v["meta"].clone()).unwrap_or_default();
            }
            Ok(v) if v.get("row").is_some() => match serde_json::from_value::<RowResult>(v) {
                Ok(r) => results.push(r),
                Err(e) => eprintln!("diffusers script: unreadable row ({e}): {line}"),
            },
            _ => eprintln!("diffusers: {line}"),
        }
    }
    let status = child.wait()?;
    if !status.success() {
        eprintln!("warning: the diffusers script exited with {status}");
        if results.is_empty() {
            bail!("the diffusers script failed ({status}) before timing anything; see its output above");
        }
    }
    Ok((results, meta))
}

pub fn fmt_secs(s: f64) -> String {
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

fn fmt_bytes(b: Option<u64>) -> String {
    match b {
        Some(b) if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        Some(b) => format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64),
        None => "–".into(),
    }
}

/// Rows during which other processes used more than this share of the machine are flagged.
const CONTENDED: f64 = 0.05;

fn cell(r: Option<&RowResult>) -> String {
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
    if args.size < 64 || args.size % 64 != 0 {
        bail!("--size must be a multiple of 64 (SD's UNet halves 64×64 latents three times)");
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
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
        return run_breakdown(&args, &dev, &dtypes, threads);
    }
    let mut rows: Vec<&str> = if args.rows.is_empty() {
        ROW_KEYS[..6].to_vec()
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
            for r in rs.iter() {
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

/// One part of the UNet at one resolution, for `--breakdown`.
struct Part {
    level: String,
    name: &'static str,
    calls: usize,
    result: RowResult,
}

/// Times the UNet's parts at each resolution of SD 1.4's UNet with CFG (batch 2); `calls` is how
/// often a step runs that part at that resolution (down + up blocks; the mid block at 8×8).
fn breakdown_parts(args: &BenchArgs, dev: &Device, dtype: DType) -> Result<Vec<Part>> {
    use candle_core::Module;
    use glichen::model::attention::{scaled_dot_product_attention, Attention, FeedForward};
    use glichen::model::blocks::{conv2d, ResnetBlock2D, ResnetBlock2DConfig};
    use glichen::model::cpu_ops;
    use glichen::model::transformer::{
        GatedSelfAttentionDense, Transformer2DConfig, Transformer2DModel,
    };
    let dn = dtype_name(dtype);
    let (w, r) = (args.warmup, args.runs);
    let lat = args.size / 8;
    let heads = 8;
    let cross = 768;
    let temb_dim = 1280;
    let vb = random_var_builder(dtype, dev, HashMap::new());
    let context = Tensor::randn(0f32, 1f32, (2, 77, cross), dev)?.to_dtype(dtype)?;
    let objs = Tensor::randn(0f32, 1f32, (2, pipeline::MAX_GROUNDING_SLOTS, cross), dev)?
        .to_dtype(dtype)?;
    let grounding = Grounding {
        objs,
        gate_scale: 1.0,
    };
    let temb = Tensor::randn(0f32, 1f32, (2, temb_dim), dev)?.to_dtype(dtype)?;
    let mut parts = Vec::new();
    // (channels, latent side, transformer calls, resnet calls) per resolution.
    let levels = [
        (320, lat, 5, 5),
        (640, lat / 2, 5, 5),
        (1280, lat / 4, 5, 5),
        (1280, lat / 8, 1, 7),
    ];
    for (i, &(c, hw, n_tf, n_res)) in levels.iter().enumerate() {
        let level = format!("{hw}×{hw}×{c}");
        let vb = vb.pp(format!("level{i}"));
        let n = hw * hw;
        let map = Tensor::randn(0f32, 1f32, (2, c, hw, hw), dev)?.to_dtype(dtype)?;
        let tokens = Tensor::randn(0f32, 1f32, (2, n, c), dev)?.to_dtype(dtype)?;
        let key = |name: &str| format!("{level} {name}");
        let mut push = |name: &'static str, calls: usize, result: RowResult| {
            eprintln!(
                "  {level} {name}: {}",
                result
                    .median_s
                    .map(fmt_secs)
                    .unwrap_or_else(|| format!("{:?}", result.error))
            );
            parts.push(Part {
                level: level.clone(),
                name,
                calls,
                result,
            });
        };
        let resnet = ResnetBlock2D::new(
            vb.pp("resnet"),
            c,
            ResnetBlock2DConfig {
                out_channels: Some(c),
                temb_channels: Some(temb_dim),
                groups: 32,
                groups_out: None,
                eps: 1e-5,
                use_in_shortcut: None,
                output_scale_factor: 1.0,
            },
        )?;
        push(
            "resnet block (2× GroupNorm+SiLU+conv3×3)",
            n_res,
            measure(dev, &key("resnet"), dn, w, r, || {
                resnet.forward(&map, Some(&temb))
            }),
        );
        let conv = conv2d(
            c,
            c,
            3,
            candle_nn::Conv2dConfig {
                padding: 1,
                ..Default::default()
            },
            vb.pp("conv"),
        )?;
        push(
            "  of which one conv3×3",
            2 * n_res,
            measure(dev, &key("conv3x3"), dn, w, r, || conv.forward(&map)),
        );
        let gn = candle_nn::group_norm(32, c, 1e-5, vb.pp("gn"))?;
        push(
            "  of which one GroupNorm",
            2 * n_res + n_tf,
            measure(dev, &key("groupnorm"), dn, w, r, || gn.forward(&map)),
        );
        if n_tf == 0 {
            continue;
        }
        let tf = Transformer2DModel::new(
            vb.pp("tf"),
            Transformer2DConfig {
                channels: c,
                heads,
                layers: 1,
                norm_num_groups: 32,
                cross_attention_dim: cross,
                use_linear_projection: false,
                gated: true,
            },
        )?;
        push(
            "transformer (GN, proj, block, proj), fuser on",
            n_tf,
            measure(dev, &key("transformer"), dn, w, r, || {
                tf.forward(&map, &context, Some(&grounding))
            }),
        );
        let ln = candle_nn::layer_norm(c, 1e-5, vb.pp("ln"))?;
        push(
            "  LayerNorm",
            5 * n_tf,
            measure(dev, &key("layernorm"), dn, w, r, || ln.forward(&tokens)),
        );
        let attn1 = Attention::new(vb.pp("attn1"), c, None, heads, c / heads)?;
        push(
            "  self-attention (attn1)",
            n_tf,
            measure(dev, &key("attn1"), dn, w, r, || {
                attn1.forward(&tokens, None)
            }),
        );
        let dh = c / heads;
        // The core as the layer runs it: fused on the CPU in f32, else split into heads.
        let fused = cpu_ops::fused_cpu(&tokens);
        let q = if fused {
            Tensor::randn(0f32, 1f32, (2, n, c), dev)?.to_dtype(dtype)?
        } else {
            Tensor::randn(0f32, 1f32, (2 * heads, n, dh), dev)?.to_dtype(dtype)?
        };
        push(
            "    of which softmax(QKᵀ)V core",
            n_tf,
            measure(dev, &key("sdpa"), dn, w, r, || {
                let scale = 1.0 / (dh as f64).sqrt();
                if fused {
                    cpu_ops::multi_head_attention(&q, &q, &q, heads, scale as f32)
                } else {
                    scaled_dot_product_attention(&q, &q, &q, scale)
                }
            }),
        );
        let fuser = GatedSelfAttentionDense::new(vb.pp("fuser"), c, cross, heads, dh)?;
        push(
            "  fuser (gated self-attention + FF)",
            n_tf,
            measure(dev, &key("fuser"), dn, w, r, || {
                fuser.forward(&tokens, &grounding)
            }),
        );
        let attn2 = Attention::new(vb.pp("attn2"), c, Some(cross), heads, dh)?;
        push(
            "  cross-attention (attn2)",
            n_tf,
            measure(dev, &key("attn2"), dn, w, r, || {
                attn2.forward(&tokens, Some(&context))
            }),
        );
        let ff = FeedForward::new(vb.pp("ff"), c)?;
        push(
            "  feed-forward (GEGLU)",
            n_tf,
            measure(dev, &key("ff"), dn, w, r, || ff.forward(&tokens)),
        );
        let proj = conv2d(c, c, 1, Default::default(), vb.pp("proj"))?;
        push(
            "  proj_in / proj_out (conv1×1)",
            2 * n_tf,
            measure(dev, &key("proj"), dn, w, r, || proj.forward(&map)),
        );
        push(
            "  tokens ↔ map permute + contiguous",
            n_tf,
            measure(dev, &key("permute"), dn, w, r, || {
                map.permute((0, 2, 3, 1))?
                    .reshape((2, n, c))?
                    .contiguous()?
                    .reshape((2, hw, hw, c))?
                    .permute((0, 3, 1, 2))?
                    .contiguous()
            }),
        );
    }
    Ok(parts)
}

fn run_breakdown(args: &BenchArgs, dev: &Device, dtypes: &[DType], threads: usize) -> Result<()> {
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    println!();
    println!("glichen bench --breakdown: the UNet's parts at {0}×{0} px, CFG batch 2, random weights, `{command_line}`", args.size);
    println!(
        "machine: {}; device: {}; threads: {threads}; warm-up {}, median of {} runs",
        cpu_model(),
        args.device,
        args.warmup,
        args.runs
    );
    println!("(indented parts are inside the row above them; `calls` is how often one UNet step runs the part)");
    for &dt in dtypes {
        let parts = breakdown_parts(args, dev, dt)?;
        println!();
        println!(
            "| {} | part | per call | calls | per step |",
            dtype_name(dt)
        );
        println!("|---|---|---:|---:|---:|");
        let mut top = 0.0;
        for p in &parts {
            let per_step = p.result.median_s.map(|m| m * p.calls as f64);
            if !p.name.starts_with(' ') {
                top += per_step.unwrap_or(0.0);
            }
            println!(
                "| {} | {} | {} | {} | {} |",
                p.level,
                p.name,
                cell(Some(&p.result)),
                p.calls,
                per_step.map(fmt_secs).unwrap_or_else(|| "–".into())
            );
        }
        println!();
        println!("sum of the top-level parts ≈ {} per UNet step (the rest: conv_in/out, down/upsamplers, skips)", fmt_secs(top));
    }
    Ok(())
}
