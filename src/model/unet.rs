//! `UNet2DConditionModel` with GLIGEN's gated self-attention, built from the model folder's
//! `unet/config.json`. candle-transformers' own UNet keeps its transformer block private, so the
//! blocks are assembled here from the shared convolutional blocks in [`super::blocks`].

use super::blocks::{conv2d, group_norm, Conv2d, GroupNorm, ResnetBlock2D, ResnetBlock2DConfig};
use super::interrupt;
use super::position_net::{PositionNet, PositionNetInput};
use super::transformer::{Grounding, Transformer2DConfig, Transformer2DModel};
use candle_core::{Module, Result, Tensor};
use candle_nn::{linear, Conv2dConfig, Linear, VarBuilder};
use serde::Deserialize;

/// A config value that diffusers accepts either once for every block or per block.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    pub fn resolve(&self, n: usize, what: &str) -> std::result::Result<Vec<T>, String> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); n]),
            PerBlock::Each(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Each(v) => Err(format!("{what} has {} entries for {n} blocks", v.len())),
        }
    }
}

fn default_in_channels() -> usize {
    4
}
fn default_block_out_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn default_down_blocks() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_up_blocks() -> Vec<String> {
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_layers_per_block() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn default_one() -> PerBlock<usize> {
    PerBlock::One(1)
}
fn default_heads() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn default_groups() -> usize {
    32
}
fn default_eps() -> f64 {
    1e-5
}
fn default_cross() -> PerBlock<usize> {
    PerBlock::One(1280)
}
fn default_true() -> bool {
    true
}
fn default_sample_size() -> usize {
    64
}
fn default_padding() -> usize {
    1
}
fn default_act() -> String {
    "silu".into()
}
fn default_mid_block() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}

/// The keys of diffusers' `UNet2DConditionModel` config that this port reads. Keys for features it
/// does not implement are read too, so that such a model is refused instead of rendered wrongly.
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    #[serde(default = "default_in_channels")]
    pub out_channels: usize,
    #[serde(default = "default_sample_size")]
    pub sample_size: usize,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "default_down_blocks")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_mid_block")]
    pub mid_block_type: Option<String>,
    #[serde(default = "default_up_blocks")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "default_padding")]
    pub downsample_padding: usize,
    #[serde(default = "default_act")]
    pub act_fn: String,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_cross")]
    pub cross_attention_dim: PerBlock<usize>,
    #[serde(default = "default_one")]
    pub transformer_layers_per_block: PerBlock<usize>,
    #[serde(default = "default_heads")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub attention_type: Option<String>,
    #[serde(default)]
    pub only_cross_attention: Option<serde_json::Value>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub time_embedding_type: Option<String>,
    #[serde(default)]
    pub resnet_time_scale_shift: Option<String>,
    #[serde(default)]
    pub conv_in_kernel: Option<usize>,
    #[serde(default)]
    pub conv_out_kernel: Option<usize>,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub mid_block_scale_factor: Option<f64>,
    #[serde(default)]
    pub resnet_out_scale_factor: Option<f64>,
}

