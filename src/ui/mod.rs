//! The studio: an egui window (eframe, wgpu renderer) to draw a layout, generate on the background
//! [`crate::worker::Worker`] and watch every denoising step.
//!
//! Nothing else in the library depends on this module. The UI thread never waits on model work or
//! on files: the worker's events are drained with `try_recv`, dialogs and file reads/writes run on
//! threads behind `poll-promise`, autosaves on their own thread.
//!
//! [`StudioApp`] holds four parts, each with one job: the `Document` (layout, undo history,
//! selection, saved and autosaved snapshots; every change goes through it, one undo step each),
//! the `CanvasState` (tool, view, drag, hover), the `Generation` (worker, model, running job,
//! previews, history strip, draft mode) and the `Files` (settings, autosave, dialogs, background
//! file tasks, decoded pictures).
//!
//! Submodules: `document` (the document and its edits: delete, duplicate, nudge, reorder),
//! `canvas` (hit testing, interaction and painting of boxes, image boxes, people and badges, the
//! `screen_from_layout`/`layout_from_screen` transforms), `edit` (pictures, people and joints, what
//! the model allows), `panels` (keyboard, top bar, tools, history strip, status bar),
//! `generate_panel` (model, Generate, prompt, sampling), `inspector` (entities, the selection, the
//! style and inpainting slots), `generation` (the worker and its events), `files` (documents,
//! saving with relative or embedded pictures, settings, autosave thread, start-up reading),
//! `file_actions` (open, save, export, drops, autosave, title), `dialogs` (native or scripted file
//! dialogs), `pictures` (reference pictures decoded off the UI thread into textures), `preview`
//! (latents → RGB through `shaders/latent_preview.wgsl`), `draft` (draft mode: debounced quick
//! renders while editing, "Render full").

pub mod canvas;
mod dialogs;
mod document;
pub mod draft;
mod edit;
mod file_actions;
pub mod files;
mod generate_panel;
mod generation;
mod inspector;
mod map_slot;
mod panels;
pub mod pictures;
mod sem_paint;

pub mod preview;

use crate::layout::Layout;
use crate::worker::LoadRequest;
use canvas::CanvasState;
use document::Document;
use files::Files;
use generation::Generation;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use canvas::{CanvasBackground, Tool};
pub use dialogs::{DialogKind, Dialogs};
pub use edit::PicturePurpose;
pub use generation::{CanvasImage, GenerationRequest, HistoryItem, ModelState, RunState};

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

#[cfg(feature = "testing")]
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

