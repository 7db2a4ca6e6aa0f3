//! TAESD, the tiny distilled autoencoder (diffusers' `AutoencoderTiny`, `madebyollin/taesd`): plain
//! 3×3 convolutions and ReLUs, no normalisation or attention, so it decodes latents to a picture
//! at a small fraction of the KL VAE's cost (previews, drafts).
//!
//! Key names follow diffusers' `nn.Sequential` indices (`decoder.layers.N.weight`,
//! `decoder.layers.N.conv.M.weight`); activations and upsamplers take an index but hold no
//! tensors, so a diffusers-format folder (config.json + diffusion_pytorch_model.safetensors) loads
//! unchanged.
//!
//! Value conventions, as diffusers 0.42.1 defines them:
//! - [`AutoencoderTiny::decode`] takes what `AutoencoderTiny.decode` takes. The SD pipelines call
//!   `vae.decode(latents / vae.config.scaling_factor)`, and TAESD's `scaling_factor` is 1.0, so the
//!   UNet's latents go in as they are ([`AutoencoderTiny::decode_pipeline_latents`] does the
//!   division). The output is `DecoderTiny`'s `x.mul(2).sub(1)`: nominally [-1, 1], not clamped;
//!   `(x / 2 + 0.5).clamp(0, 1)` is the picture, as `VaeImageProcessor.denormalize` makes it.
//! - [`AutoencoderTiny::encode`] takes a picture in [-1, 1] (`EncoderTiny` maps it to [0, 1]
//!   itself) and returns the raw latents (`.latents`), which pipelines multiply by `scaling_factor`.

use super::blocks::{conv2d, Conv2d};
use crate::weights::{read_json, TensorFile, WeightsError};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

fn d3() -> usize {
    3
}
fn d4() -> usize {
    4
}
fn d2() -> usize {
    2
}
fn d_channels() -> Vec<usize> {
    vec![64; 4]
}
fn d_enc_blocks() -> Vec<usize> {
    vec![1, 3, 3, 3]
}
fn d_dec_blocks() -> Vec<usize> {
    vec![3, 3, 3, 1]
}
fn d_relu() -> String {
    "relu".into()
}
fn d_nearest() -> String {
    "nearest".into()
}
fn d_magnitude() -> f64 {
    3.0
}
fn d_shift() -> f64 {
    0.5
}
fn d_one() -> f64 {
    1.0
}

/// diffusers writes `null` for an unset `shift_factor` in some configs.
fn null_is_zero<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(0.0))
}

/// `AutoencoderTiny`'s config.json; every default is its `__init__` default.
#[derive(Debug, Clone, Deserialize)]
pub struct TaesdConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    #[serde(default = "d3")]
    pub in_channels: usize,
    #[serde(default = "d3")]
    pub out_channels: usize,
    #[serde(default = "d_channels")]
    pub encoder_block_out_channels: Vec<usize>,
    #[serde(default = "d_channels")]
    pub decoder_block_out_channels: Vec<usize>,
    #[serde(default = "d_relu")]
    pub act_fn: String,
    #[serde(default = "d_nearest")]
    pub upsample_fn: String,
    #[serde(default = "d4")]
    pub latent_channels: usize,
    #[serde(default = "d2")]
    pub upsampling_scaling_factor: usize,
    #[serde(default = "d_enc_blocks")]
    pub num_encoder_blocks: Vec<usize>,
    #[serde(default = "d_dec_blocks")]
    pub num_decoder_blocks: Vec<usize>,
    /// Only for storing latents as 8-bit pictures (`scale_latents`); decoding does not use it.
    #[serde(default = "d_magnitude")]
    pub latent_magnitude: f64,
    #[serde(default = "d_shift")]
    pub latent_shift: f64,
    #[serde(default)]
    pub force_upcast: bool,
    #[serde(default = "d_one")]
    pub scaling_factor: f64,
    /// Used by the Flux/SD3 pipelines (`latents / scaling_factor + shift_factor`), not by the SD
    /// 1.x pipelines this crate mirrors.
    #[serde(default, deserialize_with = "null_is_zero")]
    pub shift_factor: f64,
}

