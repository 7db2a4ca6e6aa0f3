use super::super::SendPtr;
use super::*;
use core::arch::asm;
use core::arch::x86_64::*;
use rayon::prelude::*;
use std::cell::RefCell;

/// Palette-1 tile configuration: all eight tiles 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    fn full() -> TileConfig {
        let mut c = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for i in 0..8 {
            c.colsb[i] = 64;
            c.rows[i] = TILE as u8;
        }
        c
    }
}

/// Holds the tile configuration of the current thread for its lifetime.
pub(super) struct TileGuard;

impl TileGuard {
    /// # Safety
    /// AMX must be usable in this process ([`available`] returned true), and no other code
    /// may use tiles on this thread while the guard lives.
    pub(super) unsafe fn new() -> TileGuard {
        let cfg = TileConfig::full();
        // SAFETY: the caller guarantees AMX is enabled; `cfg` is a valid 64-byte palette-1
        // configuration and lives across the instruction.
        unsafe { asm!("ldtilecfg [{0}]", in(reg) &cfg, options(nostack, readonly)) };
        TileGuard
    }
}

impl Drop for TileGuard {
    fn drop(&mut self) {
        // SAFETY: a guard only exists after a successful ldtilecfg on this thread; releasing
        // returns the tile state to init so context switches stay cheap.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// Computes one 32×32 C block over `kblocks` k blocks.
///
/// `a`: two A tiles per k block, 2 KiB apart per block (`[kb][tile][16][32 bf16]`).
/// `b`: two B tiles per k block, same shape. The accumulators start from `init`
/// (row stride `init_stride` bytes, 0 to broadcast a bias row) and are stored to `c`
/// (row stride `ldc` bytes).
///
/// # Safety
/// The tile configuration from [`TileGuard`] must be loaded on this thread; `a` and `b` must
/// be readable for `kblocks * 2048` bytes, `init` for the 32 rows × 128 bytes it addresses and
/// `c` writable for 32 rows × 128 bytes at stride `ldc`; `kblocks >= 1`.
#[inline(always)]
pub(super) unsafe fn kernel_2x2(
    a: *const u8,
    b: *const u8,
    kblocks: usize,
    init: *const u8,
    init_stride: usize,
    c: *mut u8,
    ldc: usize,
) {
    // SAFETY: pointers and sizes as promised by the caller; tmm0-7 are configured 16×64.
    unsafe {
        asm!(
            "tileloadd tmm0, [{init} + {is}*1]",
            "tileloadd tmm1, [{init} + {is}*1 + 64]",
            "tileloadd tmm2, [{init2} + {is}*1]",
            "tileloadd tmm3, [{init2} + {is}*1 + 64]",
            "2:",
            "tileloadd tmm4, [{a} + {s}*1]",
            "tileloadd tmm6, [{b} + {s}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b} + {s}*1 + 1024]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a} + {s}*1 + 1024]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a}, 2048",
            "add {b}, 2048",
            "dec {kb}",
            "jnz 2b",
            "tilestored [{c} + {ldc}*1], tmm0",
            "tilestored [{c} + {ldc}*1 + 64], tmm1",
            "tilestored [{c2} + {ldc}*1], tmm2",
            "tilestored [{c2} + {ldc}*1 + 64], tmm3",
            init = in(reg) init,
            init2 = in(reg) init.add(init_stride * TILE),
            is = in(reg) init_stride,
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            s = in(reg) 64usize,
            kb = inout(reg) kblocks => _,
            c = in(reg) c,
            c2 = in(reg) c.add(ldc * TILE),
            ldc = in(reg) ldc,
            options(nostack),
        );
    }
}

/// Converts block-local rows `[r_begin, r_end)` of the row block starting at `row0` (rows `lda`
/// apart in `a`) to bf16 A tiles in `dst`, laid out `[pair][kb][tile][16 rows][32 bf16]`. Rows at or beyond `rows`
/// (the valid rows of the block) and k beyond `k` are zero.
///
/// # Safety
/// AVX-512F/BW/BF16 must be available; `a` must hold `(row0 + rows - 1) * lda + k` elements; `dst` must
/// hold `ceil(r_end / 32) * kblocks * 32` lines.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack_a(
    a: &[f32],
    k: usize,
    lda: usize,
    row0: usize,
    rows: usize,
    kblocks: usize,
    r_begin: usize,
    r_end: usize,
    dst: &mut [Line],
) {
    let full = k / TILE_K;
    let rem = k % TILE_K;
    let mask_lo: __mmask16 = if rem >= 16 {
        0xffff
    } else {
        ((1u32 << rem) - 1) as u16
    };
    let mask_hi: __mmask16 = if rem <= 16 {
        0
    } else {
        ((1u32 << (rem - 16)) - 1) as u16
    };
    for r in r_begin..r_end {
        let line0 = (r / BLOCK) * kblocks * 2 * TILE + ((r % BLOCK) / TILE) * TILE + r % TILE;
        let lines = &mut dst[line0..line0 + (kblocks - 1) * 2 * TILE + 1];
        if r >= rows {
            for kb in 0..kblocks {
                lines[kb * 2 * TILE] = ZERO_LINE;
            }
            continue;
        }
        let src = &a[(row0 + r) * lda..(row0 + r) * lda + k];
        let out = lines.as_mut_ptr() as *mut __m512i;
        for kb in 0..full {
            // SAFETY: `kb * 32 + 32 <= k`, so both loads stay inside the row; line
            // `kb * 32` is inside `lines` (its length is `(kblocks - 1) * 32 + 1`).
            unsafe {
                let lo = _mm512_loadu_ps(src.as_ptr().add(kb * TILE_K));
                let hi = _mm512_loadu_ps(src.as_ptr().add(kb * TILE_K + 16));
                let v = _mm512_cvtne2ps_pbh(hi, lo);
                _mm512_store_si512(
                    out.add(kb * 2 * TILE),
                    core::mem::transmute::<__m512bh, __m512i>(v),
                );
            }
        }
        if rem != 0 {
            // SAFETY: the masks only enable the `rem` elements after `full * 32`, which are
            // inside the row; line `full * 32` is the last line of `lines`.
            unsafe {
                let lo = _mm512_maskz_loadu_ps(mask_lo, src.as_ptr().add(full * TILE_K));
                let hi = _mm512_maskz_loadu_ps(mask_hi, src.as_ptr().add(full * TILE_K + 16));
                let v = _mm512_cvtne2ps_pbh(hi, lo);
                _mm512_store_si512(
                    out.add(full * 2 * TILE),
                    core::mem::transmute::<__m512bh, __m512i>(v),
                );
            }
        }
    }
}

thread_local! {
    /// Per-thread double buffer for packed A blocks, reused across calls so large blocks do
    /// not page-fault in on every task.
    static A_BUF: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// Bytes of one tile.
const TILE_BYTES: usize = TILE * 64;
/// Target bytes of one packed A block; two of them (double buffer) plus a B panel should
/// stay in L2.
const A_BLOCK_BYTES: usize = 384 << 10;
/// Most row pairs in one A block: more only saves B re-streaming, which is small by then.
const MAX_BLOCK_PAIRS: usize = 8;
/// Rayon tasks per thread, for load balance.
const TASKS_PER_THREAD: usize = 4;

pub(super) fn matmul(
    a: &[f32],
    m: usize,
    packed: &PackedBf16,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (n, k, kblocks, npairs) = (packed.n, packed.k, packed.kblocks, packed.npairs);
    let mpairs = m.div_ceil(BLOCK);
    // Bias padded to the column blocking so the kernel can broadcast it with a zero stride;
    // without bias the kernel broadcasts zeros from the same buffer.
    let mut bias_pad = vec![0f32; npairs * BLOCK];
    if let Some(b) = bias {
        bias_pad[..n].copy_from_slice(&b[..n]);
    }
    let threads = rayon::current_num_threads().max(1);
    let block_pairs = (A_BLOCK_BYTES / (kblocks * 2 * TILE_BYTES))
        .clamp(1, MAX_BLOCK_PAIRS)
        .min(mpairs);
    let m_blocks = mpairs.div_ceil(block_pairs);
    let want = TASKS_PER_THREAD * threads;
    // Many row blocks: each task takes a run of consecutive blocks and packs the next block
    // while computing the current one. Few: split columns too so every thread has work.
    let (groups, n_tasks) = if m_blocks >= want {
        (want, 1)
    } else {
        (m_blocks, want.div_ceil(m_blocks).min(npairs))
    };
    let blocks_per_group = m_blocks.div_ceil(groups);
    let groups = m_blocks.div_ceil(blocks_per_group);
    let n_pairs_per_task = npairs.div_ceil(n_tasks);
    let n_tasks = npairs.div_ceil(n_pairs_per_task);
    let block_lines = block_pairs * kblocks * 2 * TILE;
    let out_ptr = SendPtr(out.as_mut_ptr());
    let bias_pad = &bias_pad;

    (0..groups * n_tasks).into_par_iter().for_each(|task| {
        let out_ptr = out_ptr.get();
        let (g, nt) = (task / n_tasks, task % n_tasks);
        let b0 = g * blocks_per_group;
        let b1 = (b0 + blocks_per_group).min(m_blocks);
        let q0 = nt * n_pairs_per_task;
        let q1 = (q0 + n_pairs_per_task).min(npairs);
        // (first row, valid rows, row pairs) of row block `b`.
        let block = |b: usize| {
            let row0 = b * block_pairs * BLOCK;
            let rows = (m - row0).min(block_pairs * BLOCK);
            (row0, rows, rows.div_ceil(BLOCK))
        };
        A_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < 2 * block_lines {
                buf.resize(2 * block_lines, ZERO_LINE);
            }
            let (mut cur, mut next) = buf.split_at_mut(block_lines);
            next = &mut next[..block_lines];
            {
                let (row0, rows, pairs) = block(b0);
                // SAFETY: `available()` checked AVX-512F/BW/BF16; `row0 + rows <= m` and
                // `a` holds m*k elements; `cur` has `block_pairs * kblocks * 32` lines.
                unsafe { pack_a(a, k, k, row0, rows, kblocks, 0, pairs * BLOCK, cur) };
            }
            let mut scratch = [ZERO_LINE; BLOCK * 2];
            // SAFETY: `available()` is true, so AMX is enabled for this process; the guard is
            // dropped before this closure returns and nothing else uses tiles meanwhile.
            let _tiles = unsafe { TileGuard::new() };
            for b in b0..b1 {
                let (row0, _, pairs) = block(b);
                // Packing of the next block is spread evenly over this block's kernel calls
                // so its memory traffic hides behind the tile multiplies.
                let next_block = (b + 1 < b1).then(|| block(b + 1));
                let next_rows = next_block.map_or(0, |(_, _, p)| p * BLOCK);
                let calls = pairs * (q1 - q0);
                let mut packed_rows = 0;
                // Column pairs outer: one B panel is reused from L1/L2 by every row pair of
                // the block, while the A block stays in L2.
                for call in 0..calls {
                    let (q, p) = (q0 + call / pairs, call % pairs);
                    let col0 = q * BLOCK;
                    let cols = (n - col0).min(BLOCK);
                    let bptr = packed.data[q * kblocks * 2 * TILE..].as_ptr() as *const u8;
                    let init = bias_pad[col0..].as_ptr() as *const u8;
                    let r0 = row0 + p * BLOCK;
                    let rr = (m - r0).min(BLOCK);
                    let aptr = cur[p * kblocks * 2 * TILE..].as_ptr() as *const u8;
                    if rr == BLOCK && cols == BLOCK {
                        // SAFETY: the 32×32 block at (r0, col0) is inside `out` (m×n) and no
                        // other task writes it; A and B hold `kblocks` tile pairs from these
                        // offsets; init reads 128 bytes of `bias_pad` (stride 0).
                        unsafe {
                            let c = out_ptr.add(r0 * n + col0) as *mut u8;
                            kernel_2x2(aptr, bptr, kblocks, init, 0, c, n * 4);
                        }
                    } else {
                        let sp = scratch.as_mut_ptr() as *mut u8;
                        // SAFETY: as above, but C goes to the 32×128-byte scratch.
                        unsafe { kernel_2x2(aptr, bptr, kblocks, init, 0, sp, 128) };
                        let sf = scratch.as_ptr() as *const f32;
                        for i in 0..rr {
                            // SAFETY: row `r0 + i < m` and columns `col0..col0 + cols <= n`
                            // belong to this task; scratch row `i` has 32 floats.
                            unsafe {
                                core::ptr::copy_nonoverlapping(
                                    sf.add(i * BLOCK),
                                    out_ptr.add((r0 + i) * n + col0),
                                    cols,
                                );
                            }
                        }
                    }
                    if let Some((nrow0, nrows, _)) = next_block {
                        let upto = next_rows * (call + 1) / calls;
                        if upto > packed_rows {
                            // SAFETY: as for the first block; rows stay below `next_rows`,
                            // which `next` is sized for.
                            unsafe {
                                pack_a(a, k, k, nrow0, nrows, kblocks, packed_rows, upto, next);
                            };
                            packed_rows = upto;
                        }
                    }
                }
                core::mem::swap(&mut cur, &mut next);
            }
        });
    });
}

