//! The spatial map: the inspector's slot for the layout's one map (choose a picture, or make
//! Canny edges from a photo with live thresholds), and the canvas layer that shows it under the
//! boxes, centre-cropped as the model sees it, at an adjustable opacity.

use egui::{Button, RichText};
use image::RgbImage;

use std::sync::{Arc, Mutex};

use super::edit::PicturePurpose;
use super::file_actions::FileOutcome;
use super::pictures::describe_reference;
use super::{NoticeLevel, StudioApp};
use crate::layout::{Entity, EntityKind, MapKind};
use crate::maps::make::{self, Estimators, MapRecipe};

/// OpenCV's thresholds in GLIGEN's notes for its Canny maps.
pub const CANNY_DEFAULT: (f32, f32) = (100.0, 200.0);

/// What the map tools keep between frames (not part of the document).
pub(crate) struct MapTools {
    /// Opacity of the map layer on the canvas.
    pub(crate) opacity: f32,
    /// The kind a new map gets when no map model is loaded.
    pub(crate) kind: MapKind,
    /// The photo Canny edges are made from, centre-cropped and resized to the canvas.
    pub(crate) canny_source: Option<(String, RgbImage)>,
    pub(crate) canny_thresholds: (f32, f32),
    /// The edges for the current thresholds and their preview texture.
    canny_edges: Option<((f32, f32), RgbImage, egui::TextureHandle)>,
    /// The semantic map's brush and fill.
    pub(crate) sem: super::sem_paint::SemPaint,
    /// The depth and HED networks, loaded by the first map that needs them and shared with the
    /// file tasks that run them.
    estimators: Arc<Mutex<Estimators>>,
}

impl Default for MapTools {
    fn default() -> Self {
        Self {
            opacity: 0.6,
            kind: MapKind::Canny,
            canny_source: None,
            canny_thresholds: CANNY_DEFAULT,
            canny_edges: None,
            sem: super::sem_paint::SemPaint::default(),
            estimators: Arc::new(Mutex::new(Estimators::new(
                candle_core::Device::Cpu,
                "",
                "",
            ))),
        }
    }
}

/// A picture read and decoded off the UI thread.
fn read_decoded(reference: &str) -> Result<image::DynamicImage, String> {
    crate::layout::read_picture(reference, None)
        .and_then(|bytes| crate::layout::decode_picture(&bytes))
}

/// The photo for Canny edges, centre-cropped and resized to the canvas side off the UI thread
/// (the edges themselves follow the threshold sliders live).
pub(crate) fn prepare_canny_source(reference: &str, name: String, side: u32) -> FileOutcome {
    let prepared = read_decoded(reference).and_then(|picture| {
        make::square(
            &picture,
            side,
            crate::pipeline::resample::PilFilter::Bicubic,
        )
        .map_err(|e| e.to_string())
    });
    FileOutcome::MapSource(prepared.map(|img| (name, img)))
}

/// A map made from a picture by `recipe` (the networks load on first use), off the UI thread,
/// kept as a PNG data URI.
fn make_map_task(
    recipe: MapRecipe,
    reference: &str,
    name: &str,
    side: u32,
    estimators: &Mutex<Estimators>,
    (depth_spec, hed_spec): &(String, String),
) -> FileOutcome {
    let made = read_decoded(reference).and_then(|picture| {
        // Blocks while another map task runs a network: this is a file task's thread.
        let mut estimators = estimators
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        estimators.set_specs(depth_spec, hed_spec);
        make::make_map(recipe, &picture, side, &mut estimators).map_err(|e| e.to_string())
    });
    FileOutcome::MapMade(made.and_then(|img| {
        let uri = crate::layout::png_data_uri(&img).map_err(|e| e.to_string())?;
        Ok((
            recipe.kind(),
            uri,
            format!("{} from {name}", recipe.describe()),
        ))
    }))
}

impl StudioApp {
    /// The kind the map slot works with: the loaded map model's, else the user's choice.
    fn map_kind(&self) -> MapKind {
        self.model_limits().map_kind.unwrap_or(self.maps.kind)
    }

