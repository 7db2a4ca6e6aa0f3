use super::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.f32()).collect()
    }
}

fn skip() -> bool {
    if !available() {
        eprintln!("amx: AMX not available here, skipping");
        return true;
    }
    false
}

/// Checks `out` against an f64 reference from the bf16-rounded inputs. The error is measured
/// relative to `sum |a_i w_i| + |bias|`, the scale f32 accumulation errors grow with (a
/// plain |ref| denominator is meaningless where the dot product cancels to ~0).
fn check(
    a: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
    out: &[f32],
) -> f64 {
    let ab: Vec<f64> = a
        .iter()
        .map(|&v| bf16_to_f32(f32_to_bf16(v)) as f64)
        .collect();
    let wb: Vec<f64> = w
        .iter()
        .map(|&v| bf16_to_f32(f32_to_bf16(v)) as f64)
        .collect();
    let mut worst = 0f64;
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut mag) = (0f64, 0f64);
            for kk in 0..k {
                let p = ab[i * k + kk] * wb[j * k + kk];
                s += p;
                mag += p.abs();
            }
            if let Some(b) = bias {
                s += b[j] as f64;
                mag += (b[j] as f64).abs();
            }
            let err = (out[i * n + j] as f64 - s).abs() / mag.max(f64::MIN_POSITIVE);
            worst = worst.max(err);
            assert!(
                err <= 1e-5,
                "m={m} k={k} n={n} ({i},{j}): got {} want {s} rel {err:e}",
                out[i * n + j]
            );
        }
    }
    assert!(worst.is_finite());
    worst
}

#[test]
fn bf16_rounding_matches_torch() {
    // Expected values as produced by torch.tensor([x]).to(torch.bfloat16).view(torch.int16).
    let cases: [(f32, u16); 12] = [
        (1.0, 0x3f80),
        (-2.5, 0xc020),
        // 1 + 2^-8 is exactly halfway between 1.0 and 1 + 2^-7: ties to even (down).
        (f32::from_bits(0x3f80_8000), 0x3f80),
        // 1 + 3·2^-8 is halfway between odd 0x3f81 and even 0x3f82: ties to even (up).
        (f32::from_bits(0x3f81_8000), 0x3f82),
        // Just above halfway rounds up.
        (f32::from_bits(0x3f80_8001), 0x3f81),
        // f32::MAX rounds to +inf in bf16.
        (f32::MAX, 0x7f80),
        // Largest finite bf16 stays.
        (f32::from_bits(0x7f7f_0000), 0x7f7f),
        (f32::INFINITY, 0x7f80),
        (f32::NEG_INFINITY, 0xff80),
        // Smallest f32 subnormal is below half a bf16 ulp: 0.
        (f32::from_bits(1), 0x0000),
        // Subnormals keep their top bits and round to nearest even.
        (f32::from_bits(0x0001_8000), 0x0002),
        (-0.0, 0x8000),
    ];
    for (x, want) in cases {
        assert_eq!(f32_to_bf16(x), want, "{x:e} ({:#010x})", x.to_bits());
    }
    assert_eq!(f32_to_bf16(f32::NAN), 0x7fc0);
    assert!(bf16_to_f32(f32_to_bf16(f32::from_bits(0xffc1_2345))).is_nan());
    assert!(bf16_to_f32(f32_to_bf16(f32::from_bits(0x7f80_0001))).is_nan());
}

#[test]
fn pack_layout() {
    let (n, k) = (37, 70);
    let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
    let p = PackedBf16::pack(&w, n, k);
    assert_eq!((p.n(), p.k()), (n, k));
    assert_eq!(p.bytes(), 2 * 3 * 2 * 1024);
    for col in 0..n {
        for kk in 0..k {
            assert_eq!(p.get(col, kk), f32_to_bf16((col * k + kk) as f32));
        }
    }
    // VNNI: tile (pair 0, kb 0, tile 0) row 1 column 2 holds k = 2, 3 of column 2.
    let line = &p.data[1].0;
    assert_eq!(
        u16::from_le_bytes([line[8], line[9]]),
        f32_to_bf16((2 * k + 2) as f32)
    );
    assert_eq!(
        u16::from_le_bytes([line[10], line[11]]),
        f32_to_bf16((2 * k + 3) as f32)
    );
    // Padding is zero.
    assert_eq!(p.get(40, 3), 0);
    assert_eq!(p.get(3, 90), 0);
}

