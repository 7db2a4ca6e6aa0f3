//! Draft mode: while it is on, every edit of the layout or its settings schedules a quick render
//! (fewer steps with the same scheduler, optionally at half size, then from the full canvas's noise
//! pooled 2×2 so that it keeps the full render's composition, where the latent grid halves exactly)
//! that starts once the layout has
//! been still for a moment; a new edit cancels the running draft. "Render full" (the Generate
//! button while drafting) renders the same picture with the user's real settings.
//!
//! Timing uses the frame's clock (`egui::InputState::time`) and `request_repaint_after`: nothing
//! sleeps or waits. Drafts stay out of the history strip (only finished full renders go there) and
//! are shown on the canvas, scaled to it and labelled "draft".

use super::{CanvasImage, ModelState, StudioApp};
use crate::layout::{Layout, ModelLimits};
use crate::worker::JobId;
use egui::{Button, RichText};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How large a draft is rendered, relative to the canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DraftScale {
    /// Half the width and height: about a quarter of the work per step.
    #[default]
    Half,
    /// The canvas size.
    Full,
}

impl DraftScale {
    pub fn factor(self) -> f64 {
        match self {
            DraftScale::Half => 0.5,
            DraftScale::Full => 1.0,
        }
    }
}

/// Draft-mode preferences (kept in the studio's settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DraftSettings {
    pub enabled: bool,
    /// Sampling steps of a draft (at most the full render's).
    pub steps: usize,
    pub scale: DraftScale,
    /// How long the layout must stay unchanged before a draft starts, in milliseconds.
    pub delay_ms: u64,
    /// Decode a draft's final latents with the preview decoder (TAESD) when one is loaded.
    pub finish_with_taesd: bool,
}

impl Default for DraftSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            steps: DEFAULT_DRAFT_STEPS,
            scale: DraftScale::Half,
            delay_ms: DEFAULT_DRAFT_DELAY_MS,
            finish_with_taesd: true,
        }
    }
}

pub const DEFAULT_DRAFT_STEPS: usize = 8;
pub const DEFAULT_DRAFT_DELAY_MS: u64 = 600;
/// The draft-steps field's upper bound (a draft is meant to be quick).
pub const MAX_DRAFT_STEPS: usize = 50;

/// The size of a draft of a `width × height` canvas: scaled by `scale`, each side rounded to a
/// multiple of the model's VAE factor and kept at least `min_latent_cells` latent cells (scaling
/// both sides up together where one would fall below it, so the aspect ratio holds), never larger
/// than the canvas. Boxes are normalised, so the layout carries over unchanged.
pub fn draft_size(width: u32, height: u32, scale: DraftScale, limits: &ModelLimits) -> (u32, u32) {
    let f = limits.vae_scale_factor.max(1) as f64;
    let min = limits.min_latent_cells.max(1) as f64 * f;
    let (w, h) = (width.max(1) as f64, height.max(1) as f64);
    let s = scale.factor().max(min / w).max(min / h).min(1.0);
    let side = |full: f64| -> u32 {
        let cells = (full * s / f).round().max(1.0);
        let px = (cells * f).max(min).min(full);
        px as u32
    };
    (side(w), side(h))
}

/// Steps of a draft: the draft setting, never more than the full render's.
pub fn draft_steps(draft: usize, full: usize) -> usize {
    draft.max(1).min(full.max(1))
}

/// What draft mode keeps between frames.
#[derive(Default)]
pub(crate) struct DraftState {
    /// The layout and draft settings last seen; a difference is an edit.
    seen: Option<(Layout, DraftSettings)>,
    /// When (the frame clock, seconds) the pending draft starts.
    due: Option<f64>,
    /// The seed of drafts (and of "Render full") while the layout's seed is "new each run", so
    /// that drafts do not flicker between seeds and the full render is the picture drafted.
    pub(crate) seed: Option<u64>,
    /// The document layout the running or shown draft was made from.
    pub(crate) source: Option<(JobId, Layout)>,
    /// Drafts sent to the worker.
    started: usize,
    /// Why the last due draft did not start.
    paused: Option<String>,
    /// Draft even if the canvas shows the current layout (a new draft seed).
    force: bool,
}