/// Why a UNet config cannot be used; turned into a weights/model error naming the file by the loader.
pub fn check_supported(cfg: &UNetConfig) -> std::result::Result<(), String> {
    let n = cfg.block_out_channels.len();
    if n == 0 {
        return Err("block_out_channels is empty".into());
    }
    if cfg.down_block_types.len() != n || cfg.up_block_types.len() != n {
        return Err(format!(
            "{} down blocks and {} up blocks for {} block_out_channels",
            cfg.down_block_types.len(),
            cfg.up_block_types.len(),
            n
        ));
    }
    for t in &cfg.down_block_types {
        if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
            return Err(format!("down block type {t} is not supported"));
        }
    }
    for t in &cfg.up_block_types {
        if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
            return Err(format!("up block type {t} is not supported"));
        }
    }
    match cfg.mid_block_type.as_deref() {
        // `null` means no mid block.
        Some("UNetMidBlock2DCrossAttn") | None => {}
        Some(t) => return Err(format!("mid block type {t} is not supported")),
    }
    if cfg.act_fn != "silu" {
        return Err(format!(
            "act_fn {} is not supported (only silu)",
            cfg.act_fn
        ));
    }
    if cfg.dual_cross_attention {
        return Err("dual_cross_attention is not supported".into());
    }
    match &cfg.only_cross_attention {
        None | Some(serde_json::Value::Bool(false) | serde_json::Value::Null) => {}
        Some(v) => return Err(format!("only_cross_attention {v} is not supported")),
    }
    if cfg.class_embed_type.is_some() || cfg.addition_embed_type.is_some() {
        return Err("class or addition embeddings are not supported".into());
    }
    if !matches!(
        cfg.time_embedding_type.as_deref(),
        None | Some("positional")
    ) {
        return Err("only positional time embeddings are supported".into());
    }
    if !matches!(
        cfg.resnet_time_scale_shift.as_deref(),
        None | Some("default")
    ) {
        return Err("resnet_time_scale_shift other than default is not supported".into());
    }
    if !matches!(cfg.conv_in_kernel, None | Some(3))
        || !matches!(cfg.conv_out_kernel, None | Some(3))
    {
        return Err("conv_in_kernel/conv_out_kernel other than 3 are not supported".into());
    }
    if cfg.mid_block_scale_factor.is_some_and(|f| f != 1.0) {
        return Err("mid_block_scale_factor other than 1 is not supported".into());
    }
    match cfg.attention_type.as_deref() {
        None | Some("default" | "gated" | "gated-text-image") => {}
        Some(t) => return Err(format!("attention_type {t} is not supported")),
    }
    Ok(())
}

/// Sinusoidal timestep embedding of diffusers' `get_timestep_embedding`, always in f32 (in half
/// precision timesteps near 1000 lose their low bits).
pub fn timestep_embedding(
    t: f64,
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f64,
    dev: &candle_core::Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let log_max = -(10000f64.ln()) as f32;
    let denom = half as f32 - shift as f32;
    let t = t as f32;
    let mut sin = Vec::with_capacity(half);
    let mut cos = Vec::with_capacity(half);
    for k in 0..half {
        let freq = (log_max * k as f32 / denom).exp();
        let arg = t * freq;
        sin.push(arg.sin());
        cos.push(arg.cos());
    }
    let mut v = if flip_sin_to_cos {
        [cos, sin].concat()
    } else {
        [sin, cos].concat()
    };
    if dim % 2 == 1 {
        v.push(0.0);
    }
    Tensor::from_vec(v, (1, dim), dev)
}

#[derive(Debug, Clone)]
struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    fn new(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: linear(in_dim, out_dim, vb.pp("linear_1"))?,
            linear_2: linear(out_dim, out_dim, vb.pp("linear_2"))?,
        })
    }
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.linear_2
            .forward(&candle_nn::ops::silu(&self.linear_1.forward(xs)?)?)
    }
}

#[derive(Debug, Clone)]
struct Downsample2D {
    conv: Conv2d,
}

#[derive(Debug, Clone)]
struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    /// Nearest-neighbour ×2, or to the skip connection's size when the latent was odd-sized.
    fn forward(&self, xs: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        self.conv.forward(&xs.upsample_nearest2d(th, tw)?)
    }
}

#[derive(Debug)]
struct Block {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
    upsampler: Option<Upsample2D>,
}

/// Every per-block size the UNet needs, resolved from its config once.
#[derive(Debug, Clone)]
struct Resolved {
    layers: Vec<usize>,
    heads: Vec<usize>,
    cross: Vec<usize>,
    transformer_layers: Vec<usize>,
}

#[derive(Debug)]
pub struct UNet2DConditionModel {
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    down_blocks: Vec<Block>,
    /// Empty when the config says `mid_block_type: null`.
    mid_resnets: Vec<ResnetBlock2D>,
    mid_attention: Option<Transformer2DModel>,
    up_blocks: Vec<Block>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    pub position_net: Option<PositionNet>,
    pub config: UNetConfig,
    /// Whether the linear layers, attention products and convolutions multiply in bf16 (f32
    /// accumulation) on a CPU with AMX; see [`super::linear::with_bf16_matmuls`].
    bf16_matmuls: bool,
}

