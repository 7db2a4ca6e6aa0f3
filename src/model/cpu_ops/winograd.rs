//! 3×3 stride-1 convolution through Winograd's minimal filtering F(2×2, 3×3): each 2×2 block of
//! output pixels (a tile) costs 16 multiplies per channel pair instead of 36, 2.25× fewer. The
//! convolution becomes 16 independent matrix products `[cout × cin] · [cin × tiles]`, one per
//! point of the transformed 4×4 tile, which run through `gemm` like the im2col path does.
//!
//! F(4×4, 3×3) would do 4× fewer, but measured against the exact convolution its f32 error is
//! 6–11× im2col's on trained-like data whichever points it uses (0, ±1, ±2 or ±1/2, ∞), where
//! F(2,3) stays within 1–1.7×; the crate keeps module parity near 1e-6, so F(2,3) it is.
//!
//! The transforms vectorise across 16 consecutive tiles of one tile row and one channel, so
//! they read and write contiguous memory: each task (a block of tiles of one image) first copies
//! the window of the zero-padded input it needs (no bounds checks after that), loads 34 floats
//! per input row and splits them into the four stride-2 columns of 16 tiles (two-source
//! permutes), and writes the two output pixels of 16 tiles interleaved as 32 contiguous floats.
//! Layouts keep the tile innermost: transformed weights `U[ξ][cin][cout]`, transformed input
//! tiles `V[ξ][cin][tile]`, products `M[ξ][cout][tile]` (`gemm` reads them in place). The input
//! and output transforms only add and subtract, so they round no worse than the sums
//! themselves; the weight transform halves (exact) and runs in f64.

use super::{dispatch_simd, SendPtr};
use rayon::prelude::*;
use std::cell::Cell;

/// Tiles per vector of the input and output transforms, output channels per vector of the weight
/// transform (one AVX-512 register, two AVX2 ones).
const L: usize = 16;
/// Output pixels per tile side.
const M: usize = 2;
/// Points of the transformed tile per side (`M + 2`).
const A: usize = 4;

/// A column of `N` values for `L` tiles (or channels).
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
}

/// A task's tiles: image `bi`, tile rows `ty0..ty1` and tile columns `tx0..tx1`, numbered
/// row-major from 0 (`k = (ty − ty0)·(tx1 − tx0) + tx − tx0`).
#[derive(Clone, Copy)]
struct Block {
    bi: usize,
    ty0: usize,
    ty1: usize,
    tx0: usize,
    tx1: usize,
}

impl Block {
    fn tiles(&self) -> usize {
        (self.ty1 - self.ty0) * (self.tx1 - self.tx0)
    }

    /// Rows and columns of the window of the zero-padded input that the block reads.
    fn window(&self) -> (usize, usize) {
        (2 * (self.ty1 - self.ty0) + 2, 2 * (self.tx1 - self.tx0) + 2)
    }

    /// Each run of up to `L` consecutive tiles of one tile row (a vector of the transforms): its
    /// first tile's number, its length, and its block-relative tile row and column. (Loops over
    /// these, not closures, so that the loop bodies compile with the caller's target features.)
    #[inline(always)]
    fn groups(&self) -> impl Iterator<Item = (usize, usize, usize, usize)> {
        let nx = self.tx1 - self.tx0;
        let per_row = nx.div_ceil(L);
        (0..(self.ty1 - self.ty0) * per_row).map(move |g| {
            let (ty, tx) = (g / per_row, (g % per_row) * L);
            (ty * nx + tx, L.min(nx - tx), ty, tx)
        })
    }
}

/// Extra elements after a task's window and products: a short run of tiles still loads whole
/// vectors (the lanes past its end are computed and dropped).
const SLACK: usize = 2 * L + 2;

dispatch_simd!(fn weights(wt: &[f32], geo: Geometry, ci: (usize, usize), u: SendPtr) -> () => weights_portable);
dispatch_simd!(fn input_any(s: &[f32], geo: Geometry, blk: Block, v: &mut [f32]) -> () => input_portable);
dispatch_simd!(fn output(mp: &[f32], bias: &[f32], geo: Geometry, blk: Block, out: SendPtr) -> () => output_portable);

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

