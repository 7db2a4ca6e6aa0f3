//! Generation: the worker that owns the model, the model's state, the running job and its
//! previews, the finished pictures of the history strip, what the canvas shows under the layout,
//! and draft mode's state. Worker events are drained once a frame without waiting.

use super::draft::DraftState;
use super::preview::{PreviewRenderer, PreviewTexture};
use super::{NoticeLevel, StudioApp};
use crate::layout::{Layout, ModelLimits};
use crate::pipeline::GenerateOptions;
use crate::weights::CatalogueEntry;
use crate::worker::{Event, JobId, LoadId, LoadRequest, ModelInfo, Worker};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The state of the model.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelState {
    None,
    Loading {
        id: LoadId,
        spec: String,
        message: String,
        /// The share done, when the worker knows it (downloads).
        fraction: Option<f32>,
        since: Instant,
    },
    Ready(ModelInfo),
    Failed {
        spec: String,
        message: String,
    },
}

/// What Generate sent to the worker (kept for the UI and for tests).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    pub job: JobId,
    pub layout: Layout,
    pub options: GenerateOptions,
    /// A draft (fewer steps, maybe smaller) rather than a full render.
    pub draft: bool,
}

/// Progress of the running job.
#[derive(Debug, Clone)]
pub struct RunState {
    pub job: JobId,
    pub started: Instant,
    pub total: usize,
    /// Steps finished (0-based index of the last one + 1).
    pub done: usize,
    pub last_elapsed: Duration,
    /// Time from Generate to the first preview.
    pub first_preview: Option<Duration>,
    pub cancelling: bool,
    /// A draft (see [`draft`]).
    pub draft: bool,
    /// What the job is busy with, and since when (the progress line says it).
    pub phase: Option<(crate::pipeline::Phase, Instant)>,
}

/// A finished picture in the history strip.
pub struct HistoryItem {
    pub job: JobId,
    pub layout: Layout,
    pub seed: u64,
    pub image: Arc<image::RgbImage>,
    pub texture: egui::TextureHandle,
    pub elapsed: Duration,
}

/// What the canvas shows under the boxes.
pub enum CanvasImage {
    Preview {
        texture: PreviewTexture,
        step: usize,
        total: usize,
        /// The steps of a draft.
        draft: bool,
    },
    Result {
        texture: egui::TextureHandle,
        image: Arc<image::RgbImage>,
        layout: Layout,
    },
    /// A finished draft, drawn scaled to the canvas and labelled "draft" (never in the history).
    Draft {
        texture: egui::TextureHandle,
        image: Arc<image::RgbImage>,
        /// What was rendered (the draft's size and steps).
        layout: Layout,
        /// The document layout it was drafted from (to tell when it is out of date).
        source: Layout,
    },
}

/// Everything about generating that outlives a frame (see the module docs).
pub(crate) struct Generation {
    pub(crate) worker: Worker,
    /// Every worker event seen, checked for order (soak tests).
    #[cfg(feature = "testing")]
    pub(crate) event_order: crate::worker::EventOrder,
    pub(crate) model: ModelState,
    pub(crate) run: Option<RunState>,
    pub(crate) last_request: Option<GenerationRequest>,
    pub(crate) last_seed: Option<u64>,
    pub(crate) previews: PreviewRenderer,
    pub(crate) previews_received: usize,
    /// The history strip: finished full renders, newest first.
    pub(crate) history_items: Vec<HistoryItem>,
    /// What the canvas shows under the layout.
    pub(crate) canvas_image: Option<CanvasImage>,
    pub(crate) draft: DraftState,
    /// The catalogue's text-box models, and the one chosen in the model panel.
    pub(crate) catalogue: Vec<CatalogueEntry>,
    pub(crate) catalogue_choice: usize,
}

impl Generation {
    /// `render_state`: the window's wgpu device, which previews use when there is one.
    pub(crate) fn new(
        worker: Worker,
        render_state: Option<&eframe::egui_wgpu::RenderState>,
    ) -> Self {
        Self {
            worker,
            model: ModelState::None,
            run: None,
            last_request: None,
            last_seed: None,
            previews: PreviewRenderer::new(render_state),
            previews_received: 0,
            history_items: Vec::new(),
            #[cfg(feature = "testing")]
            event_order: crate::worker::EventOrder::default(),
            canvas_image: None,
            draft: DraftState::default(),
            catalogue_choice: 0,
            catalogue: crate::weights::catalogue::entries()
                .into_iter()
                .filter(|e| e.modality == "text-box")
                .collect(),
        }
    }