impl StudioApp {
    /// Draft jobs sent to the worker since the studio started.
    #[cfg(feature = "testing")]
    pub fn drafts_started(&self) -> usize {
        self.generation.draft.started
    }

    /// Whether a draft is waiting for the layout to settle.
    #[cfg(feature = "testing")]
    pub fn draft_pending(&self) -> bool {
        self.generation.draft.due.is_some()
    }

    /// Turns draft mode on or off (off cancels a running draft).
    pub fn set_draft_mode(&mut self, on: bool) {
        self.files.settings.draft.enabled = on;
        if !on {
            self.cancel_running_draft();
            self.generation.draft.due = None;
            self.generation.draft.seen = None;
            self.generation.draft.paused = None;
            self.generation.draft.force = false;
        }
    }

    /// Drafts again once the layout is still, even if the canvas shows the current layout (a new
    /// model, a new draft seed).
    pub(super) fn redraft(&mut self) {
        if self.files.settings.draft.enabled {
            self.generation.draft.seen = None;
            self.generation.draft.force = true;
        }
    }

    fn cancel_running_draft(&mut self) {
        if let Some(run) = self.generation.run.as_mut() {
            if run.draft && !run.cancelling {
                run.cancelling = true;
                self.generation.worker.cancel(run.job);
            }
        }
    }

    /// Whether the canvas already shows a render of the current layout (a restored or finished
    /// full render, or an up-to-date draft): then no draft is needed.
    fn canvas_shows_current_layout(&self) -> bool {
        match &self.generation.canvas_image {
            Some(CanvasImage::Result { layout, .. }) => {
                let mut doc = self.doc.layout().clone();
                if doc.sampling.seed.is_none() {
                    doc.sampling.seed = layout.sampling.seed;
                }
                &doc == layout
            }
            Some(CanvasImage::Draft { source, .. }) => source == self.doc.layout(),
            _ => false,
        }
    }

    /// Once a frame, after the frame's edits: schedules a draft after an edit, cancels a stale
    /// running draft and starts the pending one when the layout has been still long enough.
    pub(super) fn update_draft(&mut self, ctx: &egui::Context) {
        let settings = self.files.settings.draft.clone();
        if !settings.enabled {
            return;
        }
        let now = ctx.input(|i| i.time);
        let changed = match &self.generation.draft.seen {
            Some((layout, s)) => layout != self.doc.layout() || s != &settings,
            None => true,
        };
        if changed {
            self.generation.draft.seen = Some((self.doc.layout().clone(), settings.clone()));
            self.generation.draft.due = Some(now + settings.delay_ms as f64 / 1000.0);
            self.generation.draft.paused = None;
            // The running draft shows an older layout: free the worker for the next one now.
            self.cancel_running_draft();
        }
        let Some(due) = self.generation.draft.due else {
            return;
        };
        if now < due {
            ctx.request_repaint_after(Duration::from_secs_f64(due - now));
            return;
        }
        // A full render the user asked for goes on; the draft waits for it (the running job
        // repaints the window as it goes).
        if self
            .generation
            .run
            .as_ref()
            .is_some_and(|r| !r.draft && !r.cancelling)
        {
            return;
        }
        self.generation.draft.due = None;
        if !std::mem::take(&mut self.generation.draft.force) && self.canvas_shows_current_layout() {
            return;
        }
        if let Some(reason) = self.generate_blocker() {
            self.generation.draft.paused = Some(reason);
            return;
        }
        self.start_draft();
    }

