//! 3×3 stride-1 convolution through Winograd's minimal filtering F(2×2, 3×3): each 2×2 block of
//! output pixels (a tile) costs 16 multiplies per channel pair instead of 36, 2.25× fewer. The
//! convolution becomes 16 independent matrix products `[cout × cin] · [cin × tiles]`, one per
//! point of the transformed 4×4 tile, which run through `gemm` like the im2col path does.
//!
//! F(4×4, 3×3) would do 4× fewer, but measured against the exact convolution its f32 error is
//! 6–11× im2col's on trained-like data whichever points it uses (0, ±1, ±2 or ±1/2, ∞), where
//! F(2,3) stays within 1–1.7×; the crate keeps module parity near 1e-6, so F(2,3) it is.
//!
//! Layouts keep every operand column-major with the channel innermost, so the products need no
//! packing (`gemm` reads them in place) and the transforms vectorise across 16 channels at a
//! time: transformed weights `U[ξ][cin][cout]`, transformed input tiles `V[ξ][tile][cin]`,
//! products `M[ξ][tile][cout]`. The input and output transforms only add and subtract, so they
//! round no worse than the sums themselves; the weight transform halves (exact) and runs in f64.

use super::{dispatch_simd, SendPtr};
use rayon::prelude::*;
use std::cell::Cell;

/// Channels per vector of the transforms (one AVX-512 register, two AVX2 ones).
const L: usize = 16;
/// Output pixels per tile side.
const M: usize = 2;
/// Points of the transformed tile per side (`M + 2`).
const A: usize = 4;

/// A column of `N` values for `L` channels.
type Lanes<T, const N: usize> = [[T; L]; N];

/// Bᵀ·d along one axis.
#[inline(always)]
fn input_1d(d: &Lanes<f32, A>) -> Lanes<f32, A> {
    let mut o = [[0f32; L]; A];
    for l in 0..L {
        let (d0, d1, d2, d3) = (d[0][l], d[1][l], d[2][l], d[3][l]);
        o[0][l] = d0 - d2;
        o[1][l] = d1 + d2;
        o[2][l] = d2 - d1;
        o[3][l] = d3 - d1;
    }
    o
}

/// Aᵀ·m along one axis.
#[inline(always)]
fn output_1d(m: &Lanes<f32, A>) -> Lanes<f32, M> {
    let mut o = [[0f32; L]; M];
    for l in 0..L {
        let (m0, m1, m2, m3) = (m[0][l], m[1][l], m[2][l], m[3][l]);
        o[0][l] = m0 + m1 + m2;
        o[1][l] = m1 - m2 + m3;
    }
    o
}

/// G·g along one axis.
#[inline(always)]
fn weight_1d(g: &Lanes<f64, 3>) -> Lanes<f64, A> {
    let mut o = [[0f64; L]; A];
    for l in 0..L {
        let (g0, g1, g2) = (g[0][l], g[1][l], g[2][l]);
        o[0][l] = g0;
        o[1][l] = (g0 + g1 + g2) * 0.5;
        o[2][l] = (g0 - g1 + g2) * 0.5;
        o[3][l] = g2;
    }
    o
}

/// `f` along both axes of `L` independent `C×C` blocks `d[i][j][lane]`: `F d Fᵀ`.
#[inline(always)]
fn both_axes<T: Copy + Default, const C: usize, const R: usize>(
    f: impl Fn(&Lanes<T, C>) -> Lanes<T, R>,
    d: &[Lanes<T, C>; C],
) -> [Lanes<T, R>; R] {
    let rows = d.each_ref().map(&f);
    let mut out = [[[T::default(); L]; R]; R];
    for r2 in 0..R {
        let col = f(&std::array::from_fn(|i| rows[i][r2]));
        for (o, v) in out.iter_mut().zip(col) {
            o[r2] = v;
        }
    }
    out
}

/// Shapes a convolution's kernels share.
#[derive(Clone, Copy)]
struct Geometry {
    c: usize,
    co: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    p: usize,
    tiles_x: usize,
    /// Tiles per image.
    per_img: usize,
}

