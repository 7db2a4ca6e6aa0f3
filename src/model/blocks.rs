//! The convolutional building blocks shared by the UNet and the VAE, named as diffusers names
//! their keys (`norm1`, `conv1`, `time_emb_proj`, `conv_shortcut`, `downsamplers.0.conv`, ...).
//! They mirror candle-transformers' Stable Diffusion blocks but run their convolutions and the
//! VAE's attention through the fused CPU kernels of [`super::cpu_ops`] where those apply.

use super::cpu_ops;
use candle_core::{Module, Result, Tensor, D};
use candle_nn::{linear, Conv2dConfig, Linear, VarBuilder};
use std::sync::{Arc, OnceLock};

/// `nn.Conv2d`: weight `[out, in / groups, k, k]`, bias `[out]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    config: Conv2dConfig,
    /// The weight packed for bf16 tile products, made on the first one and shared by clones
    /// (see [`super::linear::with_bf16_matmuls`]).
    bf16: Arc<OnceLock<Option<Arc<cpu_ops::amx::PackedRows>>>>,
}

pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    config: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let weight = vb.get(
        (
            out_channels,
            in_channels / config.groups.max(1),
            kernel_size,
            kernel_size,
        ),
        "weight",
    )?;
    let bias = vb.get(out_channels, "bias")?;
    Ok(Conv2d::new(weight, bias, config))
}

impl Conv2d {
    /// From tensors already loaded (a conv that does not come from the checkpoint's own keys).
    pub fn new(weight: Tensor, bias: Tensor, config: Conv2dConfig) -> Self {
        Self {
            weight,
            bias,
            config,
            bf16: Arc::new(OnceLock::new()),
        }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    fn bf16_weight(&self) -> Option<Arc<cpu_ops::amx::PackedRows>> {
        self.bf16
            .get_or_init(|| {
                let (co, ci, kh, kw) = self.weight.dims4().ok()?;
                // The UNet's first and last convolutions (4 latent channels in or out) stay
                // f32: they are cheap, and rounding the latents or the prediction itself to
                // bf16 would cost more precision than every other layer together.
                if co < 64 || ci * kh * kw < 256 {
                    return None;
                }
                cpu_ops::with_f32_data(&self.weight, |data| {
                    cpu_ops::amx::PackedRows::pack(data, co, ci * kh * kw)
                })?
                .map(Arc::new)
            })
            .clone()
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        if c.groups == 1 && c.dilation == 1 && cpu_ops::fused_cpu(xs) {
            if super::linear::bf16_matmuls_active() {
                if let Some(packed) = self.bf16_weight() {
                    return cpu_ops::conv2d_bf16(
                        xs,
                        &self.weight,
                        packed,
                        &self.bias,
                        c.stride,
                        c.padding,
                    );
                }
            }
            return cpu_ops::conv2d(xs, &self.weight, &self.bias, c.stride, c.padding);
        }
        let ys = xs.conv2d(&self.weight, c.padding, c.stride, c.dilation, c.groups)?;
        ys.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

/// `nn.GroupNorm` with affine weight and bias; [`GroupNorm::forward_silu`] fuses the SiLU that
/// follows most of them.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    if groups == 0 || !channels.is_multiple_of(groups) {
        candle_core::bail!("GroupNorm: {channels} channels do not split into {groups} groups");
    }
    Ok(GroupNorm {
        weight: vb.get(channels, "weight")?,
        bias: vb.get(channels, "bias")?,
        groups,
        eps,
    })
}

impl GroupNorm {
    fn run(&self, xs: &Tensor, silu: bool) -> Result<Tensor> {
        if cpu_ops::fused_cpu(xs) {
            return cpu_ops::group_norm(xs, &self.weight, &self.bias, self.groups, self.eps, silu);
        }
        let c = self.weight.dim(0)?;
        let gn = candle_nn::GroupNorm::new(
            self.weight.clone(),
            self.bias.clone(),
            c,
            self.groups,
            self.eps,
        )?;
        let ys = gn.forward(xs)?;
        if silu {
            candle_nn::ops::silu(&ys)
        } else {
            Ok(ys)
        }
    }

