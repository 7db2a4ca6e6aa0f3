//! The generate side panel: the model, Generate / Cancel with progress and draft mode, the prompt
//! and the sampling settings.

use super::panels::issue_lines;
use super::{CanvasImage, ModelState, StudioApp};
use crate::layout::{SchedulerKind, DEFAULT_ALPHA0, DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS};
use egui::{Button, Color32, RichText};

/// The `dtype` setting's choices: value, name in the list, what it means.
const PRECISIONS: &[(&str, &str, &str)] = &[
    (
        "auto",
        "Automatic",
        "f32 on the CPU, f16 on a GPU.",
    ),
    (
        "f32",
        "f32: exact",
        "Full precision everywhere: the reference's own arithmetic.",
    ),
    (
        "bf16",
        "bf16: faster on AMX CPUs",
        "On a CPU with AMX (Intel Xeon since Sapphire Rapids): f32 pictures with the UNet's matrix products and convolutions in bf16, about 2× faster steps, results within bf16 rounding of f32. On a GPU: half the memory. On other CPUs: half the memory, slower.",
    ),
    (
        "f16",
        "f16: for GPUs",
        "Half the memory and faster on GPUs; slow on the CPU.",
    ),
];

/// "grounding for the first K of N steps" — K as the pipeline computes it.
pub fn alpha0_label(alpha0: f64, alpha_decay: f64, steps: usize) -> String {
    let gates = crate::layout::grounding_alphas(alpha0, alpha_decay, steps.max(1));
    let full = gates.iter().filter(|g| **g >= 1.0).count();
    let fading = gates.iter().filter(|g| **g > 0.0 && **g < 1.0).count();
    let mut s = format!("grounding for the first {full} of {steps} steps");
    if fading > 0 {
        s.push_str(&format!(", fading over {fading} more"));
    }
    s
}

