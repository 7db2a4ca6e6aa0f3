//! Euler (Karras et al. 2022, algorithm 2 without churn), a port of diffusers'
//! `EulerDiscreteScheduler` with its default `s_churn = 0`: deterministic.

use candle_core::{Result as CandleResult, Tensor};

use super::sigmas::{
    check_supported, euler_timesteps, final_sigma, index_for_timestep, karras_sigmas,
    log_sigma_table, np_interp, sigma_table, sigma_to_t,
};
use super::{
    div, mul, PredictionType, Scheduler, SchedulerConfig, SchedulerError, SchedulerKind,
    TimestepSpacing,
};

/// diffusers' `EulerDiscreteScheduler` after `set_timesteps(num_inference_steps)`.
#[derive(Debug, Clone)]
pub struct EulerDiscreteScheduler {
    /// float32 values (fractional for `linspace` spacing and Karras sigmas).
    timesteps: Vec<f64>,
    /// float32, one more than the timesteps (the sigma after the last step).
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
    prediction_type: PredictionType,
    step_index: Option<usize>,
}

impl EulerDiscreteScheduler {
    pub fn new(cfg: &SchedulerConfig, num_inference_steps: usize) -> Result<Self, SchedulerError> {
        check_supported(cfg, SchedulerKind::Euler)?;
        if cfg.interpolation_type != "linear" {
            return Err(SchedulerError::InvalidConfig(format!(
                "EulerDiscreteScheduler interpolation_type {:?} is not supported (linear)",
                cfg.interpolation_type
            )));
        }
        if cfg.timestep_type != "discrete" && cfg.prediction_type == PredictionType::VPrediction {
            return Err(SchedulerError::InvalidConfig(
                "EulerDiscreteScheduler with continuous timesteps and v-prediction is not supported"
                    .into(),
            ));
        }
        let alphas_cumprod = cfg.alphas_cumprod(SchedulerKind::Euler)?;
        let table = sigma_table(&alphas_cumprod);
        let ts = euler_timesteps(cfg, num_inference_steps)?;
        // `np.interp` of the float32 table at the float32 timesteps, in float64
        let interpolated: Vec<f64> = ts.iter().map(|&t| np_interp(t as f64, &table)).collect();
        let (timesteps, mut sigmas): (Vec<f64>, Vec<f32>) = if cfg.use_karras_sigmas {
            let log_sigmas = log_sigma_table(&table);
            let sigma_min = cfg
                .sigma_min
                .unwrap_or(interpolated[interpolated.len() - 1]);
            let sigma_max = cfg.sigma_max.unwrap_or(interpolated[0]);
            let karras = karras_sigmas(sigma_min, sigma_max, num_inference_steps);
            let timesteps = karras
                .iter()
                .map(|&s| f64::from(sigma_to_t(s, &log_sigmas) as f32))
                .collect();
            (timesteps, karras.iter().map(|&s| s as f32).collect())
        } else {
            (
                ts.iter().map(|&t| f64::from(t)).collect(),
                interpolated.iter().map(|&s| s as f32).collect(),
            )
        };
        sigmas.push(final_sigma(cfg, &table)?);
        let max_sigma = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let init_noise_sigma = match cfg.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
            TimestepSpacing::Leading | TimestepSpacing::LdmUniform => {
                (max_sigma * max_sigma + 1.0).sqrt()
            }
        };
        Ok(Self {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction_type: cfg.prediction_type,
            step_index: None,
        })
    }

    /// The float32 sigmas, one per timestep and the final one.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    fn index(&self, timestep: f64) -> CandleResult<usize> {
        match self.step_index {
            Some(i) => Ok(i),
            None => index_for_timestep(&self.timesteps, timestep).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "Euler: timestep {timestep} is not one of the schedule's"
                ))
            }),
        }
    }

    fn sigma(&self, index: usize) -> CandleResult<f32> {
        self.sigmas.get(index).copied().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "Euler: step {index} is past the schedule's {} steps",
                self.timesteps.len()
            ))
        })
    }

    /// `pred_original_sample` of diffusers' `step`, with sigma_hat = sigma (no churn).
    fn x0(&self, model_output: &Tensor, sample: &Tensor, sigma: f32) -> CandleResult<Tensor> {
        match self.prediction_type {
            PredictionType::Sample => Ok(model_output.clone()),
            PredictionType::Epsilon => sample - mul(model_output, sigma)?,
            PredictionType::VPrediction => {
                let c = -sigma / (sigma * sigma + 1.0).sqrt();
                mul(model_output, c)? + div(sample, sigma * sigma + 1.0)?
            }
        }
    }
}

impl Scheduler for EulerDiscreteScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        f64::from(self.init_noise_sigma)
    }

    fn scale_model_input(&self, sample: Tensor, timestep: f64) -> CandleResult<Tensor> {
        let sigma = self.sigma(self.index(timestep)?)?;
        div(&sample, (sigma * sigma + 1.0).sqrt())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
    ) -> CandleResult<Tensor> {
        let index = self.index(timestep)?;
        let sigma = self.sigma(index)?;
        let sigma_next = self.sigma(index + 1)?;
        // gamma = 0: sigma_hat = sigma * (0 + 1)
        let sigma_hat = sigma;
        let x0 = self.x0(model_output, sample, sigma)?;
        let derivative = div(&(sample - x0)?, sigma_hat)?;
        let dt = sigma_next - sigma_hat;
        self.step_index = Some(index + 1);
        sample + mul(&derivative, dt)?
    }

    fn pred_original_sample(
        &self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
    ) -> CandleResult<Tensor> {
        let sigma = self.sigma(self.index(timestep)?)?;
        self.x0(model_output, sample, sigma)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> CandleResult<Tensor> {
        let index = index_for_timestep(&self.timesteps, timestep).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "Euler: timestep {timestep} is not one of the schedule's"
            ))
        })?;
        original + mul(noise, self.sigma(index)?)?
    }
}
