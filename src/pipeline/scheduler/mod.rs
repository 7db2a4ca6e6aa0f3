//! Noise schedulers: DDIM (eta = 0) and PNDM (PLMS, with or without the Runge-Kutta warm-up), ports of
//! Hugging Face diffusers 0.42.1 `DDIMScheduler` / `PNDMScheduler`.
//!
//! Everything is computed the way diffusers computes it on the CPU in float32, so that the results agree
//! to the last bit where the tensor backend allows it:
//!
//! * the beta schedules replicate `torch.linspace(.., dtype=float32)` (which evaluates
//!   `start + step * i` with a fused multiply-add, from both ends towards the middle), `** 2` in f32,
//!   `1 - betas` in f32, and `torch.cumprod` (float32 values accumulated in a double);
//! * the per-step coefficients (`alpha_prod_t ** 0.5`, `1 - alpha_prod_t`, ...) are evaluated in f32 like
//!   torch's 0-d float32 tensors, and the element-wise work is done in the same order with the same
//!   operations (a division stays a division);
//! * the timestep lists replicate numpy (`np.linspace`, float-step `np.arange`, round-half-to-even).
//!
//! One intentional deviation: for `timestep_spacing = "trailing"` numpy's float-step `arange` sometimes
//! yields one element too many (e.g. 1000 train steps and 61 inference steps), which diffusers turns into
//! a spurious final timestep `-1` (it then indexes `alphas_cumprod[-1]`, the noisiest entry). Such negative
//! timesteps are dropped here; every other timestep and every step before it is identical.

mod ddim;
mod pndm;

pub use ddim::DdimScheduler;
pub use pndm::PndmScheduler;

use std::path::Path;

use candle_core::{Result as CandleResult, Tensor};
use serde::{Deserialize, Serialize};

/// How the betas are laid out over the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `torch.linspace(beta_start, beta_end, T)`
    Linear,
    /// `torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T) ** 2` (Stable Diffusion)
    ScaledLinear,
    /// the Glide cosine schedule (`betas_for_alpha_bar`, max beta 0.999)
    SquaredcosCapV2,
}

/// How the inference timesteps are spread over the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
    /// The original LDM/GLIGEN samplers' "uniform" discretisation: `range(0, T, T // N) + offset`.
    /// When `T` is not a multiple of `N` this gives more than `N` steps (6 requested → 7 run), and the
    /// original code runs them all; Glichen follows it for original checkpoints.
    LdmUniform,
}

/// What the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

/// Which scheduler algorithm to run: the layout's own enum, so that a layout's choice needs no
/// conversion.
pub use crate::layout::SchedulerKind;

/// The most training timesteps a config may declare: the tables are built in memory, and a typo'd
/// `num_train_timesteps: 1e12` would otherwise ask for terabytes.
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// Errors from building a scheduler or parsing its config.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("num_inference_steps must be at least 1")]
    ZeroSteps,
    #[error("num_inference_steps ({steps}) cannot be larger than num_train_timesteps ({train})")]
    TooManySteps { steps: usize, train: usize },
    #[error("num_train_timesteps must be at least 1")]
    ZeroTrainTimesteps,
    #[error(
        "num_train_timesteps {0} exceeds {MAX_TRAIN_TIMESTEPS} (diffusion models train with 1000)"
    )]
    TooManyTrainTimesteps(usize),
    #[error(
        "beta {index} of the noise schedule is {value}; every beta must be a number in [0, 1) \
         (check beta_start, beta_end and trained_betas)"
    )]
    BetaOutOfRange { index: usize, value: f32 },
    #[error("trained_betas has {got} entries but num_train_timesteps is {expected}")]
    TrainedBetasLength { got: usize, expected: usize },
    #[error(
        "timestep {timestep} is out of range for num_train_timesteps = {train} \
         (steps_offset = {steps_offset}, num_inference_steps = {steps})"
    )]
    TimestepOutOfRange {
        timestep: i64,
        train: usize,
        steps_offset: usize,
        steps: usize,
    },
    #[error(
        "PNDM with skip_prk_steps = false needs at least 4 inference steps (got {0}); \
         diffusers fails the same way"
    )]
    PrkTooFewSteps(usize),
    #[error("{scheduler} does not support prediction_type {prediction:?}")]
    UnsupportedPrediction {
        scheduler: SchedulerKind,
        prediction: PredictionType,
    },
    #[error(
        "dynamic thresholding (`thresholding: true`) is not supported; it is meant for pixel-space \
         models, not latent diffusion: set it to false"
    )]
    ThresholdingUnsupported,
    #[error("invalid scheduler config: {0}")]
    InvalidConfig(String),
    #[error("scheduler config JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("reading scheduler config: {0}")]
    Io(#[from] std::io::Error),
}