    pub(crate) fn load(&mut self, request: LoadRequest) {
        let spec = request.spec.clone();
        let id = self.worker.load_model(request);
        self.model = ModelState::Loading {
            id,
            spec,
            message: "Starting".into(),
            fraction: None,
            since: Instant::now(),
        };
    }

    pub(crate) fn cancel_load(&mut self) {
        if let ModelState::Loading { spec, .. } = &self.model {
            let spec = spec.clone();
            self.worker.cancel_load();
            self.model = ModelState::Failed {
                spec,
                message: "cancelled".into(),
            };
        }
    }

    pub(crate) fn model_limits(&self) -> ModelLimits {
        match &self.model {
            ModelState::Ready(info) => info.limits.clone(),
            _ => ModelLimits::permissive(),
        }
    }

    /// Sends a job to the worker (which cancels the running one) and records it; relative
    /// picture paths are read from `base`.
    pub(crate) fn start_job(
        &mut self,
        layout: Layout,
        options: GenerateOptions,
        draft: bool,
        base: Option<PathBuf>,
    ) -> JobId {
        let job = self
            .worker
            .generate_in(layout.clone(), options.clone(), base);
        self.last_seed = Some(options.seed);
        self.run = Some(RunState {
            job,
            started: Instant::now(),
            total: options.steps,
            done: 0,
            last_elapsed: Duration::ZERO,
            first_preview: None,
            cancelling: false,
            draft,
            phase: None,
        });
        self.last_request = Some(GenerationRequest {
            job,
            layout,
            options,
            draft,
        });
        job
    }

    pub(crate) fn cancel(&mut self) {
        if let Some(run) = self.run.as_mut() {
            run.cancelling = true;
            self.worker.cancel(run.job);
        }
    }

    pub(crate) fn current_job(&self) -> Option<JobId> {
        self.run.as_ref().map(|r| r.job)
    }
}

impl StudioApp {
    /// A load request for `spec` with the device, dtype and image tower of the settings.
    pub(super) fn load_request(&self, spec: &str) -> LoadRequest {
        let mut r = LoadRequest::auto(spec);
        if self.files.settings.device != "auto" && !self.files.settings.device.is_empty() {
            r.device = self.files.settings.device.clone();
        }
        if self.files.settings.dtype != "auto" && !self.files.settings.dtype.is_empty() {
            r.dtype = self.files.settings.dtype.clone();
        }
        let tower = self.files.settings.image_encoder.trim();
        r.image_encoder = (!tower.is_empty()).then(|| tower.to_string());
        let decoder = self.files.settings.preview_decoder.trim();
        r.preview_decoder = (!decoder.is_empty()).then(|| decoder.to_string());
        r
    }

    /// Starts loading a model on the worker; the window keeps working meanwhile.
    pub fn load_model(&mut self, request: LoadRequest) {
        self.generation.load(request);
    }

    pub fn cancel_model_load(&mut self) {
        self.generation.cancel_load();
    }

    /// What the loaded model takes ([`ModelLimits::permissive`] before one is loaded).
    pub fn model_limits(&self) -> ModelLimits {
        self.generation.model_limits()
    }

    // ----- generation -----

    /// Why Generate is not possible now, if it is not.
    pub fn generate_blocker(&self) -> Option<String> {
        match &self.generation.model {
            ModelState::Ready(_) => {}
            ModelState::Loading { .. } => return Some("the model is still loading".into()),
            _ => return Some("no model is loaded".into()),
        }
        if self.doc.layout().inpaint.is_none() && self.model_limits().supports_inpainting {
            return Some(
                "this is a grounded-inpainting model: open a picture to inpaint first".into(),
            );
        }
        if !self.doc.issues().is_empty() {
            return Some(format!(
                "the layout has {} problem(s) to fix first",
                self.doc.issues().len()
            ));
        }
        None
    }

