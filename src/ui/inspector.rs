//! The inspector: the layout's entities, the selected one's phrase, picture, box and joints, the
//! style image slot and the inpainting slot.

use super::canvas::entity_color;
use super::edit::PicturePurpose;
use super::panels::{issue_lines, ERROR_COLOR};
use super::pictures::{describe_reference, PictureState};
use super::StudioApp;
use crate::layout::keypoints::joint_label;
use crate::layout::{Entity, EntityKind, KEYPOINTS_PER_PERSON};
use egui::{Button, Color32, RichText};

impl StudioApp {
    pub(super) fn inspector_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Inspector");
        let limits = self.model_limits();
        let count = self.doc.layout().grounded_count();
        let count_text = format!("{count} of {} boxes", limits.max_grounding_slots);
        if count > limits.max_grounding_slots {
            ui.label(RichText::new(count_text).color(ERROR_COLOR));
        } else {
            ui.label(RichText::new(count_text).weak());
        }
        let mut select = None;
        let mut person_number = 0;
        for (i, e) in self.doc.layout().entities.iter().enumerate() {
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
                    Entity::Map { kind, image } => {
                        format!("{} {}", kind.label(), describe_reference(image))
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
                    .doc
                    .issues()
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
                        self.doc.selection == Some(i),
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
            self.doc.selection = Some(i);
        }
        if self.doc.layout().entities.is_empty() {
            ui.label(
                RichText::new(
                    "Drag on the canvas to draw a box, then type what goes in it. Drop a picture for an image box; the person tool (P) places people.",
                )
                .weak(),
            );
        }
        ui.separator();
        match self
            .doc
            .selection
            .filter(|&i| i < self.doc.layout().entities.len())
        {
            Some(i) => self.entity_ui(ui, i),
            None => {
                ui.label(RichText::new("Nothing selected").weak());
            }
        }
        self.map_slot_ui(ui);
        ui.separator();
        self.style_slot_ui(ui);
        ui.separator();
        self.inpaint_slot_ui(ui);
    }

    /// A thumbnail of a layout picture (decoded off the UI thread), at most `max` points.
    pub(super) fn picture_thumb_ui(
        &mut self,
        ui: &mut egui::Ui,
        reference: &str,
        max: egui::Vec2,
        usable: bool,
    ) {
        let base = self.picture_base();
        let location = self.picture_location(reference);
        let ctx = ui.ctx().clone();
        match self.files.pictures.get(&ctx, reference, base.as_deref()) {
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
        let current = self.doc.layout().entities.iter().find_map(|e| match e {
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
        let current = self.doc.layout().inpaint.as_ref().map(|i| i.image.clone());
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
        let n = self.doc.layout().entities.len();
        let kind = self.doc.layout().entities[i].kind();
        let title = match kind {
            EntityKind::TextBox => "text box",
            EntityKind::ImageBox => "image box",
            EntityKind::StyleImage => "style image",
            EntityKind::Keypoints => "person",
            EntityKind::Map => "spatial map",
        };
        ui.label(
            RichText::new(format!("{} ({title})", i + 1))
                .strong()
                .color(entity_color(i)),
        );
        let usable = self.unsupported_reason(kind).is_none();
        let focus = std::mem::take(&mut self.canvas.focus_phrase);
        if let Entity::TextBox { phrase, .. } = &mut self.doc.live().entities[i] {
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
                self.doc.mark_edit(format!("entities[{i}].phrase"));
            }
        }
        if let Some(image) = self.doc.layout().entities[i].image().map(str::to_string) {
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
        if let Entity::ImageBox { phrase, .. } = &mut self.doc.live().entities[i] {
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
                self.doc.mark_edit(format!("entities[{i}].phrase"));
            }
        }
        if matches!(self.doc.layout().entities[i], Entity::Keypoints { .. }) {
            self.joints_ui(ui, i);
        }
        let (w, h) = (
            self.doc.layout().width.max(1) as f64,
            self.doc.layout().height.max(1) as f64,
        );
        if let Some(b) = self.doc.layout().entities[i].bbox() {
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
                if let Some(b) = self.doc.live().entities[i].bbox_mut() {
                    *b = nb;
                }
                self.doc.mark_edit(format!("entities[{i}].box"));
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
                self.doc.move_entity(i, i - 1);
            }
            if ui
                .add_enabled(i + 1 < n, Button::new("Later"))
                .on_hover_text("Later grounding token; drawn on top")
                .clicked()
            {
                self.doc.move_entity(i, i + 1);
            }
        });
    }

    /// The joints of person `i`: shown or hidden (null in the file), and a pose reset.
    fn joints_ui(&mut self, ui: &mut egui::Ui, i: usize) {
        let Some(Entity::Keypoints { points }) = self.doc.layout().entities.get(i) else {
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
}