    /// Sends a draft of the current layout to the worker (cancelling whatever runs).
    pub fn start_draft(&mut self) -> Option<JobId> {
        let limits = match &self.generation.model {
            ModelState::Ready(info) => info.limits.clone(),
            _ => return None,
        };
        let (mut layout, mut options) = self.build_request()?;
        let seed = match self.doc.layout().sampling.seed {
            Some(seed) => seed,
            None => *self
                .generation
                .draft
                .seed
                .get_or_insert_with(|| u64::from(rand::random::<u32>())),
        };
        layout.sampling.seed = Some(seed);
        options.seed = seed;
        let steps = draft_steps(self.files.settings.draft.steps, options.steps);
        let (w, h) = draft_size(
            layout.width,
            layout.height,
            self.files.settings.draft.scale,
            &limits,
        );
        if (w, h) != (layout.width, layout.height) {
            options.noise_canvas = Some((layout.width, layout.height));
        }
        layout.width = w;
        layout.height = h;
        layout.sampling.steps = Some(steps);
        options.steps = steps;
        options.finish_with_preview_decoder = self.files.settings.draft.finish_with_taesd;
        let job = self.start_job(layout, options, true);
        self.generation.draft.started += 1;
        self.generation.draft.source = Some((job, self.doc.layout().clone()));
        self.status = format!("Drafting {w} × {h} px, {steps} steps…");
        Some(job)
    }

    /// A short line on what draft mode is doing.
    pub fn draft_status(&self) -> String {
        if let Some(reason) = &self.generation.draft.paused {
            return format!("paused: {reason}");
        }
        if self.generation.draft.due.is_some() {
            return if self.generation.run.as_ref().is_some_and(|r| !r.draft) {
                "waits for the full render".into()
            } else {
                "starts when you stop editing…".into()
            };
        }
        if let Some(run) = self.generation.run.as_ref().filter(|r| r.draft) {
            return format!("drafting, step {} of {}", run.done, run.total);
        }
        match &self.generation.canvas_image {
            Some(CanvasImage::Draft { source, .. }) if source == self.doc.layout() => {
                "up to date".into()
            }
            _ => String::new(),
        }
    }

    /// The label drawn on the canvas over a draft or its steps ("DRAFT · 16 × 16 px · 8 steps").
    pub(super) fn draft_badge(&self) -> Option<String> {
        match &self.generation.canvas_image {
            Some(CanvasImage::Preview {
                draft: true,
                step,
                total,
                ..
            }) => Some(format!("DRAFT · step {} of {total}", step + 1)),
            Some(CanvasImage::Draft { layout, source, .. }) => {
                let mut s = format!(
                    "DRAFT · {} × {} px · {} steps",
                    layout.width,
                    layout.height,
                    layout.sampling.resolve().steps
                );
                if source != self.doc.layout() {
                    s.push_str(" · layout changed since");
                }
                Some(s)
            }
            _ => None,
        }
    }

