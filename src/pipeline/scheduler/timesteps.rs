//! diffusers' inference timesteps, with numpy's arithmetic (`np.linspace`, float-step `np.arange`,
//! round-half-to-even).

use super::{SchedulerConfig, SchedulerError, TimestepSpacing};

// ---------------------------------------------------------------------------------------------------
// numpy timestep arithmetic

/// `np.round`: round half to even.
pub(super) fn np_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// `np.linspace(0, stop, n)` (float64): `i * step`, the last element set to `stop`.
pub(super) fn np_linspace_from_zero(stop: f64, n: usize) -> Vec<f64> {
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
pub(super) fn np_arange_down_to_zero(start: f64, step: f64) -> Vec<f64> {
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
pub(super) fn checked_base_timesteps(
    cfg: &SchedulerConfig,
    n: usize,
) -> Result<Vec<usize>, SchedulerError> {
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
