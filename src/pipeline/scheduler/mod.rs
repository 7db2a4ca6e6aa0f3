//! Noise schedulers, ports of Hugging Face diffusers 0.42.1: DDIM (eta = 0), PNDM (PLMS, with or
//! without the Runge-Kutta warm-up), DPM-Solver++ 2M (with or without Karras sigmas), Euler
//! (deterministic) and UniPC (bh2), each built from the model's scheduler config the way
//! `OtherScheduler.from_config(config)` builds it.
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

mod config;
mod ddim;
mod dpm;
mod euler;
mod pndm;
mod sigmas;
mod timesteps;
mod unipc;

pub use config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
pub use ddim::DdimScheduler;
pub use dpm::DpmSolverMultistepScheduler;
pub use euler::EulerDiscreteScheduler;
pub use pndm::PndmScheduler;
pub use unipc::UniPcMultistepScheduler;

use candle_core::{Result as CandleResult, Tensor};
use timesteps::checked_base_timesteps;

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

/// The common interface of the schedulers, one call per UNet evaluation.
///
/// Timesteps are `f64` because Euler's are fractional for some spacings (the UNet takes them as
/// float32, like diffusers); the other schedulers' are whole numbers.
pub trait Scheduler: Send {
    /// Timesteps of each UNet evaluation, in order (PNDM with skip_prk_steps has N+1: the first step
    /// evaluates twice; with the Runge-Kutta warm-up it has N+9).
    fn timesteps(&self) -> &[f64];
    /// The sampling step (0..N) that evaluation `evaluation` belongs to (one evaluation per step
    /// except PNDM: evaluations 0 and 1 are step 0, evaluation k >= 1 is step k-1; PRK warm-up: four
    /// evaluations per step for the first three steps).
    fn sampling_step(&self, evaluation: usize) -> usize {
        evaluation
    }
    /// Sampling steps (PNDM evaluates some of them more than once).
    fn num_inference_steps(&self) -> usize {
        self.timesteps().len()
    }
    /// What the starting noise is multiplied by (a float32 value; 1 for the variance-preserving
    /// schedulers, sigma-based for Euler).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// The UNet's input for `sample` (the identity except for Euler's `sample / sqrt(sigma² + 1)`).
    fn scale_model_input(&self, sample: Tensor, _timestep: f64) -> CandleResult<Tensor> {
        Ok(sample)
    }
    /// One evaluation's update; mutates the multistep state.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
    ) -> CandleResult<Tensor>;
    /// x0 predicted from this model output (for previews), per the prediction type (DDIM also applies
    /// `clip_sample`, exactly like its `pred_original_sample`). Call it before `step`.
    fn pred_original_sample(
        &self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
    ) -> CandleResult<Tensor>;
    /// diffusers' `add_noise(original, noise, tensor([timestep]))`.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> CandleResult<Tensor>;
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
        SchedulerKind::Dpmpp2m | SchedulerKind::Dpmpp2mKarras => {
            Box::new(DpmSolverMultistepScheduler::new(cfg, num_inference_steps)?)
        }
        SchedulerKind::Euler => Box::new(EulerDiscreteScheduler::new(cfg, num_inference_steps)?),
        SchedulerKind::UniPc => Box::new(UniPcMultistepScheduler::new(cfg, num_inference_steps)?),
    })
}

/// A table timestep from the `f64` the trait carries (DDIM and PNDM have whole-number timesteps).
fn table_timestep(timestep: f64) -> CandleResult<usize> {
    if timestep >= 0.0 && timestep.fract() == 0.0 && timestep < MAX_TRAIN_TIMESTEPS as f64 {
        Ok(timestep as usize)
    } else {
        Err(candle_core::Error::Msg(format!(
            "scheduler: timestep {timestep} is not one of the schedule's"
        )))
    }
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
