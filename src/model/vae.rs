//! The KL autoencoder, sized from `vae/config.json`; the network itself is candle-transformers'.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
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

#[derive(Debug)]
pub struct AutoencoderKL {
    inner: AutoEncoderKL,
    pub config: VaeConfig,
}

impl AutoencoderKL {
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        if cfg.act_fn.as_deref().is_some_and(|a| a != "silu") {
            candle_core::bail!("VAE act_fn {:?} is not supported", cfg.act_fn);
        }
        if cfg.mid_block_add_attention == Some(false) {
            candle_core::bail!("VAE without mid-block attention is not supported");
        }
        let inner = AutoEncoderKL::new(
            vb,
            cfg.in_channels,
            cfg.out_channels,
            AutoEncoderKLConfig {
                block_out_channels: cfg.block_out_channels.clone(),
                layers_per_block: cfg.layers_per_block,
                latent_channels: cfg.latent_channels,
                norm_num_groups: cfg.norm_num_groups,
                use_quant_conv: cfg.use_quant_conv,
                use_post_quant_conv: cfg.use_post_quant_conv,
            },
        )?;
        Ok(Self { inner, config: cfg.clone() })
    }

    /// Pipeline latents (already multiplied by the scaling factor) → image in [-1, 1] (unclamped).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let mut z = (latents / self.config.scaling_factor)?;
        if let Some(shift) = self.config.shift_factor {
            z = (z + shift)?;
        }
        self.inner.decode(&z)
    }
}
