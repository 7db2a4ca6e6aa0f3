//! CLIP image tower with projection (transformers' `CLIPVisionModelWithProjection`, sized from
//! `image_encoder/config.json`) and diffusers' `CLIPImageProjection` (`image_project/`): together they
//! turn a reference picture into the grounding embedding of a text-image GLIGEN model
//! (`StableDiffusionGLIGENTextImagePipeline.get_clip_feature`).

use super::clip::{Activation, EncoderLayer};
use candle_core::{DType, IndexOp, Module, Result, Tensor, D};
use candle_nn::{layer_norm, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

fn d_hidden() -> usize {
    768
}
fn d_inter() -> usize {
    3072
}
fn d_heads() -> usize {
    12
}
fn d_layers() -> usize {
    12
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    32
}
fn d_channels() -> usize {
    3
}
fn d_proj() -> usize {
    512
}
fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}

/// `image_encoder/config.json`; the defaults are transformers' `CLIPVisionConfig` ones (ViT-B/32).
/// anhnct/Gligen_Text_Image uses ViT-L/14: 1024 wide, 24 layers, 16 heads, patch 14, projection 768.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_image")]
    pub image_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    #[serde(default = "d_proj")]
    pub projection_dim: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

/// `CLIPVisionModelWithProjection`: pixel values → `image_embeds` `[B, projection_dim]`.
#[derive(Debug, Clone)]
pub struct ClipVisionModelWithProjection {
    class_embedding: Tensor,
    /// The patch convolution's weight `[hidden, channels, patch, patch]` flattened to
    /// `[hidden, channels·patch·patch]`.
    patch_weight: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
    visual_projection: Linear,
    pub config: ClipVisionConfig,
}

impl ClipVisionModelWithProjection {
    /// `vb` is the root of `image_encoder/`'s weights file. Both transformers 4 and 5
    /// `save_pretrained` write the tower under `vision_model.` and the projection at the root
    /// (`visual_projection.weight`); transformers 4's `vision_model.embeddings.position_ids` buffer
    /// is ignored. A file holding the tower without the prefix (next to `visual_projection`) is read
    /// too.
    pub fn new(vb: VarBuilder, c: &ClipVisionConfig) -> Result<Self> {
        let act = Activation::parse(&c.hidden_act, "image encoder")?;
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            candle_core::bail!(
                "image encoder hidden_size {} is not divisible by num_attention_heads {}",
                c.hidden_size,
                c.num_attention_heads
            );
        }
        if c.patch_size == 0 || !c.image_size.is_multiple_of(c.patch_size) {
            candle_core::bail!(
                "image encoder image_size {} is not a multiple of patch_size {}",
                c.image_size,
                c.patch_size
            );
        }
        let tower = if vb.contains_tensor("vision_model.embeddings.class_embedding") {
            vb.pp("vision_model")
        } else {
            vb.clone()
        };
        let d = c.hidden_size;
        let e = tower.pp("embeddings");
        let grid = c.image_size / c.patch_size;
        let patch_weight = e
            .get(
                (d, c.num_channels, c.patch_size, c.patch_size),
                "patch_embedding.weight",
            )?
            .reshape((d, c.num_channels * c.patch_size * c.patch_size))?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let vb = tower.pp(format!("encoder.layers.{i}"));
                let (d, inter, heads) = (c.hidden_size, c.intermediate_size, c.num_attention_heads);
                EncoderLayer::new(vb, d, inter, heads, c.layer_norm_eps, act)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            class_embedding: e.get(d, "class_embedding")?,
            patch_weight,
            position_embedding: e.get((grid * grid + 1, d), "position_embedding.weight")?,
            // (sic) transformers' CLIP spells the first norm `pre_layrnorm`.
            pre_layrnorm: layer_norm(d, c.layer_norm_eps, tower.pp("pre_layrnorm"))?,
            layers,
            post_layernorm: layer_norm(d, c.layer_norm_eps, tower.pp("post_layernorm"))?,
            visual_projection: candle_nn::linear_no_bias(
                d,
                c.projection_dim,
                vb.pp("visual_projection"),
            )?,
            config: c.clone(),
        })
    }

    /// `pixel_values` `[B, channels, image_size, image_size]` (any float dtype; cast to the model's)
    /// → `image_embeds` `[B, projection_dim]`: class token after the encoder, `post_layernorm`,
    /// `visual_projection`. Other sizes are refused, as transformers does without
    /// `interpolate_pos_encoding`.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (b, ch, h, w) = pixel_values.dims4()?;
        if ch != c.num_channels || h != c.image_size || w != c.image_size {
            candle_core::bail!(
                "the image encoder takes [B, {}, {}, {}] pixel values, got {:?}",
                c.num_channels,
                c.image_size,
                c.image_size,
                pixel_values.dims()
            );
        }
        let dtype = self.patch_weight.dtype();
        let (p, g, d) = (c.patch_size, c.image_size / c.patch_size, c.hidden_size);
        // The patch "convolution" has stride = kernel, so it is one matmul over the non-overlapping
        // patches, each flattened in the weight's (channel, row, column) order; patches are taken
        // row-major, as `flatten(2).transpose(1, 2)` orders the conv output.
        let patches = pixel_values
            .to_dtype(dtype)?
            .reshape((b, ch, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b * g * g, ch * p * p))?
            .contiguous()?;
        let patch_embeds = patches
            .matmul(&self.patch_weight.t()?)?
            .reshape((b, g * g, d))?;
        let class = self
            .class_embedding
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?
            .contiguous()?;
        let xs = Tensor::cat(&[&class, &patch_embeds], 1)?
            .broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        let mut xs = self.pre_layrnorm.forward(&xs)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, None)?;
        }
        let pooled = self
            .post_layernorm
            .forward(&xs.i((.., 0, ..))?.contiguous()?)?;
        self.visual_projection.forward(&pooled)
    }
}

