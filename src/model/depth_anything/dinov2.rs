//! transformers' `Dinov2Backbone` as Depth Anything uses it: patch and position embeddings (the
//! latter bicubically resized for any patch grid), pre-norm transformer layers with layer scale,
//! and the selected hidden states after the final LayerNorm, flat (`[B, 1 + N, C]`, class token
//! first). Keys are the hub's (`embeddings.patch_embeddings.projection`,
//! `encoder.layer.N.attention.attention.query`, `.attention.output.dense`, `layer_scale1.lambda1`).

use super::config::{Dinov2Config, HiddenAct};
use crate::model::attention::multi_head_attention;
use crate::model::blocks::{conv2d, Conv2d};
use crate::model::interrupt;
use crate::model::spatial::interpolate_bicubic;
use candle_core::{Module, Result, Tensor};
use candle_nn::{layer_norm, linear, linear_b, Conv2dConfig, LayerNorm, Linear, VarBuilder};

/// `Dinov2Embeddings`: class token, patch projection, position embeddings.
#[derive(Debug, Clone)]
struct Embeddings {
    cls_token: Tensor,
    /// `[1, 1 + grid², C]`, class token's first.
    position_embeddings: Tensor,
    projection: Conv2d,
    grid: usize,
}

impl Embeddings {
    fn new(vb: VarBuilder, cfg: &Dinov2Config) -> Result<Self> {
        let c = cfg.hidden_size;
        let grid = cfg.position_grid();
        let p = cfg.patch_size;
        let projection = conv2d(
            cfg.num_channels,
            c,
            p,
            Conv2dConfig {
                stride: p,
                ..Default::default()
            },
            vb.pp("patch_embeddings").pp("projection"),
        )?;
        Ok(Self {
            cls_token: vb.get((1, 1, c), "cls_token")?,
            position_embeddings: vb.get((1, grid * grid + 1, c), "position_embeddings")?,
            projection,
            grid,
        })
    }

    /// `interpolate_pos_encoding`: the patch positions resized from the trained square grid to
    /// `(gh, gw)` with torch's bicubic (A = −0.75, `align_corners=False`, no antialias) in f32 by
    /// size, not by scale factor; the class position unchanged. At the trained grid transformers
    /// skips the resize, which at equal size is the identity anyway.
    fn position_embeddings(&self, gh: usize, gw: usize) -> Result<Tensor> {
        if (gh, gw) == (self.grid, self.grid) {
            return Ok(self.position_embeddings.clone());
        }
        let c = self.position_embeddings.dim(2)?;
        let class = self.position_embeddings.narrow(1, 0, 1)?;
        let patches = self
            .position_embeddings
            .narrow(1, 1, self.grid * self.grid)?
            .reshape((1, self.grid, self.grid, c))?
            .permute((0, 3, 1, 2))?;
        let resized = interpolate_bicubic(&patches, (gh, gw))?
            .permute((0, 2, 3, 1))?
            .reshape((1, gh * gw, c))?;
        Tensor::cat(&[class, resized], 1)
    }

    fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let patches = self.projection.forward(pixel_values)?;
        let (b, c, gh, gw) = patches.dims4()?;
        let tokens = patches.flatten_from(2)?.transpose(1, 2)?;
        let cls = self.cls_token.broadcast_as((b, 1, c))?;
        let xs = Tensor::cat(&[&cls, &tokens.contiguous()?], 1)?;
        xs.broadcast_add(&self.position_embeddings(gh, gw)?)
    }
}

fn activation(act: HiddenAct, xs: &Tensor) -> Result<Tensor> {
    match act {
        HiddenAct::Gelu => xs.gelu_erf(),
        HiddenAct::GeluTanh => xs.gelu(),
        HiddenAct::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
        HiddenAct::Relu => xs.relu(),
        HiddenAct::Silu => xs.silu(),
    }
}

