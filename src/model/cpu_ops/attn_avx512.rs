//! AVX-512 register-blocked products for the attention core: a query block's scores against one
//! head's keys, and its probabilities times that head's values.
//!
//! Why not `gemm`: a head is only 40 to 160 wide, so every product is thin, and gemm's general
//! driver re-packs the operand it reads most (all of a head's keys or values) on every call, once
//! per query block; at SD's 64×64 level that packing cost about as much as the multiplies. Here
//! each head's keys and values are packed once ([`pack_keys`], [`pack_values`]) and every query
//! block reads them as they are. Accumulation is in f32, one multiply-add per term in the same
//! order as a dot product over the head dimension (scores) or over the keys (values).

use std::arch::x86_64::{
    __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_mul_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_storeu_ps,
};

/// f32 lanes of one register.
pub(super) const LANES: usize = 16;
/// Key panels (of [`LANES`] keys) one score kernel call covers.
const PANELS: usize = 3;
/// Query rows one score kernel call covers.
const SCORE_ROWS: usize = 8;
/// Value registers per row one value kernel call covers at most.
const MAX_WIDTH: usize = 6;

/// Keys padded to whole panels.
pub(super) fn padded_keys(m: usize) -> usize {
    m.div_ceil(LANES) * LANES
}

/// Value columns padded to whole registers.
pub(super) fn padded_values(dv: usize) -> usize {
    dv.div_ceil(LANES) * LANES
}

/// Packs one head's keys (`m` rows of `d`, row `j` at `src[j * stride..]`) as panels of
/// [`LANES`] keys, dimension-major inside a panel (`out[(panel * d + dd) * LANES + lane]`), zero
/// past the last key. `out` holds `padded_keys(m) * d` values.
pub(super) fn pack_keys(src: &[f32], stride: usize, m: usize, d: usize, out: &mut [f32]) {
    for (p, panel) in out.chunks_exact_mut(d * LANES).enumerate() {
        for lane in 0..LANES {
            let j = p * LANES + lane;
            if j < m {
                let row = &src[j * stride..j * stride + d];
                for (dd, &x) in row.iter().enumerate() {
                    panel[dd * LANES + lane] = x;
                }
            } else {
                for dd in 0..d {
                    panel[dd * LANES + lane] = 0.0;
                }
            }
        }
    }
}

/// Packs one head's values (`m` rows of `dv`) as rows of `padded_values(dv)`, zero past `dv`.
pub(super) fn pack_values(src: &[f32], stride: usize, m: usize, dv: usize, out: &mut [f32]) {
    let w = padded_values(dv);
    for (j, row) in out.chunks_exact_mut(w).take(m).enumerate() {
        row[..dv].copy_from_slice(&src[j * stride..j * stride + dv]);
        row[dv..].fill(0.0);
    }
}

/// `scores[r][j] = scale · Σ_dd q[r][dd] · k[j][dd]` for `rows` query rows (row `r` at
/// `q[r * q_stride..]`) and every padded key of `keys` (from [`pack_keys`]); `scores` rows are
/// `padded_keys(m)` long.
///
/// # Safety
/// The CPU must have AVX-512F; `q` must hold `rows` rows of `d`, `keys` `panels · d · 16`
/// values and `scores` `rows · panels · 16`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn scores(
    q: *const f32,
    q_stride: usize,
    rows: usize,
    d: usize,
    keys: &[f32],
    scale: f32,
    scores: &mut [f32],
) {
    let panels = keys.len() / (d * LANES).max(1);
    let s_stride = panels * LANES;
    debug_assert!(scores.len() >= rows * s_stride);
    // SAFETY: the caller keeps this function's contract (see its doc); every pointer offset
    // below stays inside the operands that contract sizes.
    unsafe {
        // Panel groups outside, query rows inside: a group's keys (PANELS · d · 16 values) stay
        // in L1 while every row of the block meets them, and the block's queries stay there too.
        let mut p = 0;
        while p < panels {
            let np = PANELS.min(panels - p);
            let k = keys.as_ptr().add(p * d * LANES);
            let mut r = 0;
            while r < rows {
                let t = Tile {
                    q: q.add(r * q_stride),
                    q_stride,
                    d,
                    keys: k,
                    scale,
                    s: scores.as_mut_ptr().add(r * s_stride + p * LANES),
                    s_stride,
                };
                let left = rows - r;
                r += match (np, left) {
                    (3, 8..) => score_tile::<SCORE_ROWS, 3>(&t),
                    (3, 4..) => score_tile::<4, 3>(&t),
                    (3, 2..) => score_tile::<2, 3>(&t),
                    (3, _) => score_tile::<1, 3>(&t),
                    (2, 8..) => score_tile::<SCORE_ROWS, 2>(&t),
                    (2, 4..) => score_tile::<4, 2>(&t),
                    (2, 2..) => score_tile::<2, 2>(&t),
                    (2, _) => score_tile::<1, 2>(&t),
                    (_, 8..) => score_tile::<SCORE_ROWS, 1>(&t),
                    (_, 4..) => score_tile::<4, 1>(&t),
                    (_, 2..) => score_tile::<2, 1>(&t),
                    (_, _) => score_tile::<1, 1>(&t),
                };
            }
            p += np;
        }
    }
}

