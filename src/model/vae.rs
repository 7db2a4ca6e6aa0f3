//! The KL autoencoder, sized from `vae/config.json`, built from candle-transformers' blocks.

use super::blocks::{conv2d, group_norm, Conv2d, GroupNorm, Resample, VaeBlock, VaeMidBlock};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use serde::Deserialize;

fn d3() -> usize {
    3
}
fn d4() -> usize {
    4
}
fn d_boc() -> Vec<usize> {
    vec![64]
}
fn d1() -> usize {
    1
}
fn d32() -> usize {
    32
}
fn d_scale() -> f64 {
    0.18215
}
fn d_true() -> bool {
    true
}
fn d_sample() -> usize {
    32
}

#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "d3")]
    pub in_channels: usize,
    #[serde(default = "d3")]
    pub out_channels: usize,
    #[serde(default = "d_boc")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d1")]
    pub layers_per_block: usize,
    #[serde(default = "d4")]
    pub latent_channels: usize,
    #[serde(default = "d32")]
    pub norm_num_groups: usize,
    #[serde(default = "d_scale")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "d_sample")]
    pub sample_size: usize,
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    #[serde(default)]
    pub act_fn: Option<String>,
    #[serde(default)]
    pub mid_block_add_attention: Option<bool>,
}

impl VaeConfig {
    /// Pixels per latent cell: every encoder block but the last halves the resolution.
    pub fn downscale_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }
}

/// The diagonal Gaussian the encoder predicts for each latent cell.
#[derive(Debug, Clone)]
pub struct LatentPosterior {
    pub mean: Tensor,
    pub std: Tensor,
}

impl LatentPosterior {
    /// `mean + std · noise` with a given standard-normal draw (diffusers' `latent_dist.sample()`).
    pub fn sample_with(&self, noise: &Tensor) -> Result<Tensor> {
        &self.mean + (&self.std * noise)?
    }
}

#[derive(Debug)]
struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<VaeBlock>,
    mid_block: VaeMidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