/// The block's window of the zero-padded input, channel by channel: `s[ci][r][q]` is pixel
/// (2·ty0 + r − p, 2·tx0 + q − p) of channel `ci`, zero outside the image. Copied once per task
/// (it stays in cache for the transform), so that the transform needs no bounds checks.
fn window(x: &[f32], geo: Geometry, blk: Block, s: &mut [f32]) {
    let Geometry { c, h, w, p, .. } = geo;
    let (sr, sw) = blk.window();
    let iy0 = (2 * blk.ty0) as isize - p as isize;
    let ix0 = (2 * blk.tx0) as isize - p as isize;
    // The window's columns inside the image: 0 ≤ ix0 + q < w (ix0 < w, as a tile starts
    // inside the output, and ix0 ≥ −p).
    let q0 = (-ix0).max(0) as usize;
    let q1 = ((w as isize - ix0) as usize).clamp(q0, sw);
    let x0 = (ix0 + q0 as isize) as usize;
    for ci in 0..c {
        let plane = &x[(blk.bi * c + ci) * h * w..][..h * w];
        for (r, row) in s[ci * sr * sw..][..sr * sw]
            .chunks_exact_mut(sw)
            .enumerate()
        {
            let iy = iy0 + r as isize;
            if iy < 0 || iy >= h as isize {
                row.fill(0.0);
                continue;
            }
            let src = &plane[iy as usize * w..][..w];
            row[..q0].fill(0.0);
            row[q0..q1].copy_from_slice(&src[x0..x0 + q1 - q0]);
            row[q1..].fill(0.0);
        }
    }
}

/// The four columns `j` of 16 tiles in one input row, `d[j][l] = r[2l + j]`: even and odd
/// lanes of two overlapping 32-float loads (shuffles).
#[inline(always)]
fn deinterleave(r: &[f32; 2 * L + 2]) -> Lanes<f32, A> {
    let mut d = [[0f32; L]; A];
    for l in 0..L {
        for (j, dj) in d.iter_mut().enumerate() {
            dj[l] = r[2 * l + j];
        }
    }
    d
}

/// `V[ξ][ci][k] = (Bᵀ d B)[ξ]` for the block's tiles from its window `s`, 16 consecutive tiles
/// of one tile row a vector.
#[inline(always)]
fn input_portable(s: &[f32], geo: Geometry, blk: Block, v: &mut [f32]) {
    input_kernel::<Portable>(s, geo, blk, v);
}

