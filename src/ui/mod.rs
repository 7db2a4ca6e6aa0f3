//! The studio: an egui window (eframe, wgpu renderer) to draw a layout, generate on the background
//! [`crate::worker::Worker`] and watch every denoising step.
//!
//! Nothing else in the library depends on this module. The UI thread never waits on model work or
//! on files: the worker's events are drained with `try_recv`, dialogs and file reads/writes run on
//! threads behind `poll-promise`, autosaves on their own thread.
//!
//! Submodules: `canvas` (drawing and editing boxes, image boxes and people, the inpainting
//! background, the `screen_from_layout`/`layout_from_screen` transforms), `edit` (adding pictures,
//! people, the style image and the inpainting picture; joints), `panels` (tools, inspector, prompt,
//! sampling, progress, history strip, model), `pictures` (reference pictures decoded off the UI
//! thread into textures), `preview` (latents → RGB through `shaders/latent_preview.wgsl`), `files`
//! (documents, saving with relative or embedded pictures, settings, autosave), `draft` (draft mode:
//! debounced quick renders while editing, "Render full").

pub mod canvas;
pub mod draft;
mod edit;
pub mod files;
mod panels;
pub mod pictures;

pub mod preview;

use crate::layout::{History, Layout, ModelLimits, ValidationErrors};
use crate::pipeline::GenerateOptions;
use crate::worker::{Event, JobId, LoadId, LoadRequest, ModelInfo, Worker};
use canvas::{CanvasDrag, CanvasView};
pub use edit::{default_person, PicturePurpose, COCO_SKELETON};
use files::{Autosaver, LoadedDoc, Settings};
use poll_promise::Promise;
use preview::{PreviewRenderer, PreviewTexture};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Opens the studio window (what `glichen` with no subcommand runs). Blocks until it is closed.
pub fn run_studio() -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Glichen")
            .with_inner_size([1400.0, 900.0])
            .with_min_inner_size([900.0, 600.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    eframe::run_native(
        "Glichen",
        options,
        Box::new(|cc| Ok(Box::new(StudioApp::new(cc, StudioOptions::default())))),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the studio window: {e}"))
}

/// Who answers file dialogs: the native ones (rfd), or a script (tests).
#[derive(Clone, Default)]
pub enum Dialogs {
    #[default]
    Native,
    /// Each dialog takes the next answer (`None` = the user cancelled).
    Scripted(Arc<Mutex<VecDeque<Option<PathBuf>>>>),
}

impl Dialogs {
    pub fn scripted() -> (Self, Arc<Mutex<VecDeque<Option<PathBuf>>>>) {
        let q = Arc::new(Mutex::new(VecDeque::new()));
        (Dialogs::Scripted(q.clone()), q)
    }
}

/// What a dialog asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum DialogKind {
    OpenDocument,
    SaveLayout {
        suggested: String,
    },
    ExportPng {
        suggested: String,
    },
    ModelFolder,
    ModelFile,
    /// A PNG, JPEG or WebP picture (image box, style image, picture to inpaint).
    OpenPicture {
        title: String,
    },
}

fn run_dialog(dialogs: &Dialogs, kind: &DialogKind) -> Option<PathBuf> {
    match dialogs {
        Dialogs::Scripted(q) => q
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .flatten(),
        Dialogs::Native => match kind {
            DialogKind::OpenDocument => rfd::FileDialog::new()
                .set_title("Open a layout")
                .add_filter("Layouts and Glichen PNGs", &["json", "png"])
                .add_filter("All files", &["*"])
                .pick_file(),
            DialogKind::SaveLayout { suggested } => rfd::FileDialog::new()
                .set_title("Save the layout")
                .add_filter("Layout JSON", &["json"])
                .set_file_name(suggested)
                .save_file(),
            DialogKind::ExportPng { suggested } => rfd::FileDialog::new()
                .set_title("Export the image")
                .add_filter("PNG", &["png"])
                .set_file_name(suggested)
                .save_file(),
            DialogKind::ModelFolder => rfd::FileDialog::new()
                .set_title("Choose a diffusers GLIGEN model folder")
                .pick_folder(),
            DialogKind::ModelFile => rfd::FileDialog::new()
                .set_title("Choose an original GLIGEN checkpoint")
                .add_filter("Checkpoints", &["bin", "pth", "ckpt", "safetensors"])
                .pick_file(),
            DialogKind::OpenPicture { title } => rfd::FileDialog::new()
                .set_title(title)
                .add_filter("Pictures (PNG, JPEG, WebP)", &pictures::PICTURE_EXTENSIONS)
                .pick_file(),
        },
    }
}

/// How the studio starts.
#[derive(Clone)]
pub struct StudioOptions {
    /// Where autosave and settings live; `None` = the platform data folder (`dirs::data_dir()`).
    pub data_dir: Option<PathBuf>,
    /// Restore the autosaved layout and settings, and autosave changes.
    pub autosave: bool,
    pub dialogs: Dialogs,
    /// A model to load at start (instead of the remembered one).
    pub model: Option<LoadRequest>,
    /// Load the model remembered in the settings at start.
    pub load_remembered_model: bool,
}

impl Default for StudioOptions {
    fn default() -> Self {
        Self {
            data_dir: files::default_data_dir(),
            autosave: true,
            dialogs: Dialogs::Native,
            model: None,
            load_remembered_model: true,
        }
    }
}

impl StudioOptions {
    /// For tests: a private data folder, scripted dialogs, no remembered model.
    pub fn for_tests(data_dir: impl Into<PathBuf>, dialogs: Dialogs) -> Self {
        Self {
            data_dir: Some(data_dir.into()),
            autosave: true,
            dialogs,
            model: None,
            load_remembered_model: false,
        }
    }
}

/// Message shown in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub level: NoticeLevel,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeLevel {
    Info,
    Warning,
    Error,
}

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

