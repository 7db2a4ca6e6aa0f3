//! The panels around the canvas: top bar (files, undo), tools, inspector, prompt and sampling,
//! Generate/Cancel with progress, the model chooser, the history strip and the status bar.

use super::canvas::entity_color;
use super::edit::{default_person, joint_label, offset_entity, points_bbox, PicturePurpose};
use super::pictures::{describe_reference, PictureState};
use super::{CanvasImage, ModelState, NoticeLevel, StudioApp, Tool};
use crate::layout::{
    Entity, EntityKind, Layout, SchedulerKind, DEFAULT_ALPHA0, DEFAULT_GUIDANCE_SCALE,
    DEFAULT_STEPS, KEYPOINTS_PER_PERSON,
};
use egui::{Button, Color32, Key, KeyboardShortcut, Modifiers, RichText};

/// Canvas size presets (width, height) for Stable Diffusion 1.x.
pub const SIZE_PRESETS: [(u32, u32); 8] = [
    (512, 512),
    (512, 768),
    (768, 512),
    (512, 640),
    (640, 512),
    (576, 768),
    (768, 576),
    (768, 768),
];

const ERROR_COLOR: Color32 = Color32::from_rgb(255, 110, 110);

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

fn issue_lines(ui: &mut egui::Ui, issues: Vec<String>) {
    for text in issues {
        ui.label(RichText::new(format!("! {text}")).color(ERROR_COLOR));
    }
}

impl StudioApp {
    fn issues_at(&self, path: &str) -> Vec<String> {
        self.issues.at(path).map(|i| i.message.clone()).collect()
    }

    fn issues_under(&self, path: &str) -> Vec<String> {
        self.issues.under(path).map(|i| i.to_string()).collect()
    }

    // ----- keyboard -----

    pub(super) fn shortcuts_ui(&mut self, ui: &mut egui::Ui) {
        // egui drops the focus on Escape before the app sees the key, so also count a text field
        // that had the focus last frame.
        let typing = ui.ctx().text_edit_focused() || self.text_focus_last_frame;
        let cmd = Modifiers::COMMAND;
        let cmd_shift = Modifiers::COMMAND | Modifiers::SHIFT;
        #[derive(Default)]
        struct Actions {
            undo: bool,
            redo: bool,
            save: bool,
            save_as: bool,
            open: bool,
            generate: bool,
            delete: bool,
            duplicate: bool,
            escape: bool,
            nudge: Option<(f64, f64)>,
            tool: Option<Tool>,
            fit: bool,
        }
        let mut a = Actions::default();
        ui.input_mut(|i| {
            a.save_as = i.consume_shortcut(&KeyboardShortcut::new(cmd_shift, Key::S));
            a.save = i.consume_shortcut(&KeyboardShortcut::new(cmd, Key::S));
            a.open = i.consume_shortcut(&KeyboardShortcut::new(cmd, Key::O));
            a.generate = i.consume_shortcut(&KeyboardShortcut::new(cmd, Key::Enter));
            if typing {
                return;
            }
            a.redo = i.consume_shortcut(&KeyboardShortcut::new(cmd_shift, Key::Z))
                || i.consume_shortcut(&KeyboardShortcut::new(cmd, Key::Y));
            a.undo = i.consume_shortcut(&KeyboardShortcut::new(cmd, Key::Z));
            a.duplicate = i.consume_shortcut(&KeyboardShortcut::new(cmd, Key::D));
            a.delete = i.key_pressed(Key::Delete) || i.key_pressed(Key::Backspace);
            a.escape = i.key_pressed(Key::Escape);
            let step = if i.modifiers.shift { 10.0 } else { 1.0 };
            for (key, d) in [
                (Key::ArrowLeft, (-step, 0.0)),
                (Key::ArrowRight, (step, 0.0)),
                (Key::ArrowUp, (0.0, -step)),
                (Key::ArrowDown, (0.0, step)),
            ] {
                if i.key_pressed(key) {
                    a.nudge = Some(d);
                }
            }
            if i.modifiers.is_none() {
                if i.key_pressed(Key::B) {
                    a.tool = Some(Tool::Draw);
                }
                if i.key_pressed(Key::V) {
                    a.tool = Some(Tool::Select);
                }
                if i.key_pressed(Key::H) {
                    a.tool = Some(Tool::Pan);
                }
                if i.key_pressed(Key::P) {
                    a.tool = Some(Tool::Person);
                }
                if i.key_pressed(Key::F) {
                    a.fit = true;
                }
            }
        });
        if a.undo {
            self.undo();
        }
        if a.redo {
            self.redo();
        }
        if a.save_as {
            self.save_as_dialog();
        } else if a.save {
            self.save();
        }
        if a.open {
            self.open_dialog();
        }
        if a.generate {
            self.generate();
        }
        if a.delete {
            self.delete_selected();
        }
        if a.duplicate {
            self.duplicate_selected();
        }
        if a.escape && !self.cancel_drag() {
            self.selection = None;
        }
        if let Some((dx, dy)) = a.nudge {
            self.nudge_selected(dx, dy);
        }
        if let Some(t) = a.tool {
            match self.tool_blocker(t) {
                None => self.tool = t,
                Some(reason) => {
                    self.notify(NoticeLevel::Warning, format!("That tool is off: {reason}."))
                }
            }
        }
        if a.fit {
            self.reset_view();
        }
    }