/// A diffusers `scheduler_config.json`, with diffusers' defaults for the missing keys.
///
/// The defaults depend on the class: `DDIMScheduler` defaults to `clip_sample = true`,
/// `set_alpha_to_one = true`; `PNDMScheduler` to `set_alpha_to_one = false`, `skip_prk_steps = false`.
/// Deserializing picks the defaults of the config's own `_class_name` (DDIM when absent or unknown);
/// [`SchedulerConfig::from_json_str_for`] picks those of another class, like diffusers'
/// `OtherScheduler.from_config(config)`. Unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawSchedulerConfig")]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub steps_offset: usize,
    pub set_alpha_to_one: bool,
    pub timestep_spacing: TimestepSpacing,
    pub prediction_type: PredictionType,
    /// DDIM only (PNDM has no such option and ignores it, like diffusers).
    pub clip_sample: bool,
    /// DDIM only.
    pub clip_sample_range: f64,
    /// PNDM only.
    pub skip_prk_steps: bool,
    /// DDIM only: dynamic thresholding, not supported (building a DDIM scheduler with it fails).
    pub thresholding: bool,
    /// DDIM only: rescale the betas to zero terminal SNR (arXiv 2305.08891, algorithm 1).
    pub rescale_betas_zero_snr: bool,
    #[serde(rename = "_class_name")]
    pub class_name: String,
}

/// The JSON as written, every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
struct RawSchedulerConfig {
    #[serde(rename = "_class_name")]
    class_name: Option<String>,
    num_train_timesteps: Option<usize>,
    beta_start: Option<f64>,
    beta_end: Option<f64>,
    beta_schedule: Option<BetaSchedule>,
    trained_betas: Option<Vec<f64>>,
    steps_offset: Option<usize>,
    set_alpha_to_one: Option<bool>,
    timestep_spacing: Option<TimestepSpacing>,
    prediction_type: Option<PredictionType>,
    clip_sample: Option<bool>,
    clip_sample_range: Option<f64>,
    skip_prk_steps: Option<bool>,
    thresholding: Option<bool>,
    rescale_betas_zero_snr: Option<bool>,
}

impl RawSchedulerConfig {
    fn resolve(self, defaults_of: SchedulerKind) -> SchedulerConfig {
        let d = SchedulerConfig::defaults_for(defaults_of);
        SchedulerConfig {
            num_train_timesteps: self.num_train_timesteps.unwrap_or(d.num_train_timesteps),
            beta_start: self.beta_start.unwrap_or(d.beta_start),
            beta_end: self.beta_end.unwrap_or(d.beta_end),
            beta_schedule: self.beta_schedule.unwrap_or(d.beta_schedule),
            trained_betas: self.trained_betas,
            steps_offset: self.steps_offset.unwrap_or(d.steps_offset),
            set_alpha_to_one: self.set_alpha_to_one.unwrap_or(d.set_alpha_to_one),
            timestep_spacing: self.timestep_spacing.unwrap_or(d.timestep_spacing),
            prediction_type: self.prediction_type.unwrap_or(d.prediction_type),
            clip_sample: self.clip_sample.unwrap_or(d.clip_sample),
            clip_sample_range: self.clip_sample_range.unwrap_or(d.clip_sample_range),
            skip_prk_steps: self.skip_prk_steps.unwrap_or(d.skip_prk_steps),
            thresholding: self.thresholding.unwrap_or(d.thresholding),
            rescale_betas_zero_snr: self
                .rescale_betas_zero_snr
                .unwrap_or(d.rescale_betas_zero_snr),
            class_name: self.class_name.unwrap_or(d.class_name),
        }
    }
}

impl From<RawSchedulerConfig> for SchedulerConfig {
    fn from(raw: RawSchedulerConfig) -> Self {
        let kind = raw
            .class_name
            .as_deref()
            .and_then(SchedulerKind::from_class_name)
            .unwrap_or(SchedulerKind::Ddim);
        raw.resolve(kind)
    }
}

