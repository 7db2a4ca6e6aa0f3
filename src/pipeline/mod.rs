//! The GLIGEN sampling loop: prompt and phrase encoding, grounding inputs, classifier-free
//! guidance, scheduled sampling (α₀ and the original code's decay), per-step previews,
//! cancellation, VAE decode.
//!
//! `load` builds a [`GligenModel`], `grounding` the position net's inputs, `noise` every random
//! draw, `inpaint` grounded inpainting; this module holds the model, its options and the loop.

mod grounding;
pub mod image_prep;
mod inpaint;
mod load;
pub mod memory;
mod noise;
pub mod preview;
pub mod resample;
pub mod scheduler;
pub mod spatial;

pub use grounding::{ImageGrounding, IMAGE_FEATURE_NORM, MAX_GROUNDING_SLOTS};
pub use inpaint::Inpaint;
pub use load::{
    cpu_bf16_plan, parse_device, parse_dtype, DeviceError, LoadError, LoadOptions, UnknownDType,
};
pub use memory::{MemoryCheck, MemoryEstimate, NotEnoughMemory};
pub use noise::{
    ensure_finite, latents_from_bytes, pooled_noise, read_latents_tensor, seeded_noise,
    NoiseSource, NormalStream, RecordedNoise, RenoiseDraw, MAX_LATENTS_FILE_BYTES,
};

use crate::layout::{Layout, LayoutError, ModelLimits};
use crate::model::blocks::Conv2d;
use crate::model::{AutoencoderKL, ClipTextModel, Grounding, UNet2DConditionModel};
use crate::weights::{ClipTokenizer, LoadRecord, WeightsError};
use candle_core::{DType, Device, Tensor};
use scheduler::{build_scheduler, Scheduler, SchedulerConfig, SchedulerError, SchedulerKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Load(LoadError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("{0}")]
    Invalid(String),
    /// NaN or infinity where numbers must be finite (an input file, or the result).
    #[error("{0}")]
    NonFinite(String),
    #[error("{context}: {source}")]
    Compute {
        context: String,
        source: candle_core::Error,
    },
    #[error(transparent)]
    Memory(#[from] NotEnoughMemory),
    #[error("generation cancelled")]
    Cancelled,
}

/// A weights file's error stays [`PipelineError::Weights`] whichever step of loading met it.
impl From<LoadError> for PipelineError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Weights(e) => PipelineError::Weights(e),
            e => PipelineError::Load(e),
        }
    }
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
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whose rules a loaded model follows where diffusers and the original GLIGEN code differ: every
/// such rule is a method here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelOrigin {
    /// A diffusers folder: diffusers' GLIGEN pipelines.
    Diffusers,
    /// An original checkpoint: `gligen_inference.py` and its PLMS sampler.
    Original,
}

impl ModelOrigin {
    /// Whether `guidance_scale` runs classifier-free guidance: diffusers guides when the scale is
    /// above 1 (`do_classifier_free_guidance`), the original sampler whenever it is not 1 (a scale
    /// below 1 still mixes in the unconditional prediction there).
    pub fn guides(self, guidance_scale: f64) -> bool {
        match self {
            ModelOrigin::Diffusers => guidance_scale > 1.0,
            ModelOrigin::Original => guidance_scale != 1.0,
        }
    }

    /// Whether grounded inpainting re-noises the kept region before every UNet evaluation
    /// (diffusers, whose loop body does it, so twice in PLMS's first step) or once per sampling
    /// step (the original sampler, which does it before the step's first evaluation).
    pub fn renoises_every_evaluation(self) -> bool {
        match self {
            ModelOrigin::Diffusers => true,
            ModelOrigin::Original => false,
        }
    }

    /// The re-noising draw UNet evaluation `evaluation` (of sampling step `step`) takes, `None`
    /// when the kept region is not re-noised before it (see
    /// [`Self::renoises_every_evaluation`]).
    pub fn renoise_draw(
        self,
        evaluation: usize,
        step: usize,
        first_of_step: bool,
    ) -> Option<RenoiseDraw> {
        if self.renoises_every_evaluation() {
            Some(RenoiseDraw::Evaluation(evaluation))
        } else {
            first_of_step.then_some(RenoiseDraw::Step(step))
        }
    }