fn run_case(rng: &mut Rng, m: usize, k: usize, n: usize, with_bias: bool) -> f64 {
    let a = rng.vec(m * k);
    let w = rng.vec(n * k);
    let bias = with_bias.then(|| rng.vec(n));
    let p = PackedBf16::pack(&w, n, k);
    let mut out = vec![f32::NAN; m * n + 3];
    matmul(&a, m, &p, bias.as_deref(), &mut out);
    assert!(out[m * n..].iter().all(|v| v.is_nan()), "wrote past m*n");
    check(&a, &w, bias.as_deref(), m, n, k, &out)
}

#[test]
fn exact_with_tails() {
    if skip() {
        return;
    }
    let mut rng = Rng(42);
    let mut worst = 0f64;
    for &m in &[1, 7, 16, 33, 77, 300] {
        for &k in &[1, 3, 40, 64, 320, 768, 1000] {
            for &n in &[1, 17, 32, 320, 1283] {
                // The largest combinations dominate the f64 reference time; bias is
                // exercised on every other shape, and on all of the small ones.
                let with_bias = (m + k + n) % 2 == 0 || m * k * n < 1 << 20;
                worst = worst.max(run_case(&mut rng, m, k, n, with_bias));
                if m * k * n < 1 << 22 {
                    worst = worst.max(run_case(&mut rng, m, k, n, !with_bias));
                }
            }
        }
    }
    eprintln!("amx: worst error relative to sum|a*w|+|bias|: {worst:e}");
}

/// Enough row blocks that tasks run several blocks and pack the next one while computing.
#[test]
fn pipelined_blocks() {
    if skip() {
        return;
    }
    let mut rng = Rng(11);
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            for (m, k, n) in [(5000, 40, 17), (4099, 320, 33), (3001, 1000, 64)] {
                run_case(&mut rng, m, k, n, true);
            }
        });
    }
}

#[test]
fn fallback_matches() {
    let mut rng = Rng(7);
    let (m, k, n) = (5, 45, 19);
    let a = rng.vec(m * k);
    let w = rng.vec(n * k);
    let b = rng.vec(n);
    let p = PackedBf16::pack(&w, n, k);
    let mut out = vec![0f32; m * n];
    fallback(&a, m, &p, Some(&b), &mut out);
    check(&a, &w, Some(&b), m, n, k, &out);
}

