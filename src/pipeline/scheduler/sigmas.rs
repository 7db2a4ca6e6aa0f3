//! What DPM-Solver, Euler and UniPC share: the sigma table `((1 - ᾱ) / ᾱ) ^ ½`, their timestep
//! spacings (which differ from DDIM's), Karras sigmas, numpy's `interp`, the sigma-to-timestep
//! inversion, and `index_for_timestep`.
//!
//! diffusers builds these schedules in numpy float64 from float32 tables and stores the sigmas as
//! float32; each function says which precision each value has, because a timestep that rounds
//! differently is a different UNet input.

use candle_core::{Result as CandleResult, Tensor};

use super::timesteps::{np_arange_down_to_zero, np_linspace_from_zero, np_round};
use super::{
    div, mul, PredictionType, SchedulerConfig, SchedulerError, SchedulerKind, TimestepSpacing,
};

/// Karras et al.'s rho.
const KARRAS_RHO: f64 = 7.0;

/// The float32 sigma of each training timestep: `((1 - ᾱ) / ᾱ) ** 0.5`, each operation in f32.
pub(super) fn sigma_table(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod
        .iter()
        .map(|&a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// `np.log` of the float32 sigma table (float32 results).
pub(super) fn log_sigma_table(sigmas: &[f32]) -> Vec<f32> {
    sigmas.iter().map(|s| s.ln()).collect()
}

/// `np.interp(x, arange(len(fp)), fp)` in float64: the clamped ends, the exact table value on a
/// grid point, else `slope * (x - j) + fp[j]`.
pub(super) fn np_interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j] as f64;
    }
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - j as f64) + fp[j] as f64
}

/// diffusers' `_convert_to_karras`: `sigma_min` / `sigma_max` from the config when set, else the
/// last and first of `in_sigmas` (a float64 view), in float64.
pub(super) fn karras_sigmas(
    sigma_min: f64,
    sigma_max: f64,
    num_inference_steps: usize,
) -> Vec<f64> {
    let ramp = np_linspace_from_zero(1.0, num_inference_steps);
    let min_inv_rho = sigma_min.powf(1.0 / KARRAS_RHO);
    let max_inv_rho = sigma_max.powf(1.0 / KARRAS_RHO);
    ramp.into_iter()
        .map(|r| (max_inv_rho + r * (min_inv_rho - max_inv_rho)).powf(KARRAS_RHO))
        .collect()
}

/// diffusers' `_sigma_to_t`: the fractional training timestep whose log-sigma matches, by linear
/// interpolation in the float32 log-sigma table (the differences `low - high` are float32, the
/// rest float64, as numpy promotes them).
pub(super) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // argmax of the cumulative count of `log_sigma >= log_sigmas[i]`: the last such i, or 0
    let low_idx = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l as f64 >= 0.0)
        .unwrap_or(0)
        .min(log_sigmas.len().saturating_sub(2));
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// The sigma after the last step: `zero`, or `sigma_min` = the float32 sigma of timestep 0.
pub(super) fn final_sigma(cfg: &SchedulerConfig, sigmas: &[f32]) -> Result<f32, SchedulerError> {
    match cfg.final_sigmas_type.as_str() {
        "zero" => Ok(0.0),
        "sigma_min" => Ok(sigmas[0]),
        other => Err(SchedulerError::InvalidConfig(format!(
            "final_sigmas_type must be \"zero\" or \"sigma_min\", not {other:?}"
        ))),
    }
}

/// The options every sigma scheduler refuses rather than silently ignores.
pub(super) fn check_supported(
    cfg: &SchedulerConfig,
    kind: SchedulerKind,
) -> Result<(), SchedulerError> {
    if cfg.thresholding {
        return Err(SchedulerError::ThresholdingUnsupported);
    }
    if let Some(option) = cfg.unsupported.first() {
        return Err(SchedulerError::InvalidConfig(format!(
            "{} with `{option}` is not supported; remove it from the scheduler config",
            kind.class_name()
        )));
    }
    Ok(())
}

/// The step count checks diffusers' callers rely on.
pub(super) fn check_steps(cfg: &SchedulerConfig, n: usize) -> Result<(), SchedulerError> {
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
    Ok(())
}