    /// The filter that resizes the inpainting picture to the canvas: diffusers resizes with PIL's
    /// Lanczos, the original code with `Image.resize`'s default, bicubic.
    pub fn inpaint_resize_filter(self) -> resample::PilFilter {
        match self {
            ModelOrigin::Diffusers => resample::PilFilter::Lanczos,
            ModelOrigin::Original => resample::PilFilter::Bicubic,
        }
    }

    /// Whether a reference picture's alpha is dropped before the CLIP image processor: the
    /// original code opens pictures with PIL's `convert("RGB")`, which drops it; diffusers hands
    /// the picture to the processor, which composites it onto white.
    pub fn drops_image_alpha(self) -> bool {
        match self {
            ModelOrigin::Diffusers => false,
            ModelOrigin::Original => true,
        }
    }
}

/// A loaded GLIGEN pipeline: every network on one device in one dtype.
pub struct GligenModel {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    /// Text-image models: the CLIP vision tower, `image_project` and the image processor.
    pub image_grounding: Option<ImageGrounding>,
    /// Spatial-map models: the map's networks and Stable Diffusion's first conv.
    pub spatial: Option<spatial::SpatialGrounding>,
    /// TAESD, when loaded: per-step previews of the predicted x0 and draft finishes.
    pub preview_decoder: Option<crate::model::AutoencoderTiny>,
    /// `scheduler_config.json` as read, so that another scheduler class can be built from it.
    pub scheduler_json: String,
    pub default_scheduler: SchedulerKind,
    pub device: Device,
    pub dtype: DType,
    /// Where the model came from, for messages.
    pub name: String,
    pub origin: ModelOrigin,
    /// The weights files as they were when loaded, and the bytes of the tensors built from them
    /// (empty for a model not built by [`GligenModel::load_with`]).
    pub loaded_from: LoadRecord,
}

impl GligenModel {
    /// The scheduler config for `kind`: the model's own when it names that class, else built from
    /// it with the other class's defaults for missing keys (diffusers' `from_config`; note that
    /// DDIM's default `clip_sample` is true).
    pub fn scheduler_config(&self, kind: SchedulerKind) -> Result<SchedulerConfig, PipelineError> {
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

    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config.downscale_factor()
    }

    /// The first weights file that changed on disk since the model was loaded: its networks no
    /// longer match the files (checked by the worker before each job).
    pub fn check_files(&self) -> Result<(), WeightsError> {
        Ok(self.loaded_from.check()?)
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
                .is_some_and(super::model::position_net::PositionNet::is_text_image)
                && self.image_grounding.is_some(),
            supports_keypoints: self
                .unet
                .position_net
                .as_ref()
                .is_some_and(super::model::position_net::PositionNet::is_keypoint),
            max_people: self
                .unet
                .position_net
                .as_ref()
                .and_then(super::model::position_net::PositionNet::max_persons)
                .unwrap_or(8),
            supports_inpainting: self.unet.config.in_channels == 2 * self.latent_channels() + 1,
            supports_maps: self.spatial.is_some(),
            map_kind: self.spatial.as_ref().map(|s| s.kind),
            map_canvas_side: self
                .spatial
                .as_ref()
                .and_then(|s| s.canvas_side(self.vae_scale_factor())),
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
        // Returned, not logged: the CLI prints them and the studio shows them, once.
        if tok.truncated_tokens > 0 {
            let more = if tok.counted_whole { "" } else { "more than " };
            warnings.push(format!(
                "the {what} is {more}{} tokens long; the text encoder reads {}, so its last \
                 {more}{} tokens are ignored",
                tok.content_tokens,
                self.tokenizer.max_length - 2,
                tok.truncated_tokens
            ));
        }
        let n = tok.ids.len();
        let ids = Tensor::from_vec(tok.ids, (1, n), &self.device).ctx("prompt tokens")?;
        let out = self
            .text_encoder
            .forward(&ids, self.tokenizer.eos_id)
            .ctx("text encoder")?;
        Ok(out.last_hidden_state)
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
    pub scheduler: SchedulerKind,
    /// Decode the final latents to pixels (off for latents-only runs).
    pub decode: bool,
    /// Draw the seeded starting noise for this larger canvas (width, height) and pool it down to the
    /// layout's (see [`pooled_noise`]): a smaller draft then shares the full render's composition.
    pub noise_canvas: Option<(u32, u32)>,
    /// Decode the final latents with the preview decoder (TAESD) when one is loaded: a draft's
    /// finish in milliseconds. Full renders always use the model's own VAE.
    pub finish_with_preview_decoder: bool,
    /// Whether the estimated peak memory is compared with what is available before starting.
    pub memory_check: MemoryCheck,
}

impl GenerateOptions {
    /// The layout's choices, with the model's scheduler when the layout names none and a random seed
    /// when it pins none.
    pub fn from_layout(layout: &Layout, model_default: SchedulerKind) -> Self {
        let s = layout.sampling.resolve();
        Self {
            steps: s.steps,
            guidance_scale: s.guidance_scale,
            alpha0: s.alpha0,
            alpha_decay: s.alpha_decay,
            seed: s.seed.unwrap_or_else(rand::random),
            scheduler: layout.sampling.scheduler.unwrap_or(model_default),
            decode: true,
            noise_canvas: None,
            finish_with_preview_decoder: false,
            memory_check: MemoryCheck::default(),
        }
    }

