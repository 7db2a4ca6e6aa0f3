//! UniPC (Zhao et al. 2023): a multistep predictor with a corrector that reuses the next model
//! evaluation, a port of diffusers' `UniPCMultistepScheduler` (bh1 / bh2, x0 or noise prediction,
//! trained or Karras sigmas).

use candle_core::{Result as CandleResult, Tensor};

use super::sigmas::{
    check_supported, data_prediction, final_sigma, karras_sigmas, log_sigma_table,
    multistep_timesteps, noise_prediction, sigma_table, sigma_to_t, x0_from_noise,
    MultistepSchedule,
};
use super::timesteps::np_round;
use super::{div, mul, PredictionType, Scheduler, SchedulerConfig, SchedulerError, SchedulerKind};

/// diffusers' `UniPCMultistepScheduler` after `set_timesteps(num_inference_steps)`.
#[derive(Debug, Clone)]
pub struct UniPcMultistepScheduler {
    /// The timesteps and the float32 sigmas (one more: the sigma after the last step).
    schedule: MultistepSchedule,
    prediction_type: PredictionType,
    predict_x0: bool,
    /// `bh2` (B(h) = e^h - 1) rather than `bh1` (B(h) = h).
    bh2: bool,
    solver_order: usize,
    lower_order_final: bool,
    disable_corrector: Vec<usize>,
    // multistep state
    model_outputs: Vec<Option<Tensor>>,
    last_sample: Option<Tensor>,
    this_order: usize,
    lower_order_nums: usize,
    step_index: Option<usize>,
}

/// `(rhos, b)` coefficient machinery shared by the predictor and the corrector.
struct Coefficients {
    h_phi_1: f32,
    b_h: f32,
    /// `R` (rows: powers of the `rks`) and `b`, for `order` terms.
    r: Vec<Vec<f32>>,
    b: Vec<f32>,
}

