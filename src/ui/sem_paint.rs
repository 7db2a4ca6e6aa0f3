//! Painting a semantic map in the studio: a brush and a fill that write ADE20K class indices,
//! shown on the canvas in the ADE20K palette. The layout keeps what the sem checkpoint reads, a
//! grey class-index PNG (as a data URI); the colours are only for the eye.
//!
//! The painted raster is the centred square the model sees, at the canvas's short side, so a
//! stroke lands where it is drawn. It is decoded from the layout's map off the UI thread, kept
//! while it matches that map, and written back to the layout once per stroke or fill (one undo
//! step each); undo brings back the old map and the raster follows it.

use egui::{Color32, RichText};
use image::GrayImage;

use super::canvas::Tool;
use super::file_actions::FileOutcome;
use super::{NoticeLevel, StudioApp};
use crate::layout::{Entity, EntityKind, MapKind};
use crate::maps::{ade20k, paint};

/// What the brush and fill keep between frames (not part of the document).
pub(crate) struct SemPaint {
    /// The class the brush and fill write.
    pub(crate) class: u8,
    /// Brush radius in map pixels.
    pub(crate) radius: f32,
    /// The class list's filter text.
    filter: String,
    raster: Option<SemRaster>,
    /// The map reference being decoded off the UI thread.
    loading: Option<String>,
    /// A map that cannot be painted (reference, why): it has colour or could not be read.
    unreadable: Option<(String, String)>,
}

/// The class indices being painted.
struct SemRaster {
    /// The layout map reference the raster holds (`None`: a new map not yet in the layout).
    source: Option<String>,
    classes: GrayImage,
    texture: Option<egui::TextureHandle>,
    /// Painted since the texture was last made.
    dirty: bool,
}

impl Default for SemPaint {
    fn default() -> Self {
        Self {
            class: ade20k::class_by_name("sky").unwrap_or(ade20k::OTHER),
            radius: 12.0,
            filter: String::new(),
            raster: None,
            loading: None,
            unreadable: None,
        }
    }
}

/// The layout's map decoded to class indices on the square the model sees, off the UI thread.
/// A picture with colour is refused as the pipeline refuses it.
pub(crate) fn load_sem_raster(reference: &str, side: u32) -> Result<GrayImage, String> {
    let img = crate::layout::read_picture(reference, None)
        .and_then(|bytes| crate::layout::decode_picture(&bytes))?;
    let rgb = img.to_rgb8();
    if rgb.width().min(rgb.height()) == 0 {
        return Err("the map is empty".to_string());
    }
    if let Some(p) = rgb.pixels().find(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2]) {
        return Err(format!(
            "it has colour (RGB {:?}), not grey class indices; \"Use a coloured segmentation…\" \
             turns an ADE20K-coloured one into indices",
            p.0
        ));
    }
    let square = crate::pipeline::spatial::center_crop(&rgb);
    let resized = crate::pipeline::resample::pil_resize(
        &square,
        side,
        side,
        crate::pipeline::resample::PilFilter::Nearest,
    );
    Ok(image::DynamicImage::ImageRgb8(resized).to_luma8())
}

impl StudioApp {
    /// The layout's map when it is a semantic one, borrowed: this is asked every frame, and a
    /// painted map's reference is a whole PNG data URI.
    fn sem_map(&self) -> Option<&str> {
        self.doc.layout().entities.iter().find_map(|e| match e {
            Entity::Map {
                kind: MapKind::Sem,
                image,
            } => Some(image.as_str()),
            _ => None,
        })
    }

    /// The side of the painted square: the canvas's short side.
    fn sem_side(&self) -> u32 {
        let l = self.doc.layout();
        l.width.min(l.height).max(1)
    }

    /// Why the brush and fill are off, if they are.
    pub fn sem_blocker(&self) -> Option<String> {
        if let Some(reason) = self.unsupported_reason(EntityKind::Map) {
            return Some(reason);
        }
        let kind = self.model_limits().map_kind.unwrap_or(self.maps.kind);
        if kind != MapKind::Sem {
            return Some(format!(
                "class painting makes semantic maps, and this map is a {}",
                kind.label()
            ));
        }
        if let Some((_, why)) = &self.maps.sem.unreadable {
            return Some(format!("the layout's map cannot be painted: {why}"));
        }
        None
    }