    /// Grounding gate scale for each sampling step (1 = full, 0 = fuser off).
    pub fn gate_scales(&self) -> Vec<f32> {
        crate::layout::grounding_alphas(self.alpha0, self.alpha_decay, self.steps)
    }
}

/// What a generation is busy with before its next step update (the studio's progress line says it
/// instead of "Preparing…", whose first UNet evaluation alone takes half a minute on a CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Tokenizing and encoding the prompt and negative prompt.
    Prompt,
    /// The grounding tokens: phrases, reference pictures or the map through their networks.
    Grounding,
    /// A UNet evaluation of sampling step `step` (0-based) of `total`.
    Evaluation { step: usize, total: usize },
    /// Decoding the final latents to pixels.
    Decode,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Prompt => f.write_str("encoding the prompt"),
            Phase::Grounding => f.write_str("encoding the grounding"),
            Phase::Evaluation { step, total } => {
                write!(f, "step {} of {total}: UNet evaluation", step + 1)
            }
            Phase::Decode => f.write_str("decoding the picture"),
        }
    }
}

/// Called as a generation enters each [`Phase`].
#[derive(Clone)]
pub struct PhaseHook(pub Arc<dyn Fn(Phase) + Send + Sync>);

impl std::fmt::Debug for PhaseHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PhaseHook")
    }
}

/// Inputs of a generation beyond the layout and its options.
#[derive(Debug, Clone, Default)]
pub struct GenerateInputs {
    /// Told what the generation is doing between step updates.
    pub on_phase: Option<PhaseHook>,
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
    pub timestep: f64,
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

/// What every UNet evaluation of one generation shares.
struct Conditioning<'a> {
    /// Prompt embeddings: `[negative, prompt]` when guided.
    context: Tensor,
    /// The position net's tokens, computed once per generation.
    objs: Option<Tensor>,
    /// Classifier-free guidance runs: the batch is `[unconditional, conditional]`.
    guided: bool,
    guidance_scale: f64,
    /// Grounded inpainting's `[z0 · mask, mask]` or a spatial map's downsampled channels,
    /// appended to the UNet input's channels.
    extra_channels: Option<&'a Tensor>,
    /// A spatial-map model's first conv once its grounding has ended (SD's own, on the latents).
    first_conv: Option<&'a Conv2d>,
}

impl GligenModel {
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

    /// [`Self::generate`] with every input: recorded noise, the layout's folder for image paths.
    pub fn generate_with(
        &self,
        layout: &Layout,
        options: &GenerateOptions,
        inputs: &GenerateInputs,
        on_step: &mut dyn FnMut(&StepUpdate),
        cancel: &CancelToken,
    ) -> Result<Generated, PipelineError> {
        // The networks check the flag between their blocks and kernel tasks, so a cancel lands
        // within a fraction of a UNet evaluation rather than after it.
        let result = crate::model::interrupt::with_flag(&cancel.0, || {
            self.generate_unchecked(layout, options, inputs, on_step, cancel)
        });
        match result {
            Err(PipelineError::Compute { source, .. })
                if crate::model::interrupt::is_interrupted(&source) =>
            {
                Err(PipelineError::Cancelled)
            }
            other => other,
        }
    }

