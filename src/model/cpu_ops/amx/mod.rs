//! Intel AMX bf16 matrix multiply with f32 accumulation for `Linear`-style layers.
//!
//! `out[m, n] = bf16(a[m, k]) · bf16(w[n, k])ᵀ + bias[n]`, where `w` is packed once with
//! [`PackedBf16::pack`] into the VNNI layout that `tdpbf16ps` wants for its B operand.
//!
//! The tile instructions are emitted with `asm!` because the `amx-*` target features are not
//! stable. Every micro-kernel call is a single `asm!` block that initialises its accumulators,
//! runs the whole K loop and stores the accumulators, so the compiler never has to reason about
//! tile registers living across blocks. The tile *configuration* does live across blocks: it is
//! per-thread state, so each rayon task loads it before its first kernel and releases it after its
//! last one, without yielding to rayon in between.
//!
//! Numerics: inputs are rounded to bf16 with round-to-nearest-even (the same as torch's
//! `.to(torch.bfloat16)`); products of two bf16 values are exact in f32 and are summed in f32.
//! The hardware treats bf16 subnormal inputs as zero, which only matters for |x| < 1.2e-38
//! (the activation side is converted with `vcvtne2ps2bf16`, which flushes them too, and is
//! otherwise bit-identical to [`f32_to_bf16`] up to NaN payloads).
//!
//! Threading: [`matmul`] splits the work into about four rayon tasks per thread of the current
//! pool; each thread keeps a packed-A double buffer (up to ~768 KiB, more for very large k) in a
//! thread-local for reuse.

use std::sync::OnceLock;

/// Rows (A) and columns (B/C) covered by one tile.
const TILE: usize = 16;
/// k values covered by one bf16 tile (64 bytes per row).
const TILE_K: usize = 32;
/// The micro-kernel computes 2×2 tiles: 32 rows × 32 columns of C.
const BLOCK: usize = 2 * TILE;

/// A 64-byte aligned chunk, so tile loads never straddle cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

const ZERO_LINE: Line = Line([0; 64]);

/// Rounds an f32 to bf16 bits with round-to-nearest-even; NaN becomes the canonical quiet NaN
/// `0x7fc0` (what `c10::BFloat16` produces), subnormals are kept.
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fc0;
    }
    let b = x.to_bits();
    let bias = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(bias) >> 16) as u16
}