/// Statistics of the app's own frame times (logic + ui).
#[derive(Debug, Clone, Default)]
pub struct FrameStats {
    pub samples: VecDeque<Duration>,
}

impl FrameStats {
    const KEEP: usize = 2000;
    fn push(&mut self, d: Duration) {
        if self.samples.len() == Self::KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back(d);
    }
    /// The `q` quantile (0..=1) of the kept samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.samples.is_empty() {
            return None;
        }
        let mut v: Vec<Duration> = self.samples.iter().copied().collect();
        v.sort();
        let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        Some(v[i])
    }
    pub fn clear(&mut self) {
        self.samples.clear();
    }
}

/// Results of background file work.
enum FileOutcome {
    Opened(Result<Box<LoadedDoc>, String>, Option<PathBuf>),
    Saved(Result<files::SaveReport, String>),
    Exported(Result<PathBuf, String>),
    ModelPicked(Option<PathBuf>),
    /// A picture chosen or dropped, checked (not yet decoded for display).
    Picture(PicturePurpose, Result<edit::PickedPicture, String>),
    Cancelled,
}

/// Drawing tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// Drag to draw a box (drag inside the selected box moves it).
    Draw,
    /// Click to select, drag to move; drag on empty canvas does nothing.
    Select,
    /// Drag to pan the view.
    Pan,
    /// Click to place a person (17 COCO keypoints); drag a joint or the body to pose and move.
    Person,
}

/// What the canvas showed under the layout in the last frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CanvasBackground {
    #[default]
    Blank,
    Preview,
    Result,
    /// A finished draft.
    Draft,
    /// The picture to inpaint (centre-cropped to the canvas).
    Inpaint,
}

/// The studio app.
pub struct StudioApp {
    // The document.
    layout: Layout,
    history: History,
    selection: Option<usize>,
    /// The layout at the start of this frame, and the key of a widget edit made during it.
    frame_start: Layout,
    pending_edit: Option<String>,
    issues: ValidationErrors,

    // Canvas.
    tool: Tool,
    view: CanvasView,
    drag: Option<CanvasDrag>,
    focus_phrase: bool,
    text_focus_last_frame: bool,
    canvas_image: Option<CanvasImage>,
    last_canvas_rect: Option<egui::Rect>,
    last_background: CanvasBackground,
    /// The joint under the pointer (entity, joint), for its name label.
    hovered_joint: Option<(usize, usize)>,
    pictures: pictures::PictureCache,

    // Generation.
    worker: Worker,
    model: ModelState,
    run: Option<RunState>,
    last_request: Option<GenerationRequest>,
    last_seed: Option<u64>,
    previews: PreviewRenderer,
    previews_received: usize,
    history_items: Vec<HistoryItem>,
    draft: draft::DraftState,
    catalogue_choice: usize,
    catalogue: Vec<crate::weights::CatalogueEntry>,

    // Files.
    settings: Settings,
    saved_settings: Settings,
    data_dir: Option<PathBuf>,
    autosave_enabled: bool,
    autosaver: Autosaver,
    autosaved_layout: Option<Layout>,
    last_autosave: Instant,
    saved_layout: Option<Layout>,
    /// "Embed pictures in the file" as it was at the last save or open.
    saved_embed: bool,
    dialogs: Dialogs,
    file_tasks: Vec<Promise<FileOutcome>>,
    /// The picture of an opened Glichen PNG, waiting for its texture.
    pending_image: Option<(Arc<image::RgbImage>, egui::ColorImage)>,
    /// The file the layout was last opened or imported from.
    opened_from: Option<PathBuf>,
    title: String,

    notices: Vec<Notice>,
    status: String,
    frame_stats: FrameStats,
    frame_began: Option<Instant>,
    show_frame_stats: bool,
}

impl StudioApp {
    /// The app as eframe creates it (uses the window's wgpu device for previews when there is one).
    pub fn new(cc: &eframe::CreationContext<'_>, options: StudioOptions) -> Self {
        Self::with_context(&cc.egui_ctx, cc.wgpu_render_state.as_ref(), options)
    }

