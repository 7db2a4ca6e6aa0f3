//! PNDM (Liu et al. 2022, pseudo numerical methods for diffusion models), a port of diffusers'
//! `PNDMScheduler`: linear multistep (PLMS) steps, optionally preceded by the Runge-Kutta (PRK) warm-up.

use candle_core::{Result as CandleResult, Tensor};

use super::{
    checked_base_timesteps, div, mul, table_timestep, Alphas, PredictionType, Scheduler,
    SchedulerConfig, SchedulerError, SchedulerKind,
};

const PNDM_ORDER: usize = 4;

/// diffusers' `PNDMScheduler` after `set_timesteps(num_inference_steps)`.
#[derive(Debug, Clone)]
pub struct PndmScheduler {
    alphas: Alphas,
    prk_timesteps: Vec<usize>,
    timesteps: Vec<usize>,
    /// The same, as the trait hands them out.
    evaluation_timesteps: Vec<f64>,
    /// The `num_inference_steps` asked for (diffusers' step ratio is computed from it).
    requested_steps: usize,
    /// Sampling steps actually run: the requested number except for LDM-uniform spacing.
    steps: usize,
    num_train_timesteps: usize,
    prediction_type: PredictionType,
    skip_prk_steps: bool,
    // multistep state
    counter: usize,
    ets: Vec<Tensor>,
    cur_sample: Option<Tensor>,
    /// The original PLMS sampler's single step: both of its evaluations at one timestep.
    repeat_first: bool,
    cur_model_output: Option<Tensor>,
}

