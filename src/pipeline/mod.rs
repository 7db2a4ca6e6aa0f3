//! The GLIGEN sampling loop: prompt and phrase encoding, grounding inputs, classifier-free
//! guidance, scheduled sampling (α₀ and the original code's decay), per-step previews,
//! cancellation, VAE decode.

pub mod image_prep;
pub mod preview;
pub mod resample;
pub mod scheduler;

use crate::layout::{Entity, Layout, LayoutError, ModelLimits};
use crate::model::{
    AutoencoderKL, ClipTextConfig, ClipTextModel, Grounding, PositionNetInput,
    UNet2DConditionModel, UNetConfig, VaeConfig,
};
use crate::weights::{ClipTokenizer, DiffusersFolder, ModelSource, WeightsError};
use candle_core::{DType, Device, Tensor};
use scheduler::{build_scheduler, SchedulerConfig, SchedulerError, SchedulerType};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// diffusers' and the original code's number of grounding slots.
pub const MAX_GROUNDING_SLOTS: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("the layout does not fit this model:\n{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Compute {
        context: String,
        source: candle_core::Error,
    },
    #[error("generation cancelled")]
    Cancelled,
}

trait Context<T> {
    fn ctx(self, context: &str) -> Result<T, PipelineError>;
}

impl<T> Context<T> for candle_core::Result<T> {
    fn ctx(self, context: &str) -> Result<T, PipelineError> {
        self.map_err(|source| PipelineError::Compute {
            context: context.to_string(),
            source,
        })
    }
}

/// Shared flag that stops a running generation before its next UNet evaluation or the decode.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Parses `cpu`, `cuda`, `cuda:N`, `metal` or `auto` (the best device this build can use).
pub fn parse_device(name: &str) -> Result<Device, String> {
    let err = |e: candle_core::Error| format!("device {name:?}: {e}");
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(err),
        "metal" => Device::new_metal(0).map_err(err),
        // `cuda_is_available` only says the build has CUDA: a CUDA build on a machine without a
        // GPU (or driver) must still run, on the CPU.
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            if candle_core::utils::metal_is_available() {
                if let Ok(d) = Device::new_metal(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
        other => match other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(i) => Device::new_cuda(i).map_err(err),
            None => Err(format!(
                "unknown device {other:?} (expected cpu, cuda, cuda:N, metal or auto)"
            )),
        },
    }
}

pub fn parse_dtype(name: &str) -> Result<DType, String> {
    match name {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" | "fp16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(format!(
            "unknown dtype {other:?} (expected f32, f16 or bf16)"
        )),
    }
}

/// What a text-image GLIGEN model needs to turn a picture into a grounding feature.
pub struct ImageGrounding {
    pub encoder: crate::model::clip_vision::ClipVisionModelWithProjection,
    pub project: crate::model::clip_vision::ImageProjection,
    pub processor: image_prep::ClipImageProcessorConfig,
    /// The original code opens pictures with PIL's `convert("RGB")`, which drops alpha, before the
    /// processor; diffusers hands the picture to the processor, which composites it onto white.
    pub drop_alpha: bool,
}

/// Whose rules a loaded model follows where diffusers and the original GLIGEN code differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelOrigin {
    /// A diffusers folder: diffusers' GLIGEN pipelines.
    Diffusers,
    /// An original checkpoint: `gligen_inference.py` and its PLMS sampler. Grounded inpainting
    /// re-noises the kept region once per sampling step (diffusers: before every UNet evaluation,
    /// so twice in PLMS's first step) and resizes the picture with PIL's default bicubic filter
    /// (diffusers: Lanczos).
    Original,
}

/// Loading choices beyond the model itself.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The CLIP image tower of an original text-image checkpoint: a transformers CLIP folder or a
    /// hub repo id. By default an `image_encoder/` folder beside the checkpoint, else
    /// `openai/clip-vit-large-patch14` from the hub, as the original code uses.
    pub image_encoder: Option<String>,
    /// How a download that loading needs (that image tower) reports itself.
    pub progress: crate::weights::Progress,
}

impl ImageGrounding {
    /// A transformers CLIP folder (`openai/clip-vit-large-patch14` for the released checkpoints) and
    /// GLIGEN's projection matrix, as the original code's `get_clip_feature` uses them.
    pub fn from_clip_folder(
        dir: &std::path::Path,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, PipelineError> {
        use crate::model::clip_vision::{
            ClipVisionConfig, ClipVisionModelWithProjection, ImageProjection,
        };
        use crate::weights::original as orig;
        let config_path = dir.join("config.json");
        let cfg: ClipVisionConfig = serde_json::from_value(orig::clip_vision_config_value(dir)?)
            .map_err(|e| WeightsError::Config {
                path: config_path.clone(),
                message: e.to_string(),
            })?;
        let vb = crate::weights::TensorFile::open(&orig::clip_weights_path(dir)?)?
            .into_var_builder(dtype, device);
        let encoder =
            ClipVisionModelWithProjection::new(vb, &cfg).map_err(build_err("image encoder"))?;
        let p = orig::projection_matrix(dir, &Device::Cpu)?;
        let (p_in, _) = p.dims2().map_err(build_err("image projection"))?;
        if p_in != cfg.projection_dim {
            return Err(WeightsError::Config {
                path: config_path,
                message: format!(
                    "the image tower's embeddings are {} wide but the projection matrix takes {p_in}; put a `{}` for this tower in {}",
                    cfg.projection_dim,
                    orig::PROJECTION_MATRIX_FILE,
                    dir.display()
                ),
            }
            .into());
        }
        let p = p
            .to_dtype(dtype)
            .and_then(|p| p.to_device(device))
            .map_err(build_err("image projection"))?;
        let project = ImageProjection::from_matrix(&p).map_err(build_err("image projection"))?;
        let processor = image_prep::ClipImageProcessorConfig::from_folder(dir)?;
        Ok(Self {
            encoder,
            project,
            processor,
            drop_alpha: true,
        })
    }
}

/// diffusers' `gligen_normalize_constant`: image features are scaled to this length, about the
/// norm of a CLIP ViT-L/14 phrase embedding.
pub const IMAGE_FEATURE_NORM: f64 = 28.7;

/// A loaded GLIGEN pipeline: every network on one device in one dtype.
pub struct GligenModel {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    /// Text-image models: the CLIP vision tower, `image_project` and the image processor.
    pub image_grounding: Option<ImageGrounding>,
    /// `scheduler_config.json` as read, so that another scheduler class can be built from it.
    pub scheduler_json: String,
    pub default_scheduler: SchedulerType,
    pub device: Device,
    pub dtype: DType,
    /// Where the model came from, for messages.
    pub name: String,
    pub origin: ModelOrigin,
}

fn build_err(component: &str) -> impl Fn(candle_core::Error) -> WeightsError + '_ {
    move |e| WeightsError::Build {
        component: component.to_string(),
        message: e.to_string(),
    }
}