impl StudioApp {
    pub(super) fn side_panel_ui(&mut self, ui: &mut egui::Ui) {
        egui::Panel::right("glichen-generate")
            .resizable(true)
            .default_size(330.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("generate-scroll")
                    .show(ui, |ui| {
                        self.model_ui(ui);
                        ui.separator();
                        self.generate_ui(ui);
                        ui.separator();
                        self.prompt_ui(ui);
                        ui.separator();
                        self.sampling_ui(ui);
                    });
            });
        egui::Panel::right("glichen-inspector")
            .resizable(true)
            .default_size(280.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("inspector-scroll")
                    .show(ui, |ui| {
                        self.inspector_ui(ui);
                    });
            });
    }

    pub(super) fn model_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Model");
        match self.generation.model.clone() {
            ModelState::Ready(info) => {
                // The folder or file name; the whole path on hover.
                let short = std::path::Path::new(&info.name)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| info.name.clone());
                ui.label(RichText::new(short).color(Color32::from_rgb(140, 220, 140)))
                    .on_hover_text(&info.name);
                ui.label(
                    RichText::new(format!(
                        "{} · {} · loaded in {:.1?}",
                        info.device,
                        info.limits.describe(),
                        info.load_time
                    ))
                    .small()
                    .weak(),
                );
                ui.collapsing("Change model", |ui| self.model_choice_ui(ui));
            }
            ModelState::Loading {
                message,
                since,
                fraction,
                ..
            } => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("{message} ({:.0?})", since.elapsed()));
                });
                match fraction {
                    Some(f) => ui.add(egui::ProgressBar::new(f).show_percentage()),
                    None => ui.add(egui::ProgressBar::new(0.0).animate(true).text("loading")),
                };
                if ui.button("Cancel loading").clicked() {
                    self.cancel_model_load();
                }
            }
            state => {
                let (headline, detail) = match state {
                    ModelState::Failed { spec, message } => ("The model could not be loaded.".to_string(), format!("{spec}: {message}")),
                    _ => (
                        "No model yet.".to_string(),
                        "Glichen needs a GLIGEN model to generate. Pick a diffusers model folder or a checkpoint file, or download one from the catalogue (into the Hugging Face cache). Your choice is remembered.".to_string(),
                    ),
                };
                egui::Frame::new()
                    .fill(Color32::from_rgb(70, 55, 10))
                    .inner_margin(8.0)
                    .corner_radius(4.0)
                    .show(ui, |ui| {
                        ui.label(
                            RichText::new(headline)
                                .strong()
                                .color(Color32::from_rgb(255, 225, 150)),
                        );
                        ui.label(RichText::new(detail).color(Color32::from_rgb(240, 220, 180)));
                    });
                self.model_choice_ui(ui);
            }
        }
    }

    /// The dtype models are loaded in (the `dtype` setting).
    fn precision_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let label = ui.label("Precision:");
            let dtype = &mut self.files.settings.dtype;
            let shown = PRECISIONS
                .iter()
                .find(|(value, _, _)| *value == dtype.as_str())
                .map_or(dtype.as_str(), |(_, text, _)| text)
                .to_string();
            egui::ComboBox::new("precision", "")
                .selected_text(shown)
                .width(190.0)
                .show_ui(ui, |ui| {
                    for (value, text, hover) in PRECISIONS {
                        ui.selectable_value(dtype, value.to_string(), *text)
                            .on_hover_text(*hover);
                    }
                })
                .response
                .labelled_by(label.id)
                .on_hover_text(
                    "The number format models are loaded in. Used when a model is loaded.",
                );
        });
    }

    fn model_choice_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            if ui.button("Choose model folder…").clicked() {
                self.pick_model_dialog(true);
            }
            if ui.button("Choose checkpoint file…").clicked() {
                self.pick_model_dialog(false);
            }
        });
        ui.horizontal(|ui| {
            let label = ui.label("Image tower:");
            ui.add(
                egui::TextEdit::singleline(&mut self.files.settings.image_encoder)
                    .hint_text("beside the checkpoint, else openai/clip-vit-large-patch14")
                    .desired_width(220.0),
            )
            .labelled_by(label.id)
            .on_hover_text(
                "Original text-image checkpoints carry no CLIP image tower: a transformers CLIP folder or a hub repo id (owner/name). Empty: an image_encoder/ folder beside the checkpoint, else openai/clip-vit-large-patch14 from the hub. Used when a model is loaded.",
            );
        });
        ui.horizontal(|ui| {
            let label = ui.label("Preview decoder:");
            ui.add(
                egui::TextEdit::singleline(&mut self.files.settings.preview_decoder)
                    .hint_text("taesd, a folder or owner/name; empty: latent projection")
                    .desired_width(220.0),
            )
            .labelled_by(label.id)
            .on_hover_text(
                "TAESD (madebyollin/taesd, `taesd` in the catalogue) decodes every step's predicted picture in milliseconds for the preview, and can finish drafts. Used when a model is loaded.",
            );
        });
        self.precision_ui(ui);
        let entries = self.generation.catalogue.clone();
        if entries.is_empty() {
            return;
        }
        self.generation.catalogue_choice = self.generation.catalogue_choice.min(entries.len() - 1);
        let label = ui.label("Or download from the catalogue:");
        ui.horizontal(|ui| {
            egui::ComboBox::new("catalogue", "")
                .selected_text(entries[self.generation.catalogue_choice].name.clone())
                .width(190.0)
                .show_ui(ui, |ui| {
                    for (i, e) in entries.iter().enumerate() {
                        ui.selectable_value(&mut self.generation.catalogue_choice, i, &e.name)
                            .on_hover_text(&e.description);
                    }
                })
                .response
                .labelled_by(label.id);
            if ui
                .button("Download")
                .on_hover_text("Download into the Hugging Face cache (several GB) and load")
                .clicked()
            {
                let request = self.load_request(&entries[self.generation.catalogue_choice].name);
                self.load_model(request);
            }
        });
    }

    pub(super) fn generate_ui(&mut self, ui: &mut egui::Ui) {
        let blocker = self.generate_blocker();
        let drafting = self.files.settings.draft.enabled;
        ui.horizontal(|ui| {
            let (label, help) =
                if drafting {
                    let r = self.doc.layout().sampling.resolve();
                    (
                        "Render full",
                        format!(
                        "The final picture with your settings: {} × {} px, {} steps{} (Ctrl+Enter)",
                        self.doc.layout().width,
                        self.doc.layout().height,
                        r.steps,
                        if r.seed.is_none() { ", the drafts' seed" } else { "" }
                    ),
                    )
                } else {
                    (
                        "Generate",
                        "Ctrl+Enter; a running generation is cancelled".to_string(),
                    )
                };
            let generate = ui
                .add_enabled(
                    blocker.is_none(),
                    Button::new(RichText::new(label).strong()).min_size(egui::vec2(110.0, 28.0)),
                )
                .on_hover_text(help);
            if generate.clicked() {
                self.generate();
            }
            let running = self.generation.run.is_some();
            if ui
                .add_enabled(
                    running,
                    Button::new("Cancel").min_size(egui::vec2(80.0, 28.0)),
                )
                .clicked()
            {
                self.cancel_generation();
            }
        });
        if let Some(reason) = &blocker {
            ui.label(
                RichText::new(format!("Cannot generate: {reason}"))
                    .small()
                    .weak(),
            );
        }
        self.draft_ui(ui);
        if let Some(run) = &self.generation.run {
            let fraction = if run.total > 0 {
                run.done as f32 / run.total as f32
            } else {
                0.0
            };
            let per_step = if run.done > 0 {
                run.last_elapsed.as_secs_f32() / run.done as f32
            } else {
                0.0
            };
            let prefix = if run.draft { "Draft: " } else { "" };
            let text = if run.cancelling {
                format!("Cancelling… (step {} of {})", run.done, run.total)
            } else if run.done == 0 {
                // what the first step is doing (prompt, grounding, its first UNet evaluation)
                match &run.phase {
                    Some((phase, since)) => {
                        let mut text = phase.to_string();
                        if let Some(first) = text.get_mut(0..1) {
                            first.make_ascii_uppercase();
                        }
                        format!(
                            "{text}… {:.1}s ({:.1}s in all)",
                            since.elapsed().as_secs_f32(),
                            run.started.elapsed().as_secs_f32()
                        )
                    }
                    None => format!("Preparing… {:.1}s", run.started.elapsed().as_secs_f32()),
                }
            } else {
                format!(
                    "Step {} / {} · {:.2} s/step · {:.1}s",
                    run.done,
                    run.total,
                    per_step,
                    run.started.elapsed().as_secs_f32()
                )
            };
            ui.add(egui::ProgressBar::new(fraction).text(format!("{prefix}{text}")));
        } else if let Some(CanvasImage::Preview { step, total, .. }) = &self.generation.canvas_image
        {
            ui.label(RichText::new(format!("Stopped at step {} of {}", step + 1, total)).weak());
        }
        if let Some(seed) = self.generation.last_seed {
            ui.horizontal(|ui| {
                ui.label(RichText::new(format!("Last seed: {seed}")).small().weak());
                if self.doc.layout().sampling.seed != Some(seed)
                    && ui
                        .small_button("Keep")
                        .on_hover_text("Fix this seed for the next runs")
                        .clicked()
                {
                    self.doc.live().sampling.seed = Some(seed);
                    self.doc.mark_edit("seed");
                }
            });
        }
    }

    pub(super) fn prompt_ui(&mut self, ui: &mut egui::Ui) {
        let label = ui.label("Prompt");
        let r = ui.add(
            egui::TextEdit::multiline(&mut self.doc.live().prompt)
                .hint_text("the whole picture, e.g. a cat and a red car in a park")
                .desired_rows(3)
                .desired_width(f32::INFINITY),
        );
        let r = r.labelled_by(label.id);
        if r.changed() {
            self.doc.mark_edit("prompt");
        }
        let label = ui.label("Negative prompt");
        let r = ui
            .add(
                egui::TextEdit::multiline(&mut self.doc.live().negative_prompt)
                    .hint_text("what to avoid")
                    .desired_rows(2)
                    .desired_width(f32::INFINITY),
            )
            .labelled_by(label.id);
        if r.changed() {
            self.doc.mark_edit("negative prompt");
        }
    }

    pub(super) fn sampling_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Sampling");
        let resolved = self.doc.layout().sampling.resolve();
        egui::Grid::new("sampling-grid")
            .num_columns(2)
            .spacing([8.0, 6.0])
            .show(ui, |ui| {
                let l = ui.label("Steps");
                let mut steps = resolved.steps;
                if ui
                    .add(egui::DragValue::new(&mut steps).range(1..=1000))
                    .labelled_by(l.id)
                    .changed()
                {
                    self.doc.live().sampling.steps = Some(steps);
                    self.doc.mark_edit("steps");
                }
                ui.end_row();

                let l = ui.label("Guidance");
                let mut g = resolved.guidance_scale;
                if ui
                    .add(
                        egui::DragValue::new(&mut g)
                            .range(0.0..=30.0)
                            .speed(0.1)
                            .max_decimals(2),
                    )
                    .labelled_by(l.id)
                    .changed()
                {
                    self.doc.live().sampling.guidance_scale = Some(g);
                    self.doc.mark_edit("guidance");
                }
                ui.end_row();

                let l = ui.label("Seed");
                ui.horizontal(|ui| {
                    let mut fixed = self.doc.layout().sampling.seed.is_some();
                    if ui
                        .checkbox(&mut fixed, "Fixed")
                        .on_hover_text("Off: a new seed each run")
                        .changed()
                    {
                        self.doc.live().sampling.seed = if fixed {
                            Some(self.generation.last_seed.unwrap_or(42))
                        } else {
                            None
                        };
                        self.doc.mark_edit("seed");
                    }
                    if let Some(mut seed) = self.doc.layout().sampling.seed {
                        if ui
                            .add(egui::DragValue::new(&mut seed))
                            .labelled_by(l.id)
                            .changed()
                        {
                            self.doc.live().sampling.seed = Some(seed);
                            self.doc.mark_edit("seed");
                        }
                        if ui
                            .small_button("Random")
                            .on_hover_text("New random seed")
                            .clicked()
                        {
                            self.doc.live().sampling.seed = Some(u64::from(rand::random::<u32>()));
                            self.doc.mark_edit("seed");
                        }
                    } else {
                        ui.label(RichText::new("new each run").weak());
                    }
                });
                ui.end_row();

                let label = ui.label("Scheduler");
                let default_name = match &self.generation.model {
                    ModelState::Ready(info) => {
                        format!("model default ({})", info.default_scheduler)
                    }
                    _ => "model default".into(),
                };
                let current = self.doc.layout().sampling.scheduler;
                let text = current
                    .map(|k| k.to_string())
                    .unwrap_or(default_name.clone());
                egui::ComboBox::from_id_salt("scheduler")
                    .selected_text(text)
                    .show_ui(ui, |ui| {
                        let mut choice = current;
                        ui.selectable_value(&mut choice, None, default_name);
                        for k in SchedulerKind::ALL {
                            ui.selectable_value(&mut choice, Some(k), k.to_string());
                        }
                        if choice != current {
                            self.doc.live().sampling.scheduler = choice;
                            self.doc.mark_edit("scheduler");
                        }
                    })
                    .response
                    .labelled_by(label.id);
                ui.end_row();
            });
        issue_lines(
            ui,
            ["sampling.steps", "sampling.guidance_scale"]
                .iter()
                .flat_map(|p| self.issues_at(p))
                .collect(),
        );

        ui.add_space(6.0);
        ui.label(RichText::new("Scheduled sampling").strong());
        let mut alpha0 = resolved.alpha0;
        let r = ui.add(
            egui::Slider::new(&mut alpha0, 0.0..=1.0)
                .text("α₀")
                .fixed_decimals(2),
        );
        if r.changed() {
            self.doc.live().sampling.alpha0 = Some(alpha0);
            self.doc.mark_edit("alpha0");
        }
        let r = self.doc.layout().sampling.resolve();
        ui.label(alpha0_label(r.alpha0, r.alpha_decay, r.steps));
        ui.collapsing("Grounding fade-out (original GLIGEN)", |ui| {
            let mut decay = r.alpha_decay;
            if ui
                .add(
                    egui::Slider::new(&mut decay, 0.0..=1.0)
                        .text("decay")
                        .fixed_decimals(2),
                )
                .changed()
            {
                self.doc.live().sampling.alpha_decay = Some(decay);
                self.doc.mark_edit("alpha_decay");
            }
            ui.label(
                RichText::new("Fraction of the steps over which grounding fades to zero after α₀.")
                    .small()
                    .weak(),
            );
        });
        issue_lines(
            ui,
            ["sampling.alpha0", "sampling.alpha_decay", "sampling"]
                .iter()
                .flat_map(|p| self.issues_at(p))
                .collect(),
        );
        if ui
            .small_button("Reset sampling to defaults")
            .on_hover_text(format!(
                "{DEFAULT_STEPS} steps, guidance {DEFAULT_GUIDANCE_SCALE}, α₀ {DEFAULT_ALPHA0}"
            ))
            .clicked()
        {
            let seed = self.doc.layout().sampling.seed;
            self.doc.live().sampling = Default::default();
            self.doc.live().sampling.seed = seed;
            self.doc.mark_edit("sampling reset");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_label_counts_steps_like_the_pipeline() {
        assert_eq!(
            alpha0_label(0.3, 0.0, 50),
            "grounding for the first 15 of 50 steps"
        );
        assert_eq!(
            alpha0_label(1.0, 0.0, 6),
            "grounding for the first 6 of 6 steps"
        );
        assert_eq!(
            alpha0_label(0.0, 0.0, 10),
            "grounding for the first 0 of 10 steps"
        );
        assert_eq!(
            alpha0_label(0.2, 0.2, 10),
            "grounding for the first 2 of 10 steps, fading over 1 more"
        );
    }
}
