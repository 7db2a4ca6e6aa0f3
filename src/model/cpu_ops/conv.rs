//! 2-D convolution through im2col in cache-sized tiles, or Winograd for the 3×3 stride-1 ones
//! large enough to pay for its transforms.

use super::amx::{product_packed, PackedBf16, PackedRows};
use super::winograd;
use super::{f32_slice, SendPtr, SCRATCH};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// A 2-D convolution (`[batch, in, h, w]` by `[out, in, kh, kw]`, groups 1, dilation 1) plus
/// bias, CPU f32. Output pixels are processed in tiles: a tile's im2col matrix (rows in the
/// weight's `(in, ky, kx)` order, so the weight is used as stored) stays around 4 MiB, and the
/// product is written straight into the NCHW output, which already holds the bias.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_with(x, weight, bias, stride, padding, !im2col_forced())
}

/// [`conv2d`] with bf16 tile products on AMX: `packed` is `weight` as a `[out, in·kh·kw]`
/// [`PackedRows`]; each tile of output pixels is rounded to bf16 once and every output channel
/// multiplies it with f32 accumulation onto the bias.
pub fn conv2d_bf16(
    x: &Tensor,
    weight: &Tensor,
    packed: Arc<PackedRows>,
    bias: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let op = FusedConv2d {
        stride,
        padding,
        winograd: false,
        amx: Some(packed),
    };
    apply(x, weight, bias, &op)
}

/// [`conv2d`], with Winograd allowed or not (tests compare the two in one process).
pub(super) fn conv2d_with(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    winograd: bool,
) -> Result<Tensor> {
    let op = FusedConv2d {
        stride,
        padding,
        winograd,
        amx: None,
    };
    apply(x, weight, bias, &op)
}

fn apply(x: &Tensor, weight: &Tensor, bias: &Tensor, op: &FusedConv2d) -> Result<Tensor> {
    let (x, weight, bias) = (x.contiguous()?, weight.contiguous()?, bias.contiguous()?);
    x.apply_op3_no_bwd(&weight, &bias, op)
}

/// The `[batch, out, pixels]` output holding each channel's bias: the products accumulate onto
/// it.
fn biased_output(b: usize, bias: &[f32], pix: usize) -> Vec<f32> {
    let co = bias.len();
    let mut out = vec![0f32; b * co * pix];
    for (i, row) in out.chunks_exact_mut(pix).enumerate() {
        row.fill(bias[i % co]);
    }
    out
}

/// `GLICHEN_CONV=im2col` keeps every convolution on im2col (to compare against Winograd, or to
/// fall back), read once.
fn im2col_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| {
        std::env::var("GLICHEN_CONV").is_ok_and(|v| v.trim().eq_ignore_ascii_case("im2col"))
    })
}

struct FusedConv2d {
    stride: usize,
    padding: usize,
    /// Whether 3×3 stride-1 convolutions may take the Winograd path.
    winograd: bool,
    /// The weight packed for bf16 tile products ([`conv2d_bf16`]).
    amx: Option<Arc<PackedRows>>,
}

/// im2col elements per tile (4 MiB of f32).
pub(crate) const CONV_TILE_ELEMENTS: usize = 1 << 20;