/// DPM-Solver's and UniPC's integer timesteps, descending: `linspace` over `last_timestep`
/// (N + 1 points, the last dropped), `leading` with ratio `last // (N + 1)`, `trailing` from
/// `last_timestep`. Negative timesteps (trailing's spurious `-1`) are dropped, as for DDIM.
pub(super) fn multistep_timesteps(
    cfg: &SchedulerConfig,
    n: usize,
    last_timestep: usize,
) -> Result<Vec<i64>, SchedulerError> {
    check_steps(cfg, n)?;
    let t = cfg.num_train_timesteps;
    let ts: Vec<i64> = match cfg.timestep_spacing {
        TimestepSpacing::Linspace => {
            let mut v: Vec<i64> = np_linspace_from_zero(last_timestep as f64 - 1.0, n + 1)
                .into_iter()
                .map(|x| np_round(x) as i64)
                .collect();
            v.reverse();
            v.pop();
            v
        }
        TimestepSpacing::Leading | TimestepSpacing::LdmUniform => {
            let ratio = last_timestep / (n + 1);
            let mut v: Vec<i64> = (0..=n)
                .map(|i| (i * ratio) as i64 + cfg.steps_offset as i64)
                .collect();
            v.reverse();
            v.pop();
            v
        }
        TimestepSpacing::Trailing => {
            np_arange_down_to_zero(last_timestep as f64, t as f64 / n as f64)
                .into_iter()
                .map(|x| np_round(x) as i64 - 1)
                .collect()
        }
    };
    check_range(cfg, n, ts.into_iter().filter(|&x| x >= 0).collect())
}

fn check_range(cfg: &SchedulerConfig, n: usize, ts: Vec<i64>) -> Result<Vec<i64>, SchedulerError> {
    if let Some(&bad) = ts.iter().find(|&&x| x >= cfg.num_train_timesteps as i64) {
        return Err(SchedulerError::TimestepOutOfRange {
            timestep: bad,
            train: cfg.num_train_timesteps,
            steps_offset: cfg.steps_offset,
            steps: n,
        });
    }
    Ok(ts)
}

/// Euler's float32 timesteps, descending: `np.linspace(0, T - 1, N, dtype=float32)`, `leading`
/// with ratio `T // N` plus the offset, `trailing` from T.
pub(super) fn euler_timesteps(cfg: &SchedulerConfig, n: usize) -> Result<Vec<f32>, SchedulerError> {
    check_steps(cfg, n)?;
    let t = cfg.num_train_timesteps;
    let mut ts: Vec<f32> = match cfg.timestep_spacing {
        TimestepSpacing::Linspace => {
            let mut v: Vec<f32> = np_linspace_from_zero((t - 1) as f64, n)
                .into_iter()
                .map(|x| x as f32)
                .collect();
            v.reverse();
            v
        }
        TimestepSpacing::Leading | TimestepSpacing::LdmUniform => {
            let ratio = t / n;
            (0..n)
                .rev()
                .map(|i| (i * ratio) as f32 + cfg.steps_offset as f32)
                .collect()
        }
        TimestepSpacing::Trailing => np_arange_down_to_zero(t as f64, t as f64 / n as f64)
            .into_iter()
            .map(|x| np_round(x) as f32 - 1.0)
            .collect(),
    };
    ts.retain(|&x| x >= 0.0);
    if let Some(&bad) = ts.iter().find(|&&x| x > (t - 1) as f32) {
        return Err(SchedulerError::TimestepOutOfRange {
            timestep: bad as i64,
            train: t,
            steps_offset: cfg.steps_offset,
            steps: n,
        });
    }
    Ok(ts)
}

/// `alpha_t, sigma_t` of a sigma, in float32 like the 0-d tensors: `1 / (sigma² + 1) ** 0.5` and
/// `sigma * alpha_t`.
pub(super) fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// `log(alpha_t) - log(sigma_t)` (infinite at sigma 0, as in torch).
pub(super) fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

/// diffusers' `index_for_timestep` of the multistep schedulers: the second match when the
/// timestep occurs more than once (so that a schedule starting in the middle does not skip a
/// step), the only match, or — DPM-Solver and UniPC — the last index when there is none.
pub(super) fn index_for_timestep(timesteps: &[f64], timestep: f64) -> Option<usize> {
    let mut matches = timesteps
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == timestep)
        .map(|(i, _)| i);
    let first = matches.next()?;
    Some(matches.next().unwrap_or(first))
}

/// What the multistep solvers (DPM-Solver, UniPC) share: their timesteps, their float32 sigmas
/// (one more: the final one) and the lookups diffusers writes the same way in both classes.
#[derive(Debug, Clone)]
pub(super) struct MultistepSchedule {
    pub(super) timesteps: Vec<f64>,
    pub(super) sigmas: Vec<f32>,
    /// Names the solver in errors.
    pub(super) name: &'static str,
}