    /// Keeps the raster in step with the layout's map (decoding a new one off the UI thread)
    /// and its palette texture with the raster; called once per frame before painting.
    pub(super) fn sync_sem_raster(&mut self, ctx: &egui::Context) {
        let kind = self.model_limits().map_kind.unwrap_or(self.maps.kind);
        let has_map = self.sem_map().is_some();
        if !has_map && (kind != MapKind::Sem || self.unsupported_reason(EntityKind::Map).is_some())
        {
            self.maps.sem.raster = None;
            return;
        }
        let side = self.sem_side();
        let fits = |r: &SemRaster| r.classes.width() == side && r.classes.height() == side;
        if has_map {
            // Owned only when a decode starts, not every frame.
            let to_load = self.sem_map().and_then(|reference| {
                let sem = &self.maps.sem;
                let held = sem
                    .raster
                    .as_ref()
                    .is_some_and(|r| r.source.as_deref() == Some(reference) && fits(r));
                let known_bad = sem.unreadable.as_ref().is_some_and(|(s, _)| s == reference);
                let loading = sem.loading.as_deref() == Some(reference);
                (!held && !known_bad && !loading).then(|| reference.to_owned())
            });
            if let Some(reference) = to_load {
                self.maps.sem.loading = Some(reference.clone());
                let readable = self.readable_reference(reference.clone());
                self.spawn_file_task("glichen-sem-map", move || {
                    FileOutcome::SemRaster(reference, load_sem_raster(&readable, side))
                });
            }
        } else {
            let sem = &mut self.maps.sem;
            sem.unreadable = None;
            let blank_held = sem
                .raster
                .as_ref()
                .is_some_and(|r| r.source.is_none() && fits(r));
            if !blank_held {
                sem.raster = Some(SemRaster {
                    source: None,
                    classes: GrayImage::new(side, side),
                    texture: None,
                    dirty: true,
                });
            }
        }
        if let Some(r) = self.maps.sem.raster.as_mut() {
            if r.dirty || r.texture.is_none() {
                let rgb = ade20k::classes_to_colour(&r.classes);
                let size = [rgb.width() as usize, rgb.height() as usize];
                let image = egui::ColorImage::from_rgb(size, rgb.as_raw());
                match &mut r.texture {
                    Some(t) => t.set(image, egui::TextureOptions::NEAREST),
                    None => {
                        r.texture =
                            Some(ctx.load_texture("sem-map", image, egui::TextureOptions::NEAREST));
                    }
                }
                r.dirty = false;
            }
        }
    }

    /// A decoded map arrived.
    pub(super) fn apply_sem_raster(
        &mut self,
        reference: String,
        result: Result<GrayImage, String>,
    ) {
        let sem = &mut self.maps.sem;
        if sem.loading.as_deref() == Some(reference.as_str()) {
            sem.loading = None;
        }
        match result {
            Ok(classes) => {
                sem.unreadable = None;
                sem.raster = Some(SemRaster {
                    source: Some(reference),
                    classes,
                    texture: None,
                    dirty: true,
                });
            }
            Err(why) => {
                sem.raster = None;
                self.notify(
                    NoticeLevel::Warning,
                    format!("The semantic map cannot be painted: {why}."),
                );
                self.maps.sem.unreadable = Some((reference, why));
            }
        }
    }

    /// The palette texture to show for the layout's map, when it is the painted raster (or
    /// strokes on a new map are in progress).
    pub(super) fn sem_layer(&self) -> Option<egui::TextureId> {
        let r = self.maps.sem.raster.as_ref()?;
        let shown = match (&r.source, self.sem_map()) {
            (Some(s), Some(c)) => s == c,
            // A new map shows while its first stroke is drawn.
            (None, None) => self.canvas.drag.is_some() && self.canvas.tool == Tool::Brush,
            _ => false,
        };
        shown.then(|| r.texture.as_ref().map(egui::TextureHandle::id))?
    }

    /// Whether strokes can go on the raster now; says why not on the status line otherwise.
    fn sem_ready(&mut self) -> bool {
        if let Some(reason) = self.sem_blocker() {
            self.status = format!("Class painting is off: {reason}");
            return false;
        }
        if self.maps.sem.raster.is_none() {
            self.status = "The semantic map is still loading".into();
            return false;
        }
        true
    }

    /// Layout (normalised) → map pixels.
    fn sem_pixel(&self, p: egui::Pos2) -> (f32, f32) {
        let side = self.sem_side() as f32;
        (p.x * side, p.y * side)
    }

    /// Paints a brush segment between two layout points (a dab when they are equal); returns
    /// whether a stroke can continue.
    pub(super) fn sem_stroke(&mut self, from: egui::Pos2, to: egui::Pos2) -> bool {
        if !self.sem_ready() {
            return false;
        }
        let (a, b) = (self.sem_pixel(from), self.sem_pixel(to));
        let (class, radius) = (self.maps.sem.class, self.maps.sem.radius);
        let Some(r) = self.maps.sem.raster.as_mut() else {
            return false;
        };
        match paint::paint_stroke(&mut r.classes, a, b, radius, class) {
            Ok(n) => r.dirty |= n > 0,
            Err(e) => {
                self.notify(NoticeLevel::Error, format!("Could not paint: {e}"));
                return false;
            }
        }
        true
    }