impl CustomOp3 for FusedConv2d {
    fn name(&self) -> &'static str {
        "glichen-fused-conv2d"
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
        let (b, c, h, w) = l1.shape().dims4()?;
        let (co, ci, kh, kw) = l2.shape().dims4()?;
        let nb = l3.shape().dims1()?;
        let (s, p) = (self.stride.max(1), self.padding);
        if ci != c || nb != co || h + 2 * p < kh || w + 2 * p < kw {
            candle_core::bail!(
                "fused conv2d: input {:?}, weight {:?}, bias {:?} (stride {s}, padding {p}) do not fit",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let (x, wt, bias) = (
            f32_slice(s1, l1, "input")?,
            f32_slice(s2, l2, "weight")?,
            f32_slice(s3, l3, "bias")?,
        );
        let (ho, wo) = ((h + 2 * p - kh) / s + 1, (w + 2 * p - kw) / s + 1);
        if let Some(a) = &self.amx {
            if a.rows() != co || a.k() != ci * kh * kw {
                candle_core::bail!(
                    "fused conv2d: packed weight {}x{} does not fit {:?}",
                    a.rows(),
                    a.k(),
                    l2.shape()
                );
            }
            let geometry = Geometry {
                input: (b, c, h, w),
                kernel: (kh, kw),
                stride: s,
                padding: p,
                output: (ho, wo),
            };
            let out = amx_conv(a, x, bias, &geometry)?;
            return Ok((CpuStorage::F32(out), Shape::from((b, co, ho, wo))));
        }
        if self.winograd && kh == 3 && kw == 3 && s == 1 && winograd::pays(b, c, co, ho, wo) {
            let out = winograd::conv3x3(x, wt, bias, (b, c, h, w), co, p)?;
            return Ok((CpuStorage::F32(out), Shape::from((b, co, ho, wo))));
        }
        let pix = ho * wo;
        let ksz = c * kh * kw;
        let mut out = biased_output(b, bias, pix);
        let direct = kh == 1 && kw == 1 && s == 1 && p == 0;
        let tile = if direct {
            pix.min(CONV_TILE_ELEMENTS / c.max(1)).max(1)
        } else {
            (CONV_TILE_ELEMENTS / ksz.max(1))
                .clamp(32, pix.max(32))
                .min(pix)
        };
        let tiles = pix.div_ceil(tile);
        let threads = rayon::current_num_threads();
        let out_ptr = SendPtr(out.as_mut_ptr());
        let run = |task: usize, par: gemm::Parallelism| {
            let (bi, ti) = (task / tiles, task % tiles);
            let t0 = ti * tile;
            let tn = tile.min(pix - t0);
            let xb = &x[bi * c * h * w..(bi + 1) * c * h * w];
            let run_gemm = |rhs: *const f32, rhs_rs: usize| unsafe {
                // SAFETY: the destination is columns t0..t0+tn of batch bi, which only this
                // task writes; operands are inside their slices by construction.
                gemm::gemm(
                    co,
                    tn,
                    ksz,
                    out_ptr.get().add(bi * co * pix + t0),
                    1,
                    pix as isize,
                    true,
                    wt.as_ptr(),
                    1,
                    ksz as isize,
                    rhs,
                    1,
                    rhs_rs as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            };
            if direct {
                run_gemm(xb[t0..].as_ptr(), pix);
                return;
            }
            SCRATCH.with(|scratch| {
                let mut col = scratch.borrow_mut();
                if col.len() < ksz * tn {
                    col.resize(ksz * tn, 0.0);
                }
                let col = &mut col[..ksz * tn];
                im2col_tile(xb, (c, h, w), (kh, kw), s, p, wo, t0, tn, col);
                run_gemm(col.as_ptr(), tn);
            });
        };
        let tasks = b * tiles;
        // A cancel stops the remaining tiles (the worker threads do not see the caller's flag).
        let stop = crate::model::interrupt::current();
        let stopped = || crate::model::interrupt::is_set(stop.as_ref());
        if tasks >= 2 * threads {
            (0..tasks).into_par_iter().for_each(|t| {
                if !stopped() {
                    run(t, gemm::Parallelism::None);
                }
            });
        } else {
            for t in 0..tasks {
                if stopped() {
                    break;
                }
                run(t, gemm::Parallelism::Rayon(threads));
            }
        }
        if stopped() {
            return Err(crate::model::interrupt::interrupted());
        }
        Ok((CpuStorage::F32(out), Shape::from((b, co, ho, wo))))
    }
}

/// A convolution's sizes.
struct Geometry {
    input: (usize, usize, usize, usize),
    kernel: (usize, usize),
    stride: usize,
    padding: usize,
    output: (usize, usize),
}

/// The bf16 path: per tile of output pixels, the im2col patches (or, for a 1×1 convolution, the
/// input itself) packed once as the bf16 B operand, and every output channel's row of the packed
/// weight multiplied onto the bias in the NCHW output.
fn amx_conv(a: &PackedRows, x: &[f32], bias: &[f32], g: &Geometry) -> Result<Vec<f32>> {
    let (b, c, h, w) = g.input;
    let (kh, kw) = g.kernel;
    let (s, p) = (g.stride, g.padding);
    let (ho, wo) = g.output;
    let co = a.rows();
    let (pix, ksz) = (ho * wo, c * kh * kw);
    let mut out = biased_output(b, bias, pix);
    let direct = kh == 1 && kw == 1 && s == 1 && p == 0;
    // Whole 32-pixel blocks per tile, a few MiB of patches each.
    let tile = ((CONV_TILE_ELEMENTS / ksz.max(1)) / 32 * 32)
        .clamp(32, 512)
        .min(pix);
    let tiles = pix.div_ceil(tile);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let stop = crate::model::interrupt::current();
    (0..b * tiles).into_par_iter().for_each(|task| {
        if crate::model::interrupt::is_set(stop.as_ref()) {
            return;
        }
        let (bi, ti) = (task / tiles, task % tiles);
        let t0 = ti * tile;
        let tn = tile.min(pix - t0);
        let xb = &x[bi * c * h * w..(bi + 1) * c * h * w];
        let patches = if direct {
            PackedBf16::pack_k_major(&xb[t0..], pix, tn, c)
        } else {
            SCRATCH.with(|scratch| {
                let mut col = scratch.borrow_mut();
                if col.len() < ksz * tn {
                    col.resize(ksz * tn, 0.0);
                }
                let col = &mut col[..ksz * tn];
                im2col_tile(xb, (c, h, w), (kh, kw), s, p, wo, t0, tn, col);
                PackedBf16::pack_k_major(col, tn, tn, ksz)
            })
        };
        // SAFETY: columns t0..t0+tn of every output channel of batch bi are this task's alone;
        // rows are `pix` apart.
        unsafe {
            product_packed(
                a,
                &patches,
                out_ptr.get().add(bi * co * pix + t0),
                pix,
                true,
            );
        }
    });
    if crate::model::interrupt::is_set(stop.as_ref()) {
        return Err(crate::model::interrupt::interrupted());
    }
    Ok(out)
}

/// Fills `col` (`[c·kh·kw, tn]`) with the input patches of output pixels `t0..t0+tn` (row-major
/// over an output `wo` wide), zero where the window hangs over the padding.
#[allow(clippy::too_many_arguments)]
fn im2col_tile(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    (kh, kw): (usize, usize),
    s: usize,
    p: usize,
    wo: usize,
    t0: usize,
    tn: usize,
    col: &mut [f32],
) {
    for ci in 0..c {
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &mut col[((ci * kh + ky) * kw + kx) * tn..][..tn];
                let mut t = 0;
                while t < tn {
                    let (oy, ox0) = ((t0 + t) / wo, (t0 + t) % wo);
                    let run = (wo - ox0).min(tn - t);
                    let dst = &mut row[t..t + run];
                    let iy = (oy * s + ky) as isize - p as isize;
                    if iy < 0 || iy >= h as isize {
                        dst.fill(0.0);
                    } else {
                        let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                        if s == 1 {
                            // ix = ox + kx - p is valid for ox in [lo, hi).
                            let lo = p.saturating_sub(kx).clamp(ox0, ox0 + run);
                            let hi = (w + p).saturating_sub(kx).clamp(lo, ox0 + run);
                            dst[..lo - ox0].fill(0.0);
                            dst[lo - ox0..hi - ox0].copy_from_slice(&src[lo + kx - p..hi + kx - p]);
                            dst[hi - ox0..].fill(0.0);
                        } else {
                            for (j, d) in dst.iter_mut().enumerate() {
                                let ix = ((ox0 + j) * s + kx) as isize - p as isize;
                                *d = if ix >= 0 && ix < w as isize {
                                    src[ix as usize]
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                    t += run;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_conv_matches_candle() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        // (batch, in, out, h, w, k, stride, padding): 3×3 same, stride-2 downsampler, 1×1, odd
        // sizes whose tiles cut through rows.
        for &(b, ci, co, h, w, k, s, p) in &[
            (2, 5, 7, 9, 11, 3, 1, 1),
            (1, 3, 4, 10, 7, 3, 2, 0),
            (2, 6, 3, 5, 5, 1, 1, 0),
            (1, 130, 9, 33, 47, 3, 1, 1),
            (2, 4, 4, 8, 8, 3, 2, 1),
        ] {
            let x = Tensor::randn(0f32, 1.0, (b, ci, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (co, ci, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, co, &dev)?;
            let got = conv2d(&x, &wt, &bias, s, p)?;
            let want = x
                .conv2d(&wt, p, s, 1, 1)?
                .broadcast_add(&bias.reshape((1, co, 1, 1))?)?;
            assert_eq!(got.dims(), want.dims());
            let diff = (&got - &want)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
            let norm = want.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
            assert!(
                diff / norm < 1e-6,
                "{b} {ci} {co} {h} {w} {k} {s} {p}: {}",
                diff / norm
            );
            // bf16 tile products where the CPU has AMX: within bf16 rounding (~4e-3 per
            // operand) of f32, and not equal to it.
            let (co_, ci_, kh, kw) = wt.dims4()?;
            let packed = PackedRows::pack(&wt.flatten_all()?.to_vec1::<f32>()?, co_, ci_ * kh * kw);
            if let Some(packed) = packed {
                let got = conv2d_bf16(&x, &wt, Arc::new(packed), &bias, s, p)?;
                let diff = (&got - &want)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
                let rel = diff / norm;
                assert!(
                    rel > 1e-6 && rel < 1e-2,
                    "bf16 {b} {ci} {co} {h} {w} {k} {s} {p}: {rel}"
                );
            }
        }
        Ok(())
    }
}