    /// `silu(group_norm(xs))`.
    pub fn forward_silu(&self, xs: &Tensor) -> Result<Tensor> {
        self.run(xs, true)
    }
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.run(xs, false)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ResnetBlock2DConfig {
    pub out_channels: Option<usize>,
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub groups_out: Option<usize>,
    pub eps: f64,
    pub use_in_shortcut: Option<bool>,
    pub output_scale_factor: f64,
}

impl Default for ResnetBlock2DConfig {
    fn default() -> Self {
        Self {
            out_channels: None,
            temb_channels: Some(512),
            groups: 32,
            groups_out: None,
            eps: 1e-6,
            use_in_shortcut: None,
            output_scale_factor: 1.,
        }
    }
}

/// diffusers' `ResnetBlock2D` (default time-embedding norm, SiLU, no up/down sampling).
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    time_emb_proj: Option<Linear>,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn new(vb: VarBuilder, in_channels: usize, cfg: ResnetBlock2DConfig) -> Result<Self> {
        let out_channels = cfg.out_channels.unwrap_or(in_channels);
        let conv3 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let shortcut = cfg.use_in_shortcut.unwrap_or(in_channels != out_channels);
        Ok(Self {
            norm1: group_norm(cfg.groups, in_channels, cfg.eps, vb.pp("norm1"))?,
            conv1: conv2d(in_channels, out_channels, 3, conv3, vb.pp("conv1"))?,
            norm2: group_norm(
                cfg.groups_out.unwrap_or(cfg.groups),
                out_channels,
                cfg.eps,
                vb.pp("norm2"),
            )?,
            conv2: conv2d(out_channels, out_channels, 3, conv3, vb.pp("conv2"))?,
            time_emb_proj: match cfg.temb_channels {
                Some(t) => Some(linear(t, out_channels, vb.pp("time_emb_proj"))?),
                None => None,
            },
            conv_shortcut: if shortcut {
                let one = Conv2dConfig::default();
                Some(conv2d(
                    in_channels,
                    out_channels,
                    1,
                    one,
                    vb.pp("conv_shortcut"),
                )?)
            } else {
                None
            },
            output_scale_factor: cfg.output_scale_factor,
        })
    }

    pub fn forward(&self, xs: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        super::interrupt::check()?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(xs)?,
            None => xs.clone(),
        };
        let h = self.norm1.forward_silu(xs)?;
        let mut h = self.conv1.forward(&h)?;
        if let (Some(temb), Some(proj)) = (temb, &self.time_emb_proj) {
            let t = proj
                .forward(&candle_nn::ops::silu(temb)?)?
                .unsqueeze(D::Minus1)?
                .unsqueeze(D::Minus1)?;
            h = h.broadcast_add(&t)?;
        }
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let out = (shortcut + h)?;
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale_factor
        }
    }
}

/// The VAE's single-head spatial self-attention (`mid_block.attentions.0`), with diffusers' key
/// names or the older `query`/`key`/`value`/`proj_attn` ones.
#[derive(Debug, Clone)]
pub struct VaeAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    rescale_output_factor: f64,
}

impl VaeAttention {
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        head_channels: Option<usize>,
        groups: usize,
        eps: f64,
        rescale_output_factor: f64,
    ) -> Result<Self> {
        let (q, k, v, o) = if vb.contains_tensor("to_q.weight") {
            ("to_q", "to_k", "to_v", "to_out.0")
        } else {
            ("query", "key", "value", "proj_attn")
        };
        Ok(Self {
            group_norm: group_norm(groups, channels, eps, vb.pp("group_norm"))?,
            to_q: qkv_linear(channels, vb.pp(q))?,
            to_k: qkv_linear(channels, vb.pp(k))?,
            to_v: qkv_linear(channels, vb.pp(v))?,
            to_out: qkv_linear(channels, vb.pp(o))?,
            heads: channels / head_channels.unwrap_or(channels).max(1),
            rescale_output_factor,
        })
    }
}

/// A linear layer, also from the 1×1 convolution weights (`[c, c, 1, 1]`) that older VAE
/// checkpoints store.
fn qkv_linear(channels: usize, vb: VarBuilder) -> Result<Linear> {
    if vb.contains_tensor("weight") && vb.get((channels, channels), "weight").is_err() {
        let weight = vb
            .get((channels, channels, 1, 1), "weight")?
            .reshape((channels, channels))?;
        return Ok(Linear::new(weight, Some(vb.get(channels, "bias")?)));
    }
    linear(channels, channels, vb)
}