    /// Builds the request Generate would send now (the layout with its seed fixed).
    pub fn build_request(&self) -> Option<(Layout, GenerateOptions)> {
        let ModelState::Ready(info) = &self.generation.model else {
            return None;
        };
        let mut layout = self.doc.layout().clone();
        // "New each run" draws a seed here so that the result records (and can reproduce) it.
        let seed = layout
            .sampling
            .seed
            .unwrap_or_else(|| u64::from(rand::random::<u32>()));
        layout.sampling.seed = Some(seed);
        let mut options = GenerateOptions::from_layout(&layout, info.default_scheduler);
        options.decode = true;
        Some((layout, options))
    }

    /// Presses Generate ("Render full" in draft mode): cancels a running job and starts a full
    /// render with the user's settings. Returns its id. In draft mode with the seed "new each run",
    /// the drafts' seed is used, so that the full render is the picture that was drafted.
    pub fn generate(&mut self) -> Option<JobId> {
        if let Some(reason) = self.generate_blocker() {
            self.notify(NoticeLevel::Warning, format!("Cannot generate: {reason}."));
            return None;
        }
        let (mut layout, mut options) = self.build_request()?;
        if self.files.settings.draft.enabled && self.doc.layout().sampling.seed.is_none() {
            if let Some(seed) = self.generation.draft.seed {
                layout.sampling.seed = Some(seed);
                options.seed = seed;
            }
        }
        let job = self.start_job(layout, options, false);
        self.status = format!("Generating {job}…");
        Some(job)
    }

    /// Sends a job to the worker (which cancels the running one) and records it.
    pub(super) fn start_job(
        &mut self,
        layout: Layout,
        options: GenerateOptions,
        draft: bool,
    ) -> JobId {
        let base = self.base_dir();
        self.generation.start_job(layout, options, draft, base)
    }

    /// Presses Cancel.
    pub fn cancel_generation(&mut self) {
        self.generation.cancel();
    }

    /// Drains the worker's events without waiting.
    pub(super) fn drain_worker(&mut self, ctx: &egui::Context) {
        // Bound the work per frame; a burst of steps only needs its newest preview.
        let mut events = Vec::new();
        while let Some(e) = self.generation.worker.try_recv() {
            #[cfg(feature = "testing")]
            self.generation.event_order.see(&e);
            events.push(e);
            if events.len() > 256 {
                break;
            }
        }
        // Keep only the newest Step of the current job for rendering.
        let newest_step = events.iter().rposition(
            |e| matches!(e, Event::Step { job, .. } if Some(*job) == self.generation.current_job()),
        );
        for (i, event) in events.into_iter().enumerate() {
            self.handle_event(ctx, event, Some(i) == newest_step);
        }
    }