/// One score tile's operands: `R` query rows from `q` against `NP` key panels from `keys`.
struct Tile {
    q: *const f32,
    q_stride: usize,
    d: usize,
    keys: *const f32,
    scale: f32,
    s: *mut f32,
    s_stride: usize,
}

/// `R` query rows against `NP` key panels; returns `R`.
#[target_feature(enable = "avx512f")]
unsafe fn score_tile<const R: usize, const NP: usize>(t: &Tile) -> usize {
    // SAFETY: `scores` hands in pointers to R rows of d queries, NP panels of d · 16 keys and
    // R rows of NP · 16 scores.
    unsafe {
        let panel_len = t.d * LANES;
        let mut acc = [[_mm512_setzero_ps(); NP]; R];
        for dd in 0..t.d {
            let mut kv = [_mm512_setzero_ps(); NP];
            for (i, kv) in kv.iter_mut().enumerate() {
                *kv = _mm512_loadu_ps(t.keys.add(i * panel_len + dd * LANES));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let qb = _mm512_set1_ps(*t.q.add(r * t.q_stride + dd));
                for i in 0..NP {
                    acc[i] = _mm512_fmadd_ps(qb, kv[i], acc[i]);
                }
            }
        }
        let sc = _mm512_set1_ps(t.scale);
        for (r, acc) in acc.iter().enumerate() {
            for (i, &a) in acc.iter().enumerate() {
                _mm512_storeu_ps(t.s.add(r * t.s_stride + i * LANES), _mm512_mul_ps(a, sc));
            }
        }
    }
    R
}

/// `out[r][c] = inv[r] · Σ_j probs[r][j] · v[j][c]` over the first `m` keys, for `rows` rows of
/// `probs` (row `r` at `probs[r * p_stride..]`) and the `dv` value columns of `values` (from
/// [`pack_values`]); output row `r` at `out[r * out_stride..]`, only its first `dv` written.
///
/// # Safety
/// The CPU must have AVX-512F; `probs` must hold `rows` rows of at least `m`, `values` `m` rows
/// of `padded_values(dv)`, `out` `rows` rows of at least `dv`, and `inv` `rows` values.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn values(
    probs: *const f32,
    p_stride: usize,
    rows: usize,
    m: usize,
    values: &[f32],
    dv: usize,
    inv: &[f32],
    out: *mut f32,
    out_stride: usize,
) {
    // SAFETY: the caller keeps this function's contract (see its doc); every pointer
    // offset below stays inside the operands that contract sizes.
    unsafe {
        let regs = padded_values(dv) / LANES;
        // Split the registers of a row into near-equal chunks of at most MAX_WIDTH.
        let chunks = regs.div_ceil(MAX_WIDTH);
        let mut reg0 = 0;
        for c in 0..chunks {
            let width = (regs - reg0).div_ceil(chunks - c);
            let cols = dv.min((reg0 + width) * LANES) - reg0 * LANES;
            let a = ValueArgs {
                probs,
                p_stride,
                m,
                v: values.as_ptr().add(reg0 * LANES),
                v_stride: padded_values(dv),
                inv: inv.as_ptr(),
                out: out.add(reg0 * LANES),
                out_stride,
                cols,
            };
            match width {
                1 => value_rows_all::<1>(&a, rows),
                2 => value_rows_all::<2>(&a, rows),
                3 => value_rows_all::<3>(&a, rows),
                4 => value_rows_all::<4>(&a, rows),
                5 => value_rows_all::<5>(&a, rows),
                _ => value_rows_all::<6>(&a, rows),
            }
            reg0 += width;
        }
    }
}

