//! Fused CPU kernels for the two operations that dominate a Stable Diffusion step on the CPU:
//! attention over thousands of tokens and 3×3 convolutions. candle's generic path materialises
//! every score matrix and softmax in main memory (attention) and a full im2col matrix (1.2 GB for
//! one 512×512 VAE convolution); these kernels keep each piece of work in the cache and write their
//! results straight into the layout the next layer reads, with the same f32 arithmetic up to
//! summation order (module parity stays at ~1e-6).
//!
//! Matrix products go through the `gemm` crate, the one candle's CPU backend uses, called
//! single-threaded inside rayon tasks so that many small products run side by side instead of
//! each one being split across threads.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;

/// Query rows per attention task: the task's score block (rows × keys f32) stays around 1 MiB at
/// 4096 keys, inside a core's L2.
const QUERY_BLOCK: usize = 64;

/// Whether the fused kernels can run on `t` (CPU, f32).
pub fn fused_cpu(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// Multi-head attention on `[batch, tokens, heads·dim]` tensors, the layout of the `to_q`,
/// `to_k`, `to_v` projections, returning `[batch, tokens, heads·dim_v]` ready for `to_out`:
/// softmax(q kᵀ · scale) v per head without splitting heads into separate copies. CPU, f32.
pub fn multi_head_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<Tensor> {
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    q.apply_op3_no_bwd(
        &k,
        &v,
        &FusedAttention {
            heads,
            scale,
            block: QUERY_BLOCK,
        },
    )
}

struct FusedAttention {
    heads: usize,
    scale: f32,
    /// Query rows per task.
    block: usize,
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d.as_slice(),
        _ => candle_core::bail!("fused CPU kernel: {what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("fused CPU kernel: {what} must be contiguous"),
    }
}

/// A raw pointer that may cross into rayon tasks; every task writes a disjoint region.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "glichen-fused-attention"
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
        let (b, n, qd) = l1.shape().dims3()?;
        let (bk, m, kd) = l2.shape().dims3()?;
        let (bv, mv, vd) = l3.shape().dims3()?;
        let h = self.heads;
        if bk != b || bv != b || mv != m || kd != qd || h == 0 || qd % h != 0 || vd % h != 0 {
            candle_core::bail!(
                "fused attention: shapes q {:?}, k {:?}, v {:?} do not fit {h} heads",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let (q, k, v) = (
            f32_slice(s1, l1, "q")?,
            f32_slice(s2, l2, "k")?,
            f32_slice(s3, l3, "v")?,
        );
        let (d, dv) = (qd / h, vd / h);
        let mut out = vec![0f32; b * n * vd];
        let out_ptr = SendPtr(out.as_mut_ptr());
        let qb = self.block.clamp(1, 512);
        let blocks = n.div_ceil(qb);
        let scale = self.scale;
        (0..b * h * blocks).into_par_iter().for_each(|task| {
            let out_ptr = out_ptr;
            let (bh, blk) = (task / blocks, task % blocks);
            let (bi, hi) = (bh / h, bh % h);
            let r0 = blk * qb;
            let rows = qb.min(n - r0);
            SCRATCH.with(|scratch| {
                let mut scores = scratch.borrow_mut();
                if scores.len() < rows * m {
                    scores.resize(rows * m, 0.0);
                }
                let scores = &mut scores[..rows * m];
                // SAFETY: all pointers stay inside q, k, v (offsets from their shapes) and the
                // output rows r0..r0+rows of head hi, which no other task touches.
                unsafe {
                    let q0 = q.as_ptr().add((bi * n + r0) * qd + hi * d);
                    let k0 = k.as_ptr().add(bi * m * kd + hi * d);
                    gemm::gemm(
                        rows,
                        m,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        m as isize,
                        false,
                        q0,
                        1,
                        qd as isize,
                        k0,
                        kd as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                let mut inv_sums = [0f32; 512];
                let inv_sums = &mut inv_sums[..rows];
                for (row, inv) in scores.chunks_exact_mut(m).zip(inv_sums.iter_mut()) {
                    *inv = 1.0 / softmax_numerator(row);
                }
                unsafe {
                    let v0 = v.as_ptr().add(bi * m * vd + hi * dv);
                    let o0 = out_ptr.0.add((bi * n + r0) * vd + hi * dv);
                    gemm::gemm(
                        rows,
                        dv,
                        m,
                        o0,
                        1,
                        vd as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        m as isize,
                        v0,
                        1,
                        vd as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                    for (r, inv) in inv_sums.iter().take(rows).enumerate() {
                        let row = std::slice::from_raw_parts_mut(o0.add(r * vd), dv);
                        for x in row {
                            *x *= inv;
                        }
                    }
                }
            });
        });
        Ok((CpuStorage::F32(out), Shape::from((b, n, vd))))
    }
}

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
    let (x, weight, bias) = (x.contiguous()?, weight.contiguous()?, bias.contiguous()?);
    x.apply_op3_no_bwd(&weight, &bias, &FusedConv2d { stride, padding })
}

struct FusedConv2d {
    stride: usize,
    padding: usize,
}

/// im2col elements per tile (4 MiB of f32).
const CONV_TILE_ELEMENTS: usize = 1 << 20;

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
        let pix = ho * wo;
        let ksz = c * kh * kw;
        let mut out = vec![0f32; b * co * pix];
        // Bias first: the products accumulate onto it.
        for (i, row) in out.chunks_exact_mut(pix).enumerate() {
            row.fill(bias[i % co]);
        }
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
            let out_ptr = out_ptr;
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
                    out_ptr.0.add(bi * co * pix + t0),
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
                )
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
        if tasks >= 2 * threads {
            (0..tasks)
                .into_par_iter()
                .for_each(|t| run(t, gemm::Parallelism::None));
        } else {
            for t in 0..tasks {
                run(t, gemm::Parallelism::Rayon(threads));
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, co, ho, wo))))
    }
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
        if two % 2 != 0 || two == 0 {
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

fn geglu_row(h: &[f32], g: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { geglu_row_avx2(h, g, out) };
        }
    }
    geglu_row_portable(h, g, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn geglu_row_avx2(h: &[f32], g: &[f32], out: &mut [f32]) {
    geglu_row_portable(h, g, out)
}

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
        if g == 0 || c % g != 0 || l2.shape().dims1()? != c || l3.shape().dims1()? != c {
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

fn affine_row(x: &[f32], out: &mut [f32], scale: f32, shift: f32, silu: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { affine_row_avx2(x, out, scale, shift, silu) };
        }
    }
    affine_row_portable(x, out, scale, shift, silu)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn affine_row_avx2(x: &[f32], out: &mut [f32], scale: f32, shift: f32, silu: bool) {
    affine_row_portable(x, out, scale, shift, silu)
}

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

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Replaces `row` by `exp(row - max(row))` and returns the sum of the new values.
fn softmax_numerator(row: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { softmax_numerator_avx2(row) };
        }
    }
    softmax_numerator_portable(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_numerator_avx2(row: &mut [f32]) -> f32 {
    softmax_numerator_portable(row)
}

/// Written as 8-lane loops without early exits so that the compiler vectorises it for the
/// features of the function it is inlined into.
#[inline(always)]
fn softmax_numerator_portable(row: &mut [f32]) -> f32 {
    let mut maxes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            maxes[i] = if c[i] > maxes[i] { c[i] } else { maxes[i] };
        }
    }
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for m in maxes {
        max = if m > max { m } else { max };
    }
    let mut sums = [0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for i in 0..8 {
            let e = exp(c[i] - max);
            c[i] = e;
            sums[i] += e;
        }
    }
    let mut sum = 0f32;
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    sums.iter().sum::<f32>() + sum
}