    /// The inspector's map slot (shown when the model takes a map or the layout has one).
    pub(super) fn map_slot_ui(&mut self, ui: &mut egui::Ui) {
        let limits = self.model_limits();
        let current = self.doc.layout().entities.iter().find_map(|e| match e {
            Entity::Map { kind, image } => Some((*kind, image.clone())),
            _ => None,
        });
        if limits.map_kind.is_none() && current.is_none() && !limits.supports_maps {
            return;
        }
        ui.separator();
        let kind = self.map_kind();
        ui.label(RichText::new(format!("Spatial map ({kind})")).strong());
        if limits.map_kind.is_none() {
            ui.horizontal(|ui| {
                let label = ui.label("Map kind");
                egui::ComboBox::from_id_salt("map-kind")
                    .selected_text(kind.label())
                    .show_ui(ui, |ui| {
                        for k in MapKind::ALL {
                            ui.selectable_value(&mut self.maps.kind, k, k.label());
                        }
                    })
                    .response
                    .labelled_by(label.id);
            });
        }
        let blocker = self.unsupported_reason(EntityKind::Map);
        match &current {
            Some((k, image)) => {
                self.picture_thumb_ui(ui, image, egui::vec2(120.0, 90.0), blocker.is_none());
                ui.label(
                    RichText::new(format!("{} · {}", k.label(), describe_reference(image)))
                        .small()
                        .weak(),
                );
            }
            None => {
                ui.label(
                    RichText::new(format!(
                        "None: a whole-image {} the picture must follow.",
                        kind.label()
                    ))
                    .weak(),
                );
            }
        }
        ui.horizontal(|ui| {
            if ui
                .add_enabled(
                    blocker.is_none(),
                    Button::new(format!("Choose {}…", kind.label())),
                )
                .on_hover_text("A PNG, JPEG or WebP map, cropped to a square like the model does")
                .clicked()
            {
                self.pick_picture_dialog(PicturePurpose::Map);
            }
            if ui
                .add_enabled(current.is_some(), Button::new("Clear map"))
                .on_hover_text("Remove the map (undoable)")
                .clicked()
            {
                self.doc.edit("clear the map", |l| {
                    l.entities.retain(|e| !matches!(e, Entity::Map { .. }));
                });
                self.doc.selection = None;
            }
        });
        ui.add(egui::Slider::new(&mut self.maps.opacity, 0.0..=1.0).text("Map opacity"));
        let usable = blocker.is_none();
        match kind {
            MapKind::Canny => self.canny_ui(ui, blocker.is_none()),
            MapKind::Normal => {
                self.maker_button_ui(ui, usable, MapRecipe::NormalsFromDepth, "Make normals from a depth map…", "Surface normals from a depth picture (near = bright), in the convention of GLIGEN's training maps");
                self.maker_button_ui(ui, usable, MapRecipe::NormalsFromPhoto, "Estimate normals from a photo…", "Depth estimated from the photo by the depth network, then surface normals from it");
                self.estimator_field_ui(ui, false);
            }
            MapKind::Depth => {
                self.maker_button_ui(ui, usable, MapRecipe::DepthFromPhoto, "Estimate depth from a photo…", "Depth Anything V2 estimates depth from the photo (near = bright, stretched to 0–255 as GLIGEN's MiDaS maps are)");
                self.estimator_field_ui(ui, false);
            }
            MapKind::Hed => {
                self.maker_button_ui(
                    ui,
                    usable,
                    MapRecipe::HedFromPhoto,
                    "Detect HED edges in a photo…",
                    "Soft edges from the HED network (ControlNet's Apache-2.0 HED)",
                );
                self.estimator_field_ui(ui, true);
            }
            MapKind::Sem => {
                self.maker_button_ui(ui, usable, MapRecipe::ClassesFromColours, "Use a coloured segmentation…", "A segmentation in the ADE20K palette, turned into the class indices the checkpoint reads");
                self.sem_paint_ui(ui);
            }
        }
    }

    /// A button that asks for a picture and makes the map from it with `recipe`.
    fn maker_button_ui(
        &mut self,
        ui: &mut egui::Ui,
        usable: bool,
        recipe: MapRecipe,
        label: &str,
        help: &str,
    ) {
        if ui
            .add_enabled(usable, Button::new(label))
            .on_hover_text(help)
            .clicked()
        {
            self.pick_picture_dialog(PicturePurpose::MakeMap(recipe));
        }
    }

    /// Where the depth (or HED) network comes from: a folder or file, a catalogue name or a hub
    /// repo id; empty is the catalogue default, fetched into the Hugging Face cache when missing.
    fn estimator_field_ui(&mut self, ui: &mut egui::Ui, hed: bool) {
        let settings = &mut self.files.settings;
        let (label, field, hint, help) = if hed {
            (
                "HED network",
                &mut settings.hed_model,
                make::DEFAULT_HED_MODEL,
                "ControlNetHED.pth (lllyasviel/Annotators, Apache-2.0): a file or folder, or `hed` from the catalogue (`glichen fetch hed`)",
            )
        } else {
            (
                "Depth network",
                &mut settings.depth_model,
                make::DEFAULT_DEPTH_MODEL,
                "Depth Anything V2 in transformers' layout: a folder or hub repo id, or `depth-anything-v2-small` from the catalogue (`glichen fetch depth-anything-v2-small`)",
            )
        };
        ui.horizontal(|ui| {
            let l = ui.label(label);
            ui.add(
                egui::TextEdit::singleline(field)
                    .hint_text(hint)
                    .desired_width(150.0),
            )
            .labelled_by(l.id)
            .on_hover_text(help);
        });
    }

