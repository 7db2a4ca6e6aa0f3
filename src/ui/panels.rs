//! The bars and the tools around the canvas: keyboard shortcuts, the top bar (files, undo), the
//! notices, the tools panel (tools, view, canvas size), the history strip and the status bar.
//! The generate side panel is in `generate_panel`, the inspector in `inspector`.

use super::{CanvasImage, NoticeLevel, PicturePurpose, StudioApp, Tool};
use crate::layout::EntityKind;
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

pub(super) const ERROR_COLOR: Color32 = Color32::from_rgb(255, 110, 110);

pub(super) fn issue_lines(ui: &mut egui::Ui, issues: Vec<String>) {
    for text in issues {
        ui.label(RichText::new(format!("! {text}")).color(ERROR_COLOR));
    }
}

impl StudioApp {
    pub(super) fn issues_at(&self, path: &str) -> Vec<String> {
        self.doc
            .issues()
            .at(path)
            .map(|i| i.message.clone())
            .collect()
    }

    pub(super) fn issues_under(&self, path: &str) -> Vec<String> {
        self.doc
            .issues()
            .under(path)
            .map(ToString::to_string)
            .collect()
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
                if i.key_pressed(Key::K) {
                    a.tool = Some(Tool::Brush);
                }
                if i.key_pressed(Key::G) {
                    a.tool = Some(Tool::Fill);
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
            self.doc.selection = None;
        }
        if let Some((dx, dy)) = a.nudge {
            self.nudge_selected(dx, dy);
        }
        if let Some(t) = a.tool {
            match self.tool_blocker(t) {
                None => self.canvas.tool = t,
                Some(reason) => {
                    self.notify(NoticeLevel::Warning, format!("That tool is off: {reason}."));
                }
            }
        }
        if a.fit {
            self.reset_view();
        }
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
                let recent = self.files.settings.recent.clone();
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
                let mut embed = self.files.settings.embed_pictures;
                if ui
                    .checkbox(&mut embed, "Embed pictures in the file")
                    .on_hover_text("Save and Save as write the pictures (image boxes, style image, picture to inpaint) into the layout file, so it travels as one file. Off: pictures are saved as paths relative to the layout file.")
                    .changed()
                {
                    self.set_embed_pictures(embed);
                }
                let has_result = matches!(self.generation.canvas_image, Some(CanvasImage::Result { .. }));
                if ui.add_enabled(has_result, Button::new("Export PNG…")).on_hover_text("Save the image with its layout embedded").clicked() {
                    self.export_png_dialog();
                }
                ui.separator();
                if ui.add_enabled(self.doc.can_undo(), Button::new("Undo")).on_hover_text("Ctrl+Z").clicked() {
                    self.undo();
                }
                if ui.add_enabled(self.doc.can_redo(), Button::new("Redo")).on_hover_text("Ctrl+Shift+Z / Ctrl+Y").clicked() {
                    self.redo();
                }
                ui.separator();
                let doc = self
                    .files
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
                if self.sem_blocker().is_none() {
                    self.tool_button_ui(ui, Tool::Brush, "Paint classes (K)", "Drag on the canvas to paint the class chosen in the map slot into the semantic map");
                    self.tool_button_ui(ui, Tool::Fill, "Fill classes (G)", "Click on the canvas to fill a region of the semantic map with the chosen class");
                }
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
                    let people = self.doc.layout().people_count();
                    let text = format!("{people} of {} people", limits.max_people);
                    ui.label(if people > limits.max_people {
                        RichText::new(text).color(ERROR_COLOR)
                    } else {
                        RichText::new(text).weak()
                    });
                }
                ui.separator();
                ui.checkbox(&mut self.files.settings.snap, "Snap to latent grid (8 px)");
                ui.checkbox(&mut self.files.settings.show_boxes, "Show boxes");
                ui.checkbox(&mut self.files.settings.show_image, "Show preview / result");
                ui.separator();
                ui.label("View");
                ui.horizontal(|ui| {
                    if ui.button("−").on_hover_text("Zoom out").clicked() {
                        self.canvas.view.zoom = (self.canvas.view.zoom / 1.25).max(0.1);
                    }
                    if ui.button("Fit").on_hover_text("Fit the canvas to the window (F)").clicked() {
                        self.reset_view();
                    }
                    if ui.button("+").on_hover_text("Zoom in").clicked() {
                        self.canvas.view.zoom = (self.canvas.view.zoom * 1.25).min(32.0);
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
                Button::selectable(self.canvas.tool == tool, label),
            )
            .on_hover_text(help);
        let r = match blocker {
            Some(reason) => r.on_disabled_hover_text(format!("Off: {reason}")),
            None => r,
        };
        if r.clicked() {
            self.canvas.tool = tool;
        }
    }

    fn canvas_size_ui(&mut self, ui: &mut egui::Ui) {
        let label = ui.label("Canvas size");
        let current = (self.doc.layout().width, self.doc.layout().height);
        let text = format!("{} × {}", current.0, current.1);
        let combo = egui::ComboBox::from_id_salt("canvas-size")
            .selected_text(text)
            .show_ui(ui, |ui| {
                for (w, h) in SIZE_PRESETS {
                    if ui
                        .selectable_label(current == (w, h), format!("{w} × {h}"))
                        .clicked()
                    {
                        self.doc.live().width = w;
                        self.doc.live().height = h;
                        self.doc.mark_edit("canvas size");
                    }
                }
            });
        combo.response.labelled_by(label.id);
        ui.horizontal(|ui| {
            let wl = ui.label("W");
            let mut w = self.doc.layout().width;
            if ui
                .add(egui::DragValue::new(&mut w).range(1..=4096).speed(8))
                .labelled_by(wl.id)
                .changed()
            {
                self.doc.live().width = w;
                self.doc.mark_edit("canvas width");
            }
            let hl = ui.label("H");
            let mut h = self.doc.layout().height;
            if ui
                .add(egui::DragValue::new(&mut h).range(1..=4096).speed(8))
                .labelled_by(hl.id)
                .changed()
            {
                self.doc.live().height = h;
                self.doc.mark_edit("canvas height");
            }
        });
        let mut issues = self.issues_at("width");
        issues.extend(self.issues_at("height"));
        issue_lines(ui, issues);
    }

    // ----- bottom -----

    pub(super) fn history_strip_ui(&mut self, ui: &mut egui::Ui) {
        egui::Panel::bottom("glichen-history").resizable(false).exact_size(112.0).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.label(RichText::new("History").strong());
                ui.label(RichText::new("click a result to restore its layout and settings").small().weak());
            });
            if self.generation.history_items.is_empty() {
                ui.label(RichText::new("Finished images appear here.").weak());
                return;
            }
            let mut restore = None;
            egui::ScrollArea::horizontal().show(ui, |ui| {
                ui.horizontal(|ui| {
                    for (k, item) in self.generation.history_items.iter().enumerate() {
                        let size = item.texture.size_vec2();
                        let scale = 72.0 / size.y.max(1.0);
                        let button = Button::image(egui::Image::new((item.texture.id(), size * scale)))
                            .selected(matches!(&self.generation.canvas_image, Some(CanvasImage::Result { texture, .. }) if texture.id() == item.texture.id()));
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
        let Some(item) = self.generation.history_items.get(k) else {
            return;
        };
        let layout = item.layout.clone();
        let texture = item.texture.clone();
        let image = item.image.clone();
        self.set_layout(layout.clone());
        self.generation.canvas_image = Some(CanvasImage::Result {
            texture,
            image,
            layout,
        });
        self.status = "Restored a past result's layout and settings".into();
    }

    pub(super) fn status_bar_ui(&mut self, ui: &mut egui::Ui) {
        egui::Panel::bottom("glichen-status")
            .resizable(false)
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.label(RichText::new(&self.status).small());
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        let path = if self.generation.previews.uses_gpu() {
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
                        if let Some(run) = &self.generation.run {
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