/// `out[r][c] = Σ_kk bf16(a[r][kk]) · B[c][kk]` for `rows` rows of `a` (`lda` apart) on this
/// thread alone: the products of one attention task, which already runs on a rayon worker.
/// Nothing past `out_cols` columns is written.
///
/// # Safety
/// [`available`] must be true; `a` must hold `(rows - 1) * lda + k` elements; `out` must be
/// writable for `rows` rows of `out_cols >= packed.n` floats, `ldo` apart, and not be touched
/// by any other thread meanwhile.
pub(super) unsafe fn product_rows(
    a: &[f32],
    lda: usize,
    rows: usize,
    packed: &PackedBf16,
    out: *mut f32,
    ldo: usize,
    out_cols: usize,
) {
    let (k, kblocks) = (packed.k, packed.kblocks);
    let pairs = rows.div_ceil(BLOCK);
    let lines = pairs * kblocks * 2 * TILE;
    A_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < lines {
            buf.resize(lines, ZERO_LINE);
        }
        let abuf = &mut buf[..lines];
        // SAFETY: AVX-512F/BW/BF16 come with `available()`; the caller promises `a`'s extent;
        // `abuf` holds `pairs * kblocks * 32` lines.
        unsafe { pack_a(a, k, lda, 0, rows, kblocks, 0, pairs * BLOCK, abuf) };
        // SAFETY: AMX is available; `abuf` was just packed with `kblocks` blocks; the caller
        // promises `out`.
        unsafe { tile_products(abuf, rows, kblocks, packed, out, ldo, out_cols, false) };
    });
}

