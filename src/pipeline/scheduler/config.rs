//! The scheduler config (`scheduler_config.json`) with each class's defaults, and the float32 noise
//! schedule built from it exactly as torch builds it.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{SchedulerError, SchedulerKind, MAX_TRAIN_TIMESTEPS};

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
    /// DDIM, DPM-Solver, Euler, UniPC: rescale the betas to zero terminal SNR (arXiv 2305.08891,
    /// algorithm 1).
    pub rescale_betas_zero_snr: bool,
    /// DPM-Solver and UniPC: the multistep order (2 by default).
    pub solver_order: usize,
    /// DPM-Solver: `dpmsolver++` (the default) or `dpmsolver` (the SDE variants are refused).
    pub algorithm_type: String,
    /// DPM-Solver: `midpoint` (default) or `heun`; UniPC: `bh2` (default) or `bh1`; empty for the
    /// classes without one, and then not written, so that another class reads its own default.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub solver_type: String,
    /// DPM-Solver and UniPC: lower-order steps at the end of short schedules.
    pub lower_order_final: bool,
    /// DPM-Solver: a first-order final step.
    pub euler_at_final: bool,
    /// DPM-Solver, Euler, UniPC: Karras et al.'s sigmas (rho = 7) instead of the trained ones.
    pub use_karras_sigmas: bool,
    /// DPM-Solver, Euler, UniPC: the sigma after the last step, `zero` or `sigma_min`.
    pub final_sigmas_type: String,
    /// DPM-Solver: `lambda_min_clipped` (minus infinity by default, written `-Infinity` by Python).
    #[serde(serialize_with = "serialize_non_finite")]
    pub lambda_min_clipped: f64,
    /// Euler and UniPC: explicit Karras sigma bounds (`None`: the schedule's own).
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    /// Euler: `linear` interpolation of the sigmas (`log_linear` is refused).
    pub interpolation_type: String,
    /// Euler: `discrete` timesteps (`continuous` with v-prediction is refused).
    pub timestep_type: String,
    /// UniPC: predict x0 (the default) or noise.
    pub predict_x0: bool,
    /// UniPC: steps whose corrector is skipped.
    pub disable_corrector: Vec<usize>,
    /// Options Glichen does not implement; building a scheduler with any of them set fails naming it.
    #[serde(skip)]
    pub unsupported: Vec<String>,
    #[serde(rename = "_class_name")]
    pub class_name: String,
}

/// Python's `json` writes minus infinity as `-Infinity`; serde writes non-finite floats as `null`,
/// which reads back as the default. Keep it readable for both.
fn serialize_non_finite<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_str(if *v > 0.0 { "Infinity" } else { "-Infinity" })
    }
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
    solver_order: Option<usize>,
    algorithm_type: Option<String>,
    solver_type: Option<String>,
    lower_order_final: Option<bool>,
    euler_at_final: Option<bool>,
    use_karras_sigmas: Option<bool>,
    final_sigmas_type: Option<String>,
    lambda_min_clipped: Option<Value>,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
    interpolation_type: Option<String>,
    timestep_type: Option<String>,
    predict_x0: Option<bool>,
    disable_corrector: Option<Vec<usize>>,
    use_exponential_sigmas: Option<bool>,
    use_beta_sigmas: Option<bool>,
    use_lu_lambdas: Option<bool>,
    use_flow_sigmas: Option<bool>,
    use_dynamic_shifting: Option<bool>,
    variance_type: Option<Value>,
    solver_p: Option<Value>,
}

/// A number, or Python's `Infinity` / `-Infinity` / `NaN` as a string (see
/// [`quote_non_finite`]).
fn json_float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ => None,
        },
        _ => None,
    }
}