/// The input transform, AVX-512 where the CPU has it (two-source permutes for the stride-2
/// loads, which LLVM does not derive from [`deinterleave`] on its own), else as compiled by
/// [`dispatch_simd!`].
fn input(s: &[f32], geo: Geometry, blk: Block, v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::simd() == super::Simd::Avx512 {
        // SAFETY: `simd()` reported AVX-512F.
        return unsafe { input_avx512(s, geo, blk, v) };
    }
    input_any(s, geo, blk, v);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn input_avx512(s: &[f32], geo: Geometry, blk: Block, v: &mut [f32]) {
    input_kernel::<Avx512>(s, geo, blk, v);
}

/// Loads the four columns of 16 tiles from one input row: `d[j][l] = r[2l + j]`.
trait Columns {
    fn load(r: &[f32; 2 * L + 2]) -> Lanes<f32, A>;
}

struct Portable;

impl Columns for Portable {
    #[inline(always)]
    fn load(r: &[f32; 2 * L + 2]) -> Lanes<f32, A> {
        deinterleave(r)
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Columns for Avx512 {
    #[inline(always)]
    fn load(r: &[f32; 2 * L + 2]) -> Lanes<f32, A> {
        // SAFETY: only `input_avx512` loads through `Avx512`, and it runs only on CPUs with
        // AVX-512F.
        unsafe { deinterleave_avx512(r) }
    }
}

/// [`deinterleave`] as four loads and four two-source permutes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn deinterleave_avx512(r: &[f32; 2 * L + 2]) -> Lanes<f32, A> {
    use std::arch::x86_64::{__m512, _mm512_loadu_ps, _mm512_permutex2var_ps, _mm512_setr_epi32};
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let p = r.as_ptr();
    // SAFETY: the loads read r[0..16], r[16..32], r[2..18] and r[18..34], all inside `r`.
    let (a, b, a2, b2) = unsafe {
        (
            _mm512_loadu_ps(p),
            _mm512_loadu_ps(p.add(L)),
            _mm512_loadu_ps(p.add(2)),
            _mm512_loadu_ps(p.add(L + 2)),
        )
    };
    let d: [__m512; A] = [
        _mm512_permutex2var_ps(a, even, b),
        _mm512_permutex2var_ps(a, odd, b),
        _mm512_permutex2var_ps(a2, even, b2),
        _mm512_permutex2var_ps(a2, odd, b2),
    ];
    // SAFETY: __m512 and [f32; 16] have the same size, and every bit pattern is a valid f32.
    unsafe { std::mem::transmute::<[__m512; A], Lanes<f32, A>>(d) }
}

/// [`input_portable`] with the row loads of `C`.
#[inline(always)]
fn input_kernel<C: Columns>(s: &[f32], geo: Geometry, blk: Block, v: &mut [f32]) {
    let c = geo.c;
    let tn = blk.tiles();
    let (sr, sw) = blk.window();
    for ci in 0..c {
        let plane = &s[ci * sr * sw..];
        for (k, n, ty, tx) in blk.groups() {
            let base = 2 * ty * sw + 2 * tx;
            // Rows first (along j), then columns (along i); plain loops and `inline(always)`
            // functions, no closures, so that all of it compiles with the caller's features.
            let mut rows = [[[0f32; L]; A]; A];
            for (i, ri) in rows.iter_mut().enumerate() {
                let r = &plane[base + i * sw..][..2 * L + 2];
                *ri = input_1d(&C::load(r.try_into().expect("2L + 2 floats")));
            }
            for j in 0..A {
                let col = input_1d(&[rows[0][j], rows[1][j], rows[2][j], rows[3][j]]);
                for (i, vals) in col.iter().enumerate() {
                    let dst = &mut v[((i * A + j) * c + ci) * tn + k..][..n];
                    if n == L {
                        // A constant length: a vector store, not a call to memcpy.
                        dst.copy_from_slice(vals);
                    } else {
                        dst.copy_from_slice(&vals[..n]);
                    }
                }
            }
        }
    }
}

/// `out[bi][co][2ty..2ty+2][2tx..2tx+2] = bias + (Aᵀ m A)` for the block's tiles from
/// `mprod[ξ][co][k]`, 16 consecutive tiles of one row a vector, interleaved into 32 contiguous
/// pixels per output row and clipped at the output's edges.
#[inline(always)]
fn output_portable(mprod: &[f32], bias: &[f32], geo: Geometry, blk: Block, out: SendPtr) {
    let Geometry { co, ho, wo, .. } = geo;
    let tn = blk.tiles();
    for (o, &b) in bias.iter().enumerate().take(co) {
        for (k, n, ty, tx) in blk.groups() {
            let (oy, ox) = (M * (blk.ty0 + ty), M * (blk.tx0 + tx));
            let (rows, cols) = (M.min(ho - oy), (M * n).min(wo - ox));
            // Rows first (along j), then columns (along i), as in the input transform.
            let mut r = [[[0f32; L]; M]; A];
            for (i, ri) in r.iter_mut().enumerate() {
                let mut d = [[0f32; L]; A];
                for (j, dj) in d.iter_mut().enumerate() {
                    let src = &mprod[((i * A + j) * co + o) * tn + k..][..L];
                    *dj = src.try_into().expect("L floats");
                }
                *ri = output_1d(&d);
            }
            let mut y = [[[0f32; L]; M]; M];
            for j in 0..M {
                let col = output_1d(&[r[0][j], r[1][j], r[2][j], r[3][j]]);
                for (i, vals) in col.iter().enumerate() {
                    y[i][j] = *vals;
                }
            }
            for (i, yi) in y[..rows].iter().enumerate() {
                let mut row = [0f32; M * L];
                for l in 0..L {
                    row[2 * l] = b + yi[0][l];
                    row[2 * l + 1] = b + yi[1][l];
                }
                // SAFETY: output row oy + i, columns ox..ox + cols lie inside channel o of
                // image bi (rows and cols are clipped to the output), and only this task writes
                // these tiles.
                unsafe {
                    let dst = out
                        .get()
                        .add((blk.bi * co + o) * ho * wo + (oy + i) * wo + ox);
                    if cols == M * L {
                        std::ptr::copy_nonoverlapping(row.as_ptr(), dst, M * L);
                    } else {
                        std::ptr::copy_nonoverlapping(row.as_ptr(), dst, cols);
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Transformed weights (on the calling thread) and a task's window, tiles and products (on
    /// each worker): kept between calls so that large buffers are not faulted in again every
    /// time.
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
/// AVX-512 cores, `winograd_report`). Every task streams all the transformed weights
/// (16·cin·cout), so a task needs more tiles the more weights there are: up to 128×128 channel
/// pairs (weights in L2) 16 tiles a task pay (128 channels on 16×16 maps: 1.3× faster), up to
/// 640×640 64 (512 channels on 32×32: 1.4×; 256 and 640 with 16 and 32 tiles: 0.9–1.0×), up to
/// 1920×640 128 (1.2×; 1280×1280 with 128: 1.0–1.1×, with 64: 0.6×). Products with fewer than
/// 16 input channels are too thin to gain (4→320: 0.7×, 3→64: 0.9×).
pub(crate) fn pays(b: usize, c: usize, co: usize, ho: usize, wo: usize) -> bool {
    let tn = tiles_per_task(b * ho.div_ceil(M) * wo.div_ceil(M));
    let pairs = c * co;
    c >= 16
        && match tn {
            128.. => pairs <= 1920 * 640,
            64.. => pairs <= 640 * 640,
            16.. => pairs <= 128 * 128,
            _ => false,
        }
}

/// Tiles a task transforms and multiplies at once: the products' `n`. 64, 128 and 256 measure
/// within noise of each other on the VAE's and UNet's large convolutions (fewer tiles stream the
/// weights more often, more spill the tiles out of L2); at least two tasks a thread keep the
/// threads balanced.
fn tiles_per_task(total: usize) -> usize {
    TASK_TILES
        .min(total.div_ceil(2 * rayon::current_num_threads()))
        .max(1)
}

const TASK_TILES: usize = 128;

/// Tile rows and tile columns of a task's block: whole tile rows where a row holds fewer tiles
/// than a task, else equal parts of one row, whole vectors where possible.
fn block_shape(total: usize, tiles_y: usize, tiles_x: usize) -> (usize, usize) {
    let target = tiles_per_task(total);
    if tiles_x >= target {
        let parts = tiles_x.div_ceil(target);
        (1, tiles_x.div_ceil(parts).next_multiple_of(L).min(tiles_x))
    } else {
        ((target / tiles_x).clamp(1, tiles_y), tiles_x)
    }
}

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
    let (tiles_y, tiles_x) = (ho.div_ceil(M), wo.div_ceil(M));
    let geo = Geometry {
        c,
        co,
        h,
        w,
        ho,
        wo,
        p,
    };
    let total = b * tiles_y * tiles_x;
    let xi_n = A * A;
    let threads = rayon::current_num_threads();
    let (rows, cols) = block_shape(total, tiles_y, tiles_x);
    let (nby, nbx) = (tiles_y.div_ceil(rows), tiles_x.div_ceil(cols));
    let tasks = b * nby * nbx;
    let block = |t: usize| {
        let (bi, r) = (t / (nby * nbx), t % (nby * nbx));
        let (ty0, tx0) = ((r / nbx) * rows, (r % nbx) * cols);
        Block {
            bi,
            ty0,
            ty1: (ty0 + rows).min(tiles_y),
            tx0,
            tx1: (tx0 + cols).min(tiles_x),
        }
    };
    let tile_n = rows * cols;
    let (v_len, m_len) = (xi_n * tile_n * c, xi_n * tile_n * co + SLACK);
    let s_len = c * (2 * rows + 2) * (2 * cols + 2) + SLACK;
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
            let blk = block(task);
            let tn = blk.tiles();
            let (v, rest) = scratch.split_at_mut(v_len);
            let (m, s) = rest.split_at_mut(m_len);
            let (sr, sw) = blk.window();
            let s = &mut s[..c * sr * sw + SLACK];
            window(x, geo, blk, s);
            input(s, geo, blk, v);
            for xi in 0..xi_n {
                // SAFETY: U[ξ] is c×co column-major (co innermost), V[ξ] c×tn row-major (tile
                // innermost), M[ξ] co×tn row-major, all inside their buffers; M is this task's.
                unsafe {
                    gemm::gemm(
                        co,
                        tn,
                        c,
                        m.as_mut_ptr().add(xi * co * tn),
                        1,
                        tn as isize,
                        false,
                        u.as_ptr().add(xi * c * co),
                        co as isize,
                        1,
                        v.as_ptr().add(xi * c * tn),
                        1,
                        tn as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    );
                }
            }
            output(m, bias, geo, blk, out_ptr);
        };
        let scratch_len = v_len + m_len + s_len;
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
            // Odd sizes, rows of tiles off the 16-tile vectors (34 and 17 a row), several rows a
            // task, both paddings, a batch.
            (2, 20, 18, 37, 67, 1),
            (2, 19, 21, 36, 35, 0),
            // Rows longer than a task: each row split into blocks (80 + 70 tiles), the second
            // ending in a short vector.
            (1, 16, 16, 9, 301, 0),
            (2, 17, 16, 8, 299, 1),
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
    /// and the timings that set [`pays`]'s thresholds.
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