impl Default for TaesdConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl TaesdConfig {
    pub fn from_file(path: &Path) -> std::result::Result<Self, TaesdError> {
        // the class first: another model's config may not even parse as this one
        let json: serde_json::Value = read_json(path)?;
        if let Some(found) = json.get("_class_name").and_then(|v| v.as_str()) {
            if found != "AutoencoderTiny" {
                return Err(TaesdError::NotTaesd {
                    path: path.to_path_buf(),
                    found: found.to_string(),
                });
            }
        }
        let cfg: Self = serde_json::from_value(json).map_err(|e| TaesdError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.check_decoder().map_err(|message| TaesdError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    /// Pixels per latent cell: every decoder stage but the last upsamples.
    pub fn upscale_factor(&self) -> usize {
        self.upsampling_scaling_factor
            .pow(self.decoder_block_out_channels.len().saturating_sub(1) as u32)
    }

    /// What diffusers would refuse or fail on, said before any tensor is read.
    fn check_decoder(&self) -> std::result::Result<(), String> {
        Activation::parse(&self.act_fn)?;
        Upsample::parse(&self.upsample_fn, self.upsampling_scaling_factor)?;
        check_stages(
            "decoder",
            &self.decoder_block_out_channels,
            &self.num_decoder_blocks,
        )
    }
}

/// diffusers raises on unequal lengths. Unequal channel counts it builds but cannot run: each stage
/// takes the previous stage's output with its own width (`AutoencoderTinyBlock(c, c)`), so a change
/// of width fails at the first forward; refusing it here says why.
fn check_stages(
    which: &str,
    channels: &[usize],
    blocks: &[usize],
) -> std::result::Result<(), String> {
    if channels.is_empty() || channels.len() != blocks.len() {
        return Err(format!(
            "{which}_block_out_channels ({channels:?}) and num_{which}_blocks ({blocks:?}) must be non-empty and of equal length"
        ));
    }
    if channels.iter().any(|&c| c != channels[0]) {
        return Err(format!(
            "{which}_block_out_channels {channels:?} differ: diffusers' {which} passes every stage's output to the next unchanged, so all must be equal"
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum TaesdError {
    #[error("{path}: not a folder (a TAESD folder holds config.json and diffusion_pytorch_model.safetensors)")]
    NotAFolder { path: PathBuf },
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{path}: _class_name is {found:?}, not \"AutoencoderTiny\": not a TAESD config")]
    NotTaesd { path: PathBuf, found: String },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// The weights do not fit the config (a missing tensor, a wrong shape).
    #[error("building TAESD from {path}: {source}")]
    Build {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
}

/// diffusers' `get_activation` names (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Relu,
    Silu,
    Gelu,
    Mish,
}

impl Activation {
    fn parse(name: &str) -> std::result::Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "relu" => Ok(Self::Relu),
            "silu" | "swish" => Ok(Self::Silu),
            "gelu" => Ok(Self::Gelu),
            "mish" => Ok(Self::Mish),
            _ => Err(format!(
                "act_fn {name:?} is not one of relu, silu, swish, gelu, mish"
            )),
        }
    }
}

impl Module for Activation {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Relu => xs.relu(),
            Self::Silu => xs.silu(),
            // nn.GELU() without approximate: the erf form
            Self::Gelu => xs.gelu_erf(),
            // torch's mish: x·tanh(softplus(x)), softplus without a threshold
            Self::Mish => xs * xs.exp()?.affine(1.0, 1.0)?.log()?.tanh()?,
        }
    }
}

/// `nn.Upsample(scale_factor=f, mode=upsample_fn)`.
#[derive(Debug, Clone, Copy)]
enum Upsample {
    Nearest(usize),
    Bilinear(usize),
}

impl Upsample {
    fn parse(mode: &str, factor: usize) -> std::result::Result<Self, String> {
        if factor == 0 {
            return Err("upsampling_scaling_factor must be at least 1".into());
        }
        match mode {
            // for an integer factor the two modes pick the same source pixel
            "nearest" | "nearest-exact" => Ok(Self::Nearest(factor)),
            "bilinear" => Ok(Self::Bilinear(factor)),
            _ => Err(format!(
                "upsample_fn {mode:?} is not supported (nearest, nearest-exact, bilinear)"
            )),
        }
    }
}

impl Module for Upsample {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        match *self {
            Self::Nearest(f) => xs.upsample_nearest2d(h * f, w * f),
            // nn.Upsample's align_corners defaults to False; the scale form matches its source
            // coordinates (1 / factor), not the size form's in / out
            Self::Bilinear(f) => xs.upsample_bilinear2d_with_scale(f as f64, f as f64, false),
        }
    }
}

/// A convolution without bias, kept in the crate's `Conv2d` (fused CPU kernel) with a zero bias.
fn conv2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    config: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let weight = vb.get(
        (out_channels, in_channels, kernel_size, kernel_size),
        "weight",
    )?;
    let bias = Tensor::zeros(out_channels, weight.dtype(), weight.device())?;
    Ok(Conv2d::new(weight, bias, config))
}

fn conv3(stride: usize) -> Conv2dConfig {
    Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    }
}