/// The studio app.
pub struct StudioApp {
    doc: Document,
    canvas: CanvasState,
    generation: Generation,
    files: Files,
    notices: Vec<Notice>,
    /// The spatial map's tools (opacity, Canny source).
    maps: map_slot::MapTools,
    status: String,
    /// A text field had the focus last frame (egui drops it on Escape before the app sees the key).
    text_focus_last_frame: bool,
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
        let worker = crate::worker::Worker::spawn(Box::new(move || repaint_ctx.request_repaint()));
        let (files, autosaved, warnings) = Files::start(
            options.data_dir.clone(),
            options.autosave,
            options.dialogs.clone(),
        );
        let notices = warnings
            .into_iter()
            .map(|text| Notice {
                level: NoticeLevel::Warning,
                text,
            })
            .collect();
        let mut layout = autosaved.clone().unwrap_or_else(|| {
            let blank = Layout::default();
            Layout::studio_blank(blank.width, blank.height)
        });
        if let Some(dir) = files
            .settings
            .document_path
            .as_deref()
            .and_then(Layout::base_dir)
        {
            // (Autosaves keep absolute picture paths; older ones were relative to the document.)
            layout.absolutize_image_paths(dir);
        }
        let mut doc = Document::new(layout, autosaved);
        doc.saved_embed = files.settings.embed_pictures;
        let mut app = Self {
            doc,
            canvas: CanvasState::default(),
            generation: Generation::new(worker, render_state),
            files,
            notices,
            status: String::new(),
            text_focus_last_frame: false,
            frame_stats: FrameStats::default(),
            maps: map_slot::MapTools::default(),
            frame_began: None,
            show_frame_stats: false,
        };
        let request = options.model.clone().or_else(|| {
            if options.load_remembered_model {
                app.files
                    .settings
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
}

/// What tests read and steer; not part of the studio's API.
#[cfg(feature = "testing")]
impl StudioApp {
    pub fn layout(&self) -> &Layout {
        self.doc.layout()
    }
    pub fn layout_mut(&mut self) -> &mut Layout {
        self.doc.live()
    }
    pub fn selection(&self) -> Option<usize> {
        self.doc.selection
    }
    pub fn history(&self) -> &crate::layout::History {
        self.doc.history()
    }
    pub fn model_state(&self) -> &ModelState {
        &self.generation.model
    }
    pub fn run_state(&self) -> Option<&RunState> {
        self.generation.run.as_ref()
    }
    pub fn last_request(&self) -> Option<&GenerationRequest> {
        self.generation.last_request.as_ref()
    }
    pub fn history_items(&self) -> &[HistoryItem] {
        &self.generation.history_items
    }
    pub fn notices(&self) -> &[Notice] {
        &self.notices
    }
    pub fn settings(&self) -> &files::Settings {
        &self.files.settings
    }
    /// Worker events that came out of order, and jobs not yet ended.
    pub fn event_order(&self) -> &crate::worker::EventOrder {
        &self.generation.event_order
    }
    pub fn settings_mut(&mut self) -> &mut files::Settings {
        &mut self.files.settings
    }
    pub fn previews_received(&self) -> usize {
        self.generation.previews_received
    }
    pub fn preview_renderer(&self) -> &preview::PreviewRenderer {
        &self.generation.previews
    }
    pub fn canvas_image(&self) -> Option<&CanvasImage> {
        self.generation.canvas_image.as_ref()
    }
    pub fn frame_stats(&self) -> &FrameStats {
        &self.frame_stats
    }
    pub fn frame_stats_mut(&mut self) -> &mut FrameStats {
        &mut self.frame_stats
    }
    pub fn worker(&self) -> &crate::worker::Worker {
        &self.generation.worker
    }
    pub fn is_busy_with_files(&self) -> bool {
        !self.files.tasks.is_empty()
    }
    /// Pictures still being decoded for display.
    pub fn pictures_loading(&self) -> usize {
        self.files.pictures.loading()
    }
    /// Whether the picture `reference` of the layout is decoded and shown.
    pub fn picture_ready(&self, reference: &str) -> bool {
        self.files
            .pictures
            .ready(reference, self.base_dir().as_deref())
            .is_some()
    }
    /// What the canvas showed under the layout in the last frame.
    pub fn canvas_background(&self) -> CanvasBackground {
        self.canvas.last_background
    }
    pub fn view(&self) -> canvas::CanvasView {
        self.canvas.view
    }
    pub fn tool(&self) -> Tool {
        self.canvas.tool
    }
    pub fn set_tool(&mut self, tool: Tool) {
        if self.tool_blocker(tool).is_none() {
            self.canvas.tool = tool;
        }
    }
    pub fn document_path(&self) -> Option<&std::path::Path> {
        self.files.settings.document_path.as_deref()
    }
    /// Waits until every autosave sent so far is on disk.
    pub fn flush_autosave(&self) {
        self.files.autosaver.flush();
    }
}

impl eframe::App for StudioApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.frame_began = Some(Instant::now());
        self.drain_worker(ctx);
        self.poll_files(ctx);
        self.files.pictures.poll(ctx);
        if self.generation.run.is_some()
            || matches!(self.generation.model, ModelState::Loading { .. })
        {
            // Keep the elapsed-time readout moving without busy repainting.
            ctx.request_repaint_after(Duration::from_millis(250));
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let began = self.frame_began.take().unwrap_or_else(Instant::now);
        // (Not in `logic`: while the window is hidden, `logic` sees the last shown frame's input.)
        self.handle_dropped_files(ui.ctx());
        self.doc.begin_frame();
        self.sync_tool_with_model();
        let limits = self.model_limits();
        self.doc.revalidate(&limits);
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
        self.doc.end_frame();
        self.update_draft(ui.ctx());
        self.autosave();
        self.update_title(ui.ctx());
        self.text_focus_last_frame = ui.ctx().text_edit_focused();
        self.frame_stats.push(began.elapsed());
    }

    fn on_exit(&mut self) {
        self.autosave();
        self.files.autosaver.flush();
    }
}