    fn generate_unchecked(
        &self,
        layout: &Layout,
        options: &GenerateOptions,
        inputs: &GenerateInputs,
        on_step: &mut dyn FnMut(&StepUpdate),
        cancel: &CancelToken,
    ) -> Result<Generated, PipelineError> {
        if self.unet.config.in_channels != self.latent_channels()
            && layout.inpaint.is_none()
            && self.spatial.is_none()
        {
            return Err(PipelineError::Invalid(
                "this is a grounded-inpainting model: the layout needs an `inpaint` image (the boxes mark what is regenerated)".into(),
            ));
        }
        layout.validate_for(&self.limits()).map_err(|e| {
            PipelineError::Invalid(format!("the layout does not fit this model:\n{e}"))
        })?;
        memory::check(self, layout, options)?;
        let mut warnings = Vec::new();
        let f = self.vae_scale_factor();
        let grid = (layout.height as usize / f, layout.width as usize / f);
        let base_dir = inputs.base_dir.as_deref();
        let guided = self.origin.guides(options.guidance_scale);

        let phase = |p: Phase| {
            if let Some(hook) = &inputs.on_phase {
                (hook.0)(p);
            }
        };
        // Context: the prompts and the grounding tokens, once per generation.
        phase(Phase::Prompt);
        let context = self.prompt_context(layout, guided, &mut warnings)?;
        phase(Phase::Grounding);
        let map = match &self.spatial {
            Some(s) => Some(s.prepare(layout, guided, base_dir, grid, &self.device, self.dtype)?),
            None => None,
        };
        let objs = match (
            &map,
            self.grounding_input(layout, guided, base_dir, &mut warnings)?,
        ) {
            (Some(map), _) => Some(map.tokens.clone()),
            (None, Some(input)) => Some(self.unet.grounding_tokens(&input).ctx("position net")?),
            (None, None) => None,
        };

        // Latents: the starting noise, and grounded inpainting's picture.
        let mut scheduler = build_scheduler(
            &self.scheduler_config(options.scheduler)?,
            options.scheduler,
            options.steps,
        )?;
        let mut noise = NoiseSource::new(options.seed, inputs.noise.as_ref());
        let latents = self.initial_latents(layout, options, inputs, &noise, grid)?;
        let mut latents = (latents * scheduler.init_noise_sigma()).ctx("initial latents")?;
        let inpaint = Inpaint::prepare(self, layout, base_dir, &noise, guided, grid)?;
        let mut cond = Conditioning {
            context,
            objs,
            guided,
            guidance_scale: options.guidance_scale,
            extra_channels: inpaint
                .as_ref()
                .map(|i| &i.extra_channels)
                .or(map.as_ref().map(|m| &m.channels)),
            first_conv: None,
        };

        // The loop. The scheduler may run more steps than asked (LDM-uniform spacing), and the
        // original code lays its grounding schedule over the steps it runs.
        let total_steps = scheduler.num_inference_steps();
        let gates =
            crate::layout::grounding_alphas(options.alpha0, options.alpha_decay, total_steps);
        let sd_conv_in = self.sd_conv_in_for(&gates)?;
        // Switched to SD's first conv (for good, like the original sampler).
        let mut first_conv = None;
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
            if gate == 0.0 && first_conv.is_none() {
                first_conv = sd_conv_in;
            }
            let ctx = format!("UNet evaluation {i} (step {step}, timestep {t})");
            let first_of_step = i == 0 || scheduler.sampling_step(i - 1) != step;
            if let (Some(inpaint), Some(draw)) =
                (&inpaint, self.origin.renoise_draw(i, step, first_of_step))
            {
                latents = inpaint.renoise(&latents, &*scheduler, &mut noise, draw, t, &ctx)?;
            }
            cond.first_conv = first_conv;
            phase(Phase::Evaluation {
                step,
                total: total_steps,
            });
            let noise_pred = self.predict_noise(&latents, t, gate, &cond, &*scheduler, &ctx)?;
            let pred_x0 = scheduler
                .pred_original_sample(&noise_pred, t, &latents)
                .ctx(&ctx)?;
            latents = scheduler.step(&noise_pred, t, &latents).ctx(&ctx)?;
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
        // A NaN anywhere (a scale or schedule that overflows) decodes to a black picture that
        // looks like a result; say what happened instead.
        ensure_finite(&latents, "the final latents").map_err(|e| match e {
            PipelineError::NonFinite(m) => PipelineError::NonFinite(format!(
                "{m}: the sampling diverged (guidance_scale {}, {} steps, scheduler {})",
                options.guidance_scale, options.steps, options.scheduler
            )),
            e => e,
        })?;

        // Decode.
        if options.decode {
            phase(Phase::Decode);
        }
        let image = match (&self.preview_decoder, options.decode) {
            (_, false) => None,
            (Some(_), true) if options.finish_with_preview_decoder => {
                Some(self.preview_rgb(&latents)?)
            }
            (_, true) => {
                let decoded = self
                    .vae
                    .decode(&latents.to_dtype(self.dtype).ctx("VAE decode")?)
                    .ctx("VAE decode")?;
                Some(preview::image_to_rgb8(&decoded).ctx("VAE decode")?)
            }
        };
        Ok(Generated {
            latents,
            image,
            seed: options.seed,
            warnings,
        })
    }