impl UniPcMultistepScheduler {
    pub fn new(cfg: &SchedulerConfig, num_inference_steps: usize) -> Result<Self, SchedulerError> {
        check_supported(cfg, SchedulerKind::UniPc)?;
        let bh2 = match cfg.solver_type.as_str() {
            // diffusers maps DPM-Solver's solver types to bh2
            "bh2" | "midpoint" | "heun" | "logrho" => true,
            "bh1" => false,
            other => {
                return Err(SchedulerError::InvalidConfig(format!(
                    "UniPCMultistepScheduler solver_type {other:?} is not supported (bh1 or bh2)"
                )))
            }
        };
        if cfg.solver_order == 0 || cfg.solver_order > 4 {
            return Err(SchedulerError::InvalidConfig(format!(
                "UniPCMultistepScheduler solver_order must be 1 to 4, not {}",
                cfg.solver_order
            )));
        }
        let alphas_cumprod = cfg.alphas_cumprod(SchedulerKind::UniPc)?;
        let table = sigma_table(&alphas_cumprod);
        let t = cfg.num_train_timesteps;
        let (timesteps, mut sigmas, last): (Vec<f64>, Vec<f32>, f32) = if cfg.use_karras_sigmas {
            super::sigmas::check_steps(cfg, num_inference_steps)?;
            let log_sigmas = log_sigma_table(&table);
            let sigma_min = cfg.sigma_min.unwrap_or(table[0] as f64);
            let sigma_max = cfg.sigma_max.unwrap_or(table[t - 1] as f64);
            let karras = karras_sigmas(sigma_min, sigma_max, num_inference_steps);
            let timesteps = karras
                .iter()
                .map(|&s| np_round(sigma_to_t(s, &log_sigmas)))
                .collect();
            // with Karras sigmas, `sigma_min` means the schedule's own last sigma
            let last = match cfg.final_sigmas_type.as_str() {
                "sigma_min" => karras[karras.len() - 1] as f32,
                _ => final_sigma(cfg, &table)?,
            };
            (timesteps, karras.iter().map(|&s| s as f32).collect(), last)
        } else {
            let ts = multistep_timesteps(cfg, num_inference_steps, t)?;
            let sigmas = ts.iter().map(|&t| table[t as usize]).collect();
            (
                ts.into_iter().map(|t| t as f64).collect(),
                sigmas,
                final_sigma(cfg, &table)?,
            )
        };
        sigmas.push(last);
        Ok(Self {
            schedule: MultistepSchedule {
                timesteps,
                sigmas,
                name: "UniPC",
            },
            prediction_type: cfg.prediction_type,
            predict_x0: cfg.predict_x0,
            bh2,
            solver_order: cfg.solver_order,
            lower_order_final: cfg.lower_order_final,
            disable_corrector: cfg.disable_corrector.clone(),
            model_outputs: vec![None; cfg.solver_order],
            last_sample: None,
            this_order: 0,
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

    fn history(&self, k: usize) -> CandleResult<&Tensor> {
        self.model_outputs[self.solver_order - 1 - k]
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("UniPC: missing model output".into()))
    }

    /// diffusers' `convert_model_output`: x0 (`predict_x0`, the default) or the noise.
    fn convert_model_output(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        index: usize,
    ) -> CandleResult<Tensor> {
        let (alpha_t, sigma_t, _) = self.point(index)?;
        let at = (alpha_t, sigma_t);
        if self.predict_x0 {
            data_prediction(self.prediction_type, model_output, sample, at)
        } else {
            noise_prediction(self.prediction_type, model_output, sample, at)
        }
    }

    /// `h_phi_1`, `B(h)`, `R` and `b` for `order` terms from the `rks` (without the final 1).
    fn coefficients(&self, h: f32, rks: &[f32], order: usize) -> Coefficients {
        let hh = if self.predict_x0 { -h } else { h };
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial_i: u64 = 1;
        let b_h = if self.bh2 { hh.exp_m1() } else { hh };
        let mut all_rks = rks.to_vec();
        all_rks.push(1.0);
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            r.push(all_rks.iter().map(|&rk| torch_pow(rk, i - 1)).collect());
            b.push(h_phi_k * factorial_i as f32 / b_h);
            factorial_i *= i as u64 + 1;
            h_phi_k = h_phi_k / hh - (1.0 / factorial_i as f64) as f32;
        }
        Coefficients { h_phi_1, b_h, r, b }
    }

    /// `sum_k rhos[k] * d1s[k]` (diffusers' einsum; zero terms when there are none).
    fn weighted(rhos: &[f32], d1s: &[Tensor]) -> CandleResult<Option<Tensor>> {
        let mut acc: Option<Tensor> = None;
        for (&rho, d) in rhos.iter().zip(d1s) {
            let term = mul(d, rho)?;
            acc = Some(match acc {
                Some(a) => (a + term)?,
                None => term,
            });
        }
        Ok(acc)
    }

    /// The UniP predictor from step `index` to `index + 1` (`multistep_uni_p_bh_update`).
    fn predict(&self, sample: &Tensor, index: usize, order: usize) -> CandleResult<Tensor> {
        let m0 = self.history(0)?;
        let (alpha_t, sigma_t, lambda_t) = self.point(index + 1)?;
        let (alpha_s0, sigma_s0, lambda_s0) = self.point(index)?;
        let h = lambda_t - lambda_s0;
        let mut rks = Vec::new();
        let mut d1s = Vec::new();
        for i in 1..order {
            let (_, _, lambda_si) = self.point(index - i)?;
            let rk = (lambda_si - lambda_s0) / h;
            rks.push(rk);
            d1s.push(div(&(self.history(i)? - m0)?, rk)?);
        }
        let c = self.coefficients(h, &rks, order);
        let rhos_p = match d1s.len() {
            0 => Vec::new(),
            1 => vec![0.5],
            k => solve(
                &c.r[..k]
                    .iter()
                    .map(|row| row[..k].to_vec())
                    .collect::<Vec<_>>(),
                &c.b[..k],
            )?,
        };
        let pred_res = Self::weighted(&rhos_p, &d1s)?;
        let x_t = if self.predict_x0 {
            (mul(sample, sigma_t / sigma_s0)? - mul(m0, alpha_t * c.h_phi_1)?)?
        } else {
            (mul(sample, alpha_t / alpha_s0)? - mul(m0, sigma_t * c.h_phi_1)?)?
        };
        let scale = if self.predict_x0 { alpha_t } else { sigma_t };
        match pred_res {
            Some(res) => x_t - mul(&res, scale * c.b_h)?,
            None => Ok(x_t),
        }
    }

    /// The UniC corrector of the sample at step `index` from the previous step's sample
    /// (`multistep_uni_c_bh_update`), with this step's converted model output.
    fn correct(
        &self,
        this_model_output: &Tensor,
        last_sample: &Tensor,
        index: usize,
        order: usize,
    ) -> CandleResult<Tensor> {
        let m0 = self.history(0)?;
        let (alpha_t, sigma_t, lambda_t) = self.point(index)?;
        let (alpha_s0, sigma_s0, lambda_s0) = self.point(index - 1)?;
        let h = lambda_t - lambda_s0;
        let mut rks = Vec::new();
        let mut d1s = Vec::new();
        for i in 1..order {
            let (_, _, lambda_si) = self.point(index - (i + 1))?;
            let rk = (lambda_si - lambda_s0) / h;
            rks.push(rk);
            d1s.push(div(&(self.history(i)? - m0)?, rk)?);
        }
        let c = self.coefficients(h, &rks, order);
        let rhos_c = if order == 1 {
            vec![0.5]
        } else {
            solve(&c.r, &c.b)?
        };
        let x_t = if self.predict_x0 {
            (mul(last_sample, sigma_t / sigma_s0)? - mul(m0, alpha_t * c.h_phi_1)?)?
        } else {
            (mul(last_sample, alpha_t / alpha_s0)? - mul(m0, sigma_t * c.h_phi_1)?)?
        };
        let d1_t = (this_model_output - m0)?;
        let last_rho = rhos_c[rhos_c.len() - 1];
        let corr = match Self::weighted(&rhos_c[..rhos_c.len() - 1], &d1s)? {
            Some(res) => (res + mul(&d1_t, last_rho)?)?,
            None => mul(&d1_t, last_rho)?,
        };
        let scale = if self.predict_x0 { alpha_t } else { sigma_t };
        x_t - mul(&corr, scale * c.b_h)?
    }
}

/// `torch.pow(x, k)` for a small whole exponent on a float32 value.
fn torch_pow(x: f32, k: usize) -> f32 {
    match k {
        0 => 1.0,
        1 => x,
        2 => x * x,
        3 => x * x * x,
        _ => x.powi(k as i32),
    }
}

/// `torch.linalg.solve` of a small float32 system: LU with partial pivoting (LAPACK `sgesv`:
/// the pivot column scaled by the pivot's reciprocal), then the two triangular solves.
fn solve(a: &[Vec<f32>], b: &[f32]) -> CandleResult<Vec<f32>> {
    let n = b.len();
    let mut m: Vec<Vec<f32>> = a.iter().map(|row| row[..n].to_vec()).collect();
    let mut x = b.to_vec();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| {
                m[i][col]
                    .abs()
                    .partial_cmp(&m[j][col].abs())
                    .unwrap_or(std::cmp::Ordering::Equal)
                    // the first of equal maxima, like `isamax`
                    .then(j.cmp(&i))
            })
            .unwrap_or(col);
        if m[pivot][col] == 0.0 || !m[pivot][col].is_finite() {
            return Err(candle_core::Error::Msg(
                "UniPC: singular coefficient system (repeated sigmas?)".into(),
            ));
        }
        m.swap(col, pivot);
        x.swap(col, pivot);
        let inv = 1.0 / m[col][col];
        let (upper, lower) = m.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for (offset, row) in lower.iter_mut().enumerate() {
            let l = row[col] * inv;
            row[col] = l;
            for (r, p) in row[col + 1..].iter_mut().zip(&pivot_row[col + 1..]) {
                *r -= l * p;
            }
            x[col + 1 + offset] -= l * x[col];
        }
    }
    for col in (0..n).rev() {
        x[col] /= m[col][col];
        for row in 0..col {
            x[row] -= x[col] * m[row][col];
        }
    }
    Ok(x)
}

impl Scheduler for UniPcMultistepScheduler {
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
        let converted = self.convert_model_output(model_output, sample, index)?;
        let sample = match &self.last_sample {
            Some(last) if index > 0 && !self.disable_corrector.contains(&(index - 1)) => {
                self.correct(&converted, last, index, self.this_order)?
            }
            _ => sample.clone(),
        };
        self.model_outputs.rotate_left(1);
        if let Some(last) = self.model_outputs.last_mut() {
            *last = Some(converted);
        }
        let n = self.schedule.timesteps.len();
        let order = if self.lower_order_final {
            self.solver_order.min(n - index)
        } else {
            self.solver_order
        };
        self.this_order = order.min(self.lower_order_nums + 1);
        let prev = self.predict(&sample, index, self.this_order)?;
        self.last_sample = Some(sample);
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
        if self.predict_x0 {
            return Ok(converted);
        }
        let (alpha_t, sigma_t, _) = self.point(index)?;
        x0_from_noise(&converted, sample, (alpha_t, sigma_t))
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> CandleResult<Tensor> {
        self.schedule.add_noise(original, noise, timestep)
    }
}