/// `Dinov2Layer`: `x + ls1 · attn(norm1(x))`, then `x + ls2 · mlp(norm2(x))`.
#[derive(Debug, Clone)]
struct Layer {
    norm1: LayerNorm,
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    lambda1: Tensor,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    lambda2: Tensor,
    heads: usize,
    act: HiddenAct,
}

impl Layer {
    fn new(vb: VarBuilder, cfg: &Dinov2Config) -> Result<Self> {
        let c = cfg.hidden_size;
        let va = vb.pp("attention");
        let qkv = |name: &str| linear_b(c, c, cfg.qkv_bias, va.pp("attention").pp(name));
        let mlp = cfg.mlp_hidden_size();
        Ok(Self {
            norm1: layer_norm(c, cfg.layer_norm_eps, vb.pp("norm1"))?,
            query: qkv("query")?,
            key: qkv("key")?,
            value: qkv("value")?,
            output: linear(c, c, va.pp("output").pp("dense"))?,
            lambda1: vb.pp("layer_scale1").get(c, "lambda1")?,
            norm2: layer_norm(c, cfg.layer_norm_eps, vb.pp("norm2"))?,
            fc1: linear(c, mlp, vb.pp("mlp").pp("fc1"))?,
            fc2: linear(mlp, c, vb.pp("mlp").pp("fc2"))?,
            lambda2: vb.pp("layer_scale2").get(c, "lambda1")?,
            heads: cfg.num_attention_heads,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.norm1.forward(xs)?;
        let (q, k, v) = (
            self.query.forward(&h)?,
            self.key.forward(&h)?,
            self.value.forward(&h)?,
        );
        let head_dim = q.dim(2)? / self.heads;
        let attn = multi_head_attention(&q, &k, &v, self.heads, (head_dim as f64).powf(-0.5))?;
        let attn = self.output.forward(&attn)?.broadcast_mul(&self.lambda1)?;
        let xs = (attn + xs)?;
        interrupt::check()?;
        let h = self.fc1.forward(&self.norm2.forward(&xs)?)?;
        let h = self.fc2.forward(&activation(self.act, &h)?)?;
        h.broadcast_mul(&self.lambda2)? + xs
    }
}

/// `Dinov2Backbone` with `reshape_hidden_states=False`.
#[derive(Debug, Clone)]
pub struct Dinov2Backbone {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    layernorm: Option<LayerNorm>,
    out_indices: Vec<usize>,
}

impl Dinov2Backbone {
    pub fn new(vb: VarBuilder, cfg: &Dinov2Config) -> Result<Self> {
        // only the layers up to the last selected stage contribute to the output
        let used = cfg.out_indices.iter().copied().max().unwrap_or(0);
        let layers = (0..used)
            .map(|i| Layer::new(vb.pp("encoder").pp("layer").pp(i), cfg))
            .collect::<Result<_>>()?;
        let layernorm = if cfg.apply_layernorm {
            Some(layer_norm(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                vb.pp("layernorm"),
            )?)
        } else {
            None
        };
        Ok(Self {
            embeddings: Embeddings::new(vb.pp("embeddings"), cfg)?,
            layers,
            layernorm,
            out_indices: cfg.out_indices.clone(),
        })
    }

    /// The `feature_maps`: for each selected stage (0 = the embeddings, i = layer i's output), the
    /// hidden states `[B, 1 + gh·gw, C]` through the final LayerNorm.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Vec<Tensor>> {
        let mut xs = self.embeddings.forward(pixel_values)?;
        let mut out = Vec::with_capacity(self.out_indices.len());
        for stage in 0..=self.layers.len() {
            if stage > 0 {
                interrupt::check()?;
                xs = self.layers[stage - 1].forward(&xs)?;
            }
            if self.out_indices.contains(&stage) {
                out.push(match &self.layernorm {
                    Some(norm) => norm.forward(&xs)?,
                    None => xs.clone(),
                });
            }
        }
        Ok(out)
    }
}