#[derive(Debug)]
struct Decoder {
    conv_in: Conv2d,
    mid_block: VaeMidBlock,
    up_blocks: Vec<VaeBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

fn mid_block(vb: VarBuilder, channels: usize, groups: usize) -> Result<VaeMidBlock> {
    VaeMidBlock::new(vb, channels, groups, 1e-6)
}

impl Encoder {
    fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let conv3 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let mut down_blocks = Vec::with_capacity(boc.len());
        for (i, &out) in boc.iter().enumerate() {
            let inp = if i > 0 { boc[i - 1] } else { boc[0] };
            down_blocks.push(VaeBlock::new(
                vb.pp(format!("down_blocks.{i}")),
                (inp, out),
                cfg.layers_per_block,
                (cfg.norm_num_groups, 1e-6),
                if i + 1 < boc.len() {
                    Resample::Down
                } else {
                    Resample::None
                },
            )?);
        }
        let last = boc[boc.len() - 1];
        Ok(Self {
            conv_in: conv2d(cfg.in_channels, boc[0], 3, conv3, vb.pp("conv_in"))?,
            down_blocks,
            mid_block: mid_block(vb.pp("mid_block"), last, cfg.norm_num_groups)?,
            conv_norm_out: group_norm(cfg.norm_num_groups, last, 1e-6, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(last, 2 * cfg.latent_channels, 3, conv3, vb.pp("conv_out"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.conv_in.forward(xs)?;
        for block in &self.down_blocks {
            xs = block.forward(&xs)?;
        }
        let xs = self
            .conv_norm_out
            .forward_silu(&self.mid_block.forward(&xs)?)?;
        self.conv_out.forward(&xs)
    }
}

impl Decoder {
    fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let last = boc[boc.len() - 1];
        let conv3 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(boc.len());
        for (i, &out) in rev.iter().enumerate() {
            let inp = if i > 0 { rev[i - 1] } else { rev[0] };
            up_blocks.push(VaeBlock::new(
                vb.pp(format!("up_blocks.{i}")),
                (inp, out),
                cfg.layers_per_block + 1,
                (cfg.norm_num_groups, 1e-6),
                if i + 1 < boc.len() {
                    Resample::Up
                } else {
                    Resample::None
                },
            )?);
        }
        Ok(Self {
            conv_in: conv2d(cfg.latent_channels, last, 3, conv3, vb.pp("conv_in"))?,
            mid_block: mid_block(vb.pp("mid_block"), last, cfg.norm_num_groups)?,
            up_blocks,
            conv_norm_out: group_norm(cfg.norm_num_groups, boc[0], 1e-6, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(boc[0], cfg.out_channels, 3, conv3, vb.pp("conv_out"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.mid_block.forward(&self.conv_in.forward(xs)?)?;
        for block in &self.up_blocks {
            xs = block.forward(&xs)?;
        }
        let xs = self.conv_norm_out.forward_silu(&xs)?;
        self.conv_out.forward(&xs)
    }
}

/// diffusers' `AutoencoderKL`, assembled from candle-transformers' public blocks so that the
/// encoder's posterior (mean and std) is reachable for grounded inpainting.
#[derive(Debug)]
pub struct AutoencoderKL {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    pub config: VaeConfig,
}

impl AutoencoderKL {
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        // Latents are divided by it before decoding: 0 or NaN would decode to a black picture.
        if !(cfg.scaling_factor.is_finite() && cfg.scaling_factor > 0.0) {
            candle_core::bail!(
                "VAE scaling_factor {} must be a positive number",
                cfg.scaling_factor
            );
        }
        if cfg.act_fn.as_deref().is_some_and(|a| a != "silu") {
            candle_core::bail!("VAE act_fn {:?} is not supported", cfg.act_fn);
        }
        if cfg.mid_block_add_attention == Some(false) {
            candle_core::bail!("VAE without mid-block attention is not supported");
        }
        if cfg.block_out_channels.is_empty() {
            candle_core::bail!("VAE block_out_channels is empty");
        }
        let l = cfg.latent_channels;
        let one = Conv2dConfig::default();
        let quant_conv = if cfg.use_quant_conv {
            Some(conv2d(2 * l, 2 * l, 1, one, vb.pp("quant_conv"))?)
        } else {
            None
        };
        let post_quant_conv = if cfg.use_post_quant_conv {
            Some(conv2d(l, l, 1, one, vb.pp("post_quant_conv"))?)
        } else {
            None
        };
        Ok(Self {
            encoder: Encoder::new(vb.pp("encoder"), cfg)?,
            decoder: Decoder::new(vb.pp("decoder"), cfg)?,
            quant_conv,
            post_quant_conv,
            config: cfg.clone(),
        })
    }

    /// Pipeline latents (already multiplied by the scaling factor) → image in [-1, 1] (unclamped).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let mut z = (latents / self.config.scaling_factor)?;
        if let Some(shift) = self.config.shift_factor {
            z = (z + shift)?;
        }
        if let Some(pq) = &self.post_quant_conv {
            z = pq.forward(&z)?;
        }
        self.decoder.forward(&z)
    }

    /// Image in [-1, 1] → the latent posterior (unscaled), as diffusers' `encode(...).latent_dist`:
    /// logvar clamped to [-30, 20].
    pub fn encode(&self, image: &Tensor) -> Result<LatentPosterior> {
        let mut h = self.encoder.forward(image)?;
        if let Some(q) = &self.quant_conv {
            h = q.forward(&h)?;
        }
        let l = self.config.latent_channels;
        let mean = h.narrow(1, 0, l)?;
        let logvar = h.narrow(1, l, l)?.clamp(-30f32, 20f32)?;
        let std = (logvar * 0.5)?.exp()?;
        Ok(LatentPosterior { mean, std })
    }
}