    /// Deletes the selected entity (undoable).
    pub fn delete_selected(&mut self) {
        if let Some(i) = self.selection.filter(|&i| i < self.layout.entities.len()) {
            self.history.push(&self.layout);
            let kind = match self.layout.entities.remove(i).kind() {
                EntityKind::TextBox => "box",
                EntityKind::ImageBox => "image box",
                EntityKind::StyleImage => "style image",
                EntityKind::Keypoints => "person",
            };
            self.selection = if self.layout.entities.is_empty() {
                None
            } else {
                Some(i.min(self.layout.entities.len() - 1))
            };
            self.frame_start = self.layout.clone();
            self.status = format!("Deleted {kind} {}", i + 1);
        }
    }

    /// Duplicates the selected entity, offset by 16 px (undoable).
    pub fn duplicate_selected(&mut self) {
        let Some(i) = self.selection.filter(|&i| i < self.layout.entities.len()) else {
            return;
        };
        if matches!(self.layout.entities[i], Entity::Keypoints { .. }) {
            if let Some(reason) = self.person_blocker() {
                self.notify(NoticeLevel::Warning, format!("No person added: {reason}."));
                return;
            }
        }
        self.history.push(&self.layout);
        let mut copy = self.layout.entities[i].clone();
        let (dx, dy) = (
            16.0 / self.layout.width.max(1) as f64,
            16.0 / self.layout.height.max(1) as f64,
        );
        offset_entity(&mut copy, dx, dy);
        self.layout.entities.insert(i + 1, copy);
        self.selection = Some(i + 1);
        self.frame_start = self.layout.clone();
    }

    /// Moves the selected box or person by (dx, dy) layout pixels, staying on the canvas.
    pub fn nudge_selected(&mut self, dx: f64, dy: f64) {
        let Some(i) = self.selection else { return };
        let (w, h) = (
            self.layout.width.max(1) as f64,
            self.layout.height.max(1) as f64,
        );
        let before = self.layout.clone();
        let Some(e) = self.layout.entities.get_mut(i) else {
            return;
        };
        offset_entity(e, dx / w, dy / h);
        if self.layout != before {
            self.history
                .push_coalesced(&before, &format!("nudge entities[{i}]"));
        }
        self.frame_start = self.layout.clone();
    }

    fn move_entity(&mut self, from: usize, to: usize) {
        if from == to || from >= self.layout.entities.len() || to >= self.layout.entities.len() {
            return;
        }
        self.history.push(&self.layout);
        let e = self.layout.entities.remove(from);
        self.layout.entities.insert(to, e);
        self.selection = Some(to);
        self.frame_start = self.layout.clone();
    }

    // ----- top bar -----