impl PndmScheduler {
    pub fn new(cfg: &SchedulerConfig, num_inference_steps: usize) -> Result<Self, SchedulerError> {
        if cfg.prediction_type == PredictionType::Sample {
            return Err(SchedulerError::UnsupportedPrediction {
                scheduler: SchedulerKind::Pndm,
                prediction: cfg.prediction_type,
            });
        }
        // ascending, like diffusers' `_timesteps`
        let ts = checked_base_timesteps(cfg, num_inference_steps)?;
        let steps = ts.len();
        let repeat_first = cfg.skip_prk_steps
            && ts.len() == 1
            && cfg.timestep_spacing == super::TimestepSpacing::LdmUniform;
        let (prk_timesteps, plms_timesteps) = if cfg.skip_prk_steps {
            // concat([_ts[:-1], _ts[-2:-1], _ts[-1:]])[::-1]
            let n = ts.len();
            let mut plms: Vec<usize> = ts[..n - 1].to_vec();
            if n >= 2 {
                plms.push(ts[n - 2]);
            } else if repeat_first {
                // The original PLMS sampler evaluates its first step twice even when it is the only
                // one, the second time at the same timestep (`t_next` clamps to the last).
                plms.push(ts[0]);
            }
            plms.push(ts[n - 1]);
            plms.reverse();
            (Vec::new(), plms)
        } else {
            if ts.len() < PNDM_ORDER {
                return Err(SchedulerError::PrkTooFewSteps(num_inference_steps));
            }
            let half = cfg.num_train_timesteps / num_inference_steps / 2;
            // _ts[-4:].repeat(2) + tile([0, half], 4)
            let last: Vec<usize> = ts[ts.len() - PNDM_ORDER..]
                .iter()
                .flat_map(|&t| [t, t + half])
                .collect();
            // (prk[:-1].repeat(2)[1:-1])[::-1]
            let rep: Vec<usize> = last[..last.len() - 1]
                .iter()
                .flat_map(|&t| [t, t])
                .collect();
            let mut prk = rep[1..rep.len() - 1].to_vec();
            prk.reverse();
            // _ts[:-3][::-1]
            let mut plms = ts[..ts.len() - 3].to_vec();
            plms.reverse();
            (prk, plms)
        };
        if let Some(&bad) = prk_timesteps
            .iter()
            .find(|&&t| t >= cfg.num_train_timesteps)
        {
            return Err(SchedulerError::TimestepOutOfRange {
                timestep: bad as i64,
                train: cfg.num_train_timesteps,
                steps_offset: cfg.steps_offset,
                steps: num_inference_steps,
            });
        }
        let timesteps: Vec<usize> = prk_timesteps
            .iter()
            .chain(plms_timesteps.iter())
            .copied()
            .collect();
        Ok(PndmScheduler {
            alphas: Alphas::new(cfg, SchedulerKind::Pndm)?,
            prk_timesteps,
            evaluation_timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            timesteps,
            requested_steps: num_inference_steps,
            steps,
            num_train_timesteps: cfg.num_train_timesteps,
            prediction_type: cfg.prediction_type,
            skip_prk_steps: cfg.skip_prk_steps,
            counter: 0,
            ets: Vec::new(),
            cur_sample: None,
            repeat_first,
            cur_model_output: None,
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

    /// `num_train_timesteps // num_inference_steps`
    fn step_ratio(&self) -> i64 {
        (self.num_train_timesteps / self.requested_steps) as i64
    }

    fn step_prk(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
    ) -> CandleResult<Tensor> {
        let diff_to_prev = if self.counter % 2 == 1 {
            0
        } else {
            self.step_ratio() / 2
        };
        let prev_timestep = timestep as i64 - diff_to_prev;
        let timestep = self.prk_timesteps[self.counter / 4 * 4];

        let accumulate = |acc: Option<Tensor>, term: Tensor| -> CandleResult<Tensor> {
            match acc {
                Some(acc) => acc + term,
                None => Ok(term),
            }
        };
        let model_output = match self.counter % 4 {
            0 => {
                let term = mul(model_output, (1.0f64 / 6.0) as f32)?;
                self.cur_model_output = Some(accumulate(self.cur_model_output.take(), term)?);
                self.ets.push(model_output.clone());
                self.cur_sample = Some(sample.clone());
                model_output.clone()
            }
            1 | 2 => {
                let term = mul(model_output, (1.0f64 / 3.0) as f32)?;
                self.cur_model_output = Some(accumulate(self.cur_model_output.take(), term)?);
                model_output.clone()
            }
            _ => {
                let term = mul(model_output, (1.0f64 / 6.0) as f32)?;
                accumulate(self.cur_model_output.take(), term)?
            }
        };

        let cur_sample = self.cur_sample.clone().unwrap_or_else(|| sample.clone());
        let prev_sample =
            self.get_prev_sample(&cur_sample, timestep, prev_timestep, &model_output)?;
        self.counter += 1;
        Ok(prev_sample)
    }

    fn step_plms(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
    ) -> CandleResult<Tensor> {
        if !self.skip_prk_steps && self.ets.len() < 3 {
            candle_core::bail!(
                "PNDM: the PLMS steps can only run after 12 Runge-Kutta (PRK) evaluations"
            );
        }
        let mut prev_timestep = timestep as i64 - self.step_ratio();
        let mut timestep = timestep as i64;
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.drain(..self.ets.len() - 3);
            }
            self.ets.push(model_output.clone());
        } else {
            // diffusers: `prev = t; t += ratio` (even where the spacing is not uniform). The
            // original sampler's single step evaluates twice at one timestep and steps from it.
            if self.repeat_first {
                prev_timestep = timestep - self.step_ratio();
            } else {
                prev_timestep = timestep;
                timestep += self.step_ratio();
            }
        }

        let n = self.ets.len();
        let mut sample = sample.clone();
        let model_output = if n == 1 {
            match self.counter {
                0 => {
                    self.cur_sample = Some(sample.clone());
                    model_output.clone()
                }
                1 => {
                    if let Some(cur) = self.cur_sample.take() {
                        sample = cur;
                    }
                    div(&(model_output + &self.ets[0])?, 2.0)?
                }
                _ => candle_core::bail!("PNDM: inconsistent multistep state"),
            }
        } else if n == 2 {
            div(&(mul(&self.ets[n - 1], 3.0)? - &self.ets[n - 2])?, 2.0)?
        } else if n == 3 {
            let acc = (mul(&self.ets[n - 1], 23.0)? - mul(&self.ets[n - 2], 16.0)?)?;
            div(&(acc + mul(&self.ets[n - 3], 5.0)?)?, 12.0)?
        } else {
            let acc = (mul(&self.ets[n - 1], 55.0)? - mul(&self.ets[n - 2], 59.0)?)?;
            let acc = (acc + mul(&self.ets[n - 3], 37.0)?)?;
            let acc = (acc - mul(&self.ets[n - 4], 9.0)?)?;
            mul(&acc, (1.0f64 / 24.0) as f32)?
        };

        if timestep < 0 {
            candle_core::bail!("PNDM: negative timestep {timestep}");
        }
        let prev_sample =
            self.get_prev_sample(&sample, timestep as usize, prev_timestep, &model_output)?;
        self.counter += 1;
        Ok(prev_sample)
    }

    /// Formula (9) of the PNDM paper, as diffusers' `_get_prev_sample`.
    fn get_prev_sample(
        &self,
        sample: &Tensor,
        timestep: usize,
        prev_timestep: i64,
        model_output: &Tensor,
    ) -> CandleResult<Tensor> {
        let alpha_prod_t = self.alphas.at(timestep)?;
        let alpha_prod_t_prev = self.alphas.prev(prev_timestep)?;
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;

        let model_output = match self.prediction_type {
            PredictionType::VPrediction => {
                (mul(model_output, alpha_prod_t.sqrt())? + mul(sample, beta_prod_t.sqrt())?)?
            }
            _ => model_output.clone(),
        };

        let sample_coeff = (alpha_prod_t_prev / alpha_prod_t).sqrt();
        let model_output_denom_coeff = alpha_prod_t * beta_prod_t_prev.sqrt()
            + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev).sqrt();

        let scaled = mul(&model_output, alpha_prod_t_prev - alpha_prod_t)?;
        mul(sample, sample_coeff)? - div(&scaled, model_output_denom_coeff)?
    }
}

impl Scheduler for PndmScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.evaluation_timesteps
    }

    fn sampling_step(&self, evaluation: usize) -> usize {
        let prk = self.prk_timesteps.len();
        if evaluation < prk {
            return evaluation / 4;
        }
        let plms_eval = evaluation - prk;
        let prk_steps = prk / 4;
        let plms_len = self.timesteps.len() - prk;
        let plms_steps = self.steps.saturating_sub(prk_steps);
        // skip_prk_steps: the first step evaluates twice when there are N + 1 PLMS evaluations
        let plms_step = if plms_len > plms_steps {
            plms_eval.saturating_sub(1)
        } else {
            plms_eval
        };
        prk_steps + plms_step
    }

    fn num_inference_steps(&self) -> usize {
        self.steps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
    ) -> CandleResult<Tensor> {
        let timestep = table_timestep(timestep)?;
        if self.counter < self.prk_timesteps.len() && !self.skip_prk_steps {
            self.step_prk(model_output, timestep, sample)
        } else {
            self.step_plms(model_output, timestep, sample)
        }
    }

    fn pred_original_sample(
        &self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
    ) -> CandleResult<Tensor> {
        self.alphas.pred_original_sample(
            self.prediction_type,
            model_output,
            table_timestep(timestep)?,
            sample,
        )
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> CandleResult<Tensor> {
        self.alphas
            .add_noise(original, noise, table_timestep(timestep)?)
    }
}