/// `AutoencoderTinyBlock`: conv-act-conv-act-conv plus the input, then a ReLU (`fuse`, a ReLU
/// whatever `act_fn` is).
#[derive(Debug)]
struct TinyBlock {
    convs: [Conv2d; 3],
    /// `skip`: a 1×1 conv when the width changes; TAESD's own blocks never change it.
    skip: Option<Conv2d>,
    act: Activation,
}

impl TinyBlock {
    fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        act: Activation,
    ) -> Result<Self> {
        let vc = vb.pp("conv");
        let convs = [
            conv2d(in_channels, out_channels, 3, conv3(1), vc.pp("0"))?,
            conv2d(out_channels, out_channels, 3, conv3(1), vc.pp("2"))?,
            conv2d(out_channels, out_channels, 3, conv3(1), vc.pp("4"))?,
        ];
        let skip = if in_channels != out_channels {
            Some(conv2d_no_bias(
                in_channels,
                out_channels,
                1,
                Conv2dConfig::default(),
                vb.pp("skip"),
            )?)
        } else {
            None
        };
        Ok(Self { convs, skip, act })
    }
}

impl Module for TinyBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let [c0, c1, c2] = &self.convs;
        let ys = self.act.forward(&c0.forward(xs)?)?;
        let ys = self.act.forward(&c1.forward(&ys)?)?;
        let ys = c2.forward(&ys)?;
        let skip = match &self.skip {
            Some(conv) => conv.forward(xs)?,
            None => xs.clone(),
        };
        (ys + skip)?.relu()
    }
}

/// One entry of diffusers' `layers` `nn.Sequential`.
#[derive(Debug)]
enum Layer {
    Conv(Conv2d),
    Act(Activation),
    Block(TinyBlock),
    Upsample(Upsample),
}

impl Module for Layer {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Conv(m) => m.forward(xs),
            Self::Act(m) => m.forward(xs),
            Self::Block(m) => m.forward(xs),
            Self::Upsample(m) => m.forward(xs),
        }
    }
}

/// Appends layers while counting their `nn.Sequential` index, parameterless ones included.
struct Layers<'a> {
    vb: VarBuilder<'a>,
    layers: Vec<Layer>,
}

impl<'a> Layers<'a> {
    fn new(vb: VarBuilder<'a>) -> Self {
        Self {
            vb: vb.pp("layers"),
            layers: Vec::new(),
        }
    }

    fn next_vb(&self) -> VarBuilder<'a> {
        self.vb.pp(self.layers.len().to_string())
    }

    fn push(&mut self, layer: Layer) {
        self.layers.push(layer);
    }
}

fn run(layers: &[Layer], xs: &Tensor) -> Result<Tensor> {
    layers.iter().try_fold(xs.clone(), |xs, l| l.forward(&xs))
}

/// diffusers' `DecoderTiny`.
#[derive(Debug)]
pub struct TinyDecoder {
    layers: Vec<Layer>,
}

impl TinyDecoder {
    pub fn new(vb: VarBuilder, cfg: &TaesdConfig) -> Result<Self> {
        cfg.check_decoder().map_err(candle_core::Error::Msg)?;
        let act = Activation::parse(&cfg.act_fn).map_err(candle_core::Error::Msg)?;
        let upsample = Upsample::parse(&cfg.upsample_fn, cfg.upsampling_scaling_factor)
            .map_err(candle_core::Error::Msg)?;
        let channels = &cfg.decoder_block_out_channels;
        let mut l = Layers::new(vb);
        let conv_in = conv2d(cfg.latent_channels, channels[0], 3, conv3(1), l.next_vb())?;
        l.push(Layer::Conv(conv_in));
        l.push(Layer::Act(act));
        let stages = cfg.num_decoder_blocks.len();
        for (i, (&c, &blocks)) in channels.iter().zip(&cfg.num_decoder_blocks).enumerate() {
            let last = i + 1 == stages;
            for _ in 0..blocks {
                let block = TinyBlock::new(l.next_vb(), c, c, act)?;
                l.push(Layer::Block(block));
            }
            if !last {
                l.push(Layer::Upsample(upsample));
            }
            // only the output conv has a bias
            let conv = if last {
                conv2d(c, cfg.out_channels, 3, conv3(1), l.next_vb())?
            } else {
                conv2d_no_bias(c, c, 3, conv3(1), l.next_vb())?
            };
            l.push(Layer::Conv(conv));
        }
        Ok(Self { layers: l.layers })
    }
}

impl Module for TinyDecoder {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // a soft clamp to ±3 (a literal 3 in diffusers, not latent_magnitude): latents far outside
        // what the decoder was distilled on would otherwise blow up its ReLU stack
        let xs = ((xs / 3.0)?.tanh()? * 3.0)?;
        // the network draws in [0, 1]; diffusers' convention is [-1, 1]
        run(&self.layers, &xs)?.affine(2.0, -1.0)
    }
}