#[test]
fn concurrent_threads() {
    if skip() {
        return;
    }
    let mut rng = Rng(3);
    let shapes = [(64, 96, 48), (33, 320, 64), (100, 64, 100), (7, 1000, 17)];
    let cases: Vec<_> = shapes
        .iter()
        .map(|&(m, k, n)| {
            let a = rng.vec(m * k);
            let w = rng.vec(n * k);
            let b = rng.vec(n);
            (m, k, n, a, w, b)
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    pool.install(|| {
        use rayon::prelude::*;
        (0..32).into_par_iter().for_each(|i| {
            let (m, k, n, a, w, b) = &cases[i % cases.len()];
            let p = PackedBf16::pack(w, *n, *k);
            let mut out = vec![0f32; m * n];
            matmul(a, *m, &p, Some(b), &mut out);
            check(a, w, Some(b), *m, *n, *k, &out);
        });
    });
    // Plain std threads each calling into the global pool at once.
    std::thread::scope(|s| {
        for (m, k, n, a, w, b) in &cases {
            s.spawn(move || {
                let p = PackedBf16::pack(w, *n, *k);
                for _ in 0..4 {
                    let mut out = vec![0f32; m * n];
                    matmul(a, *m, &p, Some(b), &mut out);
                    check(a, w, Some(b), *m, *n, *k, &out);
                }
            });
        }
    });
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
#[ignore]
fn amx_kernel_micro() {
    use std::time::Instant;
    if skip() {
        return;
    }
    for kb in [4usize, 8, 10, 16, 20, 40, 80, 160] {
        for nblk in [1usize, 4, 16] {
            // nblk distinct B panels, one A pair: A reused, B streamed.
            let mut rng = Rng(5);
            let rnd = |rng: &mut Rng, len: usize| -> Vec<Line> {
                (0..len)
                    .map(|_| {
                        let mut l = ZERO_LINE;
                        for j in 0..32 {
                            let v = f32_to_bf16(rng.f32());
                            l.0[2 * j..2 * j + 2].copy_from_slice(&v.to_le_bytes());
                        }
                        l
                    })
                    .collect()
            };
            let a = rnd(&mut rng, kb * 32);
            let b = rnd(&mut rng, nblk * kb * 32);
            let z = [ZERO_LINE; 2];
            let mut c = vec![ZERO_LINE; 64];
            // SAFETY: `available()` is true; only this test uses tiles on this thread.
            let _g = unsafe { x86::TileGuard::new() };
            let iters = 200_000 / (kb * nblk) + 1;
            let t = Instant::now();
            for _ in 0..iters {
                for j in 0..nblk {
                    // SAFETY: A has `kb` tile pairs, B panel `j` has `kb` tile pairs, `z`
                    // is 128 zero bytes read at stride 0, `c` is 32 rows × 128 bytes.
                    unsafe {
                        x86::kernel_2x2(
                            a.as_ptr() as *const u8,
                            b[j * kb * 32..].as_ptr() as *const u8,
                            kb,
                            z.as_ptr() as *const u8,
                            0,
                            c.as_mut_ptr() as *mut u8,
                            128,
                        );
                    };
                }
            }
            let s = t.elapsed().as_secs_f64();
            let flop = (iters * nblk * kb) as f64 * 4.0 * 16.0 * 16.0 * 32.0 * 2.0;
            println!(
                "kb {kb:>4} nblk {nblk:>3} Bbytes {:>8}: {:>6.0} GF/s",
                nblk * kb * 2048,
                flop / s / 1e9
            );
        }
    }
}

#[test]
#[ignore]
fn amx_vs_gemm_f32() {
    use std::time::Instant;
    if skip() {
        return;
    }
    let shapes = [
        (8192, 320, 320),
        (8192, 320, 2560),
        (8192, 1280, 320),
        (2048, 640, 640),
        (2048, 640, 5120),
        (2048, 2560, 640),
        (512, 1280, 1280),
        (8192, 768, 320),
        (154, 768, 320),
    ];
    let reps = 10;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    println!(
        "{:>20} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>8}",
        "MxKxN", "amx ms", "amx GF/s", "gemm ms", "gemm GF/s", "pack ms", "speedup", "max|d|"
    );
    let mut rng = Rng(1);
    for (m, k, n) in shapes {
        let a = rng.vec(m * k);
        let w = rng.vec(n * k);
        let b = rng.vec(n);
        let flop = 2.0 * (m * n * k) as f64;
        pool.install(|| {
            let t = Instant::now();
            let p = PackedBf16::pack(&w, n, k);
            let pack_ms = t.elapsed().as_secs_f64() * 1e3;
            let mut out = vec![0f32; m * n];
            let mut ta = Vec::new();
            matmul(&a, m, &p, Some(&b), &mut out);
            for _ in 0..reps {
                let t = Instant::now();
                matmul(&a, m, &p, Some(&b), &mut out);
                ta.push(t.elapsed().as_secs_f64() * 1e3);
            }
            // gemm computes dst = a · wᵀ with rhs[k, n] = w[n * k + k]: row stride 1,
            // column stride k. Bias is not included (it only adds an m×n pass).
            let mut out2 = vec![0f32; m * n];
            let run_gemm = |out2: &mut [f32]| {
                // SAFETY: all pointers cover the m×k, k×n and m×n extents described.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        out2.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        k as isize,
                        w.as_ptr(),
                        k as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(2),
                    );
                }
            };
            run_gemm(&mut out2);
            let mut tg = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                run_gemm(&mut out2);
                tg.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let maxd = out
                .iter()
                .zip(&out2)
                .enumerate()
                .map(|(i, (x, y))| (x - y - b[i % n]).abs())
                .fold(0f32, f32::max);
            let (ma, mg) = (median(ta), median(tg));
            println!(
                "{:>20} {:>9.3} {:>9.0} {:>9.3} {:>9.0} {:>9.2} {:>6.1}x {:>8.4}",
                format!("{m}x{k}x{n}"),
                ma,
                flop / ma / 1e6,
                mg,
                flop / mg / 1e6,
                pack_ms,
                mg / ma,
                maxd
            );
        });
    }
}

/// `product_rows` (one attention task's products): operands through strides and transposes
/// ([`PackedBf16::pack_with`]), rows and columns with tails, and nothing written outside the
/// `rows × out_cols` window of a wider output (another head's columns). Runs the portable loop
/// where AMX is missing, against the same reference.
#[test]
fn product_rows_strided_and_bounded() {
    let mut rng = Rng(7);
    for &(rows, k, n, lda, out_cols, ldo) in &[
        (64, 40, 300, 120, 320, 320),
        (64, 300, 40, 320, 40, 120),
        (7, 33, 17, 40, 17, 51),
        (33, 64, 64, 64, 64, 64),
        (1, 1, 1, 1, 1, 3),
    ] {
        let a = rng.vec((rows - 1) * lda + k);
        // The packed operand seen transposed: element (col, kk) at src[kk * n + col].
        let src = rng.vec(k * n);
        let p = PackedBf16::pack_with(n, k, |col, kk| src[kk * n + col]);
        let mut out = vec![f32::NAN; rows * ldo];
        // SAFETY: `out` holds `rows` rows of `ldo >= out_cols` floats and is this test's.
        unsafe { product_rows(&a, lda, rows, &p, out.as_mut_ptr(), ldo, out_cols) };
        let dense_a: Vec<f32> = (0..rows)
            .flat_map(|r| a[r * lda..r * lda + k].to_vec())
            .collect();
        let dense_w: Vec<f32> = (0..n)
            .flat_map(|c| (0..k).map(move |kk| (c, kk)))
            .map(|(c, kk)| src[kk * n + c])
            .collect();
        let got: Vec<f32> = (0..rows)
            .flat_map(|r| out[r * ldo..r * ldo + n].to_vec())
            .collect();
        check(&dense_a, &dense_w, None, rows, n, k, &got);
        for r in 0..rows {
            assert!(
                out[r * ldo + out_cols..(r + 1) * ldo]
                    .iter()
                    .all(|v| v.is_nan()),
                "{rows}x{k}x{n}: wrote past out_cols in row {r}"
            );
        }
    }
}

/// The vectorised k-major packing (convolution patches) lays out exactly what the general one
/// does, tails in both dimensions included.
#[test]
fn k_major_packing_equals_the_general_one() {
    let mut rng = Rng(11);
    for &(n, k, ld) in &[
        (1, 1, 1),
        (17, 33, 20),
        (91, 2880, 91),
        (64, 320, 4096),
        (300, 7, 301),
    ] {
        let src = rng.vec((k - 1) * ld + n);
        let fast = PackedBf16::pack_k_major(&src, ld, n, k);
        let general = PackedBf16::pack_with(n, k, |col, kk| src[kk * ld + col]);
        assert_eq!(fast.bytes(), general.bytes());
        for col in 0..n {
            for kk in 0..k {
                assert_eq!(
                    fast.get(col, kk),
                    general.get(col, kk),
                    "{n}x{k} ({col}, {kk})"
                );
            }
        }
        assert!(
            fast.data.iter().zip(&general.data).all(|(a, b)| a.0 == b.0),
            "{n}x{k}: padding differs"
        );
    }
}
