//! Multi-head attention: score blocks of a few query rows, softmax and the product with the
//! values, each block in the cache.

use super::{exp, f32_slice, SendPtr, SCRATCH};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Query rows per attention task: the task's score block (rows × keys f32) stays around 1 MiB at
/// 4096 keys, inside a core's L2.
pub(crate) const QUERY_BLOCK: usize = 64;

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
            packed: packed_kernels(),
            // Read here, on the calling thread, where the scope lives.
            bf16: crate::model::linear::bf16_matmuls_active(),
        },
    )
}

struct FusedAttention {
    heads: usize,
    scale: f32,
    /// Query rows per task.
    block: usize,
    /// Whether to run the AVX-512 products on packed heads instead of `gemm`.
    packed: bool,
    /// Whether the products run in bf16 on AMX ([`crate::model::linear::with_bf16_matmuls`]).
    bf16: bool,
}

/// Whether this CPU runs the packed AVX-512 attention products (`GLICHEN_CPU_KERNELS=avx2` turns
/// them off with the rest).
fn packed_kernels() -> bool {
    cfg!(target_arch = "x86_64") && super::simd() == super::Simd::Avx512
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
        if self.bf16 && m > 0 && d > 0 && dv > 0 && b * n > 0 {
            let out = self.amx_heads(q, k, v, (b, n, m), (d, dv))?;
            return Ok((CpuStorage::F32(out), Shape::from((b, n, vd))));
        }
        #[cfg(target_arch = "x86_64")]
        if self.packed && m > 0 && d > 0 && dv > 0 {
            let out = self.packed_heads(q, k, v, (b, n, m), (d, dv))?;
            return Ok((CpuStorage::F32(out), Shape::from((b, n, vd))));
        }
        let scale = self.scale;
        let out = self.each_query_block((b, n), vd, |block, scores, out_ptr| {
            let QueryBlock {
                bi, hi, r0, rows, ..
            } = block;
            {
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
                // SAFETY: v is read inside its shape; the output rows r0..r0+rows of head hi are
                // this task's alone.
                unsafe {
                    let v0 = v.as_ptr().add(bi * m * vd + hi * dv);
                    let o0 = out_ptr.get().add((bi * n + r0) * vd + hi * dv);
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
            }
        })?;
        Ok((CpuStorage::F32(out), Shape::from((b, n, vd))))
    }
}

/// One task's share: batch `bi`, head `hi` (`bh = bi · heads + hi`), query rows `r0..r0 + rows`.
#[derive(Clone, Copy)]
struct QueryBlock {
    bi: usize,
    hi: usize,
    bh: usize,
    r0: usize,
    rows: usize,
}

impl FusedAttention {
    /// Runs `body` on every query block of every head in parallel, with this thread's score
    /// scratch and the output (`b · n · vd` floats, of which each block writes only its rows of
    /// its head's columns). A cancel stops the remaining blocks: the worker threads do not see
    /// the caller's flag, so it is taken here.
    fn each_query_block(
        &self,
        (b, n): (usize, usize),
        vd: usize,
        body: impl Fn(QueryBlock, &mut Vec<f32>, SendPtr) + Sync,
    ) -> Result<Vec<f32>> {
        let h = self.heads;
        let mut out = vec![0f32; b * n * vd];
        let out_ptr = SendPtr(out.as_mut_ptr());
        let qb = self.block.clamp(1, 512);
        let blocks = n.div_ceil(qb);
        let stop = crate::model::interrupt::current();
        (0..b * h * blocks).into_par_iter().for_each(|task| {
            if crate::model::interrupt::is_set(stop.as_ref()) {
                return;
            }
            let (bh, blk) = (task / blocks, task % blocks);
            let r0 = blk * qb;
            let block = QueryBlock {
                bi: bh / h,
                hi: bh % h,
                bh,
                r0,
                rows: qb.min(n - r0),
            };
            SCRATCH.with(|scratch| body(block, &mut scratch.borrow_mut(), out_ptr));
        });
        if crate::model::interrupt::is_set(stop.as_ref()) {
            return Err(crate::model::interrupt::interrupted());
        }
        Ok(out)
    }