    /// Latents (a step's predicted x0, or a draft's final latents) decoded to RGB by the preview
    /// decoder (TAESD); an error when none is loaded.
    pub fn preview_rgb(&self, latents: &Tensor) -> Result<image::RgbImage, PipelineError> {
        let Some(taesd) = &self.preview_decoder else {
            return Err(PipelineError::Invalid(
                "no preview decoder is loaded".into(),
            ));
        };
        let latents = latents.to_dtype(self.dtype).ctx("TAESD decode")?;
        let decoded = taesd
            .decode_pipeline_latents(&latents)
            .ctx("TAESD decode")?;
        preview::image_to_rgb8(&decoded).ctx("TAESD decode")
    }

    /// The prompt's embeddings, after the negative prompt's when guided.
    fn prompt_context(
        &self,
        layout: &Layout,
        guided: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Tensor, PipelineError> {
        let cond = self.encode_prompt(&layout.prompt, "prompt", warnings)?;
        if !guided {
            return Ok(cond);
        }
        let uncond = self.encode_prompt(&layout.negative_prompt, "negative prompt", warnings)?;
        Tensor::cat(&[&uncond, &cond], 0).ctx("prompt embeddings")
    }

    /// The starting latents in f32 (before the scheduler's `init_noise_sigma`): the given ones, or
    /// the seed's noise (pooled from the full canvas's for a draft).
    fn initial_latents(
        &self,
        layout: &Layout,
        options: &GenerateOptions,
        inputs: &GenerateInputs,
        noise: &NoiseSource,
        (h, w): (usize, usize),
    ) -> Result<Tensor, PipelineError> {
        let shape = (1, self.latent_channels(), h, w);
        let Some(t) = &inputs.init_latents else {
            let f = self.vae_scale_factor();
            let full_grid = options
                .noise_canvas
                .map(|(fw, fh)| (fh as usize / f, fw as usize / f));
            return noise.initial(shape, full_grid, &self.device);
        };
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
        ensure_finite(t, "the initial latents")?;
        t.to_device(&self.device)
            .ctx("initial latents")?
            .to_dtype(DType::F32)
            .ctx("initial latents")
    }

    /// One UNet evaluation's noise prediction at timestep `t`, guided when `cond` says so.
    fn predict_noise(
        &self,
        latents: &Tensor,
        t: f64,
        gate: f32,
        cond: &Conditioning,
        scheduler: &dyn Scheduler,
        ctx: &str,
    ) -> Result<Tensor, PipelineError> {
        let input = if cond.guided {
            Tensor::cat(&[latents, latents], 0).ctx(ctx)?
        } else {
            latents.clone()
        };
        let input = scheduler.scale_model_input(input, t).ctx(ctx)?;
        // After a spatial-map model's switch to SD's own first conv, the map is no longer
        // concatenated.
        let input = match cond.extra_channels {
            Some(extra) if cond.first_conv.is_none() => {
                Tensor::cat(&[&input, extra], 1).ctx(ctx)?
            }
            _ => input,
        };
        let input = input.to_dtype(self.dtype).ctx(ctx)?;
        let grounding = cond.objs.as_ref().map(|o| Grounding {
            objs: o.clone(),
            gate_scale: gate as f64,
        });
        let noise = self
            .unet
            .forward_with_first_conv(
                &input,
                t,
                &cond.context,
                grounding.as_ref(),
                cond.first_conv,
            )
            .ctx(ctx)?;
        let noise = noise.to_dtype(DType::F32).ctx(ctx)?;
        if !cond.guided {
            return Ok(noise);
        }
        let uncond = noise.get(0).ctx(ctx)?.unsqueeze(0).ctx(ctx)?;
        let text = noise.get(1).ctx(ctx)?.unsqueeze(0).ctx(ctx)?;
        (&uncond + ((&text - &uncond).ctx(ctx)? * cond.guidance_scale).ctx(ctx)?).ctx(ctx)
    }
}