impl SchedulerConfig {
    /// diffusers' constructor defaults of the given class.
    pub fn defaults_for(kind: SchedulerKind) -> Self {
        let ddim = kind == SchedulerKind::Ddim;
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            steps_offset: 0,
            set_alpha_to_one: ddim,
            timestep_spacing: TimestepSpacing::Leading,
            prediction_type: PredictionType::Epsilon,
            clip_sample: ddim,
            clip_sample_range: 1.0,
            skip_prk_steps: false,
            thresholding: false,
            rescale_betas_zero_snr: false,
            class_name: kind.class_name().to_string(),
        }
    }

    /// The `scheduler/scheduler_config.json` of Stable Diffusion 1.x (and of the GLIGEN checkpoints):
    /// PNDM, scaled_linear 0.00085..0.012, steps_offset 1, skip_prk_steps, no clipping.
    pub fn stable_diffusion_v1() -> Self {
        SchedulerConfig {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            steps_offset: 1,
            set_alpha_to_one: false,
            skip_prk_steps: true,
            clip_sample: false,
            ..SchedulerConfig::defaults_for(SchedulerKind::Pndm)
        }
    }

    /// Parses a config, defaults taken from its own `_class_name` (DDIM when absent or unknown).
    pub fn from_json_str(json: &str) -> Result<Self, SchedulerError> {
        Ok(serde_json::from_str(json)?)
    }

    /// Parses a config for use with `kind`: missing keys take `kind`'s defaults (diffusers'
    /// `from_config` semantics); `class_name` is set to `kind`'s class.
    pub fn from_json_str_for(json: &str, kind: SchedulerKind) -> Result<Self, SchedulerError> {
        let raw: RawSchedulerConfig = serde_json::from_str(json)?;
        let mut cfg = raw.resolve(kind);
        cfg.class_name = kind.class_name().to_string();
        Ok(cfg)
    }

    /// Reads and parses a `scheduler_config.json` (see [`SchedulerConfig::from_json_str`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SchedulerError> {
        Self::from_json_str(&std::fs::read_to_string(path)?)
    }

    /// The scheduler named by `_class_name`, if it is one of ours.
    pub fn scheduler_type(&self) -> Option<SchedulerKind> {
        SchedulerKind::from_class_name(&self.class_name)
    }

    /// The float32 betas exactly as diffusers builds them (before any zero-SNR rescaling).
    ///
    /// Every beta must lie in [0, 1): a beta of 1 zeroes `alphas_cumprod` from there on and every
    /// later step divides by it, so a config with one yields NaN latents and a black picture.
    pub fn betas(&self) -> Result<Vec<f32>, SchedulerError> {
        let betas = self.unchecked_betas()?;
        match betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(0.0..1.0).contains(*b))
        {
            Some((index, &value)) => Err(SchedulerError::BetaOutOfRange { index, value }),
            None => Ok(betas),
        }
    }

    fn unchecked_betas(&self) -> Result<Vec<f32>, SchedulerError> {
        let t = self.num_train_timesteps;
        if t == 0 {
            return Err(SchedulerError::ZeroTrainTimesteps);
        }
        if t > MAX_TRAIN_TIMESTEPS {
            return Err(SchedulerError::TooManyTrainTimesteps(t));
        }
        if let Some(tb) = &self.trained_betas {
            if tb.len() != t {
                return Err(SchedulerError::TrainedBetasLength {
                    got: tb.len(),
                    expected: t,
                });
            }
            return Ok(tb.iter().map(|&b| b as f32).collect());
        }
        Ok(match self.beta_schedule {
            BetaSchedule::Linear => torch_linspace_f32(self.beta_start, self.beta_end, t),
            BetaSchedule::ScaledLinear => {
                torch_linspace_f32(self.beta_start.sqrt(), self.beta_end.sqrt(), t)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar_cosine(t, 0.999),
        })
    }

    /// The float32 `alphas_cumprod` table the given scheduler uses (zero-SNR rescaling applies to
    /// DDIM only, as in diffusers).
    pub fn alphas_cumprod(&self, kind: SchedulerKind) -> Result<Vec<f32>, SchedulerError> {
        let mut betas = self.betas()?;
        if kind == SchedulerKind::Ddim && self.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        Ok(cumprod_f32(betas.iter().map(|&b| 1.0 - b)))
    }
}