impl UNet2DConditionModel {
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        check_supported(cfg).map_err(candle_core::Error::msg)?;
        let n = cfg.block_out_channels.len();
        let boc = &cfg.block_out_channels;
        // diffusers' legacy naming: `attention_head_dim` holds the number of heads unless
        // `num_attention_heads` is set.
        let heads_cfg = cfg
            .num_attention_heads
            .as_ref()
            .unwrap_or(&cfg.attention_head_dim);
        let r = Resolved {
            layers: cfg
                .layers_per_block
                .resolve(n, "layers_per_block")
                .map_err(candle_core::Error::msg)?,
            heads: heads_cfg
                .resolve(n, "attention_head_dim")
                .map_err(candle_core::Error::msg)?,
            cross: cfg
                .cross_attention_dim
                .resolve(n, "cross_attention_dim")
                .map_err(candle_core::Error::msg)?,
            transformer_layers: cfg
                .transformer_layers_per_block
                .resolve(n, "transformer_layers_per_block")
                .map_err(candle_core::Error::msg)?,
        };
        // Every attention width must split into whole heads; checked here so that a wrong head
        // count names its setting instead of failing as a division by zero or a shape mismatch.
        let heads_key = if cfg.num_attention_heads.is_some() {
            "num_attention_heads"
        } else {
            "attention_head_dim"
        };
        for (i, (&heads, &channels)) in r.heads.iter().zip(boc.iter()).enumerate() {
            if heads == 0 || !channels.is_multiple_of(heads) {
                candle_core::bail!(
                    "UNet {heads_key} {heads} of block {i} does not divide its {channels} channels"
                );
            }
        }
        let gated = matches!(
            cfg.attention_type.as_deref(),
            Some("gated" | "gated-text-image")
        );
        let groups = cfg.norm_num_groups;
        let time_dim = cfg.time_embedding_dim.unwrap_or(boc[0] * 4);
        let conv3 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let resnet = |vb: VarBuilder, cin: usize, cout: usize| -> Result<ResnetBlock2D> {
            ResnetBlock2D::new(
                vb,
                cin,
                ResnetBlock2DConfig {
                    out_channels: Some(cout),
                    temb_channels: Some(time_dim),
                    groups,
                    groups_out: None,
                    eps: cfg.norm_eps,
                    use_in_shortcut: None,
                    output_scale_factor: cfg.resnet_out_scale_factor.unwrap_or(1.0),
                },
            )
        };
        let transformer =
            |vb: VarBuilder, channels: usize, heads: usize, layers: usize, cross: usize| {
                Transformer2DModel::new(
                    vb,
                    Transformer2DConfig {
                        channels,
                        heads,
                        layers,
                        norm_num_groups: groups,
                        cross_attention_dim: cross,
                        use_linear_projection: cfg.use_linear_projection,
                        gated,
                    },
                )
            };