    /// The draft toggle and its settings, under Generate.
    pub(super) fn draft_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let mut on = self.files.settings.draft.enabled;
            if ui
                .checkbox(&mut on, "Draft")
                .on_hover_text(
                    "Draft mode: a quick render (fewer steps, optionally half size) a moment after you stop editing; Render full makes the final picture",
                )
                .changed()
            {
                self.set_draft_mode(on);
            }
            if on {
                let status = self.draft_status();
                if !status.is_empty() {
                    ui.label(RichText::new(status).small().weak());
                }
            }
        });
        if !self.files.settings.draft.enabled {
            return;
        }
        let full = self.doc.layout().sampling.resolve().steps;
        egui::Grid::new("draft-grid")
            .num_columns(2)
            .spacing([8.0, 4.0])
            .show(ui, |ui| {
                let l = ui.label("Draft steps");
                let mut steps = self.files.settings.draft.steps;
                if ui
                    .add(egui::DragValue::new(&mut steps).range(1..=MAX_DRAFT_STEPS))
                    .labelled_by(l.id)
                    .on_hover_text("Same scheduler, fewer steps; α₀ is a fraction, so grounding covers the same share of the steps")
                    .changed()
                {
                    self.files.settings.draft.steps = steps;
                }
                ui.end_row();
                ui.label("Draft size");
                ui.horizontal(|ui| {
                    ui.selectable_value(&mut self.files.settings.draft.scale, DraftScale::Half, "Half size")
                        .on_hover_text("Half the width and height (rounded to the model's latent grid): about 4× faster per step");
                    ui.selectable_value(&mut self.files.settings.draft.scale, DraftScale::Full, "Full size");
                });
                ui.end_row();
                ui.label("Draft finish");
                ui.checkbox(&mut self.files.settings.draft.finish_with_taesd, "TAESD")
                    .on_hover_text("With a preview decoder loaded, decode drafts with TAESD (milliseconds) instead of the model's VAE; full renders always use the VAE");
                ui.end_row();
            });
        let (w, h) = draft_size(
            self.doc.layout().width,
            self.doc.layout().height,
            self.files.settings.draft.scale,
            &self.model_limits(),
        );
        let steps = draft_steps(self.files.settings.draft.steps, full);
        ui.label(
            RichText::new(format!(
                "Drafts: {w} × {h} px, {steps} of {full} steps; Render full: {} × {} px, {full} steps",
                self.doc.layout().width, self.doc.layout().height
            ))
            .small()
            .weak(),
        );
        if self.doc.layout().sampling.seed.is_none() {
            ui.horizontal(|ui| {
                let seed = self
                    .generation
                    .draft
                    .seed
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "not drawn yet".into());
                ui.label(RichText::new(format!("Draft seed: {seed}")).small().weak())
                    .on_hover_text("Seed is \"new each run\": drafts keep one seed so they do not flicker, and Render full uses it too");
                if ui
                    .add(Button::new("New draft seed").small())
                    .on_hover_text("Draft again with another seed")
                    .clicked()
                {
                    self.generation.draft.seed = Some(u64::from(rand::random::<u32>()));
                    self.redraft();
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_size_drafts_stay_on_the_latent_grid() {
        let sd = ModelLimits::default(); // factor 8, at least 8 cells
        assert_eq!(draft_size(512, 512, DraftScale::Half, &sd), (256, 256));
        assert_eq!(draft_size(512, 768, DraftScale::Half, &sd), (256, 384));
        assert_eq!(draft_size(576, 768, DraftScale::Half, &sd), (288, 384));
        assert_eq!(draft_size(512, 512, DraftScale::Full, &sd), (512, 512));
        // 200 / 2 = 100 → 96 or 104: the nearest multiple of 8.
        let (w, _) = draft_size(200, 512, DraftScale::Half, &sd);
        assert_eq!(w % 8, 0);
        assert!(w >= 64);
        // Never below the model's minimum (8 cells = 64 px): both sides grow together.
        assert_eq!(draft_size(96, 192, DraftScale::Half, &sd), (64, 128));
        assert_eq!(draft_size(64, 64, DraftScale::Half, &sd), (64, 64));
        // A tiny model (factor 2, 8 cells).
        let tiny = ModelLimits {
            vae_scale_factor: 2,
            ..ModelLimits::default()
        };
        assert_eq!(draft_size(32, 32, DraftScale::Half, &tiny), (16, 16));
        assert_eq!(draft_size(48, 32, DraftScale::Half, &tiny), (24, 16));
    }

    #[test]
    fn draft_steps_never_exceed_the_full_render() {
        assert_eq!(draft_steps(8, 50), 8);
        assert_eq!(draft_steps(8, 6), 6);
        assert_eq!(draft_steps(0, 50), 1);
    }

    #[test]
    fn old_settings_files_get_draft_defaults() {
        let s: DraftSettings = serde_json::from_str("{\"enabled\": true}").unwrap();
        assert!(s.enabled);
        assert_eq!(s.steps, DEFAULT_DRAFT_STEPS);
        assert_eq!(s.scale, DraftScale::Half);
    }
}
