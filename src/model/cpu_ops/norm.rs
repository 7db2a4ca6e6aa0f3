//! GroupNorm, optionally fused with the SiLU that follows it.

use super::{exp, f32_slice};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// GroupNorm over `[batch, channels, ...]` with per-channel affine weight and bias, optionally
/// followed by SiLU, in two passes over each group (statistics in f64, then the normalised and
/// activated output). CPU, f32.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let (x, weight, bias) = (x.contiguous()?, weight.contiguous()?, bias.contiguous()?);
    x.apply_op3_no_bwd(&weight, &bias, &FusedGroupNorm { groups, eps, silu })
}

struct FusedGroupNorm {
    groups: usize,
    eps: f64,
    silu: bool,
}

impl CustomOp3 for FusedGroupNorm {
    fn name(&self) -> &'static str {
        "glichen-fused-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = l1.shape().dims();
        if dims.len() < 3 {
            candle_core::bail!("fused group norm: input {:?} has rank < 3", l1.shape());
        }
        let c = dims[1];
        let g = self.groups;
        if g == 0 || !c.is_multiple_of(g) || l2.shape().dims1()? != c || l3.shape().dims1()? != c {
            candle_core::bail!(
                "fused group norm: {g} groups, input {:?}, weight {:?}, bias {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let (x, w, b) = (
            f32_slice(s1, l1, "input")?,
            f32_slice(s2, l2, "weight")?,
            f32_slice(s3, l3, "bias")?,
        );
        let spatial: usize = dims[2..].iter().product();
        let cpg = c / g;
        let group_len = cpg * spatial;
        let mut out = vec![0f32; x.len()];
        let (eps, silu) = (self.eps, self.silu);
        out.par_chunks_mut(group_len)
            .zip(x.par_chunks(group_len))
            .enumerate()
            .for_each(|(i, (o, xg))| {
                let (mean, var) = moments(xg);
                let rstd = 1.0 / (var + eps).sqrt();
                let c0 = (i % g) * cpg;
                for (j, (oc, xc)) in o
                    .chunks_exact_mut(spatial.max(1))
                    .zip(xg.chunks_exact(spatial.max(1)))
                    .enumerate()
                {
                    let scale = (rstd * w[c0 + j] as f64) as f32;
                    let shift = (b[c0 + j] as f64 - mean * rstd * w[c0 + j] as f64) as f32;
                    affine_row(xc, oc, scale, shift, silu);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Mean and (biased) variance, accumulated in f64.
fn moments(x: &[f32]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| {
            let d = v as f64 - mean;
            d * d
        })
        .sum::<f64>()
        / n;
    (mean, var)
}

super::dispatch_simd!(fn affine_row(x: &[f32], out: &mut [f32], scale: f32, shift: f32, silu: bool) -> () => affine_row_portable);

#[inline(always)]
fn affine_row_portable(x: &[f32], out: &mut [f32], scale: f32, shift: f32, silu: bool) {
    if silu {
        for (o, &v) in out.iter_mut().zip(x) {
            let y = v * scale + shift;
            // y·sigmoid(y) with e^-|y| only, so that the exponential never overflows.
            let e = exp(-y.abs());
            let s = if y >= 0.0 {
                1.0 / (1.0 + e)
            } else {
                e / (1.0 + e)
            };
            *o = y * s;
        }
    } else {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v * scale + shift;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_group_norm_matches_candle() -> Result<()> {
        use candle_core::Module;
        let dev = candle_core::Device::Cpu;
        let x = ((Tensor::randn(0f32, 1.0, (2, 12, 5, 7), &dev)? * 4.0)? + 1.5)?;
        let w = Tensor::randn(0f32, 1.0, 12, &dev)?;
        let b = Tensor::randn(0f32, 1.0, 12, &dev)?;
        let gn = candle_nn::GroupNorm::new(w.clone(), b.clone(), 12, 4, 1e-5)?;
        let want = gn.forward(&x)?;
        for silu in [false, true] {
            let want = if silu {
                candle_nn::ops::silu(&want)?
            } else {
                want.clone()
            };
            let got = group_norm(&x, &w, &b, 4, 1e-5, silu)?;
            let diff = (&got - &want)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
            let norm = want.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
            assert!(diff / norm < 1e-6, "silu {silu}: {}", diff / norm);
        }
        Ok(())
    }
}