    pub fn with_context(
        ctx: &egui::Context,
        render_state: Option<&eframe::egui_wgpu::RenderState>,
        options: StudioOptions,
    ) -> Self {
        let repaint_ctx = ctx.clone();
        let worker = Worker::spawn(Box::new(move || repaint_ctx.request_repaint()));
        let mut notices = Vec::new();
        let data_dir = options.data_dir.clone();
        let mut settings = Settings::default();
        let mut layout = Layout::default();
        let mut autosaved_layout = None;
        if options.autosave {
            if let Some(dir) = &data_dir {
                let settings_path = dir.join(files::SETTINGS_FILE);
                if settings_path.is_file() {
                    match std::fs::read_to_string(&settings_path)
                        .map_err(|e| e.to_string())
                        .and_then(|t| {
                            serde_json::from_str::<Settings>(&t).map_err(|e| e.to_string())
                        }) {
                        Ok(s) => settings = s,
                        Err(e) => notices.push(Notice {
                            level: NoticeLevel::Warning,
                            text: format!("The settings could not be read ({e}); using defaults."),
                        }),
                    }
                }
                let autosave_path = dir.join(files::AUTOSAVE_FILE);
                if autosave_path.is_file() {
                    match Layout::load(&autosave_path) {
                        Ok(l) => {
                            layout = l.clone();
                            autosaved_layout = Some(l);
                        }
                        Err(e) => {
                            let kept = dir.join("autosave.json.broken");
                            let _ = std::fs::rename(&autosave_path, &kept);
                            notices.push(Notice {
                                level: NoticeLevel::Warning,
                                text: format!("The autosaved layout could not be read ({e}); starting blank. It was kept as {}.", kept.display()),
                            });
                        }
                    }
                }
            }
        }
        let mut app = Self {
            frame_start: layout.clone(),
            layout,
            history: History::new(),
            selection: None,
            pending_edit: None,
            issues: ValidationErrors::default(),
            tool: Tool::Draw,
            view: CanvasView::default(),
            drag: None,
            focus_phrase: false,
            text_focus_last_frame: false,
            canvas_image: None,
            last_canvas_rect: None,
            last_background: CanvasBackground::Blank,
            hovered_joint: None,
            pictures: pictures::PictureCache::default(),
            worker,
            model: ModelState::None,
            run: None,
            last_request: None,
            last_seed: None,
            previews: PreviewRenderer::new(render_state),
            previews_received: 0,
            history_items: Vec::new(),
            draft: draft::DraftState::default(),
            catalogue_choice: 0,
            catalogue: crate::weights::catalogue::entries()
                .into_iter()
                .filter(|e| e.modality == "text-box")
                .collect(),
            saved_settings: settings.clone(),
            settings,
            data_dir,
            autosave_enabled: options.autosave,
            autosaver: Autosaver::spawn(),
            autosaved_layout,
            last_autosave: Instant::now(),
            saved_layout: None,
            saved_embed: false,
            dialogs: options.dialogs.clone(),
            file_tasks: Vec::new(),
            pending_image: None,
            opened_from: None,
            title: String::new(),
            notices,
            status: String::new(),
            frame_stats: FrameStats::default(),
            frame_began: None,
            show_frame_stats: false,
        };
        app.saved_embed = app.settings.embed_pictures;
        if let Some(dir) = app
            .settings
            .document_path
            .as_deref()
            .and_then(Layout::base_dir)
        {
            // (Autosaves keep absolute picture paths; older ones were relative to the document.)
            let dir = dir.to_path_buf();
            app.layout.absolutize_image_paths(&dir);
            app.frame_start = app.layout.clone();
        }
        if app.settings.document_path.is_some() {
            // The autosave is newer than the file; Save writes it back there.
            app.saved_layout = None;
        }
        let request = options.model.clone().or_else(|| {
            if options.load_remembered_model {
                app.settings
                    .model
                    .clone()
                    .map(|spec| app.load_request(&spec))
            } else {
                None
            }
        });
        if let Some(request) = request {
            app.load_model(request);
        }
        app
    }