/// e^x for x ≤ 0 (softmax arguments), within 2 ulp of libm's `expf`: Cody–Waite reduction by
/// ln 2 and Cephes' degree-6 polynomial, branch-free so that it vectorises.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Below this e^x is under f32's normal range; clamping keeps 2^n representable and the
    // result underflows to ~1e-38, which a softmax sum cannot notice.
    let x = if x < -87.3 { -87.3 } else { x };
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let p = p * r * r + r + 1.0;
    // 2ⁿ from the bits of n + 127 + 2²³ (an exact integer in the low mantissa bits) shifted into
    // the exponent field: `n as i32` would saturate and stop the loop from vectorising.
    let pow2n = f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23);
    p * pow2n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
            x += 0.001_3;
        }
        assert!(worst < 3.0 * f32::EPSILON, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37);
    }

    #[test]
    fn fused_attention_matches_reference() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        for &(b, n, m, h, d) in &[(2, 130, 77, 4, 8), (1, 200, 200, 2, 40), (2, 5, 70, 3, 5)] {
            let q = Tensor::randn(0f32, 1.0, (b, n, h * d), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (b, m, h * d), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (b, m, h * d), &dev)?;
            let scale = 1.0 / (d as f32).sqrt();
            let got = multi_head_attention(&q, &k, &v, h, scale)?;
            let split = |t: &Tensor, len: usize| -> Result<Tensor> {
                t.reshape((b, len, h, d))?.transpose(1, 2)?.contiguous()
            };
            let (qs, ks, vs) = (split(&q, n)?, split(&k, m)?, split(&v, m)?);
            let probs = candle_nn::ops::softmax_last_dim(&(qs.matmul(&ks.t()?)? * scale as f64)?)?;
            let want = probs.matmul(&vs)?.transpose(1, 2)?.reshape((b, n, h * d))?;
            let diff = (&got - &want)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
            let norm = want.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
            assert!(diff / norm < 1e-6, "{b} {n} {m} {h} {d}: {}", diff / norm);
        }
        Ok(())
    }

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
        }
        Ok(())
    }

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

    /// `cargo test --release --lib attention_block_sizes -- --ignored --nocapture`: the query
    /// block size at SD's largest self-attention (batch 2, 8 heads, 4096 tokens, 40 dims).
    #[test]
    #[ignore]
    fn attention_block_sizes() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 4096, 320), &dev)?;
        for block in [16, 32, 64, 128, 256] {
            let op = FusedAttention {
                heads: 8,
                scale: 0.15,
                block,
            };
            q.apply_op3_no_bwd(&q, &q, &op)?;
            let t = std::time::Instant::now();
            for _ in 0..3 {
                q.apply_op3_no_bwd(&q, &q, &op)?;
            }
            println!("block {block}: {:?}", t.elapsed() / 3);
        }
        Ok(())
    }

    /// `cargo test --release --lib cpu_kernel_timings -- --ignored --nocapture`: the shapes of
    /// SD's 64×64 level, to compare with the same calls in PyTorch.
    #[test]
    #[ignore]
    fn cpu_kernel_timings() -> Result<()> {
        use candle_core::Module;
        let dev = candle_core::Device::Cpu;
        let time = |name: &str, f: &dyn Fn() -> Result<Tensor>| -> Result<()> {
            f()?;
            let t = std::time::Instant::now();
            for _ in 0..5 {
                f()?;
            }
            println!("{name}: {:?}", t.elapsed() / 5);
            Ok(())
        };
        for (m, k, n) in [(8192, 320, 2560), (8192, 1280, 320), (8192, 320, 320)] {
            let a = Tensor::randn(0f32, 1.0, (2, m / 2, k), &dev)?;
            let lin = candle_nn::Linear::new(Tensor::randn(0f32, 1.0, (n, k), &dev)?, None);
            time(&format!("linear {m}x{k}->{n}"), &|| lin.forward(&a))?;
        }
        let x = Tensor::randn(0f32, 1.0, (2, 320, 64, 64), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (320, 320, 3, 3), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 320, &dev)?;
        time("conv3x3 64x64x320", &|| conv2d(&x, &w, &b, 1, 1))?;
        let gn = candle_nn::GroupNorm::new(
            Tensor::ones(320, DType::F32, &dev)?,
            Tensor::zeros(320, DType::F32, &dev)?,
            320,
            32,
            1e-5,
        )?;
        time("candle GN+silu 64x64x320", &|| {
            candle_nn::ops::silu(&gn.forward(&x)?)
        })?;
        let (gw, gb) = (
            Tensor::ones(320, DType::F32, &dev)?,
            Tensor::zeros(320, DType::F32, &dev)?,
        );
        time("GN+silu 64x64x320", &|| {
            group_norm(&x, &gw, &gb, 32, 1e-5, true)
        })?;
        let h = Tensor::randn(0f32, 1.0, (2, 4096, 5120), &dev)?;
        time("geglu gate", &|| geglu(&h))?;
        Ok(())
    }
}
