//! The messages between the [`Worker`](super::Worker) handle and its thread: commands, events
//! and the values they carry.

use crate::layout::{Layout, ModelLimits, SchedulerKind};
use crate::pipeline::{self, CancelToken, GenerateOptions};
use crate::weights::ModelSource;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Identifies one generation. Ids increase; events of older jobs are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Identifies one model load (so that the UI can ignore a load it gave up on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LoadId(pub u64);

/// What to load: a folder, a checkpoint file, a catalogue name or a hub repo id (downloaded into
/// the Hugging Face cache when needed), on a device (`cpu`, `cuda`, `auto`…) in a dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadRequest {
    pub spec: String,
    pub device: String,
    pub dtype: String,
    /// Original text-image checkpoints: where their CLIP image tower is ([`pipeline::LoadOptions`]).
    pub image_encoder: Option<String>,
    /// The TAESD preview decoder to load beside the model (a folder, `taesd` or a hub repo id).
    pub preview_decoder: Option<String>,
}

impl LoadRequest {
    /// `spec` on the best device this build has, in f32 on the CPU and f16 elsewhere.
    pub fn auto(spec: impl Into<String>) -> Self {
        let dtype = if candle_core::utils::cuda_is_available()
            || candle_core::utils::metal_is_available()
        {
            "f16"
        } else {
            "f32"
        };
        Self {
            spec: spec.into(),
            device: "auto".into(),
            dtype: dtype.into(),
            image_encoder: None,
            preview_decoder: None,
        }
    }

    /// `spec` on the CPU in f32 (tests, benchmarks).
    pub fn cpu(spec: impl Into<String>) -> Self {
        Self {
            spec: spec.into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            image_encoder: None,
            preview_decoder: None,
        }
    }
}

/// One generation: the layout as it was when Generate was pressed and the resolved options.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub layout: Layout,
    pub options: GenerateOptions,
    /// The folder that relative image paths in the layout are read from (the layout file's).
    pub base_dir: Option<PathBuf>,
}

/// Raw latents for a preview: `channels × height × width` f32 values, channel-major (the tensor's
/// own layout). The UI turns them into RGB (in a WGSL shader, or on the CPU as a fallback).
#[derive(Debug, Clone, PartialEq)]
pub struct LatentFrame {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl LatentFrame {
    /// From a `[1, C, H, W]` or `[C, H, W]` tensor on any device.
    pub fn from_tensor(t: &candle_core::Tensor) -> candle_core::Result<Self> {
        let t = if t.rank() == 4 { t.get(0)? } else { t.clone() };
        let (channels, height, width) = t.dims3()?;
        let data = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self {
            channels,
            height,
            width,
            data,
        })
    }

    /// Back to a `[1, C, H, W]` CPU tensor (for [`pipeline::preview::latents_to_rgb`]).
    pub fn to_tensor(&self) -> candle_core::Result<candle_core::Tensor> {
        candle_core::Tensor::from_vec(
            self.data.clone(),
            (1, self.channels, self.height, self.width),
            &candle_core::Device::Cpu,
        )
    }

    /// The CPU latent→RGB projection (the fallback of the WGSL shader).
    pub fn to_rgb(&self) -> candle_core::Result<image::RgbImage> {
        pipeline::preview::latents_to_rgb(&self.to_tensor()?)
    }
}

/// What a loaded model is, for the UI.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub source: ModelSource,
    pub limits: ModelLimits,
    pub default_scheduler: SchedulerKind,
    pub device: String,
    pub load_time: Duration,
}