struct ValueArgs {
    probs: *const f32,
    p_stride: usize,
    m: usize,
    /// The first value register of this chunk in row 0.
    v: *const f32,
    v_stride: usize,
    inv: *const f32,
    out: *mut f32,
    out_stride: usize,
    /// Output columns this chunk writes.
    cols: usize,
}

/// Every row, in blocks that keep about 24 accumulators in registers.
#[target_feature(enable = "avx512f")]
unsafe fn value_rows_all<const W: usize>(a: &ValueArgs, rows: usize) {
    // SAFETY: the caller keeps this function's contract (see its doc); every pointer
    // offset below stays inside the operands that contract sizes.
    unsafe {
        let mut r = 0;
        while r < rows {
            let left = rows - r;
            r += if W <= 3 && left >= 8 {
                value_rows::<8, W>(a, r)
            } else if left >= 4 {
                value_rows::<4, W>(a, r)
            } else if left >= 2 {
                value_rows::<2, W>(a, r)
            } else {
                value_rows::<1, W>(a, r)
            };
        }
    }
}

/// Rows `r0..r0 + R` of one chunk; returns `R`.
#[target_feature(enable = "avx512f")]
unsafe fn value_rows<const R: usize, const W: usize>(a: &ValueArgs, r0: usize) -> usize {
    // SAFETY: the caller keeps this function's contract (see its doc); every pointer
    // offset below stays inside the operands that contract sizes.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); W]; R];
        let p0 = a.probs.add(r0 * a.p_stride);
        for j in 0..a.m {
            let vrow = a.v.add(j * a.v_stride);
            let mut v: [__m512; W] = [_mm512_setzero_ps(); W];
            for (z, v) in v.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(vrow.add(z * LANES));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let pb = _mm512_set1_ps(*p0.add(r * a.p_stride + j));
                for z in 0..W {
                    acc[z] = _mm512_fmadd_ps(pb, v[z], acc[z]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let s = _mm512_set1_ps(*a.inv.add(r0 + r));
            let o = a.out.add((r0 + r) * a.out_stride);
            for (z, &x) in acc.iter().enumerate() {
                let c = a.cols.saturating_sub(z * LANES).min(LANES);
                let mask = ((1u32 << c) - 1) as u16;
                _mm512_mask_storeu_ps(o.add(z * LANES), mask, _mm512_mul_ps(x, s));
            }
        }
        R
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo test --release --lib attention_phase_timings -- --ignored --nocapture`: one task's
    /// three phases at SD's 64×64 level (64 queries, 4096 keys, 40 dims), single-threaded.
    #[test]
    #[ignore]
    fn attention_phase_timings() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        let (rows, m, d) = (64usize, 4096usize, 40usize);
        let q: Vec<f32> = (0..rows * 320)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect();
        let k: Vec<f32> = (0..m * 320)
            .map(|i| ((i * 104729) % 1000) as f32 * 1e-3)
            .collect();
        let mut kp = vec![0f32; padded_keys(m) * d];
        let mut vp = vec![0f32; m * padded_values(d)];
        pack_keys(&k, 320, m, d, &mut kp);
        pack_values(&k, 320, m, d, &mut vp);
        let mut s = vec![0f32; rows * padded_keys(m)];
        let mut out = vec![0f32; rows * 320];
        let inv = vec![1f32; rows];
        let reps = 200;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            // SAFETY: AVX-512F was detected above; the buffers have the sizes the contract names.
            unsafe { scores(q.as_ptr(), 320, rows, d, &kp, 0.1, &mut s) };
        }
        let ts = t.elapsed() / reps;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            for row in s.chunks_exact_mut(padded_keys(m)) {
                super::super::attention::softmax_numerator(&mut row[..m]);
            }
        }
        let tx = t.elapsed() / reps;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            // SAFETY: as for `scores` above.
            unsafe {
                values(
                    s.as_ptr(),
                    padded_keys(m),
                    rows,
                    m,
                    &vp,
                    d,
                    &inv,
                    out.as_mut_ptr(),
                    320,
                );
            }
        }
        let tv = t.elapsed() / reps;
        let gf = |t: std::time::Duration| (rows * m * d) as f64 * 2.0 / t.as_secs_f64() / 1e9;
        println!(
            "scores {ts:?} ({:.0} GFLOP/s), softmax {tx:?}, values {tv:?} ({:.0} GFLOP/s)",
            gf(ts),
            gf(tv)
        );
    }
}
