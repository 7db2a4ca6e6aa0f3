//! DPM-Solver / DPM-Solver++ multistep (Lu et al. 2022), a port of diffusers'
//! `DPMSolverMultistepScheduler`: orders 1–3, midpoint or Heun, trained or Karras sigmas. The SDE
//! variants draw noise at every step and are refused.

// Written as diffusers computes it (`torch.exp(h) - 1.0`, not `expm1`), to agree with it bit for
// bit.
#![allow(clippy::imprecise_flops)]

use candle_core::{Result as CandleResult, Tensor};

use super::sigmas::{
    check_supported, data_prediction, final_sigma, karras_sigmas, lambda, log_sigma_table,
    multistep_timesteps, noise_prediction, sigma_table, sigma_to_t, x0_from_noise,
    MultistepSchedule,
};
use super::timesteps::np_round;
use super::{
    mul, BetaSchedule, PredictionType, Scheduler, SchedulerConfig, SchedulerError, SchedulerKind,
};

/// What the solver integrates: the data prediction (`dpmsolver++`) or the noise (`dpmsolver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    DataPrediction,
    NoisePrediction,
}

/// diffusers' `DPMSolverMultistepScheduler` after `set_timesteps(num_inference_steps)`.
#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler {
    /// The timesteps and the float32 sigmas (one more: the sigma after the last step).
    schedule: MultistepSchedule,
    prediction_type: PredictionType,
    algorithm: Algorithm,
    heun: bool,
    solver_order: usize,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_zero: bool,
    // multistep state
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    step_index: Option<usize>,
}

