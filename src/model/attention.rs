//! Attention and feed-forward layers shared by the UNet's transformer blocks and the GLIGEN fuser,
//! laid out as diffusers names them (`to_q`, `to_k`, `to_v`, `to_out.0`, `ff.net.0.proj`, `ff.net.2`).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{linear, linear_no_bias, Linear, VarBuilder};

/// Score matrices above this many f32 elements are computed in slices of heads, so that a 64×64
/// latent never materialises every head's 4096×4096 matrix at once.
const ATTENTION_CHUNK_ELEMENTS: usize = 1 << 26;

/// Multi-head (self or cross) attention, diffusers' `Attention` with the default processor.
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    dim_head: usize,
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
            dim_head,
            scale: 1.0 / (dim_head as f64).sqrt(),
        })
    }

    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, _) = xs.dims3()?;
        xs.reshape((b, n, self.heads, self.dim_head))?
            .transpose(1, 2)?
            .reshape((b * self.heads, n, self.dim_head))?
            .contiguous()
    }

    /// `context` is `None` for self-attention.
    pub fn forward(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let (b, n, _) = xs.dims3()?;
        let context = context.unwrap_or(xs);
        let q = self.split_heads(&self.to_q.forward(xs)?)?;
        let k = self.split_heads(&self.to_k.forward(context)?)?;
        let v = self.split_heads(&self.to_v.forward(context)?)?;
        let out = scaled_dot_product_attention(&q, &k, &v, self.scale)?;
        let out = out
            .reshape((b, self.heads, n, self.dim_head))?
            .transpose(1, 2)?
            .reshape((b, n, self.heads * self.dim_head))?;
        self.to_out.forward(&out)
    }
}

/// softmax(q kᵀ · scale) v over `[batch·heads, tokens, dim]` tensors. Scores and softmax run in f32
/// whatever the input dtype (half precision loses too much in the exponent sums), and the batch·heads
/// axis is sliced so that peak memory stays bounded.
pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let (bh, n, _) = q.dims3()?;
    let m = k.dim(1)?;
    let per_head = n * m;
    let chunk = (ATTENTION_CHUNK_ELEMENTS / per_head.max(1)).clamp(1, bh);
    let in_dtype = q.dtype();
    let attend = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<Tensor> {
        let q = q.to_dtype(DType::F32)?;
        let k = k.to_dtype(DType::F32)?;
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        probs.to_dtype(in_dtype)?.matmul(v)
    };
    if chunk >= bh {
        return attend(q, k, v);
    }
    let mut outs = Vec::with_capacity(bh.div_ceil(chunk));
    let mut start = 0;
    while start < bh {
        let len = chunk.min(bh - start);
        outs.push(attend(
            &q.narrow(0, start, len)?,
            &k.narrow(0, start, len)?,
            &v.narrow(0, start, len)?,
        )?);
        start += len;
    }
    Tensor::cat(&outs, 0)
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
        let hidden_gate = self.proj.forward(xs)?.chunk(2, D::Minus1)?;
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