/// One thread's tile products: every row pair of the packed A tiles (`a`, `rows` valid rows)
/// against every column pair of `b`. Full 32 × 32 blocks inside `out_cols` go straight to `out`
/// (their accumulators start from `out` itself when `accumulate`, else from zero); the others go
/// through a scratch block, so nothing past `out_cols` is written.
///
/// # Safety
/// AMX must be available; `a` holds `ceil(rows / 32) * kblocks * 32` lines with
/// `kblocks == b.kblocks`; `out` is writable for `rows` rows of `out_cols >= b.n` floats, `ldo`
/// apart, that no other thread touches meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile_products(
    a: &[Line],
    rows: usize,
    kblocks: usize,
    b: &PackedBf16,
    out: *mut f32,
    ldo: usize,
    out_cols: usize,
    accumulate: bool,
) {
    let (n, npairs) = (b.n, b.npairs);
    let pairs = rows.div_ceil(BLOCK);
    let zeros = [0f32; BLOCK];
    let mut scratch = [ZERO_LINE; BLOCK * 2];
    // SAFETY: AMX is available (caller); the guard is dropped before returning.
    let _tiles = unsafe { TileGuard::new() };
    for q in 0..npairs {
        let col0 = q * BLOCK;
        let cols = (n - col0).min(BLOCK);
        let bptr = b.data[q * kblocks * 2 * TILE..].as_ptr() as *const u8;
        for p in 0..pairs {
            let r0 = p * BLOCK;
            let rr = (rows - r0).min(BLOCK);
            let aptr = a[p * kblocks * 2 * TILE..].as_ptr() as *const u8;
            if rr == BLOCK && col0 + BLOCK <= out_cols {
                // SAFETY: the 32 × 32 block at (r0, col0) is inside the caller's region; A and
                // B hold `kblocks` tile pairs from these offsets; the accumulators start from
                // that block (stride `ldo`) or from 128 zero bytes read at stride 0.
                unsafe {
                    let c = out.add(r0 * ldo + col0) as *mut u8;
                    let (init, is) = if accumulate {
                        (c as *const u8, ldo * 4)
                    } else {
                        (zeros.as_ptr() as *const u8, 0)
                    };
                    kernel_2x2(aptr, bptr, kblocks, init, is, c, ldo * 4);
                }
            } else {
                let sp = scratch.as_mut_ptr() as *mut u8;
                // SAFETY: as above, with C going to the 32 × 128-byte scratch.
                unsafe { kernel_2x2(aptr, bptr, kblocks, zeros.as_ptr() as *const u8, 0, sp, 128) };
                let sf = scratch.as_ptr() as *const f32;
                for i in 0..rr {
                    for j in 0..cols {
                        // SAFETY: row `r0 + i < rows`, column `col0 + j < n`; scratch row `i`
                        // holds 32 floats.
                        unsafe {
                            let o = out.add((r0 + i) * ldo + col0 + j);
                            let v = *sf.add(i * BLOCK + j);
                            *o = if accumulate { *o + v } else { v };
                        }
                    }
                }
            }
        }
    }
}