    // ----- accessors (tests, tools) -----

    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn layout_mut(&mut self) -> &mut Layout {
        &mut self.layout
    }
    pub fn selection(&self) -> Option<usize> {
        self.selection
    }
    pub fn history(&self) -> &History {
        &self.history
    }
    pub fn model_state(&self) -> &ModelState {
        &self.model
    }
    pub fn run_state(&self) -> Option<&RunState> {
        self.run.as_ref()
    }
    pub fn last_request(&self) -> Option<&GenerationRequest> {
        self.last_request.as_ref()
    }
    pub fn history_items(&self) -> &[HistoryItem] {
        &self.history_items
    }
    pub fn notices(&self) -> &[Notice] {
        &self.notices
    }
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    pub fn previews_received(&self) -> usize {
        self.previews_received
    }
    pub fn preview_renderer(&self) -> &PreviewRenderer {
        &self.previews
    }
    pub fn canvas_image(&self) -> Option<&CanvasImage> {
        self.canvas_image.as_ref()
    }
    pub fn frame_stats(&self) -> &FrameStats {
        &self.frame_stats
    }
    pub fn frame_stats_mut(&mut self) -> &mut FrameStats {
        &mut self.frame_stats
    }
    pub fn worker(&self) -> &Worker {
        &self.worker
    }
    pub fn is_busy_with_files(&self) -> bool {
        !self.file_tasks.is_empty()
    }
    /// Pictures still being decoded for display.
    pub fn pictures_loading(&self) -> usize {
        self.pictures.loading()
    }
    /// Whether the picture `reference` of the layout is decoded and shown.
    pub fn picture_ready(&self, reference: &str) -> bool {
        self.pictures
            .ready(reference, self.base_dir().as_deref())
            .is_some()
    }
    /// What the canvas showed under the layout in the last frame.
    pub fn canvas_background(&self) -> CanvasBackground {
        self.last_background
    }
    pub fn tool(&self) -> Tool {
        self.tool
    }
    pub fn set_tool(&mut self, tool: Tool) {
        if self.tool_blocker(tool).is_none() {
            self.tool = tool;
        }
    }
    pub fn document_path(&self) -> Option<&Path> {
        self.settings.document_path.as_deref()
    }
    /// Waits until every autosave sent so far is on disk.
    pub fn flush_autosave(&self) {
        self.autosaver.flush();
    }

    /// Replaces the layout as one undoable edit.
    pub fn set_layout(&mut self, layout: Layout) {
        if layout != self.layout {
            self.history.push(&self.layout);
            self.layout = layout;
            self.clamp_selection();
        }
    }

    // ----- notices -----

    fn notify(&mut self, level: NoticeLevel, text: impl Into<String>) {
        let text = text.into();
        match level {
            NoticeLevel::Info => tracing::info!("{text}"),
            NoticeLevel::Warning => tracing::warn!("{text}"),
            NoticeLevel::Error => tracing::error!("{text}"),
        }
        self.notices.retain(|n| n.text != text);
        self.notices.push(Notice { level, text });
        if self.notices.len() > 5 {
            self.notices.remove(0);
        }
    }

    fn clamp_selection(&mut self) {
        if let Some(i) = self.selection {
            if i >= self.layout.entities.len() {
                self.selection = None;
            }
        }
    }

    // ----- model -----

    fn load_request(&self, spec: &str) -> LoadRequest {
        let mut r = LoadRequest::auto(spec);
        if self.settings.device != "auto" && !self.settings.device.is_empty() {
            r.device = self.settings.device.clone();
        }
        if self.settings.dtype != "auto" && !self.settings.dtype.is_empty() {
            r.dtype = self.settings.dtype.clone();
        }
        let tower = self.settings.image_encoder.trim();
        r.image_encoder = (!tower.is_empty()).then(|| tower.to_string());
        r
    }