    /// Fills the region under a layout point with the current class, as one undo step.
    pub(super) fn sem_fill(&mut self, at: egui::Pos2) {
        if !(0.0..1.0).contains(&at.x) || !(0.0..1.0).contains(&at.y) || !self.sem_ready() {
            return;
        }
        let (x, y) = self.sem_pixel(at);
        let class = self.maps.sem.class;
        let Some(r) = self.maps.sem.raster.as_mut() else {
            return;
        };
        let (x, y) = (x as u32, y as u32);
        match paint::flood_fill(&mut r.classes, x, y, class) {
            Ok(0) => {}
            Ok(_) => {
                r.dirty = true;
                self.commit_sem_raster("fill the map");
            }
            Err(e) => self.notify(NoticeLevel::Error, format!("Could not fill: {e}")),
        }
    }

    /// Writes the raster to the layout's map as a grey class-index PNG (one undo step).
    pub(super) fn commit_sem_raster(&mut self, label: &str) {
        let Some(r) = self.maps.sem.raster.as_ref() else {
            return;
        };
        match crate::layout::png_data_uri(&image::DynamicImage::ImageLuma8(r.classes.clone())) {
            Ok(uri) => {
                self.set_map_step(label, MapKind::Sem, uri.clone(), "painted classes");
                if let Some(r) = self.maps.sem.raster.as_mut() {
                    r.source = Some(uri);
                }
            }
            Err(e) => self.notify(NoticeLevel::Error, format!("Could not keep the map: {e}")),
        }
    }

    /// Drops strokes not yet in the layout (a cancelled drag): the raster is made again from it.
    pub(super) fn discard_sem_strokes(&mut self) {
        self.maps.sem.raster = None;
    }

    /// The sem map's part of the map slot: the class to paint, the brush size, the classes the
    /// map holds.
    pub(super) fn sem_paint_ui(&mut self, ui: &mut egui::Ui) {
        match self.sem_blocker() {
            Some(reason) => {
                ui.label(
                    RichText::new(format!("Painting is off: {reason}"))
                        .small()
                        .weak(),
                );
            }
            None => {
                ui.label(
                    RichText::new("Paint on the canvas with Paint classes (K) or Fill classes (G)")
                        .small()
                        .weak(),
                );
            }
        }
        let sem = &mut self.maps.sem;
        ui.horizontal(|ui| {
            swatch(ui, sem.class);
            ui.label(format!(
                "Class {} · {}",
                sem.class,
                ade20k::class_name(sem.class).unwrap_or("untrained")
            ));
        });
        ui.add(
            egui::Slider::new(&mut sem.radius, 0.5..=128.0)
                .logarithmic(true)
                .text("brush radius (px)"),
        );
        ui.horizontal(|ui| {
            let label = ui.label("Find class");
            ui.add(egui::TextEdit::singleline(&mut sem.filter).desired_width(110.0))
                .labelled_by(label.id);
        });
        let needle = sem.filter.trim().to_lowercase();
        egui::ScrollArea::vertical()
            .id_salt("sem-classes")
            .max_height(140.0)
            .show(ui, |ui| {
                for class in 0..=ade20k::CLASS_COUNT {
                    let names = ade20k::class_synonyms(class);
                    if !needle.is_empty()
                        && !names.iter().any(|n| n.to_lowercase().contains(&needle))
                    {
                        continue;
                    }
                    ui.horizontal(|ui| {
                        swatch(ui, class);
                        let text = format!("{class} {}", names.first().copied().unwrap_or(""));
                        if ui.selectable_label(sem.class == class, text).clicked() {
                            sem.class = class;
                        }
                    });
                }
            });
        if let Some(r) = &self.maps.sem.raster {
            let total = (r.classes.width() * r.classes.height()).max(1) as f32;
            let present = paint::class_histogram(&r.classes);
            ui.label(RichText::new("In the map (click to paint with it)").small());
            let mut pick = None;
            for (class, n) in present.into_iter().take(8) {
                ui.horizontal(|ui| {
                    swatch(ui, class);
                    let name = ade20k::class_name(class).unwrap_or("untrained");
                    let text = format!("{name} {:.0} %", 100.0 * n as f32 / total);
                    if ui.small_button(text).clicked() {
                        pick = Some(class);
                    }
                });
            }
            if let Some(class) = pick {
                self.maps.sem.class = class;
            }
        }
    }
}

/// A small square in the class's palette colour.
fn swatch(ui: &mut egui::Ui, class: u8) {
    let [r, g, b] = ade20k::class_colour(class);
    let (rect, _) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
    ui.painter()
        .rect_filled(rect, 2.0, Color32::from_rgb(r, g, b));
}

/// What tests read and steer; not part of the studio's API.
#[cfg(feature = "testing")]
impl StudioApp {
    /// The class the brush and fill write.
    pub fn sem_class(&self) -> u8 {
        self.maps.sem.class
    }
    pub fn set_sem_brush(&mut self, class: u8, radius: f32) {
        self.maps.sem.class = class;
        self.maps.sem.radius = radius;
    }
    /// Whether the canvas shows the map in palette colours (the painted raster).
    pub fn sem_layer_shown(&self) -> bool {
        self.sem_layer().is_some()
    }
}