impl MultistepSchedule {
    /// `index_for_timestep`, falling back to the last step when the timestep is not found.
    pub(super) fn lookup(&self, timestep: f64) -> usize {
        index_for_timestep(&self.timesteps, timestep).unwrap_or(self.timesteps.len() - 1)
    }

    /// The step `timestep` is at: the running counter once stepping has begun.
    pub(super) fn index(&self, step_index: Option<usize>, timestep: f64) -> usize {
        step_index.unwrap_or_else(|| self.lookup(timestep))
    }

    /// `(alpha, sigma, lambda)` of the sigma at `index`.
    pub(super) fn point(&self, index: usize) -> CandleResult<(f32, f32, f32)> {
        let sigma = self.sigmas.get(index).copied().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "{}: step {index} is past the schedule's {} steps",
                self.name,
                self.timesteps.len()
            ))
        })?;
        let (alpha, sigma) = alpha_sigma(sigma);
        Ok((alpha, sigma, lambda(alpha, sigma)))
    }

    /// diffusers' `add_noise`: the timestep looked up afresh (the GLIGEN pipeline sets no begin
    /// index), `alpha_t · original + sigma_t · noise`.
    pub(super) fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        timestep: f64,
    ) -> CandleResult<Tensor> {
        let (alpha_t, sigma_t, _) = self.point(self.lookup(timestep))?;
        mul(original, alpha_t)? + mul(noise, sigma_t)?
    }
}

/// x0 from a model output at `(alpha_t, sigma_t)` (`convert_model_output`'s data prediction).
pub(super) fn data_prediction(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    (alpha_t, sigma_t): (f32, f32),
) -> CandleResult<Tensor> {
    match prediction {
        PredictionType::Epsilon => div(&(sample - mul(model_output, sigma_t)?)?, alpha_t),
        PredictionType::Sample => Ok(model_output.clone()),
        PredictionType::VPrediction => mul(sample, alpha_t)? - mul(model_output, sigma_t)?,
    }
}

/// The noise from a model output at `(alpha_t, sigma_t)` (`convert_model_output`'s noise
/// prediction).
pub(super) fn noise_prediction(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    (alpha_t, sigma_t): (f32, f32),
) -> CandleResult<Tensor> {
    match prediction {
        PredictionType::Epsilon => Ok(model_output.clone()),
        PredictionType::Sample => div(&(sample - mul(model_output, alpha_t)?)?, sigma_t),
        PredictionType::VPrediction => mul(model_output, alpha_t)? + mul(sample, sigma_t)?,
    }
}

/// x0 from a noise prediction at `(alpha_t, sigma_t)` (for previews of noise-predicting solvers).
pub(super) fn x0_from_noise(
    eps: &Tensor,
    sample: &Tensor,
    (alpha_t, sigma_t): (f32, f32),
) -> CandleResult<Tensor> {
    div(&(sample - mul(eps, sigma_t)?)?, alpha_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_hits_grid_points_exactly_and_interpolates_between() {
        let fp = [1.0f32, 2.0, 4.0];
        assert_eq!(np_interp(0.0, &fp), 1.0);
        assert_eq!(np_interp(1.0, &fp), 2.0);
        assert_eq!(np_interp(1.5, &fp), 3.0);
        assert_eq!(np_interp(7.0, &fp), 4.0);
        assert_eq!(np_interp(-1.0, &fp), 1.0);
    }

    #[test]
    fn sigma_to_t_inverts_the_table() {
        let sigmas = [0.1f32, 0.2, 0.4, 0.8];
        let logs = log_sigma_table(&sigmas);
        assert!((sigma_to_t(0.2, &logs) - 1.0).abs() < 1e-6);
        assert!((sigma_to_t(0.8, &logs) - 3.0).abs() < 1e-6);
        let mid = sigma_to_t((0.2f64 * 0.4).sqrt(), &logs);
        assert!((mid - 1.5).abs() < 1e-6, "{mid}");
        // beyond the ends: clamped
        assert_eq!(sigma_to_t(0.01, &logs), 0.0);
        assert_eq!(sigma_to_t(10.0, &logs), 3.0);
    }

    #[test]
    fn duplicate_timesteps_resolve_to_the_second() {
        assert_eq!(index_for_timestep(&[9.0, 5.0, 5.0, 1.0], 5.0), Some(2));
        assert_eq!(index_for_timestep(&[9.0, 5.0, 1.0], 1.0), Some(2));
        assert_eq!(index_for_timestep(&[9.0, 5.0, 1.0], 3.0), None);
    }
}
