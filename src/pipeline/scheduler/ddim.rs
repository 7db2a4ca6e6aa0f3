//! DDIM (Song et al. 2020) with eta = 0, a port of diffusers' `DDIMScheduler`.

use candle_core::{Result as CandleResult, Tensor};

use super::{
    checked_base_timesteps, div, mul, table_timestep, Alphas, PredictionType, Scheduler,
    SchedulerConfig, SchedulerError, SchedulerKind,
};

/// diffusers' `DDIMScheduler` after `set_timesteps(num_inference_steps)`, deterministic (eta = 0).
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    alphas: Alphas,
    timesteps: Vec<usize>,
    /// The same, as the trait hands them out.
    evaluation_timesteps: Vec<f64>,
    num_inference_steps: usize,
    num_train_timesteps: usize,
    prediction_type: PredictionType,
    clip_sample: Option<f64>,
}

impl DdimScheduler {
    pub fn new(cfg: &SchedulerConfig, num_inference_steps: usize) -> Result<Self, SchedulerError> {
        if cfg.thresholding {
            return Err(SchedulerError::ThresholdingUnsupported);
        }
        let mut timesteps = checked_base_timesteps(cfg, num_inference_steps)?;
        timesteps.reverse();
        Ok(DdimScheduler {
            alphas: Alphas::new(cfg, SchedulerKind::Ddim)?,
            evaluation_timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            timesteps,
            num_inference_steps,
            num_train_timesteps: cfg.num_train_timesteps,
            prediction_type: cfg.prediction_type,
            clip_sample: cfg.clip_sample.then_some(cfg.clip_sample_range),
        })
    }

    /// The timesteps as diffusers' integer tensor holds them.
    pub fn table_timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// The float32 `alphas_cumprod` table.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas.cumprod
    }

    /// `timestep - num_train_timesteps // num_inference_steps` (whatever the spacing, like diffusers).
    fn prev_timestep(&self, timestep: usize) -> i64 {
        timestep as i64 - (self.num_train_timesteps / self.num_inference_steps) as i64
    }

    /// `(pred_original_sample, pred_epsilon)` exactly as `DDIMScheduler.step` computes them, with
    /// `clip_sample` applied to the former.
    fn predictions(
        &self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
    ) -> CandleResult<(Tensor, Tensor)> {
        let alpha_prod_t = self.alphas.at(timestep)?;
        let beta_prod_t = 1.0 - alpha_prod_t;
        let (x0, eps) = match self.prediction_type {
            PredictionType::Epsilon => (
                div(
                    &(sample - mul(model_output, beta_prod_t.sqrt())?)?,
                    alpha_prod_t.sqrt(),
                )?,
                model_output.clone(),
            ),
            PredictionType::Sample => (
                model_output.clone(),
                div(
                    &(sample - mul(model_output, alpha_prod_t.sqrt())?)?,
                    beta_prod_t.sqrt(),
                )?,
            ),
            PredictionType::VPrediction => (
                (mul(sample, alpha_prod_t.sqrt())? - mul(model_output, beta_prod_t.sqrt())?)?,
                (mul(model_output, alpha_prod_t.sqrt())? + mul(sample, beta_prod_t.sqrt())?)?,
            ),
        };
        let x0 = match self.clip_sample {
            Some(range) => x0.clamp(-range, range)?,
            None => x0,
        };
        Ok((x0, eps))
    }
}

impl Scheduler for DdimScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.evaluation_timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
    ) -> CandleResult<Tensor> {
        let timestep = table_timestep(timestep)?;
        let prev_timestep = self.prev_timestep(timestep);
        let alpha_prod_t = self.alphas.at(timestep)?;
        let alpha_prod_t_prev = self.alphas.prev(prev_timestep)?;
        let (x0, eps) = self.predictions(model_output, timestep, sample)?;

        // _get_variance and std_dev_t = eta * variance ** 0.5 with eta = 0 (kept for its NaN semantics)
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let variance = (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev);
        let std_dev_t = 0.0f32 * variance.sqrt();
        let direction_coeff = (1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t).sqrt();

        let pred_sample_direction = mul(&eps, direction_coeff)?;
        mul(&x0, alpha_prod_t_prev.sqrt())? + pred_sample_direction
    }

    fn pred_original_sample(
        &self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
    ) -> CandleResult<Tensor> {
        Ok(self
            .predictions(model_output, table_timestep(timestep)?, sample)?
            .0)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> CandleResult<Tensor> {
        self.alphas
            .add_noise(original, noise, table_timestep(timestep)?)
    }
}