    /// Starts loading a model on the worker; the window keeps working meanwhile.
    pub fn load_model(&mut self, request: LoadRequest) {
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

    pub fn cancel_model_load(&mut self) {
        if let ModelState::Loading { spec, .. } = &self.model {
            let spec = spec.clone();
            self.worker.cancel_load();
            self.model = ModelState::Failed {
                spec,
                message: "cancelled".into(),
            };
        }
    }

    /// What the loaded model takes ([`ModelLimits::permissive`] before one is loaded).
    pub fn model_limits(&self) -> ModelLimits {
        match &self.model {
            ModelState::Ready(info) => info.limits.clone(),
            _ => ModelLimits::permissive(),
        }
    }

    // ----- generation -----

    /// Why Generate is not possible now, if it is not.
    pub fn generate_blocker(&self) -> Option<String> {
        match &self.model {
            ModelState::Ready(_) => {}
            ModelState::Loading { .. } => return Some("the model is still loading".into()),
            _ => return Some("no model is loaded".into()),
        }
        if self.layout.inpaint.is_none() && self.model_limits().supports_inpainting {
            return Some(
                "this is a grounded-inpainting model: open a picture to inpaint first".into(),
            );
        }
        if !self.issues.is_empty() {
            return Some(format!(
                "the layout has {} problem(s) to fix first",
                self.issues.len()
            ));
        }
        None
    }

    /// Builds the request Generate would send now (the layout with its seed fixed).
    pub fn build_request(&self) -> Option<(Layout, GenerateOptions)> {
        let ModelState::Ready(info) = &self.model else {
            return None;
        };
        let mut layout = self.layout.clone();
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
        if self.settings.draft.enabled && self.layout.sampling.seed.is_none() {
            if let Some(seed) = self.draft.seed {
                layout.sampling.seed = Some(seed);
                options.seed = seed;
            }
        }
        let job = self.start_job(layout, options, false);
        self.status = format!("Generating {job}…");
        Some(job)
    }

    /// Sends a job to the worker (which cancels the running one) and records it.
    fn start_job(&mut self, layout: Layout, options: GenerateOptions, draft: bool) -> JobId {
        let job = self
            .worker
            .generate_in(layout.clone(), options.clone(), self.base_dir());
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
        });
        self.last_request = Some(GenerationRequest {
            job,
            layout,
            options,
            draft,
        });
        job
    }

    /// Presses Cancel.
    pub fn cancel_generation(&mut self) {
        if let Some(run) = self.run.as_mut() {
            run.cancelling = true;
            self.worker.cancel(run.job);
        }
    }

    fn current_job(&self) -> Option<JobId> {
        self.run.as_ref().map(|r| r.job)
    }

    /// Drains the worker's events without waiting.
    fn drain_worker(&mut self, ctx: &egui::Context) {
        // Bound the work per frame; a burst of steps only needs its newest preview.
        let mut events = Vec::new();
        while let Some(e) = self.worker.try_recv() {
            events.push(e);
            if events.len() > 256 {
                break;
            }
        }
        // Keep only the newest Step of the current job for rendering.
        let newest_step = events.iter().rposition(
            |e| matches!(e, Event::Step { job, .. } if Some(*job) == self.current_job()),
        );
        for (i, event) in events.into_iter().enumerate() {
            self.handle_event(ctx, event, Some(i) == newest_step);
        }
    }

    fn handle_event(&mut self, ctx: &egui::Context, event: Event, render_preview: bool) {
        if let Some(job) = event.job() {
            if Some(job) != self.current_job() {
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
                } = &mut self.model
                {
                    if *current == id {
                        *m = message;
                        *f = fraction;
                    }
                }
            }
            Event::ModelReady { id, info } => {
                if matches!(&self.model, ModelState::Loading { id: current, .. } if *current == id)
                {
                    self.status = format!(
                        "Model ready: {} ({}, {:.1?})",
                        info.name, info.device, info.load_time
                    );
                    if let ModelState::Loading { spec, .. } = &self.model {
                        self.settings.model = Some(spec.clone());
                    }
                    self.model = ModelState::Ready(info);
                    // A new model: draft mode drafts with it once the layout is still.
                    self.redraft();
                }
            }
            Event::LoadFailed { id, message } => {
                if let ModelState::Loading {
                    id: current, spec, ..
                } = &self.model
                {
                    if *current == id {
                        let spec = spec.clone();
                        self.notify(
                            NoticeLevel::Error,
                            format!("Could not load the model {spec}: {message}"),
                        );
                        self.model = ModelState::Failed { spec, message };
                    }
                }
            }
            Event::Started { total, .. } => {
                if let Some(run) = self.run.as_mut() {
                    run.total = total;
                }
            }
            Event::Step {
                step,
                total,
                latents,
                elapsed,
                ..
            } => {
                self.previews_received += 1;
                if let Some(run) = self.run.as_mut() {
                    run.done = step + 1;
                    run.total = total;
                    run.last_elapsed = elapsed;
                    if run.first_preview.is_none() {
                        run.first_preview = Some(run.started.elapsed());
                    }
                }
                if render_preview {
                    let draft = self.run.as_ref().is_some_and(|r| r.draft);
                    if let Some(texture) = self.previews.render(ctx, &latents) {
                        self.canvas_image = Some(CanvasImage::Preview {
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
                let draft = self.run.take().is_some_and(|r| r.draft);
                let layout = self
                    .last_request
                    .as_ref()
                    .map(|r| r.layout.clone())
                    .unwrap_or_else(|| self.layout.clone());
                let color = egui::ColorImage::from_rgb(
                    [image.width() as usize, image.height() as usize],
                    image.as_raw(),
                );
                if draft {
                    // Drafts are shown, never kept: the history holds finished renders only.
                    let texture =
                        ctx.load_texture("glichen-draft", color, egui::TextureOptions::LINEAR);
                    let source = match self.draft.source.take() {
                        Some((j, source)) if j == job => source,
                        _ => self.layout.clone(),
                    };
                    self.status = format!(
                        "Draft ready: {} × {} px, {} steps, {elapsed:.1?} (seed {seed}); Render full for the final picture",
                        layout.width,
                        layout.height,
                        layout.sampling.resolve().steps
                    );
                    self.canvas_image = Some(CanvasImage::Draft {
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
                self.history_items.insert(
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
                self.history_items.truncate(48);
                self.canvas_image = Some(CanvasImage::Result {
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
                let at = self.run.as_ref().map(|r| (r.done, r.total, r.draft));
                self.run = None;
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
                self.run = None;
                self.notify(
                    NoticeLevel::Error,
                    format!("Generation {job} failed: {message}"),
                );
            }
            Event::WorkerRestarted { message } => {
                self.notify(
                    NoticeLevel::Error,
                    format!("The model worker crashed ({message}) and was restarted; your layout is safe."),
                );
            }
        }
    }

    // ----- files -----

    fn spawn_file_task(&mut self, name: &str, f: impl FnOnce() -> FileOutcome + Send + 'static) {
        self.file_tasks.push(Promise::spawn_thread(name, f));
    }

    /// Shows the open dialog and opens the chosen document (off the UI thread).
    pub fn open_dialog(&mut self) {
        let dialogs = self.dialogs.clone();
        self.spawn_file_task("glichen-open", move || {
            match run_dialog(&dialogs, &DialogKind::OpenDocument) {
                Some(path) => {
                    FileOutcome::Opened(files::load_document(&path).map(Box::new), Some(path))
                }
                None => FileOutcome::Cancelled,
            }
        });
    }

    /// Opens a file (read off the UI thread).
    pub fn open_path(&mut self, path: PathBuf) {
        self.spawn_file_task("glichen-open", move || {
            FileOutcome::Opened(files::load_document(&path).map(Box::new), Some(path))
        });
    }

    /// Where relative image paths of the layout are read from: the folder of the file it was
    /// opened from (a later Save As elsewhere does not move it), else of its document file.
    /// (Opening a file makes its picture paths absolute, so this matters only for layouts given
    /// with relative paths through the API or restored from an old autosave.)
    fn base_dir(&self) -> Option<PathBuf> {
        self.opened_from
            .as_deref()
            .or(self.settings.document_path.as_deref())
            .and_then(Layout::base_dir)
            .map(Path::to_path_buf)
    }

    fn suggested_name(&self, ext: &str) -> String {
        let stem = self
            .settings
            .document_path
            .as_ref()
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "layout".into());
        format!("{stem}.{ext}")
    }

    /// Save: to the document's file, or through the dialog when it has none.
    pub fn save(&mut self) {
        match self.settings.document_path.clone() {
            Some(path) => self.save_to(path),
            None => self.save_as_dialog(),
        }
    }

    /// Save as: asks where, then saves (pictures relative to the new file, or embedded).
    pub fn save_as_dialog(&mut self) {
        let dialogs = self.dialogs.clone();
        let layout = self.layout.clone();
        let base = self.base_dir();
        let embed = self.settings.embed_pictures;
        let kind = DialogKind::SaveLayout {
            suggested: self.suggested_name("json"),
        };
        self.spawn_file_task("glichen-save", move || match run_dialog(&dialogs, &kind) {
            Some(path) => {
                FileOutcome::Saved(files::save_layout(&layout, base.as_deref(), &path, embed))
            }
            None => FileOutcome::Cancelled,
        });
    }

    /// Saves to `path` (off the UI thread, atomically): picture paths are written relative to its
    /// folder, or the pictures embedded when "Embed pictures in the file" is on.
    pub fn save_to(&mut self, path: PathBuf) {
        let layout = self.layout.clone();
        let base = self.base_dir();
        let embed = self.settings.embed_pictures;
        self.spawn_file_task("glichen-save", move || {
            FileOutcome::Saved(files::save_layout(&layout, base.as_deref(), &path, embed))
        });
    }

    /// Whether Save embeds the pictures ("Embed pictures in the file").
    pub fn set_embed_pictures(&mut self, on: bool) {
        self.settings.embed_pictures = on;
    }

    /// Exports the shown result as a PNG carrying its layout.
    pub fn export_png_dialog(&mut self) {
        let Some(CanvasImage::Result { image, layout, .. }) = &self.canvas_image else {
            self.notify(
                NoticeLevel::Warning,
                "There is no finished image to export yet.",
            );
            return;
        };
        let image = image.clone();
        let mut layout = layout.clone();
        if let Some(base) = self.base_dir() {
            layout.absolutize_image_paths(&base);
        }
        let json = match layout.to_json_pretty() {
            Ok(j) => j,
            Err(e) => {
                self.notify(NoticeLevel::Error, format!("Cannot export: {e}"));
                return;
            }
        };
        let dialogs = self.dialogs.clone();
        let kind = DialogKind::ExportPng {
            suggested: self.suggested_name("png"),
        };
        self.spawn_file_task("glichen-export", move || {
            match run_dialog(&dialogs, &kind) {
                Some(path) => FileOutcome::Exported(
                    // Pictures relative to the PNG's folder, like a saved layout's.
                    Layout::base_dir(&path)
                        .and_then(|dir| {
                            let mut relative = layout.clone();
                            (relative.relativize_image_paths(dir) > 0)
                                .then(|| relative.to_json_pretty().ok())
                                .flatten()
                        })
                        .map_or(Ok(json), Ok)
                        .and_then(|json| crate::layout::png::encode_png_with_layout(&image, &json))
                        .and_then(|bytes| {
                            files::write_atomic(&path, &bytes).map_err(|e| e.to_string())
                        })
                        .map(|_| path),
                ),
                None => FileOutcome::Cancelled,
            }
        });
    }

    pub fn pick_model_dialog(&mut self, folder: bool) {
        let dialogs = self.dialogs.clone();
        let kind = if folder {
            DialogKind::ModelFolder
        } else {
            DialogKind::ModelFile
        };
        self.spawn_file_task("glichen-model-dialog", move || {
            FileOutcome::ModelPicked(run_dialog(&dialogs, &kind))
        });
    }

    /// Starts a blank document (undoable).
    pub fn new_document(&mut self) {
        let blank = Layout {
            width: self.layout.width,
            height: self.layout.height,
            ..Layout::default()
        };
        self.set_layout(blank);
        self.selection = None;
        self.settings.document_path = None;
        self.opened_from = None;
        self.saved_layout = None;
        self.canvas_image = None;
    }

    fn apply_loaded(&mut self, doc: LoadedDoc) {
        let LoadedDoc {
            layout,
            format,
            image,
            save_path,
            source,
        } = doc;
        self.set_layout(layout);
        self.selection = None;
        self.settings.document_path = save_path.clone();
        self.saved_layout = save_path.as_ref().map(|_| self.layout.clone());
        // A layout file whose pictures are all embedded is saved the same way again.
        let refs = self.layout.image_refs();
        if save_path.is_some() && !refs.is_empty() {
            self.settings.embed_pictures = refs.iter().all(|(_, r)| crate::layout::is_data_uri(r));
        }
        self.saved_embed = self.settings.embed_pictures;
        if let Some(path) = &source {
            self.settings.add_recent(path);
        }
        self.opened_from = source.clone();
        if let Some(image) = image {
            let color = egui::ColorImage::from_rgb(
                [image.width() as usize, image.height() as usize],
                image.as_raw(),
            );
            // The texture is created in `poll_files`, which has the context.
            self.pending_image = Some((Arc::new(image), color));
        }
        let name = source
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.status = if format == "layout" {
            format!("Opened {name}")
        } else {
            format!("Imported {name} ({format})")
        };
        if let Err(issues) = self.layout.validate() {
            self.notify(
                NoticeLevel::Warning,
                format!("{name} opened with problems to fix:\n{issues}"),
            );
        }
    }

    fn poll_files(&mut self, ctx: &egui::Context) {
        let mut still = Vec::new();
        for task in std::mem::take(&mut self.file_tasks) {
            match task.try_take() {
                Ok(outcome) => match outcome {
                    FileOutcome::Opened(Ok(doc), _) => self.apply_loaded(*doc),
                    FileOutcome::Opened(Err(e), path) => {
                        let name = path
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "the file".into());
                        self.notify(NoticeLevel::Error, format!("Could not open {name}: {e}"));
                    }
                    FileOutcome::Saved(Ok(report)) => {
                        let path = report.path;
                        self.status = if report.embedded > 0 {
                            format!(
                                "Saved {} with {} picture(s) embedded",
                                path.display(),
                                report.embedded
                            )
                        } else {
                            format!("Saved {}", path.display())
                        };
                        if !report.not_embedded.is_empty() {
                            self.notify(
                                NoticeLevel::Warning,
                                format!(
                                    "Saved {}, but {} picture(s) could not be embedded and are kept as paths in the file:\n{}",
                                    path.display(),
                                    report.not_embedded.len(),
                                    report.not_embedded.join("\n")
                                ),
                            );
                        }
                        self.settings.add_recent(&path);
                        self.settings.document_path = Some(path);
                        self.saved_layout = Some(self.layout.clone());
                        self.saved_embed = self.settings.embed_pictures;
                    }
                    FileOutcome::Saved(Err(e)) => {
                        self.notify(NoticeLevel::Error, format!("Could not save: {e}"))
                    }
                    FileOutcome::Exported(Ok(path)) => {
                        self.status = format!("Exported {}", path.display())
                    }
                    FileOutcome::Exported(Err(e)) => {
                        self.notify(NoticeLevel::Error, format!("Could not export: {e}"))
                    }
                    FileOutcome::ModelPicked(Some(path)) => {
                        let request = self.load_request(&path.display().to_string());
                        self.load_model(request);
                    }
                    FileOutcome::Picture(purpose, Ok(picked)) => {
                        self.apply_picture(purpose, picked)
                    }
                    FileOutcome::Picture(_, Err(e)) => self.notify(
                        NoticeLevel::Error,
                        format!("Could not use the picture: {e}"),
                    ),
                    FileOutcome::ModelPicked(None) | FileOutcome::Cancelled => {}
                },
                Err(task) => still.push(task),
            }
        }
        self.file_tasks.extend(still);
        if let Some((image, color)) = self.pending_image.take() {
            let texture =
                ctx.load_texture("glichen-opened-image", color, egui::TextureOptions::LINEAR);
            self.canvas_image = Some(CanvasImage::Result {
                texture,
                image,
                layout: self.layout.clone(),
            });
        }
        if !self.file_tasks.is_empty() {
            ctx.request_repaint_after(Duration::from_millis(30));
        }
    }

    fn handle_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped = ctx.input(|i| i.raw.dropped_files.clone());
        if dropped.is_empty() {
            return;
        }
        // Where the pointer was when the files were dropped decides what a picture becomes.
        let pointer = ctx.input(|i| i.pointer.latest_pos());
        for (k, file) in dropped.into_iter().enumerate() {
            let path = file.path().to_path_buf();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let ext = path
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            if !path.as_os_str().is_empty() && ext == "json" {
                self.open_path(path);
                continue;
            }
            // Pictures (and Glichen PNGs, which open their layout unless dropped on an image box).
            let purpose = self.drop_purpose(pointer, k);
            let source = if path.as_os_str().is_empty() {
                match file.bytes() {
                    Ok(bytes) => edit::DropSource::Bytes(name, bytes),
                    Err(e) => {
                        self.notify(
                            NoticeLevel::Error,
                            format!("Could not read the dropped file: {e}"),
                        );
                        continue;
                    }
                }
            } else {
                edit::DropSource::Path(path)
            };
            self.spawn_file_task("glichen-drop", move || edit::read_dropped(source, purpose));
        }
    }

    fn autosave(&mut self) {
        if !self.autosave_enabled {
            return;
        }
        let Some(dir) = self.data_dir.clone() else {
            return;
        };
        // Every change is written at once, except the stream of them while a box is dragged: those
        // at most every 250 ms (the end of the drag is written at once again).
        let dragging = self.drag.is_some();
        let throttled = dragging && self.last_autosave.elapsed() < Duration::from_millis(250);
        if self.autosaved_layout.as_ref() != Some(&self.layout) && !throttled {
            self.last_autosave = Instant::now();
            match self.layout.to_json_pretty() {
                Ok(mut json) => {
                    json.push('\n');
                    self.autosaver
                        .write(dir.join(files::AUTOSAVE_FILE), json.into_bytes());
                    self.autosaved_layout = Some(self.layout.clone());
                }
                Err(e) => tracing::warn!("autosave skipped: {e}"),
            }
        }
        if self.settings != self.saved_settings {
            if let Ok(json) = serde_json::to_string_pretty(&self.settings) {
                self.autosaver
                    .write(dir.join(files::SETTINGS_FILE), json.into_bytes());
                self.saved_settings = self.settings.clone();
            }
        }
        if let Some(e) = self.autosaver.try_error() {
            self.notify(NoticeLevel::Error, e);
        }
    }

    fn is_dirty(&self) -> bool {
        self.saved_layout.as_ref() != Some(&self.layout)
            || (self.saved_embed != self.settings.embed_pictures
                && self
                    .layout
                    .image_refs()
                    .iter()
                    .any(|(_, r)| !crate::layout::is_data_uri(r)))
    }

    fn update_title(&mut self, ctx: &egui::Context) {
        let name = self
            .settings
            .document_path
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "untitled".into());
        let title = format!(
            "{}{name} — Glichen",
            if self.is_dirty() { "• " } else { "" }
        );
        if title != self.title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
    }

    // ----- undo -----

    pub fn undo(&mut self) {
        self.drag = None;
        if self.history.undo(&mut self.layout) {
            self.clamp_selection();
            self.status = "Undone".into();
        }
        self.frame_start = self.layout.clone();
    }

    pub fn redo(&mut self) {
        self.drag = None;
        if self.history.redo(&mut self.layout) {
            self.clamp_selection();
            self.status = "Redone".into();
        }
        self.frame_start = self.layout.clone();
    }

    /// Records a widget edit made this frame under `key` (consecutive edits with one key coalesce).
    fn mark_edit(&mut self, key: impl Into<String>) {
        self.pending_edit = Some(key.into());
    }

    fn commit_frame_edits(&mut self) {
        if let Some(key) = self.pending_edit.take() {
            if self.layout != self.frame_start {
                self.history.push_coalesced(&self.frame_start, &key);
            }
        }
    }
}

impl eframe::App for StudioApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.frame_began = Some(Instant::now());
        self.drain_worker(ctx);
        self.poll_files(ctx);
        self.pictures.poll(ctx);
        if self.run.is_some() || matches!(self.model, ModelState::Loading { .. }) {
            // Keep the elapsed-time readout moving without busy repainting.
            ctx.request_repaint_after(Duration::from_millis(250));
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let began = self.frame_began.take().unwrap_or_else(Instant::now);
        // (Not in `logic`: while the window is hidden, `logic` sees the last shown frame's input.)
        self.handle_dropped_files(ui.ctx());
        self.frame_start = self.layout.clone();
        self.sync_tool_with_model();
        self.issues = match self.layout.validate_for(&self.model_limits()) {
            Ok(()) => ValidationErrors::default(),
            Err(e) => e,
        };
        self.shortcuts_ui(ui);
        self.top_bar_ui(ui);
        self.history_strip_ui(ui);
        self.status_bar_ui(ui);
        self.tools_ui(ui);
        self.side_panel_ui(ui);
        egui::CentralPanel::default().show(ui, |ui| {
            self.notices_ui(ui);
            self.canvas_ui(ui);
        });
        self.commit_frame_edits();
        self.clamp_selection();
        self.update_draft(ui.ctx());
        self.autosave();
        self.update_title(ui.ctx());
        self.text_focus_last_frame = ui.ctx().text_edit_focused();
        self.frame_stats.push(began.elapsed());
    }

    fn on_exit(&mut self) {
        self.autosave();
        self.autosaver.flush();
    }
}