impl GligenModel {
    pub fn load(
        source: &ModelSource,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, PipelineError> {
        Self::load_with(source, device, dtype, &LoadOptions::default())
    }

    pub fn load_with(
        source: &ModelSource,
        device: &Device,
        dtype: DType,
        options: &LoadOptions,
    ) -> Result<Self, PipelineError> {
        match source {
            ModelSource::Folder(root) => {
                Self::load_diffusers(&DiffusersFolder::open(root)?, device, dtype)
            }
            ModelSource::OriginalCheckpoint(path) => {
                Self::load_original(path, device, dtype, options)
            }
        }
    }

    /// An original GLIGEN checkpoint: networks renamed to diffusers' names, CLIP's vocabulary, and
    /// the PLMS schedule of the original sampler (the checkpoint's own betas when it has them).
    /// Text-image checkpoints also get the CLIP image tower and GLIGEN's projection matrix, which
    /// they do not carry (see [`LoadOptions::image_encoder`]).
    pub fn load_original(
        path: &std::path::Path,
        device: &Device,
        dtype: DType,
        options: &LoadOptions,
    ) -> Result<Self, PipelineError> {
        use crate::weights::original::{GroundingKind, OriginalCheckpoint};
        let ck = OriginalCheckpoint::open(path, &Device::Cpu)?;
        if ck.grounding == GroundingKind::Other {
            return Err(WeightsError::Config {
                path: path.to_path_buf(),
                message: "this checkpoint's grounding tokenizer is not text-box, text-image-box or keypoint: the spatial-condition checkpoints (HED, canny, depth, normal, semantic maps) are not supported yet".into(),
            }
            .into());
        }
        let image_grounding = if ck.grounding == GroundingKind::TextImageBox {
            let dir = crate::weights::original::find_image_encoder(
                path,
                options.image_encoder.as_deref(),
                &options.progress,
            )?;
            Some(ImageGrounding::from_clip_folder(&dir, device, dtype)?)
        } else {
            None
        };
        let tokenizer = ClipTokenizer::builtin()?;
        let text_encoder = ClipTextModel::new(
            ck.text_encoder.into_var_builder(dtype, device),
            &ck.clip_config,
        )
        .map_err(build_err("text encoder"))?;
        let unet =
            UNet2DConditionModel::new(ck.unet.into_var_builder(dtype, device), &ck.unet_config)
                .map_err(build_err("UNet"))?;
        let vae = AutoencoderKL::new(ck.vae.into_var_builder(dtype, device), &ck.vae_config)
            .map_err(build_err("VAE"))?;
        if let (Some(g), Some(net)) = (&image_grounding, &unet.position_net) {
            let out = g.project.out_dim().map_err(build_err("image projection"))?;
            if out != net.positive_len {
                return Err(WeightsError::Config {
                    path: path.to_path_buf(),
                    message: format!(
                        "the image projection gives {out}-wide features but the position net takes {}: the image tower does not belong to this checkpoint",
                        net.positive_len
                    ),
                }
                .into());
            }
        }
        let mut sched = SchedulerConfig::stable_diffusion_v1();
        sched.trained_betas = ck.betas;
        // The original samplers' timesteps: `range(0, 1000, 1000 // steps) + 1`.
        sched.timestep_spacing = scheduler::TimestepSpacing::LdmUniform;
        let scheduler_json = serde_json::to_string(&sched).map_err(|e| WeightsError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            image_grounding,
            scheduler_json,
            default_scheduler: SchedulerType::Pndm,
            device: device.clone(),
            dtype,
            name: path.display().to_string(),
            origin: ModelOrigin::Original,
        })
    }

    /// The scheduler config for `kind`: the model's own when it names that class, else built from
    /// it with the other class's defaults for missing keys (diffusers' `from_config`; note that
    /// DDIM's default `clip_sample` is true).
    pub fn scheduler_config(&self, kind: SchedulerType) -> Result<SchedulerConfig, PipelineError> {
        let own = SchedulerConfig::from_json_str(&self.scheduler_json)?;
        if own.scheduler_type() == Some(kind) {
            Ok(own)
        } else {
            Ok(SchedulerConfig::from_json_str_for(
                &self.scheduler_json,
                kind,
            )?)
        }
    }