impl DpmSolverMultistepScheduler {
    pub fn new(cfg: &SchedulerConfig, num_inference_steps: usize) -> Result<Self, SchedulerError> {
        let kind = if cfg.use_karras_sigmas {
            SchedulerKind::Dpmpp2mKarras
        } else {
            SchedulerKind::Dpmpp2m
        };
        check_supported(cfg, kind)?;
        let algorithm = match cfg.algorithm_type.as_str() {
            // diffusers maps the retired "deis" to dpmsolver++
            "dpmsolver++" | "deis" => Algorithm::DataPrediction,
            "dpmsolver" => Algorithm::NoisePrediction,
            other => {
                return Err(SchedulerError::InvalidConfig(format!(
                    "DPMSolverMultistepScheduler algorithm_type {other:?} is not supported \
                     (dpmsolver++ or dpmsolver; the SDE variants are stochastic)"
                )))
            }
        };
        let heun = match cfg.solver_type.as_str() {
            "midpoint" | "logrho" | "bh1" | "bh2" => false,
            "heun" => true,
            other => {
                return Err(SchedulerError::InvalidConfig(format!(
                    "DPMSolverMultistepScheduler solver_type {other:?} is not supported \
                     (midpoint or heun)"
                )))
            }
        };
        if algorithm == Algorithm::NoisePrediction && cfg.final_sigmas_type == "zero" {
            return Err(SchedulerError::InvalidConfig(
                "DPMSolverMultistepScheduler: final_sigmas_type \"zero\" needs algorithm_type \
                 dpmsolver++ (use \"sigma_min\")"
                    .into(),
            ));
        }
        if !(1..=3).contains(&cfg.solver_order) {
            return Err(SchedulerError::InvalidConfig(format!(
                "DPMSolverMultistepScheduler solver_order must be 1, 2 or 3, not {}",
                cfg.solver_order
            )));
        }
        let alphas_cumprod = cfg.alphas_cumprod(kind)?;
        let table = sigma_table(&alphas_cumprod);
        let t = cfg.num_train_timesteps;
        // `searchsorted(flip(lambda_t), lambda_min_clipped)`: the noisiest timesteps whose
        // log-SNR falls below the clip are never visited.
        let clipped = alphas_cumprod
            .iter()
            .filter(|&&a| (lambda(a.sqrt(), (1.0 - a).sqrt()) as f64) < cfg.lambda_min_clipped)
            .count();
        let last_timestep = t - clipped.min(t - 1);
        let (timesteps, mut sigmas): (Vec<f64>, Vec<f32>) = if cfg.use_karras_sigmas {
            super::sigmas::check_steps(cfg, num_inference_steps)?;
            let log_sigmas = log_sigma_table(&table);
            let karras = karras_sigmas(table[0] as f64, table[t - 1] as f64, num_inference_steps);
            let round = cfg.beta_schedule != BetaSchedule::SquaredcosCapV2;
            let timesteps = karras
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    // `.round()` unless cosine, then an int64 tensor (truncating)
                    if round {
                        np_round(t)
                    } else {
                        t.trunc()
                    }
                })
                .collect();
            (timesteps, karras.iter().map(|&s| s as f32).collect())
        } else {
            let ts = multistep_timesteps(cfg, num_inference_steps, last_timestep)?;
            let sigmas = ts.iter().map(|&t| table[t as usize]).collect();
            (ts.into_iter().map(|t| t as f64).collect(), sigmas)
        };
        sigmas.push(final_sigma(cfg, &table)?);
        Ok(Self {
            schedule: MultistepSchedule {
                timesteps,
                sigmas,
                name: "DPM-Solver",
            },
            prediction_type: cfg.prediction_type,
            algorithm,
            heun,
            solver_order: cfg.solver_order,
            lower_order_final: cfg.lower_order_final,
            euler_at_final: cfg.euler_at_final,
            final_sigma_zero: cfg.final_sigmas_type == "zero",
            model_outputs: vec![None; cfg.solver_order],
            lower_order_nums: 0,
            step_index: None,
        })
    }

    /// The float32 sigmas, one per timestep and the final one.
    pub fn sigmas(&self) -> &[f32] {
        &self.schedule.sigmas
    }

    fn index(&self, timestep: f64) -> usize {
        self.schedule.index(self.step_index, timestep)
    }

    fn point(&self, index: usize) -> CandleResult<(f32, f32, f32)> {
        self.schedule.point(index)
    }

    /// diffusers' `convert_model_output`: x0 for dpmsolver++, the noise for dpmsolver.
    fn convert_model_output(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        index: usize,
    ) -> CandleResult<Tensor> {
        let (alpha_t, sigma_t, _) = self.point(index)?;
        let at = (alpha_t, sigma_t);
        match self.algorithm {
            Algorithm::DataPrediction => {
                data_prediction(self.prediction_type, model_output, sample, at)
            }
            Algorithm::NoisePrediction => {
                noise_prediction(self.prediction_type, model_output, sample, at)
            }
        }
    }

    fn first_order_update(
        &self,
        m0: &Tensor,
        sample: &Tensor,
        index: usize,
    ) -> CandleResult<Tensor> {
        let (alpha_t, sigma_t, lambda_t) = self.point(index + 1)?;
        let (alpha_s, sigma_s, lambda_s) = self.point(index)?;
        let h = lambda_t - lambda_s;
        match self.algorithm {
            Algorithm::DataPrediction => {
                mul(sample, sigma_t / sigma_s)? - mul(m0, alpha_t * ((-h).exp() - 1.0))?
            }
            Algorithm::NoisePrediction => {
                mul(sample, alpha_t / alpha_s)? - mul(m0, sigma_t * (h.exp() - 1.0))?
            }
        }
    }

    fn second_order_update(
        &self,
        m0: &Tensor,
        m1: &Tensor,
        sample: &Tensor,
        index: usize,
    ) -> CandleResult<Tensor> {
        let (alpha_t, sigma_t, lambda_t) = self.point(index + 1)?;
        let (alpha_s0, sigma_s0, lambda_s0) = self.point(index)?;
        let (_, _, lambda_s1) = self.point(index - 1)?;
        let h = lambda_t - lambda_s0;
        let h_0 = lambda_s0 - lambda_s1;
        let r0 = h_0 / h;
        let d1 = mul(&(m0 - m1)?, 1.0 / r0)?;
        match (self.algorithm, self.heun) {
            (Algorithm::DataPrediction, false) => {
                let c = alpha_t * ((-h).exp() - 1.0);
                (mul(sample, sigma_t / sigma_s0)? - mul(m0, c)?)? - mul(&d1, 0.5 * c)?
            }
            (Algorithm::DataPrediction, true) => {
                let c = alpha_t * ((-h).exp() - 1.0);
                let c1 = alpha_t * (((-h).exp() - 1.0) / h + 1.0);
                (mul(sample, sigma_t / sigma_s0)? - mul(m0, c)?)? + mul(&d1, c1)?
            }
            (Algorithm::NoisePrediction, false) => {
                let c = sigma_t * (h.exp() - 1.0);
                (mul(sample, alpha_t / alpha_s0)? - mul(m0, c)?)? - mul(&d1, 0.5 * c)?
            }
            (Algorithm::NoisePrediction, true) => {
                let c = sigma_t * (h.exp() - 1.0);
                let c1 = sigma_t * ((h.exp() - 1.0) / h - 1.0);
                (mul(sample, alpha_t / alpha_s0)? - mul(m0, c)?)? - mul(&d1, c1)?
            }
        }
    }

    fn third_order_update(
        &self,
        [m0, m1, m2]: [&Tensor; 3],
        sample: &Tensor,
        index: usize,
    ) -> CandleResult<Tensor> {
        let (alpha_t, sigma_t, lambda_t) = self.point(index + 1)?;
        let (alpha_s0, sigma_s0, lambda_s0) = self.point(index)?;
        let (_, _, lambda_s1) = self.point(index - 1)?;
        let (_, _, lambda_s2) = self.point(index - 2)?;
        let h = lambda_t - lambda_s0;
        let h_0 = lambda_s0 - lambda_s1;
        let h_1 = lambda_s1 - lambda_s2;
        let r0 = h_0 / h;
        let r1 = h_1 / h;
        let d1_0 = mul(&(m0 - m1)?, 1.0 / r0)?;
        let d1_1 = mul(&(m1 - m2)?, 1.0 / r1)?;
        let diff = (&d1_0 - &d1_1)?;
        let d1 = (&d1_0 + mul(&diff, r0 / (r0 + r1))?)?;
        let d2 = mul(&diff, 1.0 / (r0 + r1))?;
        match self.algorithm {
            Algorithm::DataPrediction => {
                let e = (-h).exp();
                let x = (mul(sample, sigma_t / sigma_s0)? - mul(m0, alpha_t * (e - 1.0))?)?;
                let x = (x + mul(&d1, alpha_t * ((e - 1.0) / h + 1.0))?)?;
                x - mul(&d2, alpha_t * ((e - 1.0 + h) / (h * h) - 0.5))?
            }
            Algorithm::NoisePrediction => {
                let e = h.exp();
                let x = (mul(sample, alpha_t / alpha_s0)? - mul(m0, sigma_t * (e - 1.0))?)?;
                let x = (x - mul(&d1, sigma_t * ((e - 1.0) / h - 1.0))?)?;
                x - mul(&d2, sigma_t * ((e - 1.0 - h) / (h * h) - 0.5))?
            }
        }
    }
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.schedule.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
    ) -> CandleResult<Tensor> {
        let index = self.index(timestep);
        let n = self.schedule.timesteps.len();
        let short = self.lower_order_final && n < 15;
        let lower_order_final =
            index + 1 == n && (self.euler_at_final || short || self.final_sigma_zero);
        let lower_order_second = index + 2 == n && short;
        let converted = self.convert_model_output(model_output, sample, index)?;
        self.model_outputs.rotate_left(1);
        if let Some(last) = self.model_outputs.last_mut() {
            *last = Some(converted.clone());
        }
        let history = |k: usize| -> CandleResult<&Tensor> {
            self.model_outputs[self.solver_order - 1 - k]
                .as_ref()
                .ok_or_else(|| candle_core::Error::Msg("DPM-Solver: missing model output".into()))
        };
        let prev = if self.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order_update(&converted, sample, index)?
        } else if self.solver_order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order_update(&converted, history(1)?, sample, index)?
        } else {
            self.third_order_update([&converted, history(1)?, history(2)?], sample, index)?
        };
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(index + 1);
        Ok(prev)
    }

    fn pred_original_sample(
        &self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
    ) -> CandleResult<Tensor> {
        let index = self.index(timestep);
        let converted = self.convert_model_output(model_output, sample, index)?;
        match self.algorithm {
            Algorithm::DataPrediction => Ok(converted),
            Algorithm::NoisePrediction => {
                let (alpha_t, sigma_t, _) = self.point(index)?;
                x0_from_noise(&converted, sample, (alpha_t, sigma_t))
            }
        }
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> CandleResult<Tensor> {
        self.schedule.add_noise(original, noise, timestep)
    }
}