/// The common interface of the schedulers, one call per UNet evaluation.
pub trait Scheduler: Send {
    /// Timesteps of each UNet evaluation, in order (PNDM with skip_prk_steps has N+1: the first step
    /// evaluates twice; with the Runge-Kutta warm-up it has N+9).
    fn timesteps(&self) -> &[usize];
    /// The sampling step (0..N) that evaluation `evaluation` belongs to (DDIM: the evaluation itself;
    /// PLMS: evaluations 0 and 1 are step 0, evaluation k >= 1 is step k-1; PRK warm-up: four
    /// evaluations per step for the first three steps).
    fn sampling_step(&self, evaluation: usize) -> usize;
    fn num_inference_steps(&self) -> usize;
    fn init_noise_sigma(&self) -> f64;
    fn scale_model_input(&self, sample: Tensor, timestep: usize) -> CandleResult<Tensor>;
    /// One evaluation's update; mutates the multistep state (PNDM `ets` / counter).
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
    ) -> CandleResult<Tensor>;
    /// x0 predicted from this model output (for previews), per the prediction type (DDIM also applies
    /// `clip_sample`, exactly like its `pred_original_sample`).
    fn pred_original_sample(
        &self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
    ) -> CandleResult<Tensor>;
    /// `sqrt(alpha_prod_t) * original + sqrt(1 - alpha_prod_t) * noise`.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: usize)
        -> CandleResult<Tensor>;
}

/// Builds a scheduler of the given type with its timesteps set for `num_inference_steps`.
pub fn build_scheduler(
    cfg: &SchedulerConfig,
    kind: SchedulerKind,
    num_inference_steps: usize,
) -> Result<Box<dyn Scheduler>, SchedulerError> {
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(DdimScheduler::new(cfg, num_inference_steps)?),
        SchedulerKind::Pndm => Box::new(PndmScheduler::new(cfg, num_inference_steps)?),
    })
}

// ---------------------------------------------------------------------------------------------------
// float32 schedule arithmetic (torch CPU semantics)

/// `torch.linspace(start, end, n, dtype=torch.float32)` on the CPU: both ends converted to f32, the
/// step computed in f32, the first half `start + step * i` and the second half
/// `end - step * (n - 1 - i)`, each a fused multiply-add.
pub(crate) fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let s = start as f32;
    let e = end as f32;
    if n == 1 {
        return vec![s];
    }
    let step = (e - s) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, s)
            } else {
                (-step).mul_add((n - 1 - i) as f32, e)
            }
        })
        .collect()
}

/// `torch.cumprod` of float32 values on the CPU: accumulated in a double, each prefix rounded to f32.
pub(crate) fn cumprod_f32(values: impl IntoIterator<Item = f32>) -> Vec<f32> {
    let mut acc = 1f64;
    values
        .into_iter()
        .map(|v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar(T, max_beta, "cosine")`: python floats, then a float32 tensor.
fn betas_for_alpha_bar_cosine(n: usize, max_beta: f64) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        let c = ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos();
        c * c
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr`, in float32 like the torch original.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas_cumprod = cumprod_f32(betas.iter().map(|&b| 1.0 - b));
    let mut s: Vec<f32> = alphas_cumprod.iter().map(|a| a.sqrt()).collect();
    let s0 = s[0];
    let st = s[s.len() - 1];
    let scale = s0 / (s0 - st);
    for v in &mut s {
        *v -= st;
        *v *= scale;
    }
    let alphas_bar: Vec<f32> = s.iter().map(|v| v * v).collect();
    let mut alphas = Vec::with_capacity(alphas_bar.len());
    alphas.push(alphas_bar[0]);
    for w in alphas_bar.windows(2) {
        alphas.push(w[1] / w[0]);
    }
    alphas.into_iter().map(|a| 1.0 - a).collect()
}

// ---------------------------------------------------------------------------------------------------
// numpy timestep arithmetic

/// `np.round`: round half to even.
fn np_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// `np.linspace(0, stop, n)` (float64): `i * step`, the last element set to `stop`.
fn np_linspace_from_zero(stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![0.0];
    }
    let step = stop / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step).collect();
    v[n - 1] = stop;
    v
}