    pub fn load_diffusers(
        folder: &DiffusersFolder,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, PipelineError> {
        let tokenizer = folder.tokenizer()?;

        let clip_cfg: ClipTextConfig = folder.config("text_encoder")?;
        let vb = folder
            .weights("text_encoder")?
            .into_var_builder(dtype, device);
        // transformers 4 wrote `text_model.*` keys; transformers 5 writes them without the prefix.
        let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") {
            vb.pp("text_model")
        } else {
            vb
        };
        let text_encoder = ClipTextModel::new(vb, &clip_cfg).map_err(build_err("text encoder"))?;

        let unet_cfg: UNetConfig = folder.config("unet")?;
        if !matches!(
            unet_cfg.attention_type.as_deref(),
            Some("gated") | Some("gated-text-image")
        ) {
            return Err(WeightsError::Config {
                path: folder.root.join("unet/config.json"),
                message: "attention_type is not \"gated\": this is not a GLIGEN UNet".into(),
            }
            .into());
        }
        let vb = folder.weights("unet")?.into_var_builder(dtype, device);
        let unet = UNet2DConditionModel::new(vb, &unet_cfg).map_err(build_err("UNet"))?;

        let vae_cfg: VaeConfig = folder.config("vae")?;
        let vb = folder.weights("vae")?.into_var_builder(dtype, device);
        let vae = AutoencoderKL::new(vb, &vae_cfg).map_err(build_err("VAE"))?;

        let image_grounding = if folder
            .root
            .join("image_encoder")
            .join("config.json")
            .is_file()
        {
            use crate::model::clip_vision::{
                ClipVisionConfig, ClipVisionModelWithProjection, ImageProjection,
            };
            let cfg: ClipVisionConfig = folder.config("image_encoder")?;
            let vb = folder
                .weights("image_encoder")?
                .into_var_builder(dtype, device);
            let encoder =
                ClipVisionModelWithProjection::new(vb, &cfg).map_err(build_err("image encoder"))?;
            let vb = folder
                .weights("image_project")?
                .into_var_builder(dtype, device);
            let project =
                ImageProjection::from_weights(vb).map_err(build_err("image projection"))?;
            let processor =
                image_prep::ClipImageProcessorConfig::from_folder(&folder.root.join("processor"))?;
            Some(ImageGrounding {
                encoder,
                project,
                processor,
                drop_alpha: false,
            })
        } else {
            None
        };

        let sched_path = folder.root.join("scheduler").join("scheduler_config.json");
        let scheduler_json =
            std::fs::read_to_string(&sched_path).map_err(|source| WeightsError::Io {
                path: sched_path.clone(),
                source,
            })?;
        let default_scheduler = SchedulerConfig::from_json_str(&scheduler_json)
            .map_err(|e| WeightsError::Config {
                path: sched_path.clone(),
                message: e.to_string(),
            })?
            .scheduler_type()
            .unwrap_or(SchedulerType::Pndm);
        Ok(Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            image_grounding,
            scheduler_json,
            default_scheduler,
            device: device.clone(),
            dtype,
            name: folder.root.display().to_string(),
            origin: ModelOrigin::Diffusers,
        })
    }

    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config.downscale_factor()
    }

    /// What layouts this model can take, for validation.
    pub fn limits(&self) -> ModelLimits {
        ModelLimits {
            vae_scale_factor: self.vae_scale_factor(),
            max_grounding_slots: MAX_GROUNDING_SLOTS,
            supports_text_boxes: self
                .unet
                .position_net
                .as_ref()
                .is_some_and(|p| !p.is_keypoint()),
            supports_image_boxes: self
                .unet
                .position_net
                .as_ref()
                .is_some_and(|p| p.is_text_image())
                && self.image_grounding.is_some(),
            supports_keypoints: self
                .unet
                .position_net
                .as_ref()
                .is_some_and(|p| p.is_keypoint()),
            max_people: self
                .unet
                .position_net
                .as_ref()
                .and_then(|p| p.max_persons())
                .unwrap_or(8),
            supports_inpainting: self.unet.config.in_channels == 2 * self.latent_channels() + 1,
            ..ModelLimits::default()
        }
    }

    fn latent_channels(&self) -> usize {
        self.vae.config.latent_channels
    }

    /// Prompt embeddings `[1, 77, C]` (padded with the tokenizer's padding token, truncated with a
    /// warning).
    pub fn encode_prompt(
        &self,
        text: &str,
        what: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Tensor, PipelineError> {
        let tok = self.tokenizer.encode(text, true)?;
        if tok.truncated_tokens > 0 {
            let msg = format!(
                "the {what} is {} tokens long; the text encoder reads {}, so its last {} tokens are ignored",
                tok.content_tokens,
                self.tokenizer.max_length - 2,
                tok.truncated_tokens
            );
            tracing::warn!("{msg}");
            warnings.push(msg);
        }
        let n = tok.ids.len();
        let ids = Tensor::from_vec(tok.ids, (1, n), &self.device).ctx("prompt tokens")?;
        let out = self
            .text_encoder
            .forward(&ids, self.tokenizer.eos_id)
            .ctx("text encoder")?;
        Ok(out.last_hidden_state)
    }

    /// Pooled phrase embeddings `[P, C]`: the hidden state at each phrase's end token.
    pub fn encode_phrases(
        &self,
        phrases: &[&str],
        warnings: &mut Vec<String>,
    ) -> Result<Tensor, PipelineError> {
        let mut seqs = Vec::with_capacity(phrases.len());
        for (i, p) in phrases.iter().enumerate() {
            let tok = self.tokenizer.encode(p, false)?;
            if tok.truncated_tokens > 0 {
                let msg = format!(
                    "phrase {i} ({p:?}) is longer than the text encoder's window; it was truncated"
                );
                tracing::warn!("{msg}");
                warnings.push(msg);
            }
            seqs.push(tok.ids);
        }
        let longest = seqs.iter().map(Vec::len).max().unwrap_or(2);
        let mut flat = Vec::with_capacity(seqs.len() * longest);
        for s in &seqs {
            flat.extend_from_slice(s);
            flat.extend(std::iter::repeat_n(
                self.tokenizer.pad_id,
                longest - s.len(),
            ));
        }
        let ids =
            Tensor::from_vec(flat, (seqs.len(), longest), &self.device).ctx("phrase tokens")?;
        Ok(self
            .text_encoder
            .forward(&ids, self.tokenizer.eos_id)
            .ctx("phrase encoding")?
            .pooler_output)
    }
}

/// Everything a generation needs beyond the layout, resolved from the layout's `sampling`, the
/// command line and the model's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub steps: usize,
    pub guidance_scale: f64,
    pub alpha0: f64,
    pub alpha_decay: f64,
    pub seed: u64,
    pub scheduler: SchedulerType,
    /// Decode the final latents to pixels (off for latents-only runs).
    pub decode: bool,
    /// Draw the seeded starting noise for this larger canvas (width, height) and pool it down to the
    /// layout's (see [`pooled_noise`]): a smaller draft then shares the full render's composition.
    pub noise_canvas: Option<(u32, u32)>,
}

