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

pub mod amx;
mod attention;
#[cfg(target_arch = "x86_64")]
mod attn_avx512;
mod conv;
mod geglu;
mod norm;
mod winograd;

pub use attention::multi_head_attention;
pub(crate) use attention::QUERY_BLOCK;
pub(crate) use conv::CONV_TILE_ELEMENTS;
pub use conv::{conv2d, conv2d_bf16};
pub use geglu::geglu;
pub use norm::group_norm;

use candle_core::{CpuStorage, DType, Layout, Result, Tensor};
use std::cell::RefCell;

/// Whether the fused kernels can run on `t` (CPU, f32).
pub fn fused_cpu(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d.as_slice(),
        _ => candle_core::bail!("fused CPU kernel: {what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("fused CPU kernel: {what} must be contiguous"),
    }
}

/// Runs `f` on a contiguous CPU f32 tensor's data in place (a weight being packed: copying it
/// first would cost as much as the packing); `None` for any other tensor.
pub(crate) fn with_f32_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return None;
    };
    f32_slice(cpu, layout, "tensor").ok().map(f)
}

/// A raw pointer that may cross into rayon tasks; every task writes a disjoint region.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the pointer is only dereferenced inside the kernels, whose tasks write disjoint regions
// of a buffer that outlives the parallel loop.
unsafe impl Send for SendPtr {}
// SAFETY: as for `Send`: no two tasks touch the same element.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer. A method (not `.0`) so that closures capture the whole `SendPtr`, which is
    /// `Send`, rather than the bare field, which is not.
    fn get(self) -> *mut f32 {
        self.0
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The widest vector code the elementwise kernels (softmax's exp, GroupNorm's affine and SiLU,
/// the GEGLU gate) run: each is written once, portably, and compiled three times; the CPU picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    Portable,
    /// 256-bit AVX2 with FMA.
    Avx2,
    /// 512-bit AVX-512 (F, VL) with FMA.
    Avx512,
}

/// The kernels' [`Simd`] level: the widest the CPU has, detected once. `GLICHEN_CPU_KERNELS=avx2`
/// or `portable` caps it (to measure one level against another on the same machine).
pub fn simd() -> Simd {
    static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = std::env::var("GLICHEN_CPU_KERNELS").unwrap_or_default();
        let detected = detect_simd();
        match cap.trim() {
            "portable" => Simd::Portable,
            "avx2" if detected == Simd::Avx512 => Simd::Avx2,
            _ => detected,
        }
    })
}

fn detect_simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        if avx2
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vl")
        {
            return Simd::Avx512;
        }
        if avx2 {
            return Simd::Avx2;
        }
    }
    Simd::Portable
}

/// Defines `$name` that runs `$portable` (an `#[inline(always)]` function) compiled for the
/// widest [`simd`] level: one body, three instruction sets.
macro_rules! dispatch_simd {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty => $portable:ident) => {
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) -> $ret {
                    $portable($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    $portable($($arg),*)
                }
                match $crate::model::cpu_ops::simd() {
                    // SAFETY: `simd()` reported the features each function is compiled for.
                    $crate::model::cpu_ops::Simd::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::model::cpu_ops::Simd::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::model::cpu_ops::Simd::Portable => {}
                }
            }
            $portable($($arg),*)
        }
    };
}
pub(crate) use dispatch_simd;

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
    // Fused multiply-adds: the kernels that inline this are compiled with FMA (AVX2, AVX-512,
    // NEON), where each is one instruction instead of two, a third fewer for the whole exp.
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 5e-1);
    let p = (p * r).mul_add(r, r) + 1.0;
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
