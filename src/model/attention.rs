//! Attention and feed-forward layers shared by the UNet's transformer blocks and the GLIGEN fuser,
//! laid out as diffusers names them (`to_q`, `to_k`, `to_v`, `to_out.0`, `ff.net.0.proj`, `ff.net.2`).

use super::linear::{linear, linear_no_bias, Linear};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// Largest score block (f32 elements) materialised at once: 4M elements = 16 MiB. Blocks stay
/// below the allocator's mmap threshold, so they are recycled from the heap instead of being mapped,
/// page-faulted and unmapped on every call, and a 64×64 latent never holds every head's 4096×4096
/// matrix (1 GiB with guidance) at once.
pub(crate) const ATTENTION_BLOCK_ELEMENTS: usize = 1 << 22;

/// Multi-head (self or cross) attention, diffusers' `Attention` with the default processor.
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    pub fn new(
        vb: VarBuilder,
        query_dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        dim_head: usize,
    ) -> Result<Self> {
        let inner = heads * dim_head;
        let context_dim = context_dim.unwrap_or(query_dim);
        Ok(Self {
            to_q: linear_no_bias(query_dim, inner, vb.pp("to_q"))?,
            to_k: linear_no_bias(context_dim, inner, vb.pp("to_k"))?,
            to_v: linear_no_bias(context_dim, inner, vb.pp("to_v"))?,
            to_out: linear(inner, query_dim, vb.pp("to_out.0"))?,
            heads,
            scale: 1.0 / (dim_head as f64).sqrt(),
        })
    }

    /// `context` is `None` for self-attention.
    pub fn forward(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let context = context.unwrap_or(xs);
        let out = multi_head_attention(
            &self.to_q.forward(xs)?,
            &self.to_k.forward(context)?,
            &self.to_v.forward(context)?,
            self.heads,
            self.scale,
        )?;
        self.to_out.forward(&out)
    }
}

/// Multi-head attention on `[batch, tokens, heads·dim]` projections, returning
/// `[batch, tokens, heads·dim_v]`: the fused kernel on the CPU in f32, else the heads split into
/// `[batch·heads, tokens, dim]` copies for [`scaled_dot_product_attention`].
pub fn multi_head_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    if super::cpu_ops::fused_cpu(q) {
        return super::cpu_ops::multi_head_attention(q, k, v, heads, scale as f32);
    }
    let split = |t: &Tensor| -> Result<Tensor> {
        let (b, n, inner) = t.dims3()?;
        t.reshape((b, n, heads, inner / heads))?
            .transpose(1, 2)?
            .reshape((b * heads, n, inner / heads))?
            .contiguous()
    };
    let (b, n, _) = q.dims3()?;
    let out = scaled_dot_product_attention(&split(q)?, &split(k)?, &split(v)?, scale)?;
    let dv = out.dim(2)?;
    out.reshape((b, heads, n, dv))?
        .transpose(1, 2)?
        .reshape((b, n, heads * dv))
}

/// softmax(q kᵀ · scale) v over `[batch·heads, tokens, dim]` tensors. Scores and softmax run in f32
/// whatever the input dtype (half precision loses too much in the exponent sums). Work is split
/// over heads and, for long sequences, over query rows, so that each score block stays small; every
/// query row still sees all keys, so the result is exact.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let (bh, n, _) = q.dims3()?;
    let m = k.dim(1)?;
    let in_dtype = q.dtype();
    let attend = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<Tensor> {
        // Scaling q (tokens × dim) instead of the scores (tokens × tokens) saves a full pass.
        let q = (q.to_dtype(DType::F32)? * scale)?;
        let k = k.to_dtype(DType::F32)?;
        let scores = q.matmul(&k.t()?)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        probs.to_dtype(in_dtype)?.matmul(v)
    };
    if bh * n * m <= ATTENTION_BLOCK_ELEMENTS {
        return attend(q, k, v);
    }
    let heads_per_block = (ATTENTION_BLOCK_ELEMENTS / (n * m).max(1)).clamp(1, bh);
    let rows_per_block = if heads_per_block > 1 {
        n
    } else {
        (ATTENTION_BLOCK_ELEMENTS / m.max(1)).clamp(1, n)
    };
    let mut heads_out = Vec::with_capacity(bh.div_ceil(heads_per_block));
    let mut h0 = 0;
    while h0 < bh {
        let hl = heads_per_block.min(bh - h0);
        let (qh, kh, vh) = (
            q.narrow(0, h0, hl)?,
            k.narrow(0, h0, hl)?,
            v.narrow(0, h0, hl)?,
        );
        if rows_per_block >= n {
            heads_out.push(attend(&qh, &kh, &vh)?);
        } else {
            let mut rows = Vec::with_capacity(n.div_ceil(rows_per_block));
            let mut r0 = 0;
            while r0 < n {
                let rl = rows_per_block.min(n - r0);
                rows.push(attend(&qh.narrow(1, r0, rl)?, &kh, &vh)?);
                r0 += rl;
            }
            heads_out.push(Tensor::cat(&rows, 1)?);
        }
        h0 += hl;
    }
    Tensor::cat(&heads_out, 0)
}

/// GEGLU projection: half of the output gates the other half through the exact (erf) GELU, as
/// PyTorch's `F.gelu` does by default. candle's `gelu` is the tanh approximation, which alone moves a
/// UNet's output by ~1e-4.
#[derive(Debug, Clone)]
pub struct GeGlu {
    proj: Linear,
}

impl GeGlu {
    pub fn new(vb: VarBuilder, dim_in: usize, dim_out: usize) -> Result<Self> {
        Ok(Self {
            proj: linear(dim_in, dim_out * 2, vb.pp("proj"))?,
        })
    }
}

impl Module for GeGlu {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let proj = self.proj.forward(xs)?;
        if super::cpu_ops::fused_cpu(&proj) {
            return super::cpu_ops::geglu(&proj);
        }
        let hidden_gate = proj.chunk(2, D::Minus1)?;
        &hidden_gate[0] * hidden_gate[1].gelu_erf()?
    }
}

/// diffusers' `FeedForward` with `activation_fn="geglu"` and `mult=4`.
#[derive(Debug, Clone)]
pub struct FeedForward {
    geglu: GeGlu,
    out: Linear,
}

impl FeedForward {
    pub fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            geglu: GeGlu::new(vb.pp("net.0"), dim, inner)?,
            out: linear(inner, dim, vb.pp("net.2"))?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.out.forward(&self.geglu.forward(xs)?)
    }
}
