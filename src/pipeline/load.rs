//! Building a [`GligenModel`] from a diffusers folder or an original GLIGEN checkpoint, and the
//! device and dtype names the command line and the studio take.

use super::grounding::ImageGrounding;
use super::scheduler::{SchedulerConfig, SchedulerError, SchedulerKind, TimestepSpacing};
use super::spatial::SpatialGrounding;
use super::{image_prep, GligenModel, ModelOrigin, PipelineError};
use crate::layout::MapKind;
use crate::model::clip_vision::{ClipVisionConfig, ClipVisionModelWithProjection, ImageProjection};
use crate::model::spatial::{GroundingDownsampler, SpatialPositionNet};
use crate::model::{
    AutoencoderKL, ClipTextConfig, ClipTextModel, UNet2DConditionModel, UNetConfig, VaeConfig,
};
use crate::weights::original::{self as orig, GroundingKind, OriginalCheckpoint};
use crate::weights::{
    ClipTokenizer, DiffusersFolder, LoadRecord, ModelSource, TensorFile, WeightsError,
};
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};

/// A device name that is unknown or names a device this machine or build cannot open.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device {0:?} (expected cpu, cuda, cuda:N, metal or auto)")]
    Unknown(String),
    #[error("device {name:?}: {source}")]
    Unavailable {
        name: String,
        #[source]
        source: candle_core::Error,
    },
}

/// A dtype name other than f32, f16 and bf16 (and their long names).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype {0:?} (expected f32, f16 or bf16)")]
pub struct UnknownDType(pub String);

/// Why a model could not be loaded, beyond the files themselves ([`WeightsError`]).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The TAESD preview decoder could not be loaded.
    #[error("preview decoder: {0}")]
    PreviewDecoder(String),
    /// A network's weights do not fit its config (a missing tensor, a wrong shape).
    #[error("building the {component}: {source}")]
    Build {
        component: &'static str,
        #[source]
        source: candle_core::Error,
    },
    #[error("{path}: attention_type is not \"gated\": this is not a GLIGEN UNet")]
    NotGligen { path: PathBuf },
    #[error("{path}: this checkpoint's grounding tokenizer is not text-box, text-image-box or keypoint: the spatial-condition checkpoints (HED, canny, depth, normal, semantic maps) are not supported yet")]
    UnsupportedGrounding { path: PathBuf },
    #[error("{config}: the image tower's embeddings are {tower} wide but the projection matrix takes {matrix}; put a `{}` for this tower in {folder}", orig::PROJECTION_MATRIX_FILE)]
    ProjectionWidth {
        config: PathBuf,
        folder: PathBuf,
        tower: usize,
        matrix: usize,
    },
    #[error("{path}: the image projection gives {features}-wide features but the position net takes {takes}: the image tower does not belong to this checkpoint")]
    ForeignImageTower {
        path: PathBuf,
        features: usize,
        takes: usize,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    SchedulerConfig {
        path: PathBuf,
        #[source]
        source: SchedulerError,
    },
}

fn build_err(component: &'static str) -> impl Fn(candle_core::Error) -> LoadError {
    move |source| LoadError::Build { component, source }
}

/// Parses `cpu`, `cuda`, `cuda:N`, `metal` or `auto` (the best device this build can use).
pub fn parse_device(name: &str) -> Result<Device, DeviceError> {
    let err = |source| DeviceError::Unavailable {
        name: name.to_string(),
        source,
    };
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
            None => Err(DeviceError::Unknown(other.to_string())),
        },
    }
}

pub fn parse_dtype(name: &str) -> Result<DType, UnknownDType> {
    match name {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" | "fp16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(UnknownDType(other.to_string())),
    }
}

/// The dtype to build a model's tensors in when `requested` is asked for on `device`, and whether
/// its UNet then multiplies in bf16. bf16 on a CPU with AMX-BF16 is an f32 model whose UNet
/// multiplies bf16 operands with f32 accumulation in its linear layers, attention products and
/// convolutions, as PyTorch's CPU autocast does: those products run several times faster than in
/// f32, while norms, softmax and the residual stream keep f32 (and Glichen's fused f32 kernels). Elsewhere the
/// dtype is used as asked (on other CPUs candle converts each bf16 operation, which saves memory,
/// not time).
pub fn cpu_bf16_plan(device: &Device, requested: DType) -> (DType, bool) {
    if device.is_cpu() && requested == DType::BF16 && crate::model::linear::bf16_matmuls_supported()
    {
        (DType::F32, true)
    } else {
        (requested, false)
    }
}