/// Widens bf16 bits to f32 (exact).
#[inline]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Whether the AMX path can run in this process: the CPU has AMX-TILE, AMX-BF16 and the
/// AVX-512 subsets used for packing, the kernel granted the tile-data state to this process, and
/// `GLICHEN_AMX` is not `off`. Computed once.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var("GLICHEN_AMX").is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
            return false;
        }
        detect()
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use core::arch::x86_64::__cpuid_count;
    let max_leaf = __cpuid_count(0, 0).eax;
    if max_leaf < 7 {
        return false;
    }
    let leaf7 = __cpuid_count(7, 0);
    let amx_tile = leaf7.edx & (1 << 24) != 0;
    let amx_bf16 = leaf7.edx & (1 << 22) != 0;
    if !(amx_tile && amx_bf16) {
        return false;
    }
    if !(is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512bf16"))
    {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM) only takes two integers and at worst fails with
    // an error code; it grants the permission to the whole process, not just this thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    r == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// A `[n, k]` weight rounded to bf16 and laid out as `tdpbf16ps` B tiles.
///
/// Layout: columns are grouped in pairs of 16-column tiles (32 columns, n padded with zeros),
/// k in blocks of 32 (padded with zeros). For column pair `p` and k block `kb`, two 1 KiB tiles
/// follow each other at byte offset `(p * kblocks + kb) * 2048`; in tile `t`, row `r` holds for
/// each of its 16 columns `c` the pair `(k = 32kb + 2r, 32kb + 2r + 1)` of column
/// `32p + 16t + c`. So one column pair is contiguous over the whole K range.
pub struct PackedBf16 {
    n: usize,
    k: usize,
    kblocks: usize,
    npairs: usize,
    data: Vec<Line>,
}

impl std::fmt::Debug for PackedBf16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedBf16")
            .field("n", &self.n)
            .field("k", &self.k)
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl PackedBf16 {
    /// Packs a row-major `[n, k]` f32 weight (PyTorch `Linear` layout: out × in).
    pub fn pack(weight: &[f32], n: usize, k: usize) -> PackedBf16 {
        assert!(
            weight.len() >= n * k,
            "amx::PackedBf16::pack: weight has {} elements, need {n}x{k}",
            weight.len()
        );
        Self::pack_with(n, k, |col, kk| weight[col * k + kk])
    }

    /// Packs the `[n, k]` operand stored k-major: element `(col, kk)` at `src[kk * ld + col]`
    /// (a tile of im2col patches, or a 1×1 convolution's input). Single-threaded, for callers
    /// inside a rayon task; vectorised on AMX CPUs (two k rows interleaved per tile row).
    pub fn pack_k_major(src: &[f32], ld: usize, n: usize, k: usize) -> PackedBf16 {
        assert!(n >= 1 && k >= 1 && ld >= n && src.len() >= (k - 1) * ld + n);
        #[cfg(target_arch = "x86_64")]
        if available() {
            let kblocks = k.div_ceil(TILE_K);
            let npairs = n.div_ceil(BLOCK);
            let mut data = vec![ZERO_LINE; npairs * kblocks * 2 * TILE];
            // SAFETY: AVX-512F/BW/BF16 come with `available()`; `src` was checked above and
            // `data` has one line per (pair, k block, tile, row).
            unsafe { x86::pack_k_major(src, ld, n, k, kblocks, &mut data) };
            return PackedBf16 {
                n,
                k,
                kblocks,
                npairs,
                data,
            };
        }
        Self::pack_with(n, k, |col, kk| src[kk * ld + col])
    }

    /// Packs the `[n, k]` operand whose element `(col, kk)` is `at(col, kk)`: a weight seen
    /// through strides or transposed (an attention head's keys or values in place).
    pub fn pack_with(n: usize, k: usize, at: impl Fn(usize, usize) -> f32 + Sync) -> PackedBf16 {
        assert!(
            n >= 1 && k >= 1,
            "amx::PackedBf16::pack: empty weight {n}x{k}"
        );
        let kblocks = k.div_ceil(TILE_K);
        let npairs = n.div_ceil(BLOCK);
        let lines = npairs * kblocks * 2 * TILE;
        let mut data = vec![ZERO_LINE; lines];
        // Rows of `weight` are independent, so parallelise over column pairs, which own disjoint
        // contiguous ranges of `data`.
        use rayon::prelude::*;
        data.par_chunks_mut(kblocks * 2 * TILE)
            .enumerate()
            .for_each(|(p, panel)| {
                for t in 0..2 {
                    for c in 0..TILE {
                        let col = p * BLOCK + t * TILE + c;
                        if col >= n {
                            continue;
                        }
                        for kk in 0..k {
                            let v = at(col, kk);
                            let kb = kk / TILE_K;
                            let r = (kk % TILE_K) / 2;
                            let pair = kk % 2;
                            let line = &mut panel[(kb * 2 + t) * TILE + r];
                            let off = c * 4 + pair * 2;
                            line.0[off..off + 2].copy_from_slice(&f32_to_bf16(v).to_le_bytes());
                        }
                    }
                }
            });
        PackedBf16 {
            n,
            k,
            kblocks,
            npairs,
            data,
        }
    }

    /// Output features.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes held by the packed weight (including padding).
    pub fn bytes(&self) -> usize {
        self.data.len() * 64
    }

    /// The bf16 weight element `(col, kk)`; used by the portable fallback and tests.
    fn get(&self, col: usize, kk: usize) -> u16 {
        let p = col / BLOCK;
        let t = (col % BLOCK) / TILE;
        let c = col % TILE;
        let kb = kk / TILE_K;
        let r = (kk % TILE_K) / 2;
        let line = &self.data[((p * self.kblocks + kb) * 2 + t) * TILE + r];
        let off = c * 4 + (kk % 2) * 2;
        u16::from_le_bytes([line.0[off], line.0[off + 1]])
    }
}

/// A `[rows, k]` left operand rounded to bf16 once, in the A-tile layout: a convolution's weight
/// (rows are output channels), reused by every tile of pixels.
pub struct PackedRows {
    rows: usize,
    k: usize,
    kblocks: usize,
    data: Vec<Line>,
}

impl std::fmt::Debug for PackedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedRows")
            .field("rows", &self.rows)
            .field("k", &self.k)
            .finish()
    }
}