impl GenerateOptions {
    /// The layout's choices, with the model's scheduler when the layout names none and a random seed
    /// when it pins none.
    pub fn from_layout(layout: &Layout, model_default: SchedulerType) -> Self {
        let s = layout.sampling.resolve();
        let scheduler = match layout.sampling.scheduler {
            Some(crate::layout::SchedulerKind::Ddim) => SchedulerType::Ddim,
            Some(crate::layout::SchedulerKind::Pndm) => SchedulerType::Pndm,
            None => model_default,
        };
        Self {
            steps: s.steps,
            guidance_scale: s.guidance_scale,
            alpha0: s.alpha0,
            alpha_decay: s.alpha_decay,
            seed: s.seed.unwrap_or_else(rand::random),
            scheduler,
            decode: true,
            noise_canvas: None,
        }
    }

    /// Grounding gate scale for each sampling step (1 = full, 0 = fuser off).
    pub fn gate_scales(&self) -> Vec<f32> {
        crate::layout::grounding_alphas(self.alpha0, self.alpha_decay, self.steps)
    }
}

/// Recorded standard-normal draws for grounded inpainting, so that a run can reproduce diffusers',
/// which takes them from torch's global generator.
#[derive(Debug, Clone)]
pub struct RecordedNoise {
    /// `[1, 4, h, w]`: the VAE posterior sample's draw (latent = mean + std · vae_noise).
    pub vae_noise: Tensor,
    /// `[K, 1, 4, h, w]`: the draws that re-noise the kept region, used as
    /// `add_noise(z0, step_noise[i], t_i)`: one per UNet evaluation for diffusers models (K = N + 1
    /// for PNDM), one per sampling step for original checkpoints (K = the steps the PLMS sampler
    /// runs).
    pub step_noise: Tensor,
}

impl RecordedNoise {
    /// Reads tensors `vae_noise` and `step_noise` from a safetensors file.
    pub fn load(path: &std::path::Path) -> Result<Self, PipelineError> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
            PipelineError::Invalid(format!(
                "{}: not a readable safetensors file: {e}",
                path.display()
            ))
        })?;
        let get = |name: &str| {
            tensors.get(name).cloned().ok_or_else(|| {
                PipelineError::Invalid(format!("{}: no tensor named `{name}`", path.display()))
            })
        };
        Ok(Self {
            vae_noise: get("vae_noise")?,
            step_noise: get("step_noise")?,
        })
    }
}

/// Inputs of a generation beyond the layout and its options.
#[derive(Debug, Clone, Default)]
pub struct GenerateInputs {
    /// Replaces the seeded starting noise (`[1, 4, H/f, W/f]`).
    pub init_latents: Option<Tensor>,
    /// Replaces the seeded draws of grounded inpainting.
    pub noise: Option<RecordedNoise>,
    /// Folder that image paths in the layout are relative to (the layout file's folder).
    pub base_dir: Option<std::path::PathBuf>,
}

/// What the per-step callback sees.
pub struct StepUpdate<'a> {
    /// Sampling step just finished, 0-based.
    pub step: usize,
    pub total: usize,
    pub timestep: usize,
    /// The scheduler's prediction of the clean latents at this step (for previews).
    pub pred_x0: &'a Tensor,
    /// The latents after this step.
    pub latents: &'a Tensor,
    pub gate_scale: f32,
    /// True for the early preview after the first of several UNet evaluations of one step
    /// (PLMS's first step evaluates twice): `pred_x0` is that evaluation's prediction and
    /// `latents` are not the step's result yet. A final update for the same step follows, so
    /// progress counters and step files should skip partial updates; previews should not, so
    /// that the first picture appears after one UNet evaluation.
    pub partial: bool,
}

pub struct Generated {
    /// Final latents `[1, 4, h, w]`, before VAE decoding.
    pub latents: Tensor,
    pub image: Option<image::RgbImage>,
    pub seed: u64,
    pub warnings: Vec<String>,
}

/// The seeded noise of a latent grid `k` times larger in each direction, averaged over `k × k`
/// cells and multiplied by `k`: still standard normal per element, and its coarse structure (what
/// decides the composition) is the large grid's. `None` when `full` is not `k` times `shape`'s grid.
pub fn pooled_noise(
    seed: u64,
    shape: (usize, usize, usize, usize),
    full: (usize, usize),
    device: &Device,
) -> candle_core::Result<Option<Tensor>> {
    let (b, c, h, w) = shape;
    let (fh, fw) = full;
    if h == 0 || w == 0 || fh <= h || fh % h != 0 || fw % w != 0 || fh / h != fw / w {
        return Ok(None);
    }
    let k = fh / h;
    let big = seeded_noise(seed, (b, c, fh, fw), &Device::Cpu)?;
    let pooled = (big.avg_pool2d(k)? * k as f64)?;
    Ok(Some(pooled.to_device(device)?))
}

/// Standard-normal noise from a seeded generator on the CPU, so a seed gives the same picture on
/// every device.
pub fn seeded_noise(
    seed: u64,
    shape: (usize, usize, usize, usize),
    device: &Device,
) -> candle_core::Result<Tensor> {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let data: Vec<f32> = (0..n)
        .map(|_| rand_distr::StandardNormal.sample(&mut rng))
        .collect();
    Tensor::from_vec(data, shape, device)
}