/// [`PackedBf16::pack_k_major`] with AVX-512: for each tile row, 16 columns of two consecutive
/// k rows converted together and interleaved into the (k, k + 1) pairs `tdpbf16ps` reads.
///
/// # Safety
/// AVX-512F/BW/BF16 must be available; `src` must hold `(k - 1) * ld + n` elements and `data`
/// `ceil(n / 32) * kblocks * 32` lines.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack_k_major(
    src: &[f32],
    ld: usize,
    n: usize,
    k: usize,
    kblocks: usize,
    data: &mut [Line],
) {
    // Output lane 2j takes element j of the low half (row kk), lane 2j + 1 element j of the high
    // half (row kk + 1).
    let mut idx = [0i16; 32];
    for j in 0..16 {
        idx[2 * j] = j as i16;
        idx[2 * j + 1] = 16 + j as i16;
    }
    // SAFETY: `idx` is 64 bytes.
    let idx = unsafe { _mm512_loadu_si512(idx.as_ptr() as *const __m512i) };
    let npairs = n.div_ceil(BLOCK);
    for p in 0..npairs {
        for t in 0..2 {
            let c0 = p * BLOCK + t * TILE;
            if c0 >= n {
                continue;
            }
            let cols = (n - c0).min(TILE);
            let mask: __mmask16 = if cols == TILE {
                0xffff
            } else {
                ((1u32 << cols) - 1) as u16
            };
            for kb in 0..kblocks {
                for r in 0..TILE {
                    let kk = kb * TILE_K + 2 * r;
                    if kk >= k {
                        break;
                    }
                    // SAFETY: rows kk (and kk + 1 when inside k) and columns c0..c0 + cols are
                    // inside `src`; the masks keep the loads there.
                    let v = unsafe {
                        let lo = _mm512_maskz_loadu_ps(mask, src.as_ptr().add(kk * ld + c0));
                        let hi = if kk + 1 < k {
                            _mm512_maskz_loadu_ps(mask, src.as_ptr().add((kk + 1) * ld + c0))
                        } else {
                            _mm512_setzero_ps()
                        };
                        let both =
                            core::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                        _mm512_permutexvar_epi16(idx, both)
                    };
                    let line = ((p * kblocks + kb) * 2 + t) * TILE + r;
                    // SAFETY: `line` is inside `data` (one line per pair, block, tile, row) and
                    // lines are 64-byte aligned.
                    unsafe { _mm512_store_si512(data.as_mut_ptr().add(line) as *mut __m512i, v) };
                }
            }
        }
    }
}