/// Loading choices beyond the model itself.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The CLIP image tower of an original text-image checkpoint: a transformers CLIP folder or a
    /// hub repo id. By default an `image_encoder/` folder beside the checkpoint, else
    /// `openai/clip-vit-large-patch14` from the hub, as the original code uses.
    pub image_encoder: Option<String>,
    /// Stable Diffusion's first conv for spatial-map checkpoints (see
    /// [`orig::find_sd_conv_in`]); by default found beside the checkpoint or in the HF cache.
    pub sd_conv_in: Option<PathBuf>,
    /// The TAESD preview decoder: a folder, a catalogue name (`taesd`) or a hub repo id.
    pub preview_decoder: Option<String>,
    /// How a download that loading needs (that image tower) reports itself.
    pub progress: crate::weights::Progress,
}

impl ImageGrounding {
    /// A transformers CLIP folder (`openai/clip-vit-large-patch14` for the released checkpoints) and
    /// GLIGEN's projection matrix, as the original code's `get_clip_feature` uses them.
    pub fn from_clip_folder(dir: &Path, device: &Device, dtype: DType) -> Result<Self, LoadError> {
        let config_path = dir.join("config.json");
        let cfg: ClipVisionConfig = serde_json::from_value(orig::clip_vision_config_value(dir)?)
            .map_err(|source| LoadError::Json {
                path: config_path.clone(),
                source,
            })?;
        let vb = TensorFile::open(&orig::clip_weights_path(dir)?)?.into_var_builder(dtype, device);
        let encoder =
            ClipVisionModelWithProjection::new(vb, &cfg).map_err(build_err("image encoder"))?;
        let p = orig::projection_matrix(dir, &Device::Cpu)?;
        let (p_in, _) = p.dims2().map_err(build_err("image projection"))?;
        if p_in != cfg.projection_dim {
            return Err(LoadError::ProjectionWidth {
                config: config_path,
                folder: dir.to_path_buf(),
                tower: cfg.projection_dim,
                matrix: p_in,
            });
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
            // the original code's towers, so its way with alpha
            drop_alpha: ModelOrigin::Original.drops_image_alpha(),
        })
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

    /// [`Self::load`] with options; records every weights file read and the bytes of the
    /// tensors built ([`GligenModel::loaded_from`]).
    pub fn load_with(
        source: &ModelSource,
        device: &Device,
        dtype: DType,
        options: &LoadOptions,
    ) -> Result<Self, PipelineError> {
        let (model, record) = crate::weights::stamp::recording(|| {
            Self::load_unrecorded(source, device, dtype, options)
        });
        let mut model = model?;
        model.loaded_from = record;
        Ok(model)
    }

    fn load_unrecorded(
        source: &ModelSource,
        device: &Device,
        dtype: DType,
        options: &LoadOptions,
    ) -> Result<Self, PipelineError> {
        let (dtype, bf16_matmuls) = cpu_bf16_plan(device, dtype);
        let mut model = match source {
            ModelSource::Folder(root) => {
                Self::load_diffusers(&DiffusersFolder::open(root)?, device, dtype)?
            }
            ModelSource::OriginalCheckpoint(path) => {
                Self::load_original(path, device, dtype, options)?
            }
        };
        if let Some(spec) = &options.preview_decoder {
            let dir = crate::weights::catalogue::resolve_component_folder(
                spec,
                options.progress.clone(),
            )?;
            let taesd = crate::model::taesd::load_folder(&dir, device, dtype)
                .map_err(|e| LoadError::PreviewDecoder(e.to_string()))?;
            if taesd.config.latent_channels != model.latent_channels() {
                return Err(LoadError::PreviewDecoder(format!(
                    "{}: TAESD decodes {} latent channels, the model makes {}",
                    dir.display(),
                    taesd.config.latent_channels,
                    model.latent_channels()
                ))
                .into());
            }
            model.preview_decoder = Some(taesd);
        }
        model.unet.set_bf16_matmuls(bf16_matmuls);
        Ok(model)
    }

