//! GEGLU's gating (`h · gelu(g)`) in one pass, with PyTorch's erf.

use super::{exp, f32_slice};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// GEGLU's gating, `h · gelu(g)` where `[h, g]` are the two halves of the last dimension of
/// `xs`, in one pass over memory instead of a narrow, a GELU and a product. CPU, f32; erf is
/// computed as PyTorch's vectorised CPU kernel computes it (see [`erf`]).
pub fn geglu(xs: &Tensor) -> Result<Tensor> {
    xs.contiguous()?.apply_op1_no_bwd(&FusedGeglu)
}

struct FusedGeglu;

impl candle_core::CustomOp1 for FusedGeglu {
    fn name(&self) -> &'static str {
        "glichen-fused-geglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let xs = f32_slice(s, l, "input")?;
        let dims = l.shape().dims();
        let two = *dims.last().unwrap_or(&0);
        if !two.is_multiple_of(2) || two == 0 {
            candle_core::bail!("fused GEGLU: last dimension {two} is not even");
        }
        let inner = two / 2;
        let mut out = vec![0f32; xs.len() / 2];
        out.par_chunks_mut(inner)
            .zip(xs.par_chunks(two))
            .for_each(|(o, x)| {
                let (h, g) = x.split_at(inner);
                geglu_row(h, g, o);
            });
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().unwrap() = inner;
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

super::dispatch_simd!(fn geglu_row(h: &[f32], g: &[f32], out: &mut [f32]) -> () => geglu_row_portable);

#[inline(always)]
fn geglu_row_portable(h: &[f32], g: &[f32], out: &mut [f32]) {
    for ((o, &h), &g) in out.iter_mut().zip(h).zip(g) {
        *o = h * (g * 0.5 * (1.0 + erf(g * std::f32::consts::FRAC_1_SQRT_2)));
    }
}

/// erf as PyTorch's vectorised CPU GELU computes it (`Vectorized<float>::erf`, Abramowitz and
/// Stegun 7.1.26, 1.5e-7 in exact arithmetic, 4.7e-7 in f32): the reference's own arithmetic,
/// and branch-free.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (0.327_591_1 * a + 1.0);
    let r =
        (((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t + 0.254_829_6;
    let y = 1.0 - r * t * exp(-(a * a));
    if x < 0.0 {
        -y
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_geglu_matches_candle() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let xs = (Tensor::randn(0f32, 1.0, (2, 7, 2 * 13), &dev)? * 3.0)?;
        let got = geglu(&xs)?;
        let halves = xs.chunk(2, candle_core::D::Minus1)?;
        let want = (&halves[0] * halves[1].gelu_erf()?)?;
        let diff = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff <= 1e-6 * scale, "{diff} of {scale}");
        Ok(())
    }

    #[test]
    fn erf_is_within_pytorch_bound() {
        let mut worst = 0f64;
        let mut x = -6.0f64;
        while x <= 6.0 {
            let want = candle_core::cpu::erf::erf_f64(x);
            worst = worst.max((erf(x as f32) as f64 - want).abs());
            x += 0.000_7;
        }
        // The formula's own 1.5e-7 plus f32 rounding of `1 - r·t·e` near 0, as PyTorch's kernel
        // evaluates it too.
        assert!(worst < 5e-7, "worst absolute error {worst}");
    }
}