    /// The bf16 path on AMX: each head's keys (scaled) and values packed once as bf16 tiles,
    /// then per query block the scores and the probabilities' product with the values as tile
    /// products with f32 accumulation; the softmax stays f32.
    fn amx_heads(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        (b, n, m): (usize, usize, usize),
        (d, dv): (usize, usize),
    ) -> Result<Vec<f32>> {
        use super::amx::{product_rows, PackedBf16};
        let h = self.heads;
        let (qd, vd) = (h * d, h * dv);
        let scale = self.scale;
        // Folding the scale into the keys saves a pass over every score block.
        let heads: Vec<(PackedBf16, PackedBf16)> = (0..b * h)
            .into_par_iter()
            .map(|bh| {
                let (bi, hi) = (bh / h, bh % h);
                let k0 = bi * m * qd + hi * d;
                let v0 = bi * m * vd + hi * dv;
                (
                    PackedBf16::pack_with(m, d, |j, dd| k[k0 + j * qd + dd] * scale),
                    PackedBf16::pack_k_major(&v[v0..], vd, dv, m),
                )
            })
            .collect();
        // Score rows padded to whole 32-key blocks, so that every block is stored in place.
        let kp = m.div_ceil(32) * 32;
        let out = self.each_query_block((b, n), vd, |block, scores, out_ptr| {
            let QueryBlock {
                bi,
                hi,
                bh,
                r0,
                rows,
            } = block;
            let (keys, vals) = &heads[bh];
            {
                if scores.len() < rows * kp {
                    scores.resize(rows * kp, 0.0);
                }
                let scores = &mut scores[..rows * kp];
                let q0 = (bi * n + r0) * qd + hi * d;
                // SAFETY: `scores` holds `rows` rows of `kp >= m` floats and is this task's.
                unsafe {
                    product_rows(&q[q0..], qd, rows, keys, scores.as_mut_ptr(), kp, kp);
                }
                let mut inv = [0f32; 512];
                let inv = &mut inv[..rows];
                for (row, inv) in scores.chunks_exact_mut(kp).zip(inv.iter_mut()) {
                    *inv = 1.0 / softmax_numerator(&mut row[..m]);
                }
                // SAFETY: the output rows r0..r0+rows, columns hi·dv..(hi+1)·dv, are this
                // task's alone (`out_cols` = dv keeps the stores inside the head).
                unsafe {
                    let o0 = out_ptr.get().add((bi * n + r0) * vd + hi * dv);
                    product_rows(scores, kp, rows, vals, o0, vd, dv);
                    for (r, inv) in inv.iter().enumerate() {
                        let row = std::slice::from_raw_parts_mut(o0.add(r * vd), dv);
                        for x in row {
                            *x *= inv;
                        }
                    }
                }
            }
        })?;
        Ok(out)
    }

    /// The AVX-512 path: each head's keys and values packed once, then every query block through
    /// the register-blocked products of `attn_avx512`.
    #[cfg(target_arch = "x86_64")]
    fn packed_heads(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        (b, n, m): (usize, usize, usize),
        (d, dv): (usize, usize),
    ) -> Result<Vec<f32>> {
        use super::attn_avx512 as kern;
        let h = self.heads;
        let (qd, vd) = (h * d, h * dv);
        let (kpad, vpad) = (kern::padded_keys(m), kern::padded_values(dv));
        let mut keys = vec![0f32; b * h * kpad * d];
        let mut vals = vec![0f32; b * h * m * vpad];
        keys.par_chunks_mut(kpad * d.max(1))
            .zip(vals.par_chunks_mut(m * vpad.max(1)))
            .enumerate()
            .for_each(|(bh, (kp, vp))| {
                let (bi, hi) = (bh / h, bh % h);
                kern::pack_keys(&k[bi * m * qd + hi * d..], qd, m, d, kp);
                kern::pack_values(&v[bi * m * vd + hi * dv..], vd, m, dv, vp);
            });
        let scale = self.scale;
        let out = self.each_query_block((b, n), vd, |block, scores, out_ptr| {
            let QueryBlock {
                bi,
                hi,
                bh,
                r0,
                rows,
            } = block;
            let kp = &keys[bh * kpad * d..(bh + 1) * kpad * d];
            let vp = &vals[bh * m * vpad..(bh + 1) * m * vpad];
            {
                if scores.len() < rows * kpad {
                    scores.resize(rows * kpad, 0.0);
                }
                let scores = &mut scores[..rows * kpad];
                let mut inv = [0f32; 512];
                let inv = &mut inv[..rows];
                // SAFETY: simd() reported AVX-512F; q rows r0..r0+rows of head hi lie inside q,
                // `kp` and `scores` have the sizes `scores` needs (rows · kpad).
                unsafe {
                    let q0 = q.as_ptr().add((bi * n + r0) * qd + hi * d);
                    kern::scores(q0, qd, rows, d, kp, scale, scores);
                }
                for (row, inv) in scores.chunks_exact_mut(kpad).zip(inv.iter_mut()) {
                    *inv = 1.0 / softmax_numerator(&mut row[..m]);
                }
                // SAFETY: as above; the output rows r0..r0+rows of head hi (dv columns each)
                // are this task's alone.
                unsafe {
                    let o0 = out_ptr.get().add((bi * n + r0) * vd + hi * dv);
                    kern::values(scores.as_ptr(), kpad, rows, m, vp, dv, inv, o0, vd);
                }
            }
        })?;
        Ok(out)
    }
}