    /// An original GLIGEN checkpoint: networks renamed to diffusers' names, CLIP's vocabulary, and
    /// the PLMS schedule of the original sampler (the checkpoint's own betas when it has them).
    /// Text-image checkpoints also get the CLIP image tower and GLIGEN's projection matrix, which
    /// they do not carry (see [`LoadOptions::image_encoder`]).
    pub fn load_original(
        path: &Path,
        device: &Device,
        dtype: DType,
        options: &LoadOptions,
    ) -> Result<Self, PipelineError> {
        let ck = OriginalCheckpoint::open(path, &Device::Cpu)?;
        if ck.grounding == GroundingKind::Other {
            return Err(LoadError::UnsupportedGrounding {
                path: path.to_path_buf(),
            }
            .into());
        }
        let image_grounding = if ck.grounding == GroundingKind::TextImageBox {
            let dir = orig::find_image_encoder(
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
        let unet_vb = ck.unet.into_var_builder(dtype, device);
        let unet = UNet2DConditionModel::new(unet_vb.clone(), &ck.unet_config)
            .map_err(build_err("UNet"))?;
        let spatial = match ck.grounding {
            GroundingKind::Map(kind) => {
                Some(spatial_grounding(path, kind, &unet, &unet_vb, options)?)
            }
            _ => None,
        };
        let vae = AutoencoderKL::new(ck.vae.into_var_builder(dtype, device), &ck.vae_config)
            .map_err(build_err("VAE"))?;
        if let (Some(g), Some(net)) = (&image_grounding, &unet.position_net) {
            let features = g.project.out_dim().map_err(build_err("image projection"))?;
            if features != net.positive_len {
                return Err(LoadError::ForeignImageTower {
                    path: path.to_path_buf(),
                    features,
                    takes: net.positive_len,
                }
                .into());
            }
        }
        let mut sched = SchedulerConfig::stable_diffusion_v1();
        sched.trained_betas = ck.betas;
        // The original samplers' timesteps: `range(0, 1000, 1000 // steps) + 1`.
        sched.timestep_spacing = TimestepSpacing::LdmUniform;
        let scheduler_json = serde_json::to_string(&sched).map_err(|source| LoadError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            image_grounding,
            spatial,
            preview_decoder: None,
            scheduler_json,
            default_scheduler: SchedulerKind::Pndm,
            device: device.clone(),
            dtype,
            name: path.display().to_string(),
            origin: ModelOrigin::Original,
            loaded_from: LoadRecord::default(),
        })
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
            Some("gated" | "gated-text-image")
        ) {
            return Err(LoadError::NotGligen {
                path: folder.root.join("unet/config.json"),
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
                drop_alpha: ModelOrigin::Diffusers.drops_image_alpha(),
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
        let own_scheduler = SchedulerConfig::from_json_str(&scheduler_json).map_err(|source| {
            LoadError::SchedulerConfig {
                path: sched_path.clone(),
                source,
            }
        })?;
        // Checked now, so that a broken noise schedule is a load error naming the file rather
        // than NaN latents later.
        own_scheduler
            .betas()
            .map_err(|source| LoadError::SchedulerConfig {
                path: sched_path.clone(),
                source,
            })?;
        let default_scheduler = own_scheduler.scheduler_type().unwrap_or_else(|| {
            tracing::warn!(
                "{}: _class_name {:?} is not a scheduler Glichen implements; layouts that name \
                 none run PNDM with this file's settings (choose with sampling.scheduler or \
                 --scheduler: ddim, pndm, dpmpp_2m, dpmpp_2m_karras, euler, unipc)",
                sched_path.display(),
                own_scheduler.class_name
            );
            SchedulerKind::Pndm
        });
        Ok(Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            image_grounding,
            spatial: None,
            preview_decoder: None,
            scheduler_json,
            default_scheduler,
            device: device.clone(),
            dtype,
            name: folder.root.display().to_string(),
            origin: ModelOrigin::Diffusers,
            loaded_from: LoadRecord::default(),
        })
    }
}

/// A spatial-map checkpoint's map networks and SD's first conv, checked against its UNet.
fn spatial_grounding(
    path: &Path,
    kind: MapKind,
    unet: &UNet2DConditionModel,
    vb: &candle_nn::VarBuilder,
    options: &LoadOptions,
) -> Result<SpatialGrounding, LoadError> {
    let position_net = SpatialPositionNet::new(vb.pp("position_net"), kind)
        .map_err(build_err("map position net"))?;
    let downsampler =
        GroundingDownsampler::new(vb.pp("downsample_net"), kind, position_net.resize_input())
            .map_err(build_err("map downsampler"))?;
    let takes = unet.config.in_channels;
    let latents = unet.latent_channels();
    if takes != latents + downsampler.out_channels() {
        return Err(LoadError::Build {
            component: "UNet",
            source: candle_core::Error::Msg(format!(
                "the first conv takes {takes} channels but the latents and the {} downsampler \
                 make {}",
                kind.label(),
                latents + downsampler.out_channels()
            )),
        });
    }
    let cross = match &unet.config.cross_attention_dim {
        crate::model::unet::PerBlock::One(c) => *c,
        crate::model::unet::PerBlock::Each(c) => c.first().copied().unwrap_or(0),
    };
    if position_net.out_dim() != cross {
        return Err(LoadError::Build {
            component: "map position net",
            source: candle_core::Error::Msg(format!(
                "its tokens are {} wide but the UNet's context is {cross}",
                position_net.out_dim()
            )),
        });
    }
    let sd_conv_in = match orig::find_sd_conv_in(path, options.sd_conv_in.as_deref())? {
        Some((from, weight, bias)) => {
            let conv = unet.first_conv_from(weight, bias).map_err(|e| {
                LoadError::Weights(WeightsError::Unreadable {
                    path: from.clone(),
                    message: e.to_string(),
                })
            })?;
            Some((from, conv))
        }
        None => None,
    };
    Ok(SpatialGrounding {
        kind,
        position_net,
        downsampler,
        sd_conv_in,
    })
}