/// Python's `json.dump` writes `Infinity`, `-Infinity` and `NaN` bare, which is not JSON (diffusers'
/// DPM-Solver configs carry `"lambda_min_clipped": -Infinity`): quote them outside strings.
pub(crate) fn quote_non_finite(json: &str) -> std::borrow::Cow<'_, str> {
    if !json.contains("Infinity") && !json.contains("NaN") {
        return std::borrow::Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = json;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.push('"');
            out.push_str(t);
            out.push('"');
            rest = &rest[t.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    std::borrow::Cow::Owned(out)
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
            solver_order: self.solver_order.unwrap_or(d.solver_order),
            algorithm_type: self.algorithm_type.unwrap_or(d.algorithm_type),
            solver_type: self.solver_type.unwrap_or(d.solver_type),
            lower_order_final: self.lower_order_final.unwrap_or(d.lower_order_final),
            euler_at_final: self.euler_at_final.unwrap_or(d.euler_at_final),
            use_karras_sigmas: self.use_karras_sigmas.unwrap_or(d.use_karras_sigmas),
            final_sigmas_type: self.final_sigmas_type.unwrap_or(d.final_sigmas_type),
            lambda_min_clipped: self
                .lambda_min_clipped
                .as_ref()
                .and_then(json_float)
                .unwrap_or(d.lambda_min_clipped),
            sigma_min: self.sigma_min,
            sigma_max: self.sigma_max,
            interpolation_type: self.interpolation_type.unwrap_or(d.interpolation_type),
            timestep_type: self.timestep_type.unwrap_or(d.timestep_type),
            predict_x0: self.predict_x0.unwrap_or(d.predict_x0),
            disable_corrector: self.disable_corrector.unwrap_or(d.disable_corrector),
            unsupported: [
                (
                    "use_exponential_sigmas",
                    self.use_exponential_sigmas == Some(true),
                ),
                ("use_beta_sigmas", self.use_beta_sigmas == Some(true)),
                ("use_lu_lambdas", self.use_lu_lambdas == Some(true)),
                ("use_flow_sigmas", self.use_flow_sigmas == Some(true)),
                (
                    "use_dynamic_shifting",
                    self.use_dynamic_shifting == Some(true),
                ),
                (
                    "variance_type",
                    self.variance_type.as_ref().is_some_and(|v| !v.is_null()),
                ),
                (
                    "solver_p",
                    self.solver_p.as_ref().is_some_and(|v| !v.is_null()),
                ),
            ]
            .into_iter()
            .filter(|&(_, set)| set)
            .map(|(name, _)| name.to_string())
            .collect(),
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
        let (spacing, solver_type) = match kind {
            SchedulerKind::Ddim | SchedulerKind::Pndm => (TimestepSpacing::Leading, ""),
            SchedulerKind::Dpmpp2m | SchedulerKind::Dpmpp2mKarras => {
                (TimestepSpacing::Linspace, "midpoint")
            }
            SchedulerKind::Euler => (TimestepSpacing::Linspace, ""),
            SchedulerKind::UniPc => (TimestepSpacing::Linspace, "bh2"),
        };
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            steps_offset: 0,
            set_alpha_to_one: ddim,
            timestep_spacing: spacing,
            prediction_type: PredictionType::Epsilon,
            clip_sample: ddim,
            clip_sample_range: 1.0,
            skip_prk_steps: false,
            thresholding: false,
            rescale_betas_zero_snr: false,
            solver_order: 2,
            algorithm_type: "dpmsolver++".into(),
            solver_type: solver_type.into(),
            lower_order_final: true,
            euler_at_final: false,
            use_karras_sigmas: kind == SchedulerKind::Dpmpp2mKarras,
            final_sigmas_type: "zero".into(),
            lambda_min_clipped: f64::NEG_INFINITY,
            sigma_min: None,
            sigma_max: None,
            interpolation_type: "linear".into(),
            timestep_type: "discrete".into(),
            predict_x0: true,
            disable_corrector: Vec::new(),
            unsupported: Vec::new(),
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
        let raw: RawSchedulerConfig = serde_json::from_str(&quote_non_finite(json))?;
        Ok(raw.into())
    }

    /// Parses a config for use with `kind`: missing keys take `kind`'s defaults (diffusers'
    /// `from_config` semantics); `class_name` is set to `kind`'s class.
    pub fn from_json_str_for(json: &str, kind: SchedulerKind) -> Result<Self, SchedulerError> {
        let raw: RawSchedulerConfig = serde_json::from_str(&quote_non_finite(json))?;
        let mut cfg = raw.resolve(kind);
        cfg.class_name = kind.class_name().to_string();
        // The two DPM-Solver++ names differ only in this flag, which the name decides.
        match kind {
            SchedulerKind::Dpmpp2m => cfg.use_karras_sigmas = false,
            SchedulerKind::Dpmpp2mKarras => cfg.use_karras_sigmas = true,
            _ => {}
        }
        Ok(cfg)
    }

    /// Reads and parses a `scheduler_config.json` (see [`SchedulerConfig::from_json_str`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SchedulerError> {
        Self::from_json_str(&std::fs::read_to_string(path)?)
    }

    /// The scheduler named by `_class_name`, if it is one of ours.
    pub fn scheduler_type(&self) -> Option<SchedulerKind> {
        match SchedulerKind::from_class_name(&self.class_name)? {
            // The class names the solver; its flag says whether it is the Karras variant.
            SchedulerKind::Dpmpp2m if self.use_karras_sigmas => Some(SchedulerKind::Dpmpp2mKarras),
            kind => Some(kind),
        }
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
        let rescaled = self.rescale_betas_zero_snr && kind != SchedulerKind::Pndm;
        if rescaled {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let mut cumprod = cumprod_f32(betas.iter().map(|&b| 1.0 - b));
        // The sigma-based schedulers would divide by the zero terminal alpha: diffusers pins it
        // to 2^-24 (DDIM keeps the zero).
        if rescaled && kind != SchedulerKind::Ddim {
            if let Some(last) = cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        Ok(cumprod)
    }
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