    fn handle_event(&mut self, ctx: &egui::Context, event: Event, render_preview: bool) {
        if let Some(job) = event.job() {
            if Some(job) != self.generation.current_job() {
                return; // stale
            }
        }
        match event {
            Event::LoadProgress {
                id,
                message,
                fraction,
            } => {
                if let ModelState::Loading {
                    id: current,
                    message: m,
                    fraction: f,
                    ..
                } = &mut self.generation.model
                {
                    if *current == id {
                        *m = message;
                        *f = fraction;
                    }
                }
            }
            Event::ModelReady { id, info } => {
                if matches!(&self.generation.model, ModelState::Loading { id: current, .. } if *current == id)
                {
                    self.status = format!(
                        "Model ready: {} ({}, {:.1?})",
                        info.name, info.device, info.load_time
                    );
                    if let ModelState::Loading { spec, .. } = &self.generation.model {
                        self.files.settings.model = Some(spec.clone());
                    }
                    self.generation.model = ModelState::Ready(info);
                    // A new model: draft mode drafts with it once the layout is still.
                    self.redraft();
                }
            }
            Event::LoadFailed { id, message } => {
                if let ModelState::Loading {
                    id: current, spec, ..
                } = &self.generation.model
                {
                    if *current == id {
                        let spec = spec.clone();
                        self.notify(
                            NoticeLevel::Error,
                            format!("Could not load the model {spec}: {message}"),
                        );
                        self.generation.model = ModelState::Failed { spec, message };
                    }
                }
            }
            Event::Started { total, .. } => {
                if let Some(run) = self.generation.run.as_mut() {
                    run.total = total;
                }
            }
            Event::Phase { phase, .. } => {
                if let Some(run) = self.generation.run.as_mut() {
                    run.phase = Some((phase, Instant::now()));
                }
            }
            Event::Step {
                step,
                total,
                latents,
                decoded,
                elapsed,
                ..
            } => {
                self.generation.previews_received += 1;
                if let Some(run) = self.generation.run.as_mut() {
                    run.done = step + 1;
                    run.total = total;
                    run.last_elapsed = elapsed;
                    if run.first_preview.is_none() {
                        run.first_preview = Some(run.started.elapsed());
                    }
                }
                if render_preview {
                    let draft = self.generation.run.as_ref().is_some_and(|r| r.draft);
                    // TAESD's decode when the worker has one, else the latent projection.
                    let texture = match &decoded {
                        Some(rgb) => Some(self.generation.previews.show_decoded(ctx, rgb)),
                        None => self.generation.previews.render(ctx, &latents),
                    };
                    if let Some(texture) = texture {
                        self.generation.canvas_image = Some(CanvasImage::Preview {
                            texture,
                            step,
                            total,
                            draft,
                        });
                    }
                }
            }
            Event::Finished {
                job,
                image,
                seed,
                warnings,
                elapsed,
                ..
            } => {
                let draft = self.generation.run.take().is_some_and(|r| r.draft);
                let layout = self
                    .generation
                    .last_request
                    .as_ref()
                    .map(|r| r.layout.clone())
                    .unwrap_or_else(|| self.doc.layout().clone());
                let color = egui::ColorImage::from_rgb(
                    [image.width() as usize, image.height() as usize],
                    image.as_raw(),
                );
                if draft {
                    // Drafts are shown, never kept: the history holds finished renders only.
                    let texture =
                        ctx.load_texture("glichen-draft", color, egui::TextureOptions::LINEAR);
                    let source = match self.generation.draft.source.take() {
                        Some((j, source)) if j == job => source,
                        _ => self.doc.layout().clone(),
                    };
                    self.status = format!(
                        "Draft ready: {} × {} px, {} steps, {elapsed:.1?} (seed {seed}); Render full for the final picture",
                        layout.width,
                        layout.height,
                        layout.sampling.resolve().steps
                    );
                    self.generation.canvas_image = Some(CanvasImage::Draft {
                        texture,
                        image,
                        layout,
                        source,
                    });
                    for w in warnings {
                        self.notify(NoticeLevel::Warning, w);
                    }
                    return;
                }
                let texture = ctx.load_texture(
                    format!("glichen-result-{}", job.0),
                    color,
                    egui::TextureOptions::LINEAR,
                );
                self.generation.history_items.insert(
                    0,
                    HistoryItem {
                        job,
                        layout: layout.clone(),
                        seed,
                        image: image.clone(),
                        texture: texture.clone(),
                        elapsed,
                    },
                );
                self.generation.history_items.truncate(48);
                self.generation.canvas_image = Some(CanvasImage::Result {
                    texture,
                    image,
                    layout,
                });
                self.status = format!("Finished {job} in {elapsed:.1?} (seed {seed})");
                for w in warnings {
                    self.notify(NoticeLevel::Warning, w);
                }
            }
            Event::Cancelled { job } => {
                let at = self
                    .generation
                    .run
                    .as_ref()
                    .map(|r| (r.done, r.total, r.draft));
                self.generation.run = None;
                self.status = match at {
                    Some((done, total, true)) => {
                        format!("Draft stopped after {done} of {total} steps")
                    }
                    Some((done, total, false)) => {
                        format!("Cancelled {job} after {done} of {total} steps")
                    }
                    None => format!("Cancelled {job}"),
                };
            }
            Event::Failed { job, message } => {
                self.generation.run = None;
                self.notify(
                    NoticeLevel::Error,
                    format!("Generation {job} failed: {message}"),
                );
            }
            Event::ModelUnloaded { message } => {
                let spec = match &self.generation.model {
                    ModelState::Ready(info) => info.name.clone(),
                    _ => "the model".to_string(),
                };
                self.notify(
                    NoticeLevel::Error,
                    format!("{spec} was unloaded: {message}. Load it again to generate."),
                );
                self.generation.model = ModelState::Failed {
                    spec,
                    message: format!("unloaded: {message}"),
                };
            }
            Event::WorkerRestarted { message } => {
                self.notify(
                    NoticeLevel::Error,
                    format!("The model worker crashed ({message}) and was restarted; your layout is safe."),
                );
            }
        }
    }
}