impl Module for VaeAttention {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let tokens = self
            .group_norm
            .forward(xs)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let (q, k, v) = (
            self.to_q.forward(&tokens)?,
            self.to_k.forward(&tokens)?,
            self.to_v.forward(&tokens)?,
        );
        let scale = 1.0 / ((c / self.heads) as f64).sqrt();
        let attn = super::attention::multi_head_attention(&q, &k, &v, self.heads, scale)?;
        let out = self
            .to_out
            .forward(&attn)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?;
        (out + xs)? / self.rescale_output_factor
    }
}

/// The VAE's mid block: resnet, then (attention, resnet).
#[derive(Debug, Clone)]
pub struct VaeMidBlock {
    resnets: Vec<ResnetBlock2D>,
    attention: VaeAttention,
}

impl VaeMidBlock {
    pub fn new(vb: VarBuilder, channels: usize, groups: usize, eps: f64) -> Result<Self> {
        let cfg = ResnetBlock2DConfig {
            temb_channels: None,
            groups,
            eps,
            ..Default::default()
        };
        Ok(Self {
            resnets: vec![
                ResnetBlock2D::new(vb.pp("resnets.0"), channels, cfg)?,
                ResnetBlock2D::new(vb.pp("resnets.1"), channels, cfg)?,
            ],
            attention: VaeAttention::new(vb.pp("attentions.0"), channels, None, groups, eps, 1.0)?,
        })
    }
}

impl Module for VaeMidBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.resnets[0].forward(xs, None)?;
        let xs = self.attention.forward(&xs)?;
        self.resnets[1].forward(&xs, None)
    }
}

/// What follows a VAE block's resnets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    None,
    /// diffusers' `padding=0` downsampler: pad one row and column at the bottom and right,
    /// then a stride-2 3×3 convolution (`downsamplers.0.conv`).
    Down,
    /// Nearest 2× upsampling, then a 3×3 convolution (`upsamplers.0.conv`).
    Up,
}

/// The VAE's `DownEncoderBlock2D` (with [`Resample::Down`] or none) and `UpDecoderBlock2D`
/// (with [`Resample::Up`] or none): resnets, then the resampling convolution.
#[derive(Debug, Clone)]
pub struct VaeBlock {
    resnets: Vec<ResnetBlock2D>,
    resample: Option<(Resample, Conv2d)>,
}

impl VaeBlock {
    pub fn new(
        vb: VarBuilder,
        (in_channels, out_channels): (usize, usize),
        layers: usize,
        (groups, eps): (usize, f64),
        resample: Resample,
    ) -> Result<Self> {
        let cfg = ResnetBlock2DConfig {
            out_channels: Some(out_channels),
            temb_channels: None,
            groups,
            eps,
            ..Default::default()
        };
        let resnets = (0..layers)
            .map(|i| {
                let inp = if i == 0 { in_channels } else { out_channels };
                ResnetBlock2D::new(vb.pp(format!("resnets.{i}")), inp, cfg)
            })
            .collect::<Result<Vec<_>>>()?;
        let (stride, padding, name) = match resample {
            Resample::Down => (2, 0, "downsamplers.0.conv"),
            _ => (1, 1, "upsamplers.0.conv"),
        };
        let resample = match resample {
            Resample::None => None,
            r => {
                let cfg = Conv2dConfig {
                    stride,
                    padding,
                    ..Default::default()
                };
                let conv = conv2d(out_channels, out_channels, 3, cfg, vb.pp(name))?;
                Some((r, conv))
            }
        };
        Ok(Self { resnets, resample })
    }
}

impl Module for VaeBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = xs.clone();
        for r in &self.resnets {
            xs = r.forward(&xs, None)?;
        }
        match &self.resample {
            None => Ok(xs),
            Some((Resample::Down, conv)) => {
                let padded = xs
                    .pad_with_zeros(D::Minus1, 0, 1)?
                    .pad_with_zeros(D::Minus2, 0, 1)?;
                conv.forward(&padded)
            }
            Some((_, conv)) => {
                let (_, _, h, w) = xs.dims4()?;
                conv.forward(&xs.upsample_nearest2d(2 * h, 2 * w)?)
            }
        }
    }
}
