//! Linear layers, with the bf16 matrix product of CPUs that have AMX as an opt-in.
//!
//! In f32 a [`Linear`] is candle's (the same arithmetic the parity tests pin). Inside
//! [`with_bf16_matmuls`] the calling thread's f32 linear layers on such a CPU multiply with bf16
//! operands and f32 accumulation instead, as PyTorch's CPU autocast does, and so do the attention
//! core's two products (`cpu_ops::multi_head_attention`) and the convolutions with 64+ output
//! channels (`blocks::Conv2d`): activations, norms, softmax and the
//! residual stream stay f32, and each weight is packed to bf16 once, on first use, in the tile
//! layout AMX reads. AMX's bf16 products run at many times the f32 rate of AVX-512,
//! which makes the UNet's projections and feed-forward layers cheap; elsewhere (no AMX, another
//! device, another dtype) the scope changes nothing.

use super::cpu_ops::{self, amx};
use candle_core::{CpuStorage, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use std::cell::Cell;
use std::sync::{Arc, OnceLock};

thread_local! {
    static BF16_MATMULS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread's f32 linear layers and attention products multiplying in bf16
/// (`on`) or f32, restoring the
/// previous choice afterwards, also when `f` panics (the worker thread survives a job's panic).
pub fn with_bf16_matmuls<T>(on: bool, f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            BF16_MATMULS.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(BF16_MATMULS.with(|c| c.replace(on)));
    f()
}

/// Whether this thread's linear layers multiply in bf16 now: inside [`with_bf16_matmuls`] on a
/// CPU with AMX.
pub fn bf16_matmuls_active() -> bool {
    BF16_MATMULS.with(Cell::get) && amx::available()
}

/// Whether a CPU can run [`with_bf16_matmuls`] as bf16 (AMX-BF16, allowed by the OS).
pub fn bf16_matmuls_supported() -> bool {
    amx::available()
}

/// `xs · weightᵀ + bias`, named and shaped as PyTorch's `nn.Linear` and candle's.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
    /// The bf16 packing, made on the first bf16 product and shared by clones; `None` inside when
    /// the weight cannot be packed (not f32 on the CPU), so the f32 path runs.
    packed: Arc<OnceLock<Option<Arc<PackedLinear>>>>,
}

#[derive(Debug)]
struct PackedLinear {
    weight: amx::PackedBf16,
    bias: Option<Vec<f32>>,
}

pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear::from_candle(candle_nn::linear(in_dim, out_dim, vb)?))
}

pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear::from_candle(candle_nn::linear_no_bias(
        in_dim, out_dim, vb,
    )?))
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self::from_candle(candle_nn::Linear::new(weight, bias))
    }

    fn from_candle(inner: candle_nn::Linear) -> Self {
        Self {
            inner,
            packed: Arc::new(OnceLock::new()),
        }
    }

    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }

    fn packed(&self) -> Option<Arc<PackedLinear>> {
        self.packed
            .get_or_init(|| {
                let w = self.inner.weight();
                let (n, k) = w.dims2().ok()?;
                let weight = cpu_ops::with_f32_data(w, |data| amx::PackedBf16::pack(data, n, k))?;
                let bias = match self.inner.bias() {
                    Some(b) if cpu_ops::fused_cpu(b) => Some(b.to_vec1::<f32>().ok()?),
                    Some(_) => return None,
                    None => None,
                };
                Some(Arc::new(PackedLinear { weight, bias }))
            })
            .clone()
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if bf16_matmuls_active() && cpu_ops::fused_cpu(xs) {
            if let Some(packed) = self.packed() {
                return xs.contiguous()?.apply_op1_no_bwd(&AmxLinear(packed));
            }
        }
        self.inner.forward(xs)
    }
}

struct AmxLinear(Arc<PackedLinear>);

impl candle_core::CustomOp1 for AmxLinear {
    fn name(&self) -> &'static str {
        "glichen-amx-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let xs = cpu_ops::f32_slice(s, l, "input")?;
        let (k, n) = (self.0.weight.k(), self.0.weight.n());
        let dims = l.shape().dims();
        if dims.last() != Some(&k) {
            candle_core::bail!("linear: input {:?} does not end in {k} features", l.shape());
        }
        let m = xs.len() / k;
        let mut out = vec![0f32; m * n];
        if m > 0 {
            amx::matmul(xs, m, &self.0.weight, self.0.bias.as_deref(), &mut out);
        }
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = n;
        }
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn rel_l2(a: &Tensor, b: &Tensor) -> Result<f32> {
        let d = (a - b)?.sqr()?.sum_all()?.to_scalar::<f32>()?;
        let n = b.sqr()?.sum_all()?.to_scalar::<f32>()?;
        Ok((d / n).sqrt())
    }

    #[test]
    fn f32_outside_the_scope_and_without_amx() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (24, 40), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 24, &dev)?;
        let xs = Tensor::randn(0f32, 1.0, (2, 9, 40), &dev)?;
        let ours = Linear::new(w.clone(), Some(b.clone()));
        let theirs = candle_nn::Linear::new(w, Some(b));
        let want = theirs.forward(&xs)?;
        assert_eq!(rel_l2(&ours.forward(&xs)?, &want)?, 0.0);
        // Another dtype inside the scope: candle's path, never the packing.
        let half = Linear::new(ours.weight().to_dtype(DType::BF16)?, None);
        with_bf16_matmuls(true, || half.forward(&xs.to_dtype(DType::BF16)?))?;
        assert!(
            !BF16_MATMULS.with(Cell::get),
            "the scope restores the previous choice"
        );
        Ok(())
    }

    #[test]
    fn bf16_products_match_bf16_rounded_operands() -> Result<()> {
        if !bf16_matmuls_supported() {
            eprintln!("no AMX-BF16 on this CPU: bf16 linear test skipped");
            return Ok(());
        }
        let dev = Device::Cpu;
        for (m, k, n) in [(1, 40, 24), (77, 768, 320), (2 * 333, 320, 1283)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, n, &dev)?;
            let xs = Tensor::randn(0f32, 1.0, (2, m, k), &dev)?;
            let lin = Linear::new(w.clone(), Some(b.clone()));
            let got = with_bf16_matmuls(true, || lin.forward(&xs))?;
            // The same product on bf16-rounded operands in f32: equal up to summation order.
            let round = |t: &Tensor| t.to_dtype(DType::BF16)?.to_dtype(DType::F32);
            let want = candle_nn::Linear::new(round(&w)?, Some(b)).forward(&round(&xs)?)?;
            let err = rel_l2(&got, &want)?;
            assert!(err < 1e-6, "{m}x{k}x{n}: {err}");
            // And bf16's own rounding against the f32 product: what a user trades.
            let f32_err = rel_l2(&got, &lin.forward(&xs)?)?;
            assert!(f32_err > 1e-5 && f32_err < 1e-2, "{m}x{k}x{n}: {f32_err}");
        }
        Ok(())
    }
}
