//! The spatial map: the inspector's slot for the layout's one map (choose a picture, or make
//! Canny edges from a photo with live thresholds), and the canvas layer that shows it under the
//! boxes, centre-cropped as the model sees it, at an adjustable opacity.

use egui::{Button, RichText};
use image::RgbImage;

use super::edit::PicturePurpose;
use super::file_actions::FileOutcome;
use super::pictures::describe_reference;
use super::{NoticeLevel, StudioApp};
use crate::layout::{Entity, EntityKind, MapKind};

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
        }
    }
}

/// A picture read, decoded, centre-cropped to a square and resized to the canvas side (as the
/// pipeline will treat the map), off the UI thread.
fn square_picture(
    reference: &str,
    side: u32,
    filter: crate::pipeline::resample::PilFilter,
) -> Result<RgbImage, String> {
    let img = crate::layout::read_picture(reference, None)
        .and_then(|bytes| crate::layout::decode_picture(&bytes))?;
    let rgb = img.to_rgb8();
    if rgb.width().min(rgb.height()) == 0 {
        return Err("the picture is empty".to_string());
    }
    let square = crate::pipeline::spatial::center_crop(&rgb);
    Ok(crate::pipeline::resample::pil_resize(
        &square, side, side, filter,
    ))
}

/// The photo for Canny edges, prepared off the UI thread.
pub(crate) fn prepare_canny_source(reference: &str, name: String, side: u32) -> FileOutcome {
    let prepared = square_picture(
        reference,
        side,
        crate::pipeline::resample::PilFilter::Bicubic,
    );
    FileOutcome::MapSource(prepared.map(|img| (name, img)))
}

/// A normal map from a depth picture, or class indices from an ADE20K-coloured segmentation,
/// made off the UI thread and kept as a PNG data URI.
fn make_map(purpose: &PicturePurpose, reference: &str, name: &str, side: u32) -> FileOutcome {
    use crate::pipeline::resample::PilFilter;
    let made = match purpose {
        PicturePurpose::DepthForNormals => square_picture(reference, side, PilFilter::Bicubic)
            .and_then(|rgb| {
                let depth = image::DynamicImage::ImageRgb8(rgb).to_luma8();
                crate::maps::normal::normals_from_depth(&depth, 1.0).map_err(|e| e.to_string())
            })
            .map(|n| (MapKind::Normal, image::DynamicImage::ImageRgb8(n))),
        _ => square_picture(reference, side, PilFilter::Nearest)
            .and_then(|rgb| crate::maps::ade20k::colour_to_classes(&rgb).map_err(|e| e.to_string()))
            .map(|g| (MapKind::Sem, image::DynamicImage::ImageLuma8(g))),
    };
    FileOutcome::MapMade(made.and_then(|(kind, img)| {
        let uri = crate::layout::png_data_uri(&img).map_err(|e| e.to_string())?;
        Ok((kind, uri, format!("{} from {name}", kind.label())))
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
        match kind {
            MapKind::Canny => self.canny_ui(ui, blocker.is_none()),
            MapKind::Normal => {
                if ui
                    .add_enabled(blocker.is_none(), Button::new("Make normals from a depth map…"))
                    .on_hover_text("Surface normals from a depth picture (near = bright), in the convention of GLIGEN's training maps")
                    .clicked()
                {
                    self.pick_picture_dialog(PicturePurpose::DepthForNormals);
                }
            }
            MapKind::Sem => {
                if ui
                    .add_enabled(blocker.is_none(), Button::new("Use a coloured segmentation…"))
                    .on_hover_text("A segmentation in the ADE20K palette, turned into the class indices the checkpoint reads")
                    .clicked()
                {
                    self.pick_picture_dialog(PicturePurpose::SegmentationColours);
                }
                self.sem_paint_ui(ui);
            }
            MapKind::Hed | MapKind::Depth => {}
        }
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
            PicturePurpose::DepthForNormals | PicturePurpose::SegmentationColours => {
                let side = self.doc.layout().width.min(self.doc.layout().height);
                let reference = self.readable_reference(reference);
                let purpose = purpose.clone();
                self.spawn_file_task("glichen-make-map", move || {
                    make_map(&purpose, &reference, &name, side)
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
