//! diffusers' `Transformer2DModel` / `BasicTransformerBlock` with GLIGEN's gated self-attention
//! ("fuser") between self-attention and cross-attention.

use super::attention::{Attention, FeedForward};
use super::blocks::{conv2d, group_norm, Conv2d, GroupNorm};
use super::linear::{linear, Linear};
use candle_core::{Module, Result, Tensor};
use candle_nn::{layer_norm, Conv2dConfig, LayerNorm, VarBuilder};

/// What the fuser of every block receives for one UNet evaluation.
#[derive(Debug, Clone)]
pub struct Grounding {
    /// Grounding tokens `[batch, slots, cross_attention_dim]` from the position net.
    pub objs: Tensor,
    /// Multiplies both `tanh(alpha_attn)` and `tanh(alpha_dense)`: 1 while grounding acts, 0 after
    /// scheduled sampling switched it off, values in between for the original code's decay stage.
    pub gate_scale: f64,
}

/// `GatedSelfAttentionDense`: visual tokens and projected grounding tokens attend together; only the
/// visual tokens are kept and added through tanh gates that were trained from zero.
#[derive(Debug, Clone)]
pub struct GatedSelfAttentionDense {
    linear: Linear,
    attn: Attention,
    ff: FeedForward,
    norm1: LayerNorm,
    norm2: LayerNorm,
    tanh_alpha_attn: f64,
    tanh_alpha_dense: f64,
}

impl GatedSelfAttentionDense {
    pub fn new(
        vb: VarBuilder,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        dim_head: usize,
    ) -> Result<Self> {
        let scalar = |name: &str| -> Result<f64> {
            // Stored 0-d by diffusers; `TensorFile` also serves a 1-element [1] tensor as 0-d.
            let t = vb.get((), name)?;
            t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()
        };
        Ok(Self {
            linear: linear(context_dim, query_dim, vb.pp("linear"))?,
            attn: Attention::new(vb.pp("attn"), query_dim, None, heads, dim_head)?,
            ff: FeedForward::new(vb.pp("ff"), query_dim)?,
            norm1: layer_norm(query_dim, 1e-5, vb.pp("norm1"))?,
            norm2: layer_norm(query_dim, 1e-5, vb.pp("norm2"))?,
            // tanh is taken in f32 as torch does on the f32 parameter.
            tanh_alpha_attn: (scalar("alpha_attn")? as f32).tanh() as f64,
            tanh_alpha_dense: (scalar("alpha_dense")? as f32).tanh() as f64,
        })
    }

    pub fn forward(&self, xs: &Tensor, grounding: &Grounding) -> Result<Tensor> {
        let n_visual = xs.dim(1)?;
        let objs = self.linear.forward(&grounding.objs)?;
        let joint = self.norm1.forward(&Tensor::cat(&[xs, &objs], 1)?)?;
        let attn = self.attn.forward(&joint, None)?.narrow(1, 0, n_visual)?;
        let gate_attn = (grounding.gate_scale as f32 * self.tanh_alpha_attn as f32) as f64;
        let xs = (xs + (attn * gate_attn)?)?;
        let gate_dense = (grounding.gate_scale as f32 * self.tanh_alpha_dense as f32) as f64;
        let ff = self.ff.forward(&self.norm2.forward(&xs)?)?;
        xs + (ff * gate_dense)?
    }
}

#[derive(Debug, Clone)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    fuser: Option<GatedSelfAttentionDense>,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn new(
        vb: VarBuilder,
        dim: usize,
        heads: usize,
        dim_head: usize,
        cross_attention_dim: usize,
        gated: bool,
    ) -> Result<Self> {
        let fuser = if gated {
            Some(GatedSelfAttentionDense::new(
                vb.pp("fuser"),
                dim,
                cross_attention_dim,
                heads,
                dim_head,
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(vb.pp("attn1"), dim, None, heads, dim_head)?,
            fuser,
            norm2: layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(
                vb.pp("attn2"),
                dim,
                Some(cross_attention_dim),
                heads,
                dim_head,
            )?,
            norm3: layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(vb.pp("ff"), dim)?,
        })
    }

    pub fn forward(
        &self,
        xs: &Tensor,
        context: &Tensor,
        grounding: Option<&Grounding>,
    ) -> Result<Tensor> {
        super::interrupt::check()?;
        let xs = (self.attn1.forward(&self.norm1.forward(xs)?, None)? + xs)?;
        super::interrupt::check()?;
        let xs = match (&self.fuser, grounding) {
            (Some(fuser), Some(g)) if g.gate_scale != 0.0 => fuser.forward(&xs, g)?,
            _ => xs,
        };
        super::interrupt::check()?;
        let xs = (self
            .attn2
            .forward(&self.norm2.forward(&xs)?, Some(context))?
            + &xs)?;
        super::interrupt::check()?;
        self.ff.forward(&self.norm3.forward(&xs)?)? + xs
    }
}

#[derive(Debug, Clone)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// `Transformer2DModel` over a feature map (SD's "spatial transformer").
#[derive(Debug, Clone)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

#[derive(Debug, Clone, Copy)]
pub struct Transformer2DConfig {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub norm_num_groups: usize,
    pub cross_attention_dim: usize,
    pub use_linear_projection: bool,
    pub gated: bool,
}

impl Transformer2DModel {
    pub fn new(vb: VarBuilder, cfg: Transformer2DConfig) -> Result<Self> {
        let c = cfg.channels;
        if cfg.heads == 0 || !c.is_multiple_of(cfg.heads) {
            candle_core::bail!("{} attention heads do not divide {c} channels", cfg.heads);
        }
        let dim_head = c / cfg.heads;
        let projection = |vb: VarBuilder| -> Result<Projection> {
            Ok(if cfg.use_linear_projection {
                Projection::Linear(linear(c, c, vb)?)
            } else {
                Projection::Conv(conv2d(c, c, 1, Conv2dConfig::default(), vb)?)
            })
        };
        let blocks = (0..cfg.layers)
            .map(|i| {
                BasicTransformerBlock::new(
                    vb.pp(format!("transformer_blocks.{i}")),
                    c,
                    cfg.heads,
                    dim_head,
                    cfg.cross_attention_dim,
                    cfg.gated,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: group_norm(cfg.norm_num_groups, c, 1e-6, vb.pp("norm"))?,
            proj_in: projection(vb.pp("proj_in"))?,
            blocks,
            proj_out: projection(vb.pp("proj_out"))?,
        })
    }

    pub fn forward(
        &self,
        xs: &Tensor,
        context: &Tensor,
        grounding: Option<&Grounding>,
    ) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let residual = xs;
        let xs = self.norm.forward(xs)?;
        let to_tokens =
            |t: Tensor| -> Result<Tensor> { t.permute((0, 2, 3, 1))?.reshape((b, h * w, c)) };
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(&xs)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(xs)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context, grounding)?;
        }
        let to_map = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?.contiguous()
        };
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_map(tokens)?)?,
            Projection::Linear(lin) => to_map(lin.forward(&tokens)?)?,
        };
        out + residual
    }
}