// Replaces `row` by `exp(row - max(row))` and returns the sum of the new values.
super::dispatch_simd!(pub(super) fn softmax_numerator(row: &mut [f32]) -> f32 => softmax_numerator_portable);

/// Lanes of the loops below: one AVX-512 register, two AVX2 ones.
const LANES: usize = 16;

/// Written as 16-lane loops without early exits so that the compiler vectorises it for the
/// features of the function it is inlined into.
#[inline(always)]
fn softmax_numerator_portable(row: &mut [f32]) -> f32 {
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
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
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_attention_matches_reference() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        // (batch, queries, keys, heads, head dim, value head dim): SD's widths (40, 80, 160),
        // the VAE's single 512-wide head, keys and rows that are not whole panels or blocks.
        let cases = [
            (2, 130, 77, 4, 8, 8),
            (1, 200, 200, 2, 40, 40),
            (2, 5, 70, 3, 5, 5),
            (1, 67, 33, 2, 80, 80),
            (2, 75, 4126 / 8, 1, 160, 160),
            (1, 19, 40, 1, 512, 512),
            (2, 66, 17, 3, 12, 24),
            (1, 3, 1, 2, 40, 7),
        ];
        for (b, n, m, h, d, dv) in cases {
            let q = Tensor::randn(0f32, 1.0, (b, n, h * d), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (b, m, h * d), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (b, m, h * dv), &dev)?;
            let scale = 1.0 / (d as f32).sqrt();
            let split = |t: &Tensor, len: usize, w: usize| -> Result<Tensor> {
                t.reshape((b, len, h, w))?.transpose(1, 2)?.contiguous()
            };
            let (qs, ks, vs) = (split(&q, n, d)?, split(&k, m, d)?, split(&v, m, dv)?);
            let probs = candle_nn::ops::softmax_last_dim(&(qs.matmul(&ks.t()?)? * scale as f64)?)?;
            let want = probs
                .matmul(&vs)?
                .transpose(1, 2)?
                .reshape((b, n, h * dv))?;
            // Both paths wherever the CPU has them: the packed AVX-512 products and gemm.
            for packed in [false, packed_kernels()] {
                let op = FusedAttention {
                    heads: h,
                    scale,
                    block: QUERY_BLOCK,
                    packed,
                    bf16: false,
                };
                let got = q.apply_op3_no_bwd(&k, &v, &op)?;
                let diff = (&got - &want)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
                let norm = want.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
                assert!(
                    diff / norm < 1e-6,
                    "{b} {n} {m} {h} {d} {dv} packed {packed}: {}",
                    diff / norm
                );
            }
            // The bf16 tile products (run portably where the CPU has no AMX): q, the scaled
            // keys, the probabilities and the values each rounded to 8 mantissa bits (~2e-3
            // each), summed in f32.
            let op = FusedAttention {
                heads: h,
                scale,
                block: QUERY_BLOCK,
                packed: false,
                bf16: true,
            };
            let got = q.apply_op3_no_bwd(&k, &v, &op)?;
            let diff = (&got - &want)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
            let norm = want.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
            let rel = diff / norm;
            assert!(
                rel > 1e-6 && rel < 1e-2,
                "{b} {n} {m} {h} {d} {dv} bf16: {rel}"
            );
        }
        Ok(())
    }

    /// `cargo test --release --lib attention_block_sizes -- --ignored --nocapture`: the query
    /// block size and the product paths (gemm, AVX-512, AMX bf16) at SD's largest self-attention (batch 2, 8 heads, 4096 tokens, 40 dims).
    #[test]
    #[ignore]
    fn attention_block_sizes() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 4096, 320), &dev)?;
        let paths = [
            (false, false),
            (packed_kernels(), false),
            (false, super::super::amx::available()),
        ];
        for (packed, bf16) in paths {
            for block in [16, 32, 64, 128, 256] {
                let op = FusedAttention {
                    heads: 8,
                    scale: 0.15,
                    block,
                    packed,
                    bf16,
                };
                q.apply_op3_no_bwd(&q, &q, &op)?;
                let (t, cpu) = (std::time::Instant::now(), process_cpu_s());
                for _ in 0..3 {
                    q.apply_op3_no_bwd(&q, &q, &op)?;
                }
                println!(
                    "packed {packed}, bf16 {bf16}, block {block}: {:?} wall, {:.3} s CPU",
                    t.elapsed() / 3,
                    (process_cpu_s() - cpu) / 3.0
                );
            }
        }
        Ok(())
    }

    /// User + system CPU seconds of this process (from /proc: the time measurement above is
    /// then not inflated by other work sharing the cores, only by cache and sibling contention).
    fn process_cpu_s() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<f64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the command name.
        (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
    }
}