impl Geometry {
    /// Image, output row and output column of tile `t` (numbered across the batch).
    #[inline(always)]
    fn tile(&self, t: usize) -> (usize, usize, usize) {
        let (bi, r) = (t / self.per_img, t % self.per_img);
        (bi, (r / self.tiles_x) * M, (r % self.tiles_x) * M)
    }
}

dispatch_simd!(fn weights(wt: &[f32], geo: Geometry, ci: (usize, usize), u: SendPtr) -> () => weights_portable);
dispatch_simd!(fn input(x: &[f32], geo: Geometry, tiles: (usize, usize), v: &mut [f32]) -> () => input_portable);
dispatch_simd!(fn output(mp: &[f32], bias: &[f32], geo: Geometry, tiles: (usize, usize), out: SendPtr) -> () => output_portable);

/// `U[ξ][ci][co] = (G g Gᵀ)[ξ]` for input channels `ci0..ci1`, 16 output channels a vector.
#[inline(always)]
fn weights_portable(wt: &[f32], geo: Geometry, (ci0, ci1): (usize, usize), u: SendPtr) {
    let (c, co) = (geo.c, geo.co);
    for ci in ci0..ci1 {
        for o0 in (0..co).step_by(L) {
            let n = L.min(co - o0);
            let mut g = [[[0f64; L]; 3]; 3];
            for l in 0..n {
                let k = &wt[((o0 + l) * c + ci) * 9..][..9];
                for (i, gi) in g.iter_mut().enumerate() {
                    for (j, gij) in gi.iter_mut().enumerate() {
                        gij[l] = f64::from(k[i * 3 + j]);
                    }
                }
            }
            let t = both_axes(weight_1d, &g);
            for (xi, v) in t.iter().flatten().enumerate() {
                for (l, &val) in v[..n].iter().enumerate() {
                    // SAFETY: U holds A²·c·co elements and this (ξ, ci, o0 + l) is written by
                    // this call only (calls take disjoint ci ranges).
                    unsafe { *u.get().add((xi * c + ci) * co + o0 + l) = val as f32 };
                }
            }
        }
    }
}

/// `V[ξ][k][ci] = (Bᵀ d B)[ξ]` for tiles `t0..t0+tn` (`k = t − t0`), zero padding outside the
/// image, 16 input channels a vector.
#[inline(always)]
fn input_portable(x: &[f32], geo: Geometry, (t0, tn): (usize, usize), v: &mut [f32]) {
    let Geometry { c, h, w, p, .. } = geo;
    for k in 0..tn {
        let (bi, oy, ox) = geo.tile(t0 + k);
        let (iy0, ix0) = (oy as isize - p as isize, ox as isize - p as isize);
        let inside = iy0 >= 0 && ix0 >= 0 && iy0 as usize + A <= h && ix0 as usize + A <= w;
        for c0 in (0..c).step_by(L) {
            let n = L.min(c - c0);
            let mut d = [[[0f32; L]; A]; A];
            let base = (bi * c + c0) * h * w;
            if inside && n == L {
                let start = base + iy0 as usize * w + ix0 as usize;
                // Bounds once for the whole 16-channel window, so that the loop below can
                // gather (lanes step a whole plane) instead of inserting lane by lane.
                let last = start + (L - 1) * h * w + (A - 1) * (w + 1);
                assert!(last < x.len());
                for (i, di) in d.iter_mut().enumerate() {
                    for (j, dij) in di.iter_mut().enumerate() {
                        for (l, v) in dij.iter_mut().enumerate() {
                            // SAFETY: the largest index, `last`, is checked above.
                            *v = unsafe { *x.get_unchecked(start + l * h * w + i * w + j) };
                        }
                    }
                }
            } else {
                for l in 0..n {
                    let plane = &x[base + l * h * w..][..h * w];
                    for (i, di) in d.iter_mut().enumerate() {
                        let iy = iy0 + i as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for (j, dij) in di.iter_mut().enumerate() {
                            let ix = ix0 + j as isize;
                            if ix >= 0 && ix < w as isize {
                                dij[l] = plane[iy as usize * w + ix as usize];
                            }
                        }
                    }
                }
            }
            let t = both_axes(input_1d, &d);
            for (xi, vals) in t.iter().flatten().enumerate() {
                let dst = &mut v[(xi * tn + k) * c + c0..][..n];
                if n == L {
                    // A constant length: a vector store, not a call to memcpy.
                    dst.copy_from_slice(&vals[..L]);
                } else {
                    dst.copy_from_slice(&vals[..n]);
                }
            }
        }
    }
}