/// diffusers' `EncoderTiny`.
#[derive(Debug)]
pub struct TinyEncoder {
    layers: Vec<Layer>,
}

impl TinyEncoder {
    pub fn new(vb: VarBuilder, cfg: &TaesdConfig) -> Result<Self> {
        let act = Activation::parse(&cfg.act_fn).map_err(candle_core::Error::Msg)?;
        let channels = &cfg.encoder_block_out_channels;
        check_stages("encoder", channels, &cfg.num_encoder_blocks)
            .map_err(candle_core::Error::Msg)?;
        let mut l = Layers::new(vb);
        for (i, (&c, &blocks)) in channels.iter().zip(&cfg.num_encoder_blocks).enumerate() {
            // every stage after the first starts by halving the resolution
            let conv = if i == 0 {
                conv2d(cfg.in_channels, c, 3, conv3(1), l.next_vb())?
            } else {
                conv2d_no_bias(c, c, 3, conv3(2), l.next_vb())?
            };
            l.push(Layer::Conv(conv));
            for _ in 0..blocks {
                let block = TinyBlock::new(l.next_vb(), c, c, act)?;
                l.push(Layer::Block(block));
            }
        }
        let last = channels[channels.len() - 1];
        let conv_out = conv2d(last, cfg.latent_channels, 3, conv3(1), l.next_vb())?;
        l.push(Layer::Conv(conv_out));
        Ok(Self { layers: l.layers })
    }
}

impl Module for TinyEncoder {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // the network reads [0, 1]; diffusers hands it [-1, 1]
        run(&self.layers, &((xs + 1.0)? / 2.0)?)
    }
}

/// diffusers' `AutoencoderTiny` (no tiling or slicing: both only bound memory).
#[derive(Debug)]
pub struct AutoencoderTiny {
    pub config: TaesdConfig,
    decoder: TinyDecoder,
    /// Absent when the weights have no `encoder.` tensors (a decoder-only file for previews).
    encoder: Option<TinyEncoder>,
}

impl AutoencoderTiny {
    pub fn new(vb: VarBuilder, cfg: &TaesdConfig) -> Result<Self> {
        let decoder = TinyDecoder::new(vb.pp("decoder"), cfg)?;
        let encoder = if vb.contains_tensor("encoder.layers.0.weight") {
            Some(TinyEncoder::new(vb.pp("encoder"), cfg)?)
        } else {
            None
        };
        Ok(Self {
            config: cfg.clone(),
            decoder,
            encoder,
        })
    }

    /// `AutoencoderTiny.decode(latents).sample`: latents as diffusers' decode takes them (the SD
    /// pipeline passes `latents / scaling_factor`, which for TAESD is 1.0), a picture nominally in
    /// [-1, 1], unclamped.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.decoder.forward(latents)
    }

    /// The SD pipeline's call, `vae.decode(latents / vae.config.scaling_factor)`, on the UNet's
    /// latents (identical to [`Self::decode`] for TAESD's scaling factor of 1).
    pub fn decode_pipeline_latents(&self, latents: &Tensor) -> Result<Tensor> {
        self.decode(&(latents / self.config.scaling_factor)?)
    }

    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    /// `AutoencoderTiny.encode(image).latents`: a picture in [-1, 1] to raw latents (pipelines
    /// multiply them by `scaling_factor`).
    pub fn encode(&self, image: &Tensor) -> Result<Tensor> {
        match &self.encoder {
            Some(encoder) => encoder.forward(image),
            None => {
                candle_core::bail!("these TAESD weights have no encoder (no `encoder.` tensors)")
            }
        }
    }

    pub fn decoder(&self) -> &TinyDecoder {
        &self.decoder
    }

    pub fn encoder(&self) -> Option<&TinyEncoder> {
        self.encoder.as_ref()
    }
}

/// A diffusers-format TAESD folder (`madebyollin/taesd`): `config.json` and
/// `diffusion_pytorch_model.safetensors`.
pub fn load_folder(
    dir: &Path,
    device: &Device,
    dtype: DType,
) -> std::result::Result<AutoencoderTiny, TaesdError> {
    if !dir.is_dir() {
        return Err(TaesdError::NotAFolder {
            path: dir.to_path_buf(),
        });
    }
    let cfg = TaesdConfig::from_file(&dir.join(CONFIG_FILE))?;
    let weights = dir.join(WEIGHTS_FILE);
    let vb = TensorFile::open(&weights)?.into_var_builder(dtype, device);
    AutoencoderTiny::new(vb, &cfg).map_err(|source| TaesdError::Build {
        path: weights,
        source,
    })
}