/// `np.arange(start, 0, -step)` with a float step: `ceil(start / step)` elements, filled as
/// `start + i * ((start - step) - start)` (numpy's `DOUBLE_fill`).
fn np_arange_down_to_zero(start: f64, step: f64) -> Vec<f64> {
    let len = ((0.0 - start) / -step).ceil().max(0.0) as usize;
    let b1 = start + -step;
    let delta = b1 - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => b1,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// diffusers' inference timesteps in ascending order, before any scheduler-specific reshuffling
/// (DDIM reverses them, PNDM builds its PLMS/PRK lists from them). May contain the spurious `-1` of
/// trailing spacing; callers drop negatives.
fn base_timesteps_ascending(cfg: &SchedulerConfig, n: usize) -> Vec<i64> {
    let t = cfg.num_train_timesteps;
    match cfg.timestep_spacing {
        TimestepSpacing::Linspace => np_linspace_from_zero((t - 1) as f64, n)
            .into_iter()
            .map(|x| np_round(x) as i64)
            .collect(),
        TimestepSpacing::LdmUniform => {
            let ratio = t / n;
            (0..t)
                .step_by(ratio.max(1))
                .map(|i| (i + cfg.steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Leading => {
            let ratio = t / n;
            (0..n)
                .map(|i| (i * ratio + cfg.steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = t as f64 / n as f64;
            let mut v: Vec<i64> = np_arange_down_to_zero(t as f64, ratio)
                .into_iter()
                .map(|x| np_round(x) as i64 - 1)
                .collect();
            v.reverse();
            v
        }
    }
}

/// Validates the step count and returns the ascending base timesteps with negatives dropped.
fn checked_base_timesteps(cfg: &SchedulerConfig, n: usize) -> Result<Vec<usize>, SchedulerError> {
    let t = cfg.num_train_timesteps;
    if t == 0 {
        return Err(SchedulerError::ZeroTrainTimesteps);
    }
    if n == 0 {
        return Err(SchedulerError::ZeroSteps);
    }
    if n > t {
        return Err(SchedulerError::TooManySteps { steps: n, train: t });
    }
    let base = base_timesteps_ascending(cfg, n);
    if let Some(&bad) = base.iter().find(|&&x| x >= t as i64) {
        return Err(SchedulerError::TimestepOutOfRange {
            timestep: bad,
            train: t,
            steps_offset: cfg.steps_offset,
            steps: n,
        });
    }
    Ok(base
        .into_iter()
        .filter(|&x| x >= 0)
        .map(|x| x as usize)
        .collect())
}

// ---------------------------------------------------------------------------------------------------
// tensor helpers: one torch op each, coefficients as float32 scalars

/// `c * x` (torch: tensor times 0-d float32 tensor / python float cast to float32).
fn mul(x: &Tensor, c: f32) -> CandleResult<Tensor> {
    x.affine(c as f64, 0.0)
}

/// `x / c` as a true division (not a multiplication by the reciprocal).
fn div(x: &Tensor, c: f32) -> CandleResult<Tensor> {
    let c = Tensor::new(c, x.device())?.to_dtype(x.dtype())?;
    x.broadcast_div(&c)
}

fn out_of_range(timestep: usize, train: usize) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "scheduler: timestep {timestep} out of range for num_train_timesteps = {train}"
    ))
}

/// Shared float32 alpha bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct Alphas {
    pub(crate) cumprod: Vec<f32>,
    pub(crate) final_cumprod: f32,
}

impl Alphas {
    fn new(cfg: &SchedulerConfig, kind: SchedulerKind) -> Result<Self, SchedulerError> {
        let cumprod = cfg.alphas_cumprod(kind)?;
        let final_cumprod = if cfg.set_alpha_to_one {
            1.0
        } else {
            cumprod[0]
        };
        Ok(Alphas {
            cumprod,
            final_cumprod,
        })
    }

    fn at(&self, timestep: usize) -> CandleResult<f32> {
        self.cumprod
            .get(timestep)
            .copied()
            .ok_or_else(|| out_of_range(timestep, self.cumprod.len()))
    }

    /// `alphas_cumprod[prev] if prev >= 0 else final_alpha_cumprod`
    fn prev(&self, prev_timestep: i64) -> CandleResult<f32> {
        if prev_timestep >= 0 {
            self.at(prev_timestep as usize)
        } else {
            Ok(self.final_cumprod)
        }
    }

    /// diffusers' `add_noise`.
    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        timestep: usize,
    ) -> CandleResult<Tensor> {
        let a = self.at(timestep)?;
        let sqrt_alpha_prod = a.sqrt();
        let sqrt_one_minus_alpha_prod = (1.0 - a).sqrt();
        mul(original, sqrt_alpha_prod)? + mul(noise, sqrt_one_minus_alpha_prod)?
    }

    /// x0 from a model output by the prediction type, written like diffusers' DDIM step.
    fn pred_original_sample(
        &self,
        prediction: PredictionType,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
    ) -> CandleResult<Tensor> {
        let alpha_prod_t = self.at(timestep)?;
        let beta_prod_t = 1.0 - alpha_prod_t;
        match prediction {
            PredictionType::Epsilon => div(
                &(sample - mul(model_output, beta_prod_t.sqrt())?)?,
                alpha_prod_t.sqrt(),
            ),
            PredictionType::VPrediction => {
                mul(sample, alpha_prod_t.sqrt())? - mul(model_output, beta_prod_t.sqrt())?
            }
            PredictionType::Sample => Ok(model_output.clone()),
        }
    }
}