/// Commands to the worker. Prefer the [`Worker`](super::Worker) methods, which also handle
/// cancellation.
#[derive(Debug)]
pub enum Command {
    LoadModel {
        id: LoadId,
        request: LoadRequest,
        cancel: CancelToken,
    },
    Generate {
        job: Job,
        cancel: CancelToken,
    },
    /// Cancellation itself happens through the job's token; this only wakes the worker.
    Cancel(JobId),
    Shutdown,
    /// Panics inside the worker (tests of the recovery path).
    #[cfg(feature = "testing")]
    Panic(String),
    /// Makes the next load or job panic with "injected panic" when it reaches `stage` (tests of
    /// the recovery from each stage).
    #[cfg(feature = "testing")]
    InjectPanic(Stage),
}

/// Where a load or a job is, named in the message when it crashes there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Building the networks (on the load thread).
    Load,
    Prompt,
    Grounding,
    /// A UNet evaluation of sampling step `step` (0-based) of `total`.
    Step {
        step: usize,
        total: usize,
    },
    Decode,
    /// The preview of sampling step `step` (0-based): its latent frame and TAESD decode.
    Preview {
        step: usize,
    },
}

impl From<pipeline::Phase> for Stage {
    fn from(phase: pipeline::Phase) -> Self {
        match phase {
            pipeline::Phase::Prompt => Stage::Prompt,
            pipeline::Phase::Grounding => Stage::Grounding,
            pipeline::Phase::Evaluation { step, total } => Stage::Step { step, total },
            pipeline::Phase::Decode => Stage::Decode,
        }
    }
}

/// What follows "while" in a message.
impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::Load => f.write_str("loading the model"),
            Stage::Prompt => f.write_str("encoding the prompt"),
            Stage::Grounding => f.write_str("encoding the grounding"),
            Stage::Step { step, total } => {
                write!(f, "running the UNet for step {} of {total}", step + 1)
            }
            Stage::Decode => f.write_str("decoding the picture"),
            Stage::Preview { step } => write!(f, "making the preview of step {}", step + 1),
        }
    }
}

/// Events from the worker. Every event is followed by a call of the repaint callback.
#[derive(Debug, Clone)]
pub enum Event {
    LoadProgress {
        id: LoadId,
        message: String,
        /// The share done, when it is known (downloads).
        fraction: Option<f32>,
    },
    ModelReady {
        id: LoadId,
        info: ModelInfo,
    },
    LoadFailed {
        id: LoadId,
        message: String,
    },
    /// The job left the queue and is running (`total` sampling steps).
    Started {
        job: JobId,
        total: usize,
    },
    /// What the job is busy with before its next step (the prompt, a UNet evaluation, ...).
    Phase {
        job: JobId,
        phase: pipeline::Phase,
    },
    /// A sampling step finished; `latents` is the predicted x0 (what the picture is heading to).
    Step {
        job: JobId,
        step: usize,
        total: usize,
        timestep: f64,
        gate_scale: f32,
        latents: LatentFrame,
        /// The predicted picture decoded by the preview decoder, when one is loaded.
        decoded: Option<Arc<image::RgbImage>>,
        elapsed: Duration,
    },
    Finished {
        job: JobId,
        image: Arc<image::RgbImage>,
        latents: LatentFrame,
        seed: u64,
        warnings: Vec<String>,
        elapsed: Duration,
    },
    Cancelled {
        job: JobId,
    },
    Failed {
        job: JobId,
        message: String,
    },
    /// The worker dropped its model because a weights file changed on disk after the load
    /// (`message` names the file and the change); jobs fail until a model is loaded again.
    ModelUnloaded {
        message: String,
    },
    /// The worker caught a panic and started over (the model, if any, is kept). `message` is the
    /// panic's, with the stage it happened in ("injected panic while decoding the picture").
    WorkerRestarted {
        message: String,
    },
}

impl Event {
    /// The job an event is about, if any.
    pub fn job(&self) -> Option<JobId> {
        match self {
            Event::Started { job, .. }
            | Event::Phase { job, .. }
            | Event::Step { job, .. }
            | Event::Finished { job, .. }
            | Event::Cancelled { job }
            | Event::Failed { job, .. } => Some(*job),
            _ => None,
        }
    }
}