    /// Canny edges from a photo: pick it, tune the thresholds with a live preview, use the edges.
    fn canny_ui(&mut self, ui: &mut egui::Ui, usable: bool) {
        if ui
            .add_enabled(usable, Button::new("Make edges from a photo…"))
            .on_hover_text(
                "Canny edges computed here, as GLIGEN's training maps were (OpenCV, 100/200)",
            )
            .clicked()
        {
            self.pick_picture_dialog(PicturePurpose::CannySource);
        }
        let Some((name, source)) = &self.maps.canny_source else {
            return;
        };
        ui.label(RichText::new(format!("Edges of {name}")).small());
        let (mut low, mut high) = self.maps.canny_thresholds;
        ui.add(egui::Slider::new(&mut low, 0.0..=500.0).text("low threshold"));
        ui.add(egui::Slider::new(&mut high, 0.0..=500.0).text("high threshold"));
        self.maps.canny_thresholds = (low, high.max(low));
        let wanted = self.maps.canny_thresholds;
        let stale = self
            .maps
            .canny_edges
            .as_ref()
            .is_none_or(|(t, _, _)| *t != wanted);
        if stale {
            let edges = crate::maps::canny::canny_rgb(
                &image::DynamicImage::ImageRgb8(source.clone()),
                wanted.0,
                wanted.1,
            );
            let (w, h) = edges.dimensions();
            let color = egui::ColorImage::from_rgb([w as usize, h as usize], edges.as_raw());
            let texture =
                ui.ctx()
                    .load_texture("canny-preview", color, egui::TextureOptions::LINEAR);
            self.maps.canny_edges = Some((wanted, edges, texture));
        }
        if let Some((_, edges, texture)) = &self.maps.canny_edges {
            ui.image((texture.id(), egui::vec2(120.0, 120.0)));
            if ui.button("Use these edges").clicked() {
                let uri =
                    crate::layout::png_data_uri(&image::DynamicImage::ImageRgb8(edges.clone()));
                match uri {
                    Ok(uri) => self.set_map(MapKind::Canny, uri, "Canny edges"),
                    Err(e) => {
                        self.notify(NoticeLevel::Error, format!("Could not keep the edges: {e}"));
                    }
                }
            }
        }
    }

    /// Puts `image` in the layout's map slot (one undo step).
    pub(super) fn set_map(&mut self, kind: MapKind, image: String, name: &str) {
        self.set_map_step("set the map", kind, image, name);
    }

    /// Puts `image` in the layout's map slot as the undo step `label`.
    pub(super) fn set_map_step(&mut self, label: &str, kind: MapKind, image: String, name: &str) {
        if let Some(reason) = self.unsupported_reason(EntityKind::Map) {
            self.notify(
                NoticeLevel::Warning,
                format!("{name} was not set as the map: {reason}."),
            );
            return;
        }
        self.doc.edit(label, |l| {
            match l
                .entities
                .iter_mut()
                .find(|e| matches!(e, Entity::Map { .. }))
            {
                Some(e) => *e = Entity::Map { kind, image },
                None => l.entities.insert(0, Entity::Map { kind, image }),
            }
        });
        self.status = format!("Map: {name}");
    }

    /// The map picked for [`PicturePurpose::Map`] or the photo for Canny edges.
    pub(super) fn apply_map_picture(
        &mut self,
        purpose: &PicturePurpose,
        reference: String,
        name: String,
    ) {
        match purpose {
            PicturePurpose::CannySource => {
                let side = self.doc.layout().width.min(self.doc.layout().height);
                let reference = self.readable_reference(reference);
                self.spawn_file_task("glichen-canny-source", move || {
                    prepare_canny_source(&reference, name, side)
                });
            }
            PicturePurpose::MakeMap(recipe) => {
                let side = self.doc.layout().width.min(self.doc.layout().height);
                let reference = self.readable_reference(reference);
                let (recipe, estimators) = (*recipe, self.maps.estimators.clone());
                let settings = &self.files.settings;
                let specs = (settings.depth_model.clone(), settings.hed_model.clone());
                self.status = format!("Making {}…", recipe.describe());
                self.spawn_file_task("glichen-make-map", move || {
                    make_map_task(recipe, &reference, &name, side, &estimators, &specs)
                });
            }
            _ => {
                let kind = self.map_kind();
                self.set_map(kind, reference, &name);
            }
        }
    }

    /// A picture reference a background task can read without the document's folder.
    pub(super) fn readable_reference(&self, reference: String) -> String {
        match self.picture_base() {
            Some(base) if !crate::layout::is_data_uri(&reference) => {
                crate::layout::picture_path(&reference, Some(&base))
                    .display()
                    .to_string()
            }
            _ => reference,
        }
    }

    /// A photo for Canny edges, prepared.
    pub(super) fn apply_map_source(&mut self, source: Result<(String, RgbImage), String>) {
        match source {
            Ok((name, img)) => {
                self.maps.canny_source = Some((name, img));
                self.maps.canny_edges = None;
            }
            Err(e) => self.notify(NoticeLevel::Error, format!("Could not read the photo: {e}")),
        }
    }
}