impl PackedRows {
    /// Packs a row-major `[rows, k]` matrix; `None` where AMX is not [`available`] (the packing
    /// uses AVX512-BF16 and only the tile products read it).
    pub fn pack(a: &[f32], rows: usize, k: usize) -> Option<PackedRows> {
        assert!(rows >= 1 && k >= 1 && a.len() >= rows * k);
        if !available() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let kblocks = k.div_ceil(TILE_K);
            let pairs = rows.div_ceil(BLOCK);
            let mut data = vec![ZERO_LINE; pairs * kblocks * 2 * TILE];
            // SAFETY: AVX-512F/BW/BF16 come with `available()`; `a` holds rows × k; `data` holds
            // `pairs * kblocks * 32` lines.
            unsafe { x86::pack_a(a, k, k, 0, rows, kblocks, 0, pairs * BLOCK, &mut data) };
            Some(PackedRows {
                rows,
                k,
                kblocks,
                data,
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn k(&self) -> usize {
        self.k
    }
}

/// `out[r][c] (+)= Σ_kk a[r][kk] · b[c][kk]` for every row of `a` and column of `b`, on this
/// thread alone; `accumulate` adds onto what `out` holds (a convolution's bias), else overwrites.
///
/// # Safety
/// `out` must be writable for `a.rows()` rows of `b.n()` floats, `ldo` apart, that no other
/// thread touches meanwhile. `a` only exists where AMX is available.
pub unsafe fn product_packed(
    a: &PackedRows,
    b: &PackedBf16,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    assert!(
        a.k == b.k && ldo >= b.n,
        "amx::product_packed: shapes do not fit"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `a` was packed, so AMX is available; the caller promises `out`.
    unsafe {
        x86::tile_products(&a.data, a.rows, a.kblocks, b, out, ldo, b.n, accumulate);
    }
}

/// `out[r][c] = Σ_kk bf16(a[r][kk]) · packed[c][kk]` for `rows` rows of `a` (`lda` apart),
/// single-threaded (for callers already inside a rayon task, such as one attention block).
/// Writes columns `..packed.n()` of each output row and at most `out_cols` columns.
///
/// Without AMX it runs a slow portable loop with the same rounding.
///
/// # Safety
/// `out` must be writable for `rows` rows of `out_cols` floats, `ldo` apart, that no other
/// thread touches meanwhile.
pub unsafe fn product_rows(
    a: &[f32],
    lda: usize,
    rows: usize,
    packed: &PackedBf16,
    out: *mut f32,
    ldo: usize,
    out_cols: usize,
) {
    assert!(rows >= 1 && out_cols >= packed.n && ldo >= out_cols && lda >= packed.k);
    assert!(
        a.len() >= (rows - 1) * lda + packed.k,
        "amx::product_rows: a has {} elements, need {rows} rows of {} at stride {lda}",
        a.len(),
        packed.k
    );
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AMX is available; the caller promises `out`; `a` was checked above.
        unsafe { x86::product_rows(a, lda, rows, packed, out, ldo, out_cols) };
        return;
    }
    for r in 0..rows {
        let ar: Vec<f32> = a[r * lda..r * lda + packed.k]
            .iter()
            .map(|&v| bf16_to_f32(f32_to_bf16(v)))
            .collect();
        for c in 0..packed.n {
            let s: f32 = (0..packed.k)
                .map(|kk| ar[kk] * bf16_to_f32(packed.get(c, kk)))
                .sum();
            // SAFETY: row `r < rows`, column `c < n <= out_cols`, inside the caller's region.
            unsafe { *out.add(r * ldo + c) = s };
        }
    }
}

/// `out[m, n] = bf16(a[m, k]) · packedᵀ + bias`, accumulated in f32.
///
/// Runs on the current rayon pool. Without AMX (see [`available`]) it falls back to a slow
/// portable loop with the same rounding, so callers should gate on `available()`.
pub fn matmul(a: &[f32], m: usize, packed: &PackedBf16, bias: Option<&[f32]>, out: &mut [f32]) {
    let (n, k) = (packed.n, packed.k);
    assert!(m >= 1, "amx::matmul: m must be >= 1");
    assert!(
        a.len() >= m * k,
        "amx::matmul: a has {} elements, need {m}x{k}",
        a.len()
    );
    assert!(
        out.len() >= m * n,
        "amx::matmul: out has {} elements, need {m}x{n}",
        out.len()
    );
    if let Some(b) = bias {
        assert!(
            b.len() >= n,
            "amx::matmul: bias has {} elements, need {n}",
            b.len()
        );
    }
    #[cfg(target_arch = "x86_64")]
    if available() {
        x86::matmul(a, m, packed, bias, out);
        return;
    }
    fallback(a, m, packed, bias, out);
}

fn fallback(a: &[f32], m: usize, packed: &PackedBf16, bias: Option<&[f32]>, out: &mut [f32]) {
    use rayon::prelude::*;
    let (n, k) = (packed.n, packed.k);
    let w: Vec<f32> = (0..n * k)
        .map(|i| bf16_to_f32(packed.get(i / k, i % k)))
        .collect();
    out[..m * n]
        .par_chunks_mut(n)
        .enumerate()
        .for_each(|(i, row)| {
            let ar: Vec<f32> = a[i * k..i * k + k]
                .iter()
                .map(|&v| bf16_to_f32(f32_to_bf16(v)))
                .collect();
            for (j, o) in row.iter_mut().enumerate() {
                let wr = &w[j * k..j * k + k];
                let s: f32 = ar.iter().zip(wr).map(|(x, y)| x * y).sum();
                *o = s + bias.map_or(0.0, |b| b[j]);
            }
        });
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;