/// diffusers' `CLIPImageProjection` (`image_project/`): one bias-free Linear `project`, mapping the
/// image embedding (projection_dim) into the phrase-embedding space (the UNet's cross_attention_dim;
/// 768 → 768 in the released model, whose config calls the width `hidden_size`).
#[derive(Debug, Clone)]
pub struct ImageProjection {
    project: Linear,
}

impl ImageProjection {
    /// `in_dim`/`out_dim` are what the caller expects (image encoder projection_dim, UNet
    /// cross_attention_dim); the sizes are read from `project.weight` and a mismatch names both.
    pub fn new(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let this = Self::from_weights(vb)?;
        if (this.in_dim()?, this.out_dim()?) != (in_dim, out_dim) {
            candle_core::bail!(
                "image_project maps {} → {}, but the image encoder gives {in_dim} and the UNet takes {out_dim}",
                this.in_dim()?,
                this.out_dim()?
            );
        }
        Ok(this)
    }

    /// Sizes from `project.weight` alone.
    pub fn from_weights(vb: VarBuilder) -> Result<Self> {
        let w = vb.get_unchecked("project.weight")?;
        let (out, inp) = w.dims2()?;
        Ok(Self {
            project: candle_nn::linear_no_bias(inp, out, vb.pp("project"))?,
        })
    }

    /// From the original GLIGEN code's `projection_matrix` `P` `[in, out]`, applied as
    /// `feature @ P` (`gligen_inference.project(feature, P.T)`): a linear layer with weight `Pᵀ`.
    pub fn from_matrix(p: &Tensor) -> Result<Self> {
        Ok(Self {
            project: Linear::new(p.t()?.contiguous()?, None),
        })
    }

    pub fn in_dim(&self) -> Result<usize> {
        self.project.weight().dim(1)
    }

    pub fn out_dim(&self) -> Result<usize> {
        self.project.weight().dim(0)
    }
}

impl Module for ImageProjection {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.project.forward(xs)
    }
}

/// `get_clip_feature(image, normalize_constant, is_image=True)` for a batch of image embeddings:
/// each row projected, then `p / ‖p‖ · normalize_constant` (diffusers' default constant is 28.7,
/// about the norm of a ViT-L/14 text pooler output, so that image and phrase tokens have comparable
/// size). Returns f32 `[B, out_dim]`; the norm and division are computed in f32 whatever the model
/// dtype. A zero row stays zero instead of becoming NaN.
pub fn grounding_image_feature(
    embeds: &Tensor,
    projection: &ImageProjection,
    normalize_constant: f64,
) -> Result<Tensor> {
    let dtype = projection.project.weight().dtype();
    let p = projection
        .forward(&embeds.to_dtype(dtype)?)?
        .to_dtype(DType::F32)?;
    let norm = p
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(f32::MIN_POSITIVE, f32::INFINITY)?;
    p.broadcast_div(&norm)? * normalize_constant
}