impl GligenModel {
    /// Grounding inputs for the text-box entities: boxes, masks and phrase embeddings padded to 30
    /// slots, batched as `[unconditional (all masks 0), conditional]` when guidance is on.
    fn grounding_input(
        &self,
        layout: &Layout,
        cfg: bool,
        base_dir: Option<&std::path::Path>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<PositionNetInput>, PipelineError> {
        let Some(net) = self.unet.position_net.as_ref() else {
            return Ok(None);
        };
        if net.is_keypoint() {
            return self
                .keypoint_input(layout, cfg, net.max_persons().unwrap_or(8))
                .map(Some);
        }
        if net.is_text_image() {
            return self
                .text_image_input(layout, cfg, base_dir, net.positive_len, warnings)
                .map(Some);
        }
        let mut phrases = Vec::new();
        let mut boxes = Vec::new();
        for e in &layout.entities {
            if let Entity::TextBox { phrase, bbox } = e {
                phrases.push(phrase.as_str());
                boxes.push(bbox.map(|v| v as f32));
            }
        }
        let dim = self
            .unet
            .position_net
            .as_ref()
            .map(|p| p.positive_len)
            .unwrap_or(0);
        let n = boxes.len();
        let mut box_data = vec![0f32; MAX_GROUNDING_SLOTS * 4];
        let mut mask = vec![0f32; MAX_GROUNDING_SLOTS];
        for (i, b) in boxes.iter().enumerate() {
            box_data[i * 4..i * 4 + 4].copy_from_slice(b);
            mask[i] = 1.0;
        }
        let dev = &self.device;
        let emb = if n > 0 {
            let e = self
                .encode_phrases(&phrases, warnings)?
                .to_dtype(DType::F32)
                .ctx("phrase embeddings")?;
            let pad = Tensor::zeros((MAX_GROUNDING_SLOTS - n, dim), DType::F32, dev)
                .ctx("phrase padding")?;
            Tensor::cat(&[&e, &pad], 0).ctx("phrase embeddings")?
        } else {
            Tensor::zeros((MAX_GROUNDING_SLOTS, dim), DType::F32, dev).ctx("phrase embeddings")?
        };
        let boxes = Tensor::from_vec(box_data, (1, MAX_GROUNDING_SLOTS, 4), dev).ctx("boxes")?;
        let masks = Tensor::from_vec(mask, (1, MAX_GROUNDING_SLOTS), dev).ctx("masks")?;
        let emb = emb.unsqueeze(0).ctx("phrase embeddings")?;
        let (boxes, masks, emb) = if cfg {
            let zeros = masks.zeros_like().ctx("masks")?;
            (
                Tensor::cat(&[&boxes, &boxes], 0).ctx("boxes")?,
                Tensor::cat(&[&zeros, &masks], 0).ctx("masks")?,
                Tensor::cat(&[&emb, &emb], 0).ctx("phrase embeddings")?,
            )
        } else {
            (boxes, masks, emb)
        };
        Ok(Some(PositionNetInput {
            boxes,
            masks,
            phrase_embeddings: emb.to_dtype(self.dtype).ctx("phrase embeddings")?,
            phrase_masks: None,
            image_masks: None,
            image_embeddings: None,
        }))
    }

    /// The grounding feature of one picture: CLIP vision embedding, `image_project`, scaled to
    /// [`IMAGE_FEATURE_NORM`].
    fn image_feature(&self, img: &image::DynamicImage) -> Result<Tensor, PipelineError> {
        let g = self.image_grounding.as_ref().ok_or_else(|| {
            PipelineError::Invalid(
                "this model has no image encoder, so it cannot take image boxes".into(),
            )
        })?;
        let dropped;
        let img = if g.drop_alpha && img.color().has_alpha() {
            dropped = image::DynamicImage::ImageRgb8(img.to_rgb8());
            &dropped
        } else {
            img
        };
        let pixels = g
            .processor
            .preprocess(img, &self.device)
            .ctx("image preprocessing")?;
        let embeds = g
            .encoder
            .forward(&pixels.to_dtype(self.dtype).ctx("image encoder")?)
            .ctx("image encoder")?;
        crate::model::clip_vision::grounding_image_feature(&embeds, &g.project, IMAGE_FEATURE_NORM)
            .ctx("image projection")
    }

    /// Text-image grounding (diffusers' `gated-text-image`): one slot per text box, image box or
    /// style image, with separate phrase and image masks; the unconditional half has every mask 0.
    fn text_image_input(
        &self,
        layout: &Layout,
        cfg: bool,
        base_dir: Option<&std::path::Path>,
        dim: usize,
        warnings: &mut Vec<String>,
    ) -> Result<PositionNetInput, PipelineError> {
        let n = MAX_GROUNDING_SLOTS;
        let dev = &self.device;
        let mut boxes = vec![0f32; n * 4];
        let mut masks = vec![0f32; n];
        let mut phrase_masks = vec![0f32; n];
        let mut image_masks = vec![0f32; n];
        let zero = Tensor::zeros(dim, DType::F32, dev).ctx("grounding")?;
        let mut phrase_rows = vec![zero.clone(); n];
        let mut image_rows = vec![zero; n];
        let mut phrases: Vec<(usize, &str)> = Vec::new();
        let mut slot = 0;
        for (index, e) in layout.entities.iter().enumerate() {
            let Some(b) = e.grounding_box() else { continue };
            if slot >= n {
                break;
            }
            boxes[slot * 4..slot * 4 + 4].copy_from_slice(&b.map(|v| v as f32));
            masks[slot] = 1.0;
            if let Some(p) = e.phrase().filter(|p| !p.trim().is_empty()) {
                phrases.push((slot, p));
                phrase_masks[slot] = 1.0;
            }
            if e.image().is_some() {
                let img = layout.entity_image(index, base_dir)?;
                image_rows[slot] = self.image_feature(&img)?.squeeze(0).ctx("image feature")?;
                image_masks[slot] = 1.0;
            }
            slot += 1;
        }
        if !phrases.is_empty() {
            let texts: Vec<&str> = phrases.iter().map(|(_, p)| *p).collect();
            let emb = self
                .encode_phrases(&texts, warnings)?
                .to_dtype(DType::F32)
                .ctx("phrase embeddings")?;
            for (row, (slot, _)) in phrases.iter().enumerate() {
                phrase_rows[*slot] = emb.get(row).ctx("phrase embeddings")?;
            }
        }
        let stack = |rows: &[Tensor]| -> Result<Tensor, PipelineError> {
            Tensor::stack(rows, 0)
                .and_then(|t| t.unsqueeze(0))
                .ctx("grounding")
        };
        let row = |v: Vec<f32>| Tensor::from_vec(v, (1, n), dev).ctx("grounding");
        let mut input = PositionNetInput {
            boxes: Tensor::from_vec(boxes, (1, n, 4), dev).ctx("boxes")?,
            masks: row(masks)?,
            phrase_embeddings: stack(&phrase_rows)?,
            phrase_masks: Some(row(phrase_masks)?),
            image_masks: Some(row(image_masks)?),
            image_embeddings: Some(stack(&image_rows)?),
        };
        if cfg {
            let double = |t: &Tensor| Tensor::cat(&[t, t], 0).ctx("grounding");
            let with_zero_first = |t: &Tensor| -> Result<Tensor, PipelineError> {
                Tensor::cat(&[&t.zeros_like().ctx("grounding")?, t], 0).ctx("grounding")
            };
            input = PositionNetInput {
                boxes: double(&input.boxes)?,
                masks: with_zero_first(&input.masks)?,
                phrase_embeddings: double(&input.phrase_embeddings)?,
                phrase_masks: input
                    .phrase_masks
                    .as_ref()
                    .map(with_zero_first)
                    .transpose()?,
                image_masks: input
                    .image_masks
                    .as_ref()
                    .map(with_zero_first)
                    .transpose()?,
                image_embeddings: input.image_embeddings.as_ref().map(double).transpose()?,
            };
        }
        input.phrase_embeddings = input
            .phrase_embeddings
            .to_dtype(self.dtype)
            .ctx("grounding")?;
        input.image_embeddings = input
            .image_embeddings
            .map(|t| t.to_dtype(self.dtype))
            .transpose()
            .ctx("grounding")?;
        Ok(input)
    }

    /// Keypoint grounding: `[persons·17, 2]` points in COCO order, mask 1 where a point is given.
    fn keypoint_input(
        &self,
        layout: &Layout,
        cfg: bool,
        persons: usize,
    ) -> Result<PositionNetInput, PipelineError> {
        use crate::model::position_net::KEYPOINTS_PER_PERSON;
        let n = persons * KEYPOINTS_PER_PERSON;
        let mut points = vec![0f32; n * 2];
        let mut mask = vec![0f32; n];
        let people = layout.entities.iter().filter_map(|e| match e {
            Entity::Keypoints { points } => Some(points),
            _ => None,
        });
        for (p, person) in people.enumerate().take(persons) {
            for (j, point) in person.iter().enumerate().take(KEYPOINTS_PER_PERSON) {
                if let Some([x, y]) = point {
                    let idx = p * KEYPOINTS_PER_PERSON + j;
                    points[idx * 2] = *x as f32;
                    points[idx * 2 + 1] = *y as f32;
                    mask[idx] = 1.0;
                }
            }
        }
        let dev = &self.device;
        let points = Tensor::from_vec(points, (1, n, 2), dev).ctx("keypoints")?;
        let masks = Tensor::from_vec(mask, (1, n), dev).ctx("keypoint masks")?;
        let (points, masks) = if cfg {
            (
                Tensor::cat(&[&points, &points], 0).ctx("keypoints")?,
                Tensor::cat(&[&masks.zeros_like().ctx("keypoint masks")?, &masks], 0)
                    .ctx("keypoint masks")?,
            )
        } else {
            (points, masks)
        };
        let b = points.dim(0).ctx("keypoints")?;
        Ok(PositionNetInput {
            phrase_embeddings: Tensor::zeros((b, n, 1), self.dtype, dev).ctx("keypoints")?,
            boxes: points,
            masks,
            phrase_masks: None,
            image_masks: None,
            image_embeddings: None,
        })
    }

    /// Runs the whole pipeline on `layout`. `init_latents` replaces the seeded starting noise
    /// (`[1, 4, H/f, W/f]`); `on_step` is called after every sampling step.
    pub fn generate(
        &self,
        layout: &Layout,
        options: &GenerateOptions,
        init_latents: Option<&Tensor>,
        on_step: &mut dyn FnMut(&StepUpdate),
        cancel: &CancelToken,
    ) -> Result<Generated, PipelineError> {
        let inputs = GenerateInputs {
            init_latents: init_latents.cloned(),
            ..Default::default()
        };
        self.generate_with(layout, options, &inputs, on_step, cancel)
    }

    /// The picture to inpaint, cropped to the canvas's aspect ratio and resized to it, as
    /// `[1, 3, H, W]` in [-1, 1]. diffusers resizes with PIL's Lanczos; the original code with
    /// `resize`'s default, bicubic, and without cropping (it squashes a picture of another aspect
    /// ratio onto its square canvas, which Glichen does not do to anyone's photo).
    fn inpaint_pixels(
        &self,
        layout: &Layout,
        base_dir: Option<&std::path::Path>,
    ) -> Result<Option<Tensor>, PipelineError> {
        let Some(img) = layout.inpaint_image(base_dir)? else {
            return Ok(None);
        };
        let (w, h) = (layout.width, layout.height);
        let rgb = img.to_rgb8();
        let rgb = if rgb.dimensions() == (w, h) {
            rgb
        } else {
            // centre crop (PIL's float box, as diffusers), then PIL's resize with the model's filter
            let (iw, ih) = rgb.dimensions();
            let (cw, ch) = if (iw as u64) * (h as u64) > (ih as u64) * (w as u64) {
                (((ih as u64 * w as u64) / h as u64) as u32, ih)
            } else {
                (iw, ((iw as u64 * h as u64) / w as u64) as u32)
            };
            let (iw, ih, cw, ch) = (iw as f64, ih as f64, cw as f64, ch as f64);
            let cropped = resample::pil_crop(
                &rgb,
                (iw - cw) / 2.0,
                (ih - ch) / 2.0,
                (iw + cw) / 2.0,
                (ih + ch) / 2.0,
            );
            let filter = match self.origin {
                ModelOrigin::Diffusers => resample::PilFilter::Lanczos,
                ModelOrigin::Original => resample::PilFilter::Bicubic,
            };
            resample::pil_resize(&cropped, w, h, filter)
        };
        let data: Vec<f32> = rgb
            .as_raw()
            .iter()
            .map(|&v| 2.0 * (v as f32 / 255.0) - 1.0)
            .collect();
        let t = Tensor::from_vec(data, (1, h as usize, w as usize, 3), &self.device)
            .and_then(|t| t.permute((0, 3, 1, 2)))
            .and_then(|t| t.contiguous())
            .ctx("inpaint image")?;
        Ok(Some(t))
    }

    /// diffusers' `draw_inpaint_mask_from_boxes` on the latent grid: 1 keeps, 0 (inside a box)
    /// regenerates; cells cut with `int()` of the scaled coordinates.
    fn inpaint_mask(&self, layout: &Layout, h: usize, w: usize) -> Result<Tensor, PipelineError> {
        let mut mask = vec![1f32; h * w];
        for b in layout.entities.iter().filter_map(|e| e.bbox()) {
            let (x0, x1) = ((b[0] * w as f64) as usize, (b[2] * w as f64) as usize);
            let (y0, y1) = ((b[1] * h as f64) as usize, (b[3] * h as f64) as usize);
            for y in y0.min(h)..y1.min(h) {
                for x in x0.min(w)..x1.min(w) {
                    mask[y * w + x] = 0.0;
                }
            }
        }
        Tensor::from_vec(mask, (1, 1, h, w), &self.device).ctx("inpaint mask")
    }

    /// [`Self::generate`] with every input: recorded noise, the layout's folder for image paths.
    pub fn generate_with(
        &self,
        layout: &Layout,
        options: &GenerateOptions,
        inputs: &GenerateInputs,
        on_step: &mut dyn FnMut(&StepUpdate),
        cancel: &CancelToken,
    ) -> Result<Generated, PipelineError> {
        let init_latents = inputs.init_latents.as_ref();
        if self.unet.config.in_channels != self.latent_channels() && layout.inpaint.is_none() {
            return Err(PipelineError::Invalid(
                "this is a grounded-inpainting model: the layout needs an `inpaint` image (the boxes mark what is regenerated)".into(),
            ));
        }
        layout
            .validate_for(&self.limits())
            .map_err(|e| PipelineError::Invalid(e.to_string()))?;
        let mut warnings = Vec::new();
        let dev = &self.device;
        let f = self.vae_scale_factor();
        let (h, w) = (layout.height as usize / f, layout.width as usize / f);
        let shape = (1, self.latent_channels(), h, w);

        // diffusers guides when the scale is above 1, the original samplers whenever it is not 1.
        let cfg = match self.origin {
            ModelOrigin::Diffusers => options.guidance_scale > 1.0,
            ModelOrigin::Original => options.guidance_scale != 1.0,
        };
        let cond = self.encode_prompt(&layout.prompt, "prompt", &mut warnings)?;
        let context = if cfg {
            let uncond =
                self.encode_prompt(&layout.negative_prompt, "negative prompt", &mut warnings)?;
            Tensor::cat(&[&uncond, &cond], 0).ctx("prompt embeddings")?
        } else {
            cond
        };
        let grounding_input =
            self.grounding_input(layout, cfg, inputs.base_dir.as_deref(), &mut warnings)?;
        let objs = match &grounding_input {
            Some(input) => Some(self.unet.grounding_tokens(input).ctx("position net")?),
            None => None,
        };

        let mut scheduler = build_scheduler(
            &self.scheduler_config(options.scheduler)?,
            options.scheduler,
            options.steps,
        )?;
        let mut latents = match init_latents {
            Some(t) => {
                if t.dims() != [shape.0, shape.1, shape.2, shape.3] {
                    return Err(PipelineError::Invalid(format!(
                        "initial latents have shape {:?}; a {}×{} canvas needs [1, {}, {}, {}]",
                        t.dims(),
                        layout.width,
                        layout.height,
                        shape.1,
                        shape.2,
                        shape.3
                    )));
                }
                t.to_device(dev)
                    .ctx("initial latents")?
                    .to_dtype(DType::F32)
                    .ctx("initial latents")?
            }
            None => {
                let pooled = match options.noise_canvas {
                    Some((fw, fh)) => {
                        pooled_noise(options.seed, shape, (fh as usize / f, fw as usize / f), dev)
                            .ctx("initial noise")?
                    }
                    None => None,
                };
                match pooled {
                    Some(t) => t,
                    None => seeded_noise(options.seed, shape, dev).ctx("initial noise")?,
                }
            }
        };
        latents = (latents * scheduler.init_noise_sigma()).ctx("initial latents")?;

        // Grounded inpainting: the kept region is re-noised to the timestep before the UNet runs
        // (see `renoise` below); the UNet also sees `[z0 · mask, mask]`.
        let inpaint = match self.inpaint_pixels(layout, inputs.base_dir.as_deref())? {
            Some(pixels) => {
                let posterior = self
                    .vae
                    .encode(&pixels.to_dtype(self.dtype).ctx("VAE encode")?)
                    .ctx("VAE encode")?;
                let mean = posterior.mean.to_dtype(DType::F32).ctx("VAE encode")?;
                let noise = match &inputs.noise {
                    Some(n) => {
                        if n.vae_noise.dims() != mean.dims() {
                            return Err(PipelineError::Invalid(format!(
                                "recorded vae_noise has shape {:?}, the posterior is {:?}",
                                n.vae_noise.dims(),
                                mean.dims()
                            )));
                        }
                        n.vae_noise.to_device(dev).ctx("vae noise")?
                    }
                    None => seeded_noise(
                        options.seed.wrapping_add(1),
                        mean.dims4().ctx("VAE encode")?,
                        dev,
                    )
                    .ctx("vae noise")?,
                };
                let z0 = crate::model::vae::LatentPosterior {
                    mean,
                    std: posterior.std.to_dtype(DType::F32).ctx("VAE encode")?,
                }
                .sample_with(&noise)
                .ctx("VAE encode")?;
                let z0 = (z0 * self.vae.config.scaling_factor).ctx("VAE encode")?;
                let mask = self.inpaint_mask(layout, h, w)?;
                let masked = z0.broadcast_mul(&mask).ctx("inpaint mask")?;
                let addition = Tensor::cat(&[&masked, &mask], 1).ctx("inpaint mask")?;
                let addition = if cfg {
                    Tensor::cat(&[&addition, &addition], 0).ctx("inpaint mask")?
                } else {
                    addition
                };
                Some((z0, mask, addition))
            }
            None => None,
        };
        let mut step_rng = {
            use rand::SeedableRng;
            rand::rngs::StdRng::seed_from_u64(options.seed.wrapping_add(2))
        };

        // The scheduler may run more steps than asked (LDM-uniform spacing), and the original code
        // lays its grounding schedule over the steps it runs.
        let total_steps = scheduler.num_inference_steps();
        let gates =
            crate::layout::grounding_alphas(options.alpha0, options.alpha_decay, total_steps);
        let timesteps = scheduler.timesteps().to_vec();
        // The timestep a sampling step starts from (PLMS's first step evaluates at two).
        let mut step_timestep = None;
        for (i, &t) in timesteps.iter().enumerate() {
            if cancel.is_cancelled() {
                return Err(PipelineError::Cancelled);
            }
            let step = scheduler.sampling_step(i);
            let step_t = *step_timestep.get_or_insert(t);
            let gate = gates.get(step).copied().unwrap_or(0.0);
            let ctx = format!("UNet evaluation {i} (step {step}, timestep {t})");
            let first_of_step = i == 0 || scheduler.sampling_step(i - 1) != step;
            // diffusers re-noises before every UNet evaluation, the original sampler once per step.
            let renoise = match self.origin {
                ModelOrigin::Diffusers => Some(i),
                ModelOrigin::Original => first_of_step.then_some(step),
            };
            if let (Some((z0, mask, _)), Some(draw)) = (&inpaint, renoise) {
                let noise = match &inputs.noise {
                    Some(n) => {
                        let k = n.step_noise.dim(0).ctx("step noise")?;
                        if draw >= k {
                            return Err(PipelineError::Invalid(format!(
                                "recorded step_noise has {k} draws; {} needs one more",
                                match self.origin {
                                    ModelOrigin::Diffusers => format!("evaluation {i}"),
                                    ModelOrigin::Original => format!("step {step}"),
                                }
                            )));
                        }
                        n.step_noise
                            .get(draw)
                            .ctx("step noise")?
                            .to_device(dev)
                            .ctx("step noise")?
                    }
                    None => {
                        use rand_distr::Distribution;
                        let n = z0.elem_count();
                        let data: Vec<f32> = (0..n)
                            .map(|_| rand_distr::StandardNormal.sample(&mut step_rng))
                            .collect();
                        Tensor::from_vec(data, z0.shape(), dev).ctx("step noise")?
                    }
                };
                let noised = scheduler
                    .add_noise(z0, &noise.reshape(z0.shape()).ctx(&ctx)?, t)
                    .ctx(&ctx)?;
                let keep = noised.broadcast_mul(mask).ctx(&ctx)?;
                let generate = latents
                    .broadcast_mul(&mask.affine(-1.0, 1.0).ctx(&ctx)?)
                    .ctx(&ctx)?;
                latents = (keep + generate).ctx(&ctx)?;
            }
            let input = if cfg {
                Tensor::cat(&[&latents, &latents], 0).ctx(&ctx)?
            } else {
                latents.clone()
            };
            let input = scheduler.scale_model_input(input, t).ctx(&ctx)?;
            let input = match &inpaint {
                Some((_, _, addition)) => Tensor::cat(&[&input, addition], 1).ctx(&ctx)?,
                None => input,
            };
            let input = input.to_dtype(self.dtype).ctx(&ctx)?;
            let grounding = objs.as_ref().map(|o| Grounding {
                objs: o.clone(),
                gate_scale: gate as f64,
            });
            let noise = self
                .unet
                .forward(&input, t as f64, &context, grounding.as_ref())
                .ctx(&ctx)?;
            let noise = noise.to_dtype(DType::F32).ctx(&ctx)?;
            let noise = if cfg {
                let uncond = noise.get(0).ctx(&ctx)?.unsqueeze(0).ctx(&ctx)?;
                let text = noise.get(1).ctx(&ctx)?.unsqueeze(0).ctx(&ctx)?;
                (&uncond + ((&text - &uncond).ctx(&ctx)? * options.guidance_scale).ctx(&ctx)?)
                    .ctx(&ctx)?
            } else {
                noise
            };
            let pred_x0 = scheduler
                .pred_original_sample(&noise, t, &latents)
                .ctx(&ctx)?;
            latents = scheduler.step(&noise, t, &latents).ctx(&ctx)?;
            let last_of_step = i + 1 == timesteps.len() || scheduler.sampling_step(i + 1) != step;
            if last_of_step || first_of_step {
                on_step(&StepUpdate {
                    step,
                    total: total_steps,
                    timestep: step_t,
                    pred_x0: &pred_x0,
                    latents: &latents,
                    gate_scale: gate,
                    partial: !last_of_step,
                });
            }
            if last_of_step {
                step_timestep = None;
            }
        }
        if cancel.is_cancelled() {
            return Err(PipelineError::Cancelled);
        }
        let image = if options.decode {
            let decoded = self
                .vae
                .decode(&latents.to_dtype(self.dtype).ctx("VAE decode")?)
                .ctx("VAE decode")?;
            Some(preview::image_to_rgb8(&decoded).ctx("VAE decode")?)
        } else {
            None
        };
        Ok(Generated {
            latents,
            image,
            seed: options.seed,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_noise_is_the_large_grids_noise_averaged_and_rescaled() {
        let dev = Device::Cpu;
        let big = seeded_noise(7, (1, 4, 64, 96), &dev).unwrap();
        let small = pooled_noise(7, (1, 4, 32, 48), (64, 96), &dev)
            .unwrap()
            .expect("a 2× grid");
        let expected = (big.avg_pool2d(2).unwrap() * 2.0).unwrap();
        let diff = (&small - &expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "{diff}");
        // still standard normal per element
        let v: Vec<f32> = small.flatten_all().unwrap().to_vec1().unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.08,
            "{mean} {var}"
        );
        // grids that are not a whole multiple, or the same size, keep their own noise
        assert!(pooled_noise(7, (1, 4, 30, 48), (64, 96), &dev)
            .unwrap()
            .is_none());
        assert!(pooled_noise(7, (1, 4, 32, 32), (64, 96), &dev)
            .unwrap()
            .is_none());
        assert!(pooled_noise(7, (1, 4, 64, 96), (64, 96), &dev)
            .unwrap()
            .is_none());
    }
}