    pub(super) fn top_bar_ui(&mut self, ui: &mut egui::Ui) {
        egui::Panel::top("glichen-top").show(ui, |ui| {
            ui.horizontal_wrapped(|ui| {
                ui.strong("Glichen");
                ui.separator();
                if ui.button("New").on_hover_text("Start a blank layout (undoable)").clicked() {
                    self.new_document();
                }
                if ui.button("Open…").on_hover_text("Open a layout JSON, a Glichen PNG, diffusers/GLIGEN arguments or COCO boxes (Ctrl+O)").clicked() {
                    self.open_dialog();
                }
                let recent = self.settings.recent.clone();
                ui.menu_button("Recent", |ui| {
                    if recent.is_empty() {
                        ui.label("No recent files");
                    }
                    for path in recent {
                        if ui.button(path.display().to_string()).clicked() {
                            self.open_path(path);
                            ui.close();
                        }
                    }
                });
                if ui.button("Save").on_hover_text("Save the layout (Ctrl+S)").clicked() {
                    self.save();
                }
                if ui.button("Save as…").on_hover_text("Save the layout to a new file (Ctrl+Shift+S)").clicked() {
                    self.save_as_dialog();
                }
                let mut embed = self.settings.embed_pictures;
                if ui
                    .checkbox(&mut embed, "Embed pictures in the file")
                    .on_hover_text("Save and Save as write the pictures (image boxes, style image, picture to inpaint) into the layout file, so it travels as one file. Off: pictures are saved as paths relative to the layout file.")
                    .changed()
                {
                    self.set_embed_pictures(embed);
                }
                let has_result = matches!(self.canvas_image, Some(CanvasImage::Result { .. }));
                if ui.add_enabled(has_result, Button::new("Export PNG…")).on_hover_text("Save the image with its layout embedded").clicked() {
                    self.export_png_dialog();
                }
                ui.separator();
                if ui.add_enabled(self.history.can_undo(), Button::new("Undo")).on_hover_text("Ctrl+Z").clicked() {
                    self.undo();
                }
                if ui.add_enabled(self.history.can_redo(), Button::new("Redo")).on_hover_text("Ctrl+Shift+Z / Ctrl+Y").clicked() {
                    self.redo();
                }
                ui.separator();
                let doc = self
                    .settings
                    .document_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "untitled (autosaved)".into());
                ui.label(RichText::new(format!("{}{doc}", if self.is_dirty() { "• " } else { "" })).weak());
            });
        });
    }

    pub(super) fn notices_ui(&mut self, ui: &mut egui::Ui) {
        let mut dismiss = None;
        for (i, notice) in self.notices.iter().enumerate() {
            let (fill, text_color) = match notice.level {
                NoticeLevel::Error => (
                    Color32::from_rgb(90, 20, 20),
                    Color32::from_rgb(255, 200, 200),
                ),
                NoticeLevel::Warning => (
                    Color32::from_rgb(80, 60, 10),
                    Color32::from_rgb(255, 230, 170),
                ),
                NoticeLevel::Info => (
                    Color32::from_rgb(20, 50, 80),
                    Color32::from_rgb(200, 225, 255),
                ),
            };
            egui::Frame::new()
                .fill(fill)
                .inner_margin(6.0)
                .corner_radius(4.0)
                .show(ui, |ui| {
                    ui.horizontal(|ui| {
                        ui.label(RichText::new(&notice.text).color(text_color));
                        if ui
                            .small_button("Dismiss")
                            .on_hover_text("Dismiss")
                            .clicked()
                        {
                            dismiss = Some(i);
                        }
                    });
                });
        }
        if let Some(i) = dismiss {
            self.notices.remove(i);
        }
        let canvas_issues = self.issues_at("entities");
        if !canvas_issues.is_empty() {
            issue_lines(ui, canvas_issues);
        }
    }

    // ----- tools -----

    pub(super) fn tools_ui(&mut self, ui: &mut egui::Ui) {
        egui::Panel::left("glichen-tools").resizable(false).exact_size(190.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                ui.heading("Tools");
                self.tool_button_ui(ui, Tool::Draw, "Draw box (B)", "Drag on the canvas to draw a text box");
                self.tool_button_ui(ui, Tool::Select, "Select / move (V)", "Click to select; drag a box, a person or a joint to move it");
                self.tool_button_ui(ui, Tool::Person, "Person (P)", "Click to place a standing person (17 joints); drag a joint to pose it, the body to move it; right-click a joint to hide it");
                self.tool_button_ui(ui, Tool::Pan, "Pan (H)", "Drag to move the view");
                let image_box = self.unsupported_reason(EntityKind::ImageBox);
                let r = ui
                    .add_enabled(image_box.is_none(), Button::new("Add image box…"))
                    .on_hover_text("Choose a PNG, JPEG or WebP: its content is grounded in a box (or drop a picture on the canvas)");
                let r = match &image_box {
                    Some(reason) => r.on_disabled_hover_text(format!("Off: {reason}")),
                    None => r,
                };
                if r.clicked() {
                    self.pick_picture_dialog(PicturePurpose::NewBox { at: None });
                }
                let limits = self.model_limits();
                if limits.supports_keypoints {
                    let people = self.layout.people_count();
                    let text = format!("{people} of {} people", limits.max_people);
                    ui.label(if people > limits.max_people {
                        RichText::new(text).color(ERROR_COLOR)
                    } else {
                        RichText::new(text).weak()
                    });
                }
                ui.separator();
                ui.checkbox(&mut self.settings.snap, "Snap to latent grid (8 px)");
                ui.checkbox(&mut self.settings.show_boxes, "Show boxes");
                ui.checkbox(&mut self.settings.show_image, "Show preview / result");
                ui.separator();
                ui.label("View");
                ui.horizontal(|ui| {
                    if ui.button("−").on_hover_text("Zoom out").clicked() {
                        self.view.zoom = (self.view.zoom / 1.25).max(0.1);
                    }
                    if ui.button("Fit").on_hover_text("Fit the canvas to the window (F)").clicked() {
                        self.reset_view();
                    }
                    if ui.button("+").on_hover_text("Zoom in").clicked() {
                        self.view.zoom = (self.view.zoom * 1.25).min(32.0);
                    }
                });
                ui.label(RichText::new("Ctrl+wheel zooms, wheel or middle-drag pans").small().weak());
                ui.separator();
                self.canvas_size_ui(ui);
                ui.separator();
                ui.label(RichText::new("Keys: B box, V select, P person, H pan, Delete, Ctrl+D duplicate, arrows nudge (Shift ×10), Ctrl+Z / Ctrl+Shift+Z, Esc. Right-click a joint to hide it.").small().weak());
            });
        });
    }

    fn tool_button_ui(&mut self, ui: &mut egui::Ui, tool: Tool, label: &str, help: &str) {
        let blocker = self.tool_blocker(tool);
        let r = ui
            .add_enabled(
                blocker.is_none(),
                Button::selectable(self.tool == tool, label),
            )
            .on_hover_text(help);
        let r = match blocker {
            Some(reason) => r.on_disabled_hover_text(format!("Off: {reason}")),
            None => r,
        };
        if r.clicked() {
            self.tool = tool;
        }
    }

    fn canvas_size_ui(&mut self, ui: &mut egui::Ui) {
        let label = ui.label("Canvas size");
        let current = (self.layout.width, self.layout.height);
        let text = format!("{} × {}", current.0, current.1);
        let combo = egui::ComboBox::from_id_salt("canvas-size")
            .selected_text(text)
            .show_ui(ui, |ui| {
                for (w, h) in SIZE_PRESETS {
                    if ui
                        .selectable_label(current == (w, h), format!("{w} × {h}"))
                        .clicked()
                    {
                        self.layout.width = w;
                        self.layout.height = h;
                        self.mark_edit("canvas size");
                    }
                }
            });
        combo.response.labelled_by(label.id);
        ui.horizontal(|ui| {
            let wl = ui.label("W");
            let mut w = self.layout.width;
            if ui
                .add(egui::DragValue::new(&mut w).range(1..=4096).speed(8))
                .labelled_by(wl.id)
                .changed()
            {
                self.layout.width = w;
                self.mark_edit("canvas width");
            }
            let hl = ui.label("H");
            let mut h = self.layout.height;
            if ui
                .add(egui::DragValue::new(&mut h).range(1..=4096).speed(8))
                .labelled_by(hl.id)
                .changed()
            {
                self.layout.height = h;
                self.mark_edit("canvas height");
            }
        });
        let mut issues = self.issues_at("width");
        issues.extend(self.issues_at("height"));
        issue_lines(ui, issues);
    }

    // ----- right side -----

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
        match self.model.clone() {
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
                egui::TextEdit::singleline(&mut self.settings.image_encoder)
                    .hint_text("beside the checkpoint, else openai/clip-vit-large-patch14")
                    .desired_width(220.0),
            )
            .labelled_by(label.id)
            .on_hover_text(
                "Original text-image checkpoints carry no CLIP image tower: a transformers CLIP folder or a hub repo id (owner/name). Empty: an image_encoder/ folder beside the checkpoint, else openai/clip-vit-large-patch14 from the hub. Used when a model is loaded.",
            );
        });
        let entries = self.catalogue.clone();
        if entries.is_empty() {
            return;
        }
        self.catalogue_choice = self.catalogue_choice.min(entries.len() - 1);
        let label = ui.label("Or download from the catalogue:");
        ui.horizontal(|ui| {
            egui::ComboBox::new("catalogue", "")
                .selected_text(entries[self.catalogue_choice].name.clone())
                .width(190.0)
                .show_ui(ui, |ui| {
                    for (i, e) in entries.iter().enumerate() {
                        ui.selectable_value(&mut self.catalogue_choice, i, &e.name)
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
                let request = self.load_request(&entries[self.catalogue_choice].name);
                self.load_model(request);
            }
        });
    }

    pub(super) fn generate_ui(&mut self, ui: &mut egui::Ui) {
        let blocker = self.generate_blocker();
        let drafting = self.settings.draft.enabled;
        ui.horizontal(|ui| {
            let (label, help) =
                if drafting {
                    let r = self.layout.sampling.resolve();
                    (
                        "Render full",
                        format!(
                        "The final picture with your settings: {} × {} px, {} steps{} (Ctrl+Enter)",
                        self.layout.width,
                        self.layout.height,
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
            let running = self.run.is_some();
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
        if let Some(run) = &self.run {
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
                format!("Preparing… {:.1}s", run.started.elapsed().as_secs_f32())
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
        } else if let Some(CanvasImage::Preview { step, total, .. }) = &self.canvas_image {
            ui.label(RichText::new(format!("Stopped at step {} of {}", step + 1, total)).weak());
        }
        if let Some(seed) = self.last_seed {
            ui.horizontal(|ui| {
                ui.label(RichText::new(format!("Last seed: {seed}")).small().weak());
                if self.layout.sampling.seed != Some(seed)
                    && ui
                        .small_button("Keep")
                        .on_hover_text("Fix this seed for the next runs")
                        .clicked()
                {
                    self.layout.sampling.seed = Some(seed);
                    self.mark_edit("seed");
                }
            });
        }
    }

    pub(super) fn prompt_ui(&mut self, ui: &mut egui::Ui) {
        let label = ui.label("Prompt");
        let r = ui.add(
            egui::TextEdit::multiline(&mut self.layout.prompt)
                .hint_text("the whole picture, e.g. a cat and a red car in a park")
                .desired_rows(3)
                .desired_width(f32::INFINITY),
        );
        let r = r.labelled_by(label.id);
        if r.changed() {
            self.mark_edit("prompt");
        }
        let label = ui.label("Negative prompt");
        let r = ui
            .add(
                egui::TextEdit::multiline(&mut self.layout.negative_prompt)
                    .hint_text("what to avoid")
                    .desired_rows(2)
                    .desired_width(f32::INFINITY),
            )
            .labelled_by(label.id);
        if r.changed() {
            self.mark_edit("negative prompt");
        }
    }

    pub(super) fn sampling_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Sampling");
        let resolved = self.layout.sampling.resolve();
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
                    self.layout.sampling.steps = Some(steps);
                    self.mark_edit("steps");
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
                    self.layout.sampling.guidance_scale = Some(g);
                    self.mark_edit("guidance");
                }
                ui.end_row();

                let l = ui.label("Seed");
                ui.horizontal(|ui| {
                    let mut fixed = self.layout.sampling.seed.is_some();
                    if ui
                        .checkbox(&mut fixed, "Fixed")
                        .on_hover_text("Off: a new seed each run")
                        .changed()
                    {
                        self.layout.sampling.seed = if fixed {
                            Some(self.last_seed.unwrap_or(42))
                        } else {
                            None
                        };
                        self.mark_edit("seed");
                    }
                    if let Some(mut seed) = self.layout.sampling.seed {
                        if ui
                            .add(egui::DragValue::new(&mut seed))
                            .labelled_by(l.id)
                            .changed()
                        {
                            self.layout.sampling.seed = Some(seed);
                            self.mark_edit("seed");
                        }
                        if ui
                            .small_button("Random")
                            .on_hover_text("New random seed")
                            .clicked()
                        {
                            self.layout.sampling.seed = Some(u64::from(rand::random::<u32>()));
                            self.mark_edit("seed");
                        }
                    } else {
                        ui.label(RichText::new("new each run").weak());
                    }
                });
                ui.end_row();

                let label = ui.label("Scheduler");
                let default_name = match &self.model {
                    ModelState::Ready(info) => {
                        format!("model default ({})", info.default_scheduler)
                    }
                    _ => "model default".into(),
                };
                let current = self.layout.sampling.scheduler;
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
                            self.layout.sampling.scheduler = choice;
                            self.mark_edit("scheduler");
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
            self.layout.sampling.alpha0 = Some(alpha0);
            self.mark_edit("alpha0");
        }
        let r = self.layout.sampling.resolve();
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
                self.layout.sampling.alpha_decay = Some(decay);
                self.mark_edit("alpha_decay");
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
            let seed = self.layout.sampling.seed;
            self.layout.sampling = Default::default();
            self.layout.sampling.seed = seed;
            self.mark_edit("sampling reset");
        }
    }

    pub(super) fn inspector_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Inspector");
        let limits = self.model_limits();
        let count = self.layout.grounded_count();
        let count_text = format!("{count} of {} boxes", limits.max_grounding_slots);
        if count > limits.max_grounding_slots {
            ui.label(RichText::new(count_text).color(ERROR_COLOR));
        } else {
            ui.label(RichText::new(count_text).weak());
        }
        let mut select = None;
        let mut person_number = 0;
        for (i, e) in self.layout.entities.iter().enumerate() {
            let unusable = self.unsupported_reason(e.kind());
            ui.horizontal(|ui| {
                let (rect, _) =
                    ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
                let swatch = if unusable.is_some() {
                    Color32::from_gray(140)
                } else {
                    entity_color(i)
                };
                ui.painter().rect_filled(rect, 2.0, swatch);
                let name = match e {
                    Entity::TextBox { phrase, .. } if phrase.trim().is_empty() => {
                        "(no phrase)".to_string()
                    }
                    Entity::TextBox { phrase, .. } => phrase.clone(),
                    Entity::ImageBox { phrase, image, .. } => match phrase {
                        Some(p) if !p.trim().is_empty() => {
                            format!("picture {} · {p}", describe_reference(image))
                        }
                        _ => format!("picture {}", describe_reference(image)),
                    },
                    Entity::StyleImage { image } => {
                        format!("style image {}", describe_reference(image))
                    }
                    Entity::Keypoints { points } => {
                        person_number += 1;
                        let placed = points.iter().flatten().count();
                        format!(
                            "person {person_number} ({placed} of {KEYPOINTS_PER_PERSON} joints)"
                        )
                    }
                };
                let warn = if unusable.is_some() {
                    "(!) "
                } else if self
                    .issues
                    .under(&format!("entities[{i}]"))
                    .next()
                    .is_some()
                {
                    "! "
                } else {
                    ""
                };
                if ui
                    .selectable_label(
                        self.selection == Some(i),
                        format!("{warn}{}. {name}", i + 1),
                    )
                    .clicked()
                {
                    select = Some(i);
                }
            });
            if let Some(reason) = unusable {
                ui.label(
                    RichText::new(format!("(!) not used by this model: {reason}"))
                        .small()
                        .color(ERROR_COLOR),
                );
            }
        }
        if let Some(i) = select {
            self.selection = Some(i);
        }
        if self.layout.entities.is_empty() {
            ui.label(
                RichText::new(
                    "Drag on the canvas to draw a box, then type what goes in it. Drop a picture for an image box; the person tool (P) places people.",
                )
                .weak(),
            );
        }
        ui.separator();
        match self.selection.filter(|&i| i < self.layout.entities.len()) {
            Some(i) => self.entity_ui(ui, i),
            None => {
                ui.label(RichText::new("Nothing selected").weak());
            }
        }
        ui.separator();
        self.style_slot_ui(ui);
        ui.separator();
        self.inpaint_slot_ui(ui);
    }

    /// A thumbnail of a layout picture (decoded off the UI thread), at most `max` points.
    fn picture_thumb_ui(
        &mut self,
        ui: &mut egui::Ui,
        reference: &str,
        max: egui::Vec2,
        usable: bool,
    ) {
        let base = self.picture_base();
        let location = self.picture_location(reference);
        let ctx = ui.ctx().clone();
        match self.pictures.get(&ctx, reference, base.as_deref()) {
            PictureState::Ready(p) => {
                let aspect = p.aspect();
                let size = if max.x / max.y > aspect {
                    egui::vec2(max.y * aspect, max.y)
                } else {
                    egui::vec2(max.x, max.x / aspect)
                };
                let tint = if usable {
                    Color32::WHITE
                } else {
                    Color32::from_white_alpha(90)
                };
                let hover = format!("{location}\n{} × {} px", p.size[0], p.size[1]);
                ui.add(
                    egui::Image::from_texture(egui::load::SizedTexture::new(p.texture.id(), size))
                        .tint(tint),
                )
                .on_hover_text(hover);
            }
            PictureState::Loading => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(RichText::new("Loading the picture…").weak());
                });
            }
            PictureState::Failed(e) => {
                let e = e.to_string();
                ui.label(
                    RichText::new(format!("(!) The picture cannot be shown: {e}"))
                        .color(ERROR_COLOR),
                );
            }
        }
    }

    /// The style image: one picture whose style steers the whole image.
    fn style_slot_ui(&mut self, ui: &mut egui::Ui) {
        ui.label(RichText::new("Style image").strong());
        let blocker = self.unsupported_reason(EntityKind::StyleImage);
        let current = self.layout.entities.iter().find_map(|e| match e {
            Entity::StyleImage { image } => Some(image.clone()),
            _ => None,
        });
        if let Some(image) = &current {
            self.picture_thumb_ui(ui, image, egui::vec2(120.0, 90.0), blocker.is_none());
            ui.label(RichText::new(describe_reference(image)).small().weak());
        } else {
            ui.label(
                RichText::new("None: a reference picture whose style steers the whole image.")
                    .small()
                    .weak(),
            );
        }
        if let (Some(reason), Some(_)) = (&blocker, &current) {
            ui.label(
                RichText::new(format!("(!) not used by this model: {reason}"))
                    .small()
                    .color(ERROR_COLOR),
            );
        }
        ui.horizontal(|ui| {
            let label = if current.is_some() {
                "Replace style image…"
            } else {
                "Choose style image…"
            };
            let r = ui
                .add_enabled(blocker.is_none(), Button::new(label))
                .on_hover_text("A PNG, JPEG or WebP whose style steers the whole picture");
            let r = match &blocker {
                Some(reason) => r.on_disabled_hover_text(format!("Off: {reason}")),
                None => r,
            };
            if r.clicked() {
                self.pick_picture_dialog(PicturePurpose::Style);
            }
            if ui
                .add_enabled(current.is_some(), Button::new("Clear style image"))
                .on_hover_text("Remove the style image (undoable)")
                .clicked()
            {
                self.clear_style_image();
            }
        });
    }

    /// Grounded inpainting: the picture whose boxed regions are regenerated.
    fn inpaint_slot_ui(&mut self, ui: &mut egui::Ui) {
        ui.label(RichText::new("Inpainting").strong());
        let blocker = self.inpaint_blocker();
        let current = self.layout.inpaint.as_ref().map(|i| i.image.clone());
        if let Some(image) = &current {
            self.picture_thumb_ui(ui, image, egui::vec2(120.0, 90.0), blocker.is_none());
            ui.label(
                RichText::new(format!(
                    "{}: the boxes mark what is regenerated (hatched on the canvas); the rest is kept. The picture is centre-cropped to the canvas's aspect ratio.",
                    describe_reference(image)
                ))
                .small()
                .weak(),
            );
        } else {
            ui.label(
                RichText::new("Off: open a picture to regenerate only the boxed regions of it.")
                    .small()
                    .weak(),
            );
        }
        issue_lines(ui, self.issues_under("inpaint"));
        ui.horizontal_wrapped(|ui| {
            let r = ui
                .add_enabled(
                    blocker.is_none(),
                    Button::new("Open picture for inpainting…"),
                )
                .on_hover_text("A PNG, JPEG or WebP; draw boxes over what should be regenerated");
            let r = match &blocker {
                Some(reason) => r.on_disabled_hover_text(format!("Off: {reason}")),
                None => r,
            };
            if r.clicked() {
                self.pick_picture_dialog(PicturePurpose::Inpaint);
            }
            if ui
                .add_enabled(current.is_some(), Button::new("Clear inpainting"))
                .on_hover_text("Generate a whole new picture again (undoable)")
                .clicked()
            {
                self.clear_inpaint();
            }
        });
    }

    fn entity_ui(&mut self, ui: &mut egui::Ui, i: usize) {
        let n = self.layout.entities.len();
        let kind = self.layout.entities[i].kind();
        let title = match kind {
            EntityKind::TextBox => "text box",
            EntityKind::ImageBox => "image box",
            EntityKind::StyleImage => "style image",
            EntityKind::Keypoints => "person",
        };
        ui.label(
            RichText::new(format!("{} ({title})", i + 1))
                .strong()
                .color(entity_color(i)),
        );
        let usable = self.unsupported_reason(kind).is_none();
        let focus = std::mem::take(&mut self.focus_phrase);
        if let Entity::TextBox { phrase, .. } = &mut self.layout.entities[i] {
            let label = ui.label("Phrase");
            let r = ui
                .add(
                    egui::TextEdit::singleline(phrase)
                        .hint_text("what goes in this box")
                        .desired_width(f32::INFINITY),
                )
                .labelled_by(label.id);
            if focus {
                r.request_focus();
            }
            if r.changed() {
                self.mark_edit(format!("entities[{i}].phrase"));
            }
        }
        if let Some(image) = self.layout.entities[i].image().map(str::to_string) {
            self.picture_thumb_ui(ui, &image, egui::vec2(240.0, 160.0), usable);
            ui.label(RichText::new(describe_reference(&image)).small().weak())
                .on_hover_text(self.picture_location(&image));
            let replace = ui
                .button("Replace picture…")
                .on_hover_text("Choose another PNG, JPEG or WebP (or drop one on the box)");
            if replace.clicked() {
                let purpose = if kind == EntityKind::StyleImage {
                    PicturePurpose::Style
                } else {
                    PicturePurpose::Fill {
                        index: i,
                        previous: image.clone(),
                    }
                };
                self.pick_picture_dialog(purpose);
            }
        }
        if let Entity::ImageBox { phrase, .. } = &mut self.layout.entities[i] {
            let label = ui.label("Phrase (optional)");
            let mut text = phrase.clone().unwrap_or_default();
            let r = ui
                .add(
                    egui::TextEdit::singleline(&mut text)
                        .hint_text("what the picture shows, e.g. a corgi")
                        .desired_width(f32::INFINITY),
                )
                .labelled_by(label.id);
            if r.changed() {
                *phrase = (!text.is_empty()).then_some(text);
                self.mark_edit(format!("entities[{i}].phrase"));
            }
        }
        if matches!(self.layout.entities[i], Entity::Keypoints { .. }) {
            self.joints_ui(ui, i);
        }
        let (w, h) = (
            self.layout.width.max(1) as f64,
            self.layout.height.max(1) as f64,
        );
        if let Some(b) = self.layout.entities[i].bbox() {
            let mut px = [b[0] * w, b[1] * h, (b[2] - b[0]) * w, (b[3] - b[1]) * h];
            let mut changed = false;
            ui.label("Box in pixels");
            egui::Grid::new("box-grid").num_columns(4).show(ui, |ui| {
                for (k, name) in ["x", "y", "width", "height"].iter().enumerate() {
                    let l = ui.label(*name);
                    let max = if k % 2 == 0 { w } else { h };
                    let r = ui
                        .add(
                            egui::DragValue::new(&mut px[k])
                                .range(0.0..=max)
                                .speed(1.0)
                                .max_decimals(1),
                        )
                        .labelled_by(l.id);
                    changed |= r.changed();
                    if k == 1 {
                        ui.end_row();
                    }
                }
                ui.end_row();
            });
            if changed {
                let nb = [
                    px[0] / w,
                    px[1] / h,
                    (px[0] + px[2]) / w,
                    (px[1] + px[3]) / h,
                ];
                if let Some(b) = self.layout.entities[i].bbox_mut() {
                    *b = nb;
                }
                self.mark_edit(format!("entities[{i}].box"));
            }
        }
        issue_lines(ui, self.issues_under(&format!("entities[{i}]")));
        ui.horizontal_wrapped(|ui| {
            if ui.button("Delete").on_hover_text("Delete").clicked() {
                self.delete_selected();
            }
            if ui.button("Duplicate").on_hover_text("Ctrl+D").clicked() {
                self.duplicate_selected();
            }
        });
        ui.horizontal_wrapped(|ui| {
            ui.label("Order");
            if ui
                .add_enabled(i > 0, Button::new("Earlier"))
                .on_hover_text("Earlier grounding token; drawn below")
                .clicked()
            {
                self.move_entity(i, i - 1);
            }
            if ui
                .add_enabled(i + 1 < n, Button::new("Later"))
                .on_hover_text("Later grounding token; drawn on top")
                .clicked()
            {
                self.move_entity(i, i + 1);
            }
        });
    }

    /// The joints of person `i`: shown or hidden (null in the file), and a pose reset.
    fn joints_ui(&mut self, ui: &mut egui::Ui, i: usize) {
        let Some(Entity::Keypoints { points }) = self.layout.entities.get(i) else {
            return;
        };
        let visible: Vec<bool> = points.iter().map(Option::is_some).collect();
        ui.label(RichText::new("Joints").strong())
            .on_hover_text("Unticked joints are left out (null): the model places them freely");
        let mut toggle = None;
        egui::Grid::new(("joints-grid", i))
            .num_columns(2)
            .spacing([10.0, 2.0])
            .show(ui, |ui| {
                // Nose, then the eyes, ears, … as (left, right) pairs.
                let mut shown = |ui: &mut egui::Ui, k: usize| {
                    let mut v = visible.get(k).copied().unwrap_or(false);
                    if ui.checkbox(&mut v, joint_label(k)).changed() {
                        toggle = Some((k, v));
                    }
                };
                shown(ui, 0);
                ui.end_row();
                for pair in (1..KEYPOINTS_PER_PERSON).step_by(2) {
                    shown(ui, pair);
                    shown(ui, pair + 1);
                    ui.end_row();
                }
            });
        if let Some((k, v)) = toggle {
            self.set_joint_visible(i, k, v);
        }
        ui.horizontal_wrapped(|ui| {
            if ui
                .button("Reset pose")
                .on_hover_text("Stand the person up straight where it is, with every joint")
                .clicked()
            {
                self.reset_pose(i);
            }
        });
        ui.label(
            RichText::new(
                "Drag a joint to pose, the body to move; right-click a joint to hide it.",
            )
            .small()
            .weak(),
        );
    }

    /// Puts person `i` back in the standing pose, centred where it is (undoable).
    pub fn reset_pose(&mut self, i: usize) {
        let (w, h) = (self.layout.width, self.layout.height);
        let Some(Entity::Keypoints { points }) = self.layout.entities.get(i) else {
            return;
        };
        let centre = points_bbox(points)
            .map(|b| [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0])
            .unwrap_or([0.5, 0.5]);
        let fresh = default_person(centre, w, h);
        if *points == fresh {
            return;
        }
        self.history.push(&self.layout);
        self.layout.entities[i] = Entity::Keypoints { points: fresh };
        self.frame_start = self.layout.clone();
    }

    // ----- bottom -----

    pub(super) fn history_strip_ui(&mut self, ui: &mut egui::Ui) {
        egui::Panel::bottom("glichen-history").resizable(false).exact_size(112.0).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.label(RichText::new("History").strong());
                ui.label(RichText::new("click a result to restore its layout and settings").small().weak());
            });
            if self.history_items.is_empty() {
                ui.label(RichText::new("Finished images appear here.").weak());
                return;
            }
            let mut restore = None;
            egui::ScrollArea::horizontal().show(ui, |ui| {
                ui.horizontal(|ui| {
                    for (k, item) in self.history_items.iter().enumerate() {
                        let size = item.texture.size_vec2();
                        let scale = 72.0 / size.y.max(1.0);
                        let button = egui::Button::image(egui::Image::new((item.texture.id(), size * scale)))
                            .selected(matches!(&self.canvas_image, Some(CanvasImage::Result { texture, .. }) if texture.id() == item.texture.id()));
                        let r = ui.add(button).on_hover_text(format!(
                            "{} · seed {} · {} steps · α₀ {:.2} · {:.1?}\n{}",
                            item.job,
                            item.seed,
                            item.layout.sampling.resolve().steps,
                            item.layout.sampling.resolve().alpha0,
                            item.elapsed,
                            item.layout.prompt
                        ));
                        if r.clicked() {
                            restore = Some(k);
                        }
                    }
                });
            });
            if let Some(k) = restore {
                self.restore_history_item(k);
            }
        });
    }

    /// Restores a past result: its layout and settings (undoable) and its image.
    pub fn restore_history_item(&mut self, k: usize) {
        let Some(item) = self.history_items.get(k) else {
            return;
        };
        let layout: Layout = item.layout.clone();
        let texture = item.texture.clone();
        let image = item.image.clone();
        self.set_layout(layout.clone());
        self.canvas_image = Some(CanvasImage::Result {
            texture,
            image,
            layout,
        });
        self.frame_start = self.layout.clone();
        self.status = "Restored a past result's layout and settings".into();
    }

    pub(super) fn status_bar_ui(&mut self, ui: &mut egui::Ui) {
        egui::Panel::bottom("glichen-status")
            .resizable(false)
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.label(RichText::new(&self.status).small());
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        let path = if self.previews.uses_gpu() {
                            "previews: WGSL on GPU"
                        } else {
                            "previews: CPU"
                        };
                        if ui
                            .small_button(path)
                            .on_hover_text("Show frame times")
                            .clicked()
                        {
                            self.show_frame_stats = !self.show_frame_stats;
                        }
                        if self.show_frame_stats {
                            if let (Some(p50), Some(p99)) = (
                                self.frame_stats.quantile(0.5),
                                self.frame_stats.quantile(0.99),
                            ) {
                                ui.label(
                                    RichText::new(format!(
                                        "frame p50 {:.2} ms · p99 {:.2} ms",
                                        p50.as_secs_f64() * 1e3,
                                        p99.as_secs_f64() * 1e3
                                    ))
                                    .small(),
                                );
                            }
                        }
                        if let Some(run) = &self.run {
                            if let Some(first) = run.first_preview {
                                ui.label(
                                    RichText::new(format!(
                                        "first preview after {:.0} ms",
                                        first.as_secs_f64() * 1e3
                                    ))
                                    .small()
                                    .weak(),
                                );
                            }
                        }
                    });
                });
            });
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
