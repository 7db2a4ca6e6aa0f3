//! Random weights with the shapes of SD 1.4 GLIGEN (nothing to download): the configs, a
//! `VarBuilder` backend that makes up any tensor a network asks for, and the whole pipeline.

use anyhow::Result;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use glichen::model::{
    AutoencoderKL, ClipTextConfig, ClipTextModel, UNet2DConditionModel, UNetConfig, VaeConfig,
};
use glichen::pipeline::scheduler::{SchedulerConfig, SchedulerKind};
use glichen::pipeline::GligenModel;
use glichen::weights::ClipTokenizer;
use std::collections::HashMap;

/// `unet/config.json` of masterful/gligen-1-4-generation-text-box (SD 1.4 with gated attention).
const SD14_GLIGEN_UNET_CONFIG: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "act_fn": "silu",
  "attention_head_dim": 8,
  "attention_type": "gated",
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}"#;

/// `text_encoder/config.json` of SD 1.x: the text tower of CLIP ViT-L/14.
const SD14_CLIP_CONFIG: &str = r#"{
  "hidden_act": "quick_gelu",
  "hidden_size": 768,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "vocab_size": 49408
}"#;

/// `vae/config.json` of SD 1.x.
const SD14_VAE_CONFIG: &str = r#"{
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 512,
  "scaling_factor": 0.18215
}"#;

/// Random weights of whatever shape a network asks for: N(0, 0.02) for weights and biases, the
/// initialiser's constant for norm scales and shifts (ones / zeros), non-zero GLIGEN gates, random
/// null features. `unchecked` gives the shapes of tensors read without a shape (the position net's
/// MLP, whose widths are read from the weights).
struct RandomWeights {
    unchecked: HashMap<String, Shape>,
}

impl RandomWeights {
    fn random(shape: Shape, std: f32, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        Tensor::randn(0f32, std, shape, dev)?.to_dtype(dtype)
    }
}

impl candle_nn::var_builder::SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let leaf = name.rsplit('.').next().unwrap_or(name);
        if leaf == "alpha_attn" || leaf == "alpha_dense" {
            // diffusers initialises the gates at 0; a trained model's are non-zero.
            return Tensor::full(0.5f32, s, dev)?.to_dtype(dtype);
        }
        if leaf.starts_with("null_") {
            return Self::random(s, 1.0, dtype, dev);
        }
        match h {
            Init::Const(c) => Tensor::full(c as f32, s, dev)?.to_dtype(dtype),
            _ => Self::random(s, 0.02, dtype, dev),
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.unchecked.get(name) {
            Some(s) => Self::random(s.clone(), 0.02, dtype, dev),
            None => candle_core::bail!("random weights: no known shape for `{name}`"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        // Answers the networks' format probes: diffusers' names (`weight`, `to_q`), a text-only
        // position net (no keypoint, text-image or spatial-map tensors).
        let leaf = name.rsplit('.').next().unwrap_or(name);
        !matches!(
            leaf,
            "gamma" | "beta" | "keypoint_embeddings" | "pos_embedding"
        ) && !name.contains("linears_text")
    }
}

pub(super) fn random_var_builder(
    dtype: DType,
    dev: &Device,
    unchecked: HashMap<String, Shape>,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomWeights { unchecked }), dtype, dev.clone())
}

/// A full-size SD 1.4 GLIGEN pipeline with random weights, built in memory.
pub(super) fn random_sd14_gligen(dev: &Device, dtype: DType) -> Result<GligenModel> {
    // The same plan a loaded model gets: bf16 on an AMX CPU is f32 with bf16 products.
    let (dtype, bf16_matmuls) = glichen::pipeline::cpu_bf16_plan(dev, dtype);
    let clip_cfg: ClipTextConfig = serde_json::from_str(SD14_CLIP_CONFIG)?;
    let unet_cfg: UNetConfig = serde_json::from_str(SD14_GLIGEN_UNET_CONFIG)?;
    let vae_cfg: VaeConfig = serde_json::from_str(SD14_VAE_CONFIG)?;
    let text_encoder =
        ClipTextModel::new(random_var_builder(dtype, dev, HashMap::new()), &clip_cfg)?;
    // diffusers' GLIGENTextBoundingboxProjection: [positive_len + 64] → 512 → 512 → cross_attention_dim.
    let cross = clip_cfg.hidden_size;
    let pos = glichen::model::position_net::POSITION_DIM;
    let mut unchecked = HashMap::new();
    unchecked.insert(
        "position_net.linears.0.weight".to_string(),
        Shape::from((512, cross + pos)),
    );
    unchecked.insert(
        "position_net.linears.2.weight".to_string(),
        Shape::from((512, 512)),
    );
    unchecked.insert(
        "position_net.linears.4.weight".to_string(),
        Shape::from((cross, 512)),
    );
    let mut unet = UNet2DConditionModel::new(random_var_builder(dtype, dev, unchecked), &unet_cfg)?;
    unet.set_bf16_matmuls(bf16_matmuls);
    let vae = AutoencoderKL::new(random_var_builder(dtype, dev, HashMap::new()), &vae_cfg)?;
    Ok(GligenModel {
        tokenizer: ClipTokenizer::builtin()?,
        text_encoder,
        unet,
        vae,
        image_grounding: None,
        spatial: None,
        preview_decoder: None,
        scheduler_json: serde_json::to_string(&SchedulerConfig::stable_diffusion_v1())?,
        default_scheduler: SchedulerKind::Pndm,
        device: dev.clone(),
        dtype,
        name: "random SD 1.4 GLIGEN".into(),
        origin: glichen::pipeline::ModelOrigin::Diffusers,
        loaded_from: glichen::weights::LoadRecord::default(),
    })
}