        let conv_in = conv2d(cfg.in_channels, boc[0], 3, conv3, vb.pp("conv_in"))?;
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), boc[0], time_dim)?;

        let mut down_blocks = Vec::with_capacity(n);
        let mut out_ch = boc[0];
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let vb = vb.pp(format!("down_blocks.{i}"));
            let in_ch = out_ch;
            out_ch = boc[i];
            let with_attn = kind == "CrossAttnDownBlock2D";
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..r.layers[i] {
                let cin = if j == 0 { in_ch } else { out_ch };
                resnets.push(resnet(vb.pp(format!("resnets.{j}")), cin, out_ch)?);
                if with_attn {
                    attentions.push(transformer(
                        vb.pp(format!("attentions.{j}")),
                        out_ch,
                        r.heads[i],
                        r.transformer_layers[i],
                        r.cross[i],
                    )?);
                }
            }
            let downsampler = if i + 1 < n {
                let c = Conv2dConfig {
                    padding: cfg.downsample_padding,
                    stride: 2,
                    ..Default::default()
                };
                Some(Downsample2D {
                    conv: conv2d(out_ch, out_ch, 3, c, vb.pp("downsamplers.0.conv"))?,
                })
            } else {
                None
            };
            down_blocks.push(Block {
                resnets,
                attentions,
                downsampler,
                upsampler: None,
            });
        }

        let mid_ch = boc[n - 1];
        let vbm = vb.pp("mid_block");
        let (mid_resnets, mid_attention) = if cfg.mid_block_type.is_some() {
            let resnets = vec![
                resnet(vbm.pp("resnets.0"), mid_ch, mid_ch)?,
                resnet(vbm.pp("resnets.1"), mid_ch, mid_ch)?,
            ];
            let attention = transformer(
                vbm.pp("attentions.0"),
                mid_ch,
                r.heads[n - 1],
                r.transformer_layers[n - 1],
                r.cross[n - 1],
            )?;
            (resnets, Some(attention))
        } else {
            (Vec::new(), None)
        };

        let rev_boc: Vec<usize> = boc.iter().rev().copied().collect();
        let rev_heads: Vec<usize> = r.heads.iter().rev().copied().collect();
        let rev_layers: Vec<usize> = r.layers.iter().rev().copied().collect();
        let rev_cross: Vec<usize> = r.cross.iter().rev().copied().collect();
        let rev_tl: Vec<usize> = r.transformer_layers.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_ch = rev_boc[0];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let vb = vb.pp(format!("up_blocks.{i}"));
            let prev_out = out_ch;
            out_ch = rev_boc[i];
            let in_ch = rev_boc[(i + 1).min(n - 1)];
            let with_attn = kind == "CrossAttnUpBlock2D";
            let num_layers = rev_layers[i] + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..num_layers {
                let skip = if j == num_layers - 1 { in_ch } else { out_ch };
                let cin = if j == 0 { prev_out } else { out_ch };
                resnets.push(resnet(vb.pp(format!("resnets.{j}")), cin + skip, out_ch)?);
                if with_attn {
                    attentions.push(transformer(
                        vb.pp(format!("attentions.{j}")),
                        out_ch,
                        rev_heads[i],
                        rev_tl[i],
                        rev_cross[i],
                    )?);
                }
            }
            let upsampler = if i + 1 < n {
                Some(Upsample2D {
                    conv: conv2d(out_ch, out_ch, 3, conv3, vb.pp("upsamplers.0.conv"))?,
                })
            } else {
                None
            };
            up_blocks.push(Block {
                resnets,
                attentions,
                downsampler: None,
                upsampler,
            });
        }

        let conv_norm_out = group_norm(groups, boc[0], cfg.norm_eps, vb.pp("conv_norm_out"))?;
        let conv_out = conv2d(boc[0], cfg.out_channels, 3, conv3, vb.pp("conv_out"))?;
        // A spatial-map checkpoint's position net (ConvNeXt over the map) lives beside the UNet,
        // in `model::spatial`, with the map downsampler that feeds `conv_in`.
        let spatial = vb.contains_tensor("position_net.pos_embedding");
        let position_net = match cfg.attention_type.as_deref() {
            Some("gated" | "gated-text-image") if !spatial => {
                Some(PositionNet::new(vb.pp("position_net"), r.cross[0])?)
            }
            _ => None,
        };
        Ok(Self {
            conv_in,
            time_embedding,
            down_blocks,
            mid_resnets,
            mid_attention,
            up_blocks,
            conv_norm_out,
            conv_out,
            position_net,
            config: cfg.clone(),
            bf16_matmuls: false,
        })
    }

    /// Grounding tokens for a batch, from the position net.
    pub fn grounding_tokens(&self, input: &PositionNetInput) -> Result<Tensor> {
        match &self.position_net {
            Some(net) => net.forward(input),
            None => {
                candle_core::bail!("this UNet has no position net (attention_type is not gated)")
            }
        }
    }

    /// Stable Diffusion's own 4-channel first conv from its `weight` and `bias`, checked against
    /// this UNet's width: what a spatial-map checkpoint runs once its grounding has ended.
    pub fn first_conv_from(&self, weight: Tensor, bias: Tensor) -> Result<Conv2d> {
        let width = self.config.block_out_channels[0];
        let dims = weight.dims().to_vec();
        if dims != [width, self.latent_channels(), 3, 3] || bias.dims() != [width] {
            candle_core::bail!(
                "Stable Diffusion's first conv must be [{width}, {}, 3, 3] with a [{width}] bias \
                 for this UNet; found {dims:?} and {:?}",
                self.latent_channels(),
                bias.dims()
            );
        }
        let device = self.conv_in.weight().device().clone();
        let dtype = self.conv_in.weight().dtype();
        Ok(Conv2d::new(
            weight.to_device(&device)?.to_dtype(dtype)?,
            bias.to_device(&device)?.to_dtype(dtype)?,
            Conv2dConfig {
                padding: 1,
                ..Default::default()
            },
        ))
    }

    /// Channels of the latents this UNet denoises (its output channels).
    pub fn latent_channels(&self) -> usize {
        self.config.out_channels
    }

    /// One evaluation: `sample` `[B, in_channels, h, w]`, `context` `[B, 77, cross_dim]`; `grounding`
    /// carries the position net's tokens and the gate scale (None or scale 0: the fusers are skipped).
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
        grounding: Option<&Grounding>,
    ) -> Result<Tensor> {
        self.forward_with_first_conv(sample, timestep, context, grounding, None)
    }

    /// [`Self::forward`] with another first conv in place of `conv_in` (a spatial-map checkpoint
    /// after its grounding ends: Stable Diffusion's own, on the 4 latent channels alone).
    pub fn forward_with_first_conv(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
        grounding: Option<&Grounding>,
        first_conv: Option<&Conv2d>,
    ) -> Result<Tensor> {
        super::linear::with_bf16_matmuls(self.bf16_matmuls, || {
            self.evaluate(sample, timestep, context, grounding, first_conv)
        })
    }

    /// Multiplies in bf16 with f32 accumulation where the CPU has AMX: linear layers, attention
    /// products and the convolutions with 64+ output channels (an f32 model: activations, norms,
    /// softmax and the 4-channel first and last convolutions stay f32).
    pub fn set_bf16_matmuls(&mut self, on: bool) {
        self.bf16_matmuls = on;
    }

    pub fn bf16_matmuls(&self) -> bool {
        self.bf16_matmuls
    }

    fn evaluate(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
        grounding: Option<&Grounding>,
        first_conv: Option<&Conv2d>,
    ) -> Result<Tensor> {
        let (b, _, _, _) = sample.dims4()?;
        let dtype = sample.dtype();
        let t_emb = timestep_embedding(
            timestep,
            self.config.block_out_channels[0],
            self.config.flip_sin_to_cos,
            self.config.freq_shift,
            sample.device(),
        )?
        .to_dtype(dtype)?;
        let emb = self.time_embedding.forward(&t_emb)?.repeat((b, 1))?;

        let mut xs = first_conv.unwrap_or(&self.conv_in).forward(sample)?;
        let mut skips = vec![xs.clone()];
        for block in &self.down_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                interrupt::check()?;
                xs = resnet.forward(&xs, Some(&emb))?;
                if let Some(attn) = block.attentions.get(j) {
                    xs = attn.forward(&xs, context, grounding)?;
                }
                skips.push(xs.clone());
            }
            if let Some(down) = &block.downsampler {
                xs = down.conv.forward(&xs)?;
                skips.push(xs.clone());
            }
        }

        if let (Some(attn), [first, second]) = (&self.mid_attention, self.mid_resnets.as_slice()) {
            interrupt::check()?;
            xs = first.forward(&xs, Some(&emb))?;
            xs = attn.forward(&xs, context, grounding)?;
            xs = second.forward(&xs, Some(&emb))?;
        }

        for block in &self.up_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips
                    .pop()
                    .ok_or_else(|| candle_core::Error::msg("UNet skip connections exhausted"))?;
                xs = Tensor::cat(&[&xs, &skip], 1)?;
                interrupt::check()?;
                xs = resnet.forward(&xs, Some(&emb))?;
                if let Some(attn) = block.attentions.get(j) {
                    xs = attn.forward(&xs, context, grounding)?;
                }
            }
            if let Some(up) = &block.upsampler {
                // Upsample to the next skip's size: equal to ×2 unless the latent size was not
                // divisible by the UNet's total downsampling (diffusers' `forward_upsample_size`).
                let size = match skips.last() {
                    Some(s) => {
                        let (_, _, h, w) = s.dims4()?;
                        Some((h, w))
                    }
                    None => None,
                };
                xs = up.forward(&xs, size)?;
            }
        }
        let xs = self.conv_norm_out.forward_silu(&xs)?;
        self.conv_out.forward(&xs)
    }
}