/// `out[bi][co][oy..oy+M][ox..ox+M] = bias + (Aᵀ m A)` for tiles `t0..t0+tn` from
/// `mprod[ξ][k][co]`, clipped at the output's edges, 16 output channels a vector.
#[inline(always)]
fn output_portable(
    mprod: &[f32],
    bias: &[f32],
    geo: Geometry,
    (t0, tn): (usize, usize),
    out: SendPtr,
) {
    let Geometry { co, ho, wo, .. } = geo;
    for k in 0..tn {
        let (bi, oy, ox) = geo.tile(t0 + k);
        let (rows, cols) = (M.min(ho - oy), M.min(wo - ox));
        for o0 in (0..co).step_by(L) {
            let n = L.min(co - o0);
            let mut d = [[[0f32; L]; A]; A];
            for (xi, dv) in d.iter_mut().flatten().enumerate() {
                let src = &mprod[(xi * tn + k) * co + o0..][..n];
                if n == L {
                    dv.copy_from_slice(&src[..L]);
                } else {
                    dv[..n].copy_from_slice(src);
                }
            }
            let y = both_axes(output_1d, &d);
            for l in 0..n {
                let b = bias[o0 + l];
                // SAFETY: the tile's pixels lie inside channel o0 + l of image bi (rows and
                // cols are clipped to the output), and only this task writes this tile.
                unsafe {
                    let dst = out.get().add((bi * co + o0 + l) * ho * wo + oy * wo + ox);
                    if rows == M && cols == M {
                        for (i, yi) in y.iter().enumerate() {
                            for (j, yij) in yi.iter().enumerate() {
                                *dst.add(i * wo + j) = b + yij[l];
                            }
                        }
                    } else {
                        for (i, yi) in y[..rows].iter().enumerate() {
                            for (j, yij) in yi[..cols].iter().enumerate() {
                                *dst.add(i * wo + j) = b + yij[l];
                            }
                        }
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Transformed weights (on the calling thread) and a task's tiles and products (on each
    /// worker): kept between calls so that large buffers are not faulted in again every time.
    static WEIGHTS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static TILES: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Buffers above this many elements are allocated per call rather than kept by the thread (the
/// weights of a 1280-channel F(4,3) convolution take 236 MB).
const KEEP_ELEMENTS: usize = 1 << 24;

/// Runs `f` on `len` elements of the thread's buffer in `cell`. The buffer is taken out while `f`
/// runs, so a nested use (a rayon thread that waits inside a parallel call can start another
/// task) finds none and allocates its own.
fn with_buffer<R>(
    cell: &'static std::thread::LocalKey<Cell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut buf = if len <= KEEP_ELEMENTS {
        cell.with(Cell::take)
    } else {
        Vec::new()
    };
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    if buf.len() <= KEEP_ELEMENTS {
        cell.with(|c| {
            let kept = c.take();
            c.set(if kept.len() < buf.len() { buf } else { kept });
        });
    }
    r
}

/// Whether Winograd beats im2col for a 3×3 stride-1 convolution of this shape (measured on 2
/// AVX-512 cores). Every task streams all the transformed weights (16·cin·cout), so a task needs
/// enough tiles to amortise them: 1280 channels on 16×16 maps (32 tiles a task) run 2.5× slower
/// than im2col, 640 on 32×32 (128) 1.3× faster. Below 128 channels the transforms outweigh the
/// saved multiplies (4→320 channels: 2.5× slower).
pub(crate) fn pays(b: usize, c: usize, co: usize, ho: usize, wo: usize) -> bool {
    let total = b * ho.div_ceil(M) * wo.div_ceil(M);
    c >= 128 && co >= 128 && tiles_per_task(total) >= 64
}

/// Tiles a task transforms and multiplies at once: the products' `n`. 128 measured best (64
/// loses 10–20 % to the weights' traffic, 256 spills the tiles out of L2 at 128 channels), and
/// at least two tasks a thread keep the threads balanced.
fn tiles_per_task(total: usize) -> usize {
    TASK_TILES
        .min(total.div_ceil(2 * rayon::current_num_threads()))
        .max(1)
}

const TASK_TILES: usize = 128;

/// `conv2d(x, wt, padding p) + bias` for a 3×3 kernel, stride 1, NCHW. The caller checks the
/// shapes: `x` is `[b, c, h, w]`, `wt` `[co, c, 3, 3]`, `bias` `[co]`, and `h + 2p ≥ 3`,
/// `w + 2p ≥ 3`.
pub(crate) fn conv3x3(
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    (b, c, h, w): (usize, usize, usize, usize),
    co: usize,
    p: usize,
) -> candle_core::Result<Vec<f32>> {
    let (ho, wo) = (h + 2 * p - 2, w + 2 * p - 2);
    let tiles_x = wo.div_ceil(M);
    let per_img = ho.div_ceil(M) * tiles_x;
    let geo = Geometry {
        c,
        co,
        h,
        w,
        ho,
        wo,
        p,
        tiles_x,
        per_img,
    };
    let total = b * per_img;
    let xi_n = A * A;
    let threads = rayon::current_num_threads();
    let tile_n = tiles_per_task(total);
    let tasks = total.div_ceil(tile_n);
    let mut out = vec![0f32; b * co * ho * wo];
    let out_ptr = SendPtr(out.as_mut_ptr());
    let stop = crate::model::interrupt::current();
    let stopped = || crate::model::interrupt::is_set(stop.as_ref());
    with_buffer(&WEIGHTS, xi_n * c * co, |u| {
        let u_ptr = SendPtr(u.as_mut_ptr());
        let chunk = c.div_ceil(4 * threads).max(1);
        (0..c.div_ceil(chunk))
            .into_par_iter()
            .for_each(|i| weights(wt, geo, (i * chunk, ((i + 1) * chunk).min(c)), u_ptr));
        let u: &[f32] = u;
        let run_task = |task: usize, scratch: &mut [f32], par: gemm::Parallelism| {
            let t0 = task * tile_n;
            let tn = tile_n.min(total - t0);
            let (v, m) = scratch.split_at_mut(xi_n * tn * c);
            let m = &mut m[..xi_n * tn * co];
            input(x, geo, (t0, tn), v);
            for xi in 0..xi_n {
                // SAFETY: U[ξ] is c×co column-major, V[ξ] c×tn column-major (tile k at k·c),
                // M[ξ] co×tn column-major, all inside their buffers; M is this task's own.
                unsafe {
                    gemm::gemm(
                        co,
                        tn,
                        c,
                        m.as_mut_ptr().add(xi * tn * co),
                        co as isize,
                        1,
                        false,
                        u.as_ptr().add(xi * c * co),
                        co as isize,
                        1,
                        v.as_ptr().add(xi * tn * c),
                        c as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    );
                }
            }
            output(m, bias, geo, (t0, tn), out_ptr);
        };
        let scratch_len = xi_n * tile_n * (c + co);
        if tasks >= 2 * threads {
            (0..tasks).into_par_iter().for_each(|t| {
                if !stopped() {
                    with_buffer(&TILES, scratch_len, |s| {
                        run_task(t, s, gemm::Parallelism::None);
                    });
                }
            });
        } else {
            let mut scratch = vec![0f32; scratch_len];
            for t in 0..tasks {
                if stopped() {
                    break;
                }
                run_task(t, &mut scratch, gemm::Parallelism::Rayon(threads));
            }
        }
    });
    if stopped() {
        return Err(crate::model::interrupt::interrupted());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Result, Tensor};

    /// Inputs like a trained network's: unit normal activations, weights with std 1/√(9·cin).
    fn data(b: usize, c: usize, co: usize, h: usize, w: usize) -> Result<(Tensor, Tensor, Tensor)> {
        let dev = Device::Cpu;
        let std = 1.0 / (9.0 * c as f64).sqrt();
        Ok((
            Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?,
            Tensor::randn(0f32, std as f32, (co, c, 3, 3), &dev)?,
            Tensor::randn(0f32, 0.1, co, &dev)?,
        ))
    }

    /// The exact convolution in f64.
    fn direct_f64(
        x: &[f32],
        wt: &[f32],
        bias: &[f32],
        (b, c, h, w): (usize, usize, usize, usize),
        co: usize,
        p: usize,
    ) -> Vec<f64> {
        let (ho, wo) = (h + 2 * p - 2, w + 2 * p - 2);
        let mut out = vec![0f64; b * co * ho * wo];
        let mut xs = vec![0f64; w + 2 * p];
        for bi in 0..b {
            for o in 0..co {
                let dst = &mut out[(bi * co + o) * ho * wo..][..ho * wo];
                dst.fill(f64::from(bias[o]));
                for ci in 0..c {
                    let plane = &x[(bi * c + ci) * h * w..][..h * w];
                    let k = &wt[(o * c + ci) * 9..][..9];
                    for oy in 0..ho {
                        let drow = &mut dst[oy * wo..][..wo];
                        for ky in 0..3 {
                            let iy = (oy + ky) as isize - p as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for (d, &s) in
                                xs[p..p + w].iter_mut().zip(&plane[iy as usize * w..][..w])
                            {
                                *d = f64::from(s);
                            }
                            for kx in 0..3 {
                                let kv = f64::from(k[ky * 3 + kx]);
                                for (d, &s) in drow.iter_mut().zip(&xs[kx..kx + wo]) {
                                    *d += kv * s;
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
        let (mut d, mut n) = (0f64, 0f64);
        for (&g, &w) in got.iter().zip(want) {
            d += (f64::from(g) - w).powi(2);
            n += w * w;
        }
        (d / n).sqrt()
    }

    fn flat(t: &Tensor) -> Result<Vec<f32>> {
        t.flatten_all()?.to_vec1::<f32>()
    }

    #[test]
    fn winograd_matches_candle() -> Result<()> {
        // (batch, in, out, h, w, padding): 1×1 and 2×3 maps (one partial tile, mostly padding),
        // tiles cut by the edge, channel counts off the 16-lane vectors, a batch.
        for &(b, c, co, h, w, p) in &[
            (1, 3, 4, 1, 1, 1),
            (1, 5, 7, 2, 3, 1),
            (2, 3, 5, 5, 5, 0),
            (2, 17, 33, 5, 5, 1),
            (1, 130, 9, 33, 47, 1),
            (2, 40, 130, 33, 47, 0),
            (2, 64, 64, 16, 16, 1),
        ] {
            let (x, wt, bias) = data(b, c, co, h, w)?;
            let want = x
                .conv2d(&wt, p, 1, 1, 1)?
                .broadcast_add(&bias.reshape((1, co, 1, 1))?)?;
            let want = flat(&want)?;
            let (xv, wv, bv) = (flat(&x)?, flat(&wt)?, flat(&bias)?);
            let got = conv3x3(&xv, &wv, &bv, (b, c, h, w), co, p)?;
            assert_eq!(got.len(), want.len());
            let want64: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
            let err = rel_l2(&got, &want64);
            assert!(err < 1e-5, "{b} {c} {co} {h} {w} {p}: {err}");
        }
        Ok(())
    }

    /// Winograd rounds more than the direct sums; it must stay within a small factor of the
    /// im2col path's own error against the exact (f64) convolution.
    #[test]
    fn winograd_accuracy_near_im2col() -> Result<()> {
        for &(b, c, co, h, w) in &[(1, 128, 128, 33, 47), (2, 256, 64, 16, 16)] {
            let (im2col, err) = accuracy(b, c, co, h, w)?;
            assert!(
                err <= 3.0 * im2col.max(1e-7),
                "{c}->{co} {h}x{w}: {err:.2e} vs im2col {im2col:.2e}"
            );
        }
        Ok(())
    }

    /// Relative L2 errors against the f64 convolution: im2col's and Winograd's.
    fn accuracy(b: usize, c: usize, co: usize, h: usize, w: usize) -> Result<(f64, f64)> {
        let (x, wt, bias) = data(b, c, co, h, w)?;
        let (xv, wv, bv) = (flat(&x)?, flat(&wt)?, flat(&bias)?);
        let exact = direct_f64(&xv, &wv, &bv, (b, c, h, w), co, 1);
        let im2col = flat(&super::super::conv::conv2d_with(
            &x, &wt, &bias, 1, 1, false,
        )?)?;
        let got = conv3x3(&xv, &wv, &bv, (b, c, h, w), co, 1)?;
        Ok((rel_l2(&im2col, &exact), rel_l2(&got, &exact)))
    }

    /// `cargo test --release --lib winograd_report -- --ignored --nocapture`: the accuracy table
    /// and the timings that set [`choose`]'s thresholds.
    #[test]
    #[ignore]
    fn winograd_report() -> Result<()> {
        println!("accuracy (relative L2 vs f64): shape | im2col | winograd | ratio");
        let custom = std::env::var("SHAPES").is_ok();
        for &(b, c, co, h, w) in if custom {
            &[][..]
        } else {
            &[
                (1, 128, 128, 128, 128),
                (1, 256, 256, 64, 64),
                (2, 320, 320, 64, 64),
                (1, 512, 512, 33, 47),
                (2, 640, 640, 32, 32),
                (2, 1280, 1280, 16, 16),
                (2, 1280, 1280, 8, 8),
            ][..]
        } {
            let (im2col, err) = accuracy(b, c, co, h, w)?;
            println!(
                "{b}x{c}->{co} {h}x{w} | {im2col:.2e} | {err:.2e} | {:.2}",
                err / im2col
            );
        }
        println!("timing (median of 5): shape | im2col | winograd | speedup");
        let shapes: Vec<(usize, usize, usize, usize, usize)> = match std::env::var("SHAPES") {
            Ok(s) => s
                .split(';')
                .map(|t| {
                    let v: Vec<usize> = t.split(',').map(|n| n.trim().parse().unwrap()).collect();
                    (v[0], v[1], v[2], v[3], v[4])
                })
                .collect(),
            Err(_) => vec![
                (2, 320, 320, 64, 64),
                (2, 640, 640, 32, 32),
                (2, 1280, 1280, 16, 16),
                (2, 1280, 1280, 8, 8),
                (2, 4, 320, 64, 64),
                (1, 64, 64, 256, 256),
                (1, 512, 512, 64, 64),
                (1, 512, 512, 128, 128),
                (1, 256, 256, 256, 256),
                (1, 128, 128, 512, 512),
            ],
        };
        for (b, c, co, h, w) in shapes {
            let (x, wt, bias) = data(b, c, co, h, w)?;
            let (xv, wv, bv) = (flat(&x)?, flat(&wt)?, flat(&bias)?);
            let time = |f: &dyn Fn() -> Result<()>| -> Result<f64> {
                f()?;
                let mut ts = Vec::new();
                for _ in 0..5 {
                    let t = std::time::Instant::now();
                    f()?;
                    ts.push(t.elapsed().as_secs_f64() * 1e3);
                }
                ts.sort_by(f64::total_cmp);
                Ok(ts[2])
            };
            let im =
                time(&|| super::super::conv::conv2d_with(&x, &wt, &bias, 1, 1, false).map(|_| ()))?;
            let wg = time(&|| conv3x3(&xv, &wv, &bv, (b, c, h, w), co, 1).map(|_| ()))?;
            println!(
                "{b}x{c}->{co} {h}x{w} | {im:.1} ms | {wg:.1} ms | {:.2}x",
                im / wg
            );
        }
        Ok(())
    }
}
