//! Painting: what the canvas shows under the layout (preview, result, draft or the picture to
//! inpaint), then the boxes, image boxes, people and the style image's badge, the box being drawn,
//! and the readouts. Painting reads the document and the canvas state and changes neither; only
//! the picture cache is written (it starts decoding pictures seen for the first time).

use super::hit::{joint_positions, style_badge_rect, style_index, PERSON_PAD};
use super::interact::drawn_box;
use super::{entity_color, CanvasBackground, CanvasDrag, CanvasState, CanvasTransform, DragOp};
use super::{CanvasView, Handle, Tool};
use crate::layout::keypoints::{is_left_joint, joint_label, COCO_SKELETON};
use crate::layout::{Entity, Layout, ModelLimits};
use crate::ui::document::Document;
use crate::ui::files::Settings;
use crate::ui::pictures::{PictureCache, PictureState};
use crate::ui::{CanvasImage, StudioApp};
use egui::{pos2, vec2, Color32, Painter, Pos2, Rect, Stroke, StrokeKind};
use std::path::PathBuf;

const UNUSABLE: Color32 = Color32::from_gray(140);

/// The whole texture.
const FULL_UV: Rect = Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0));

/// What one frame of the canvas is painted from.
pub(super) struct Scene<'a> {
    pub doc: &'a Document,
    pub canvas: &'a CanvasState,
    pub image: Option<&'a CanvasImage>,
    pub settings: &'a Settings,
    pub limits: ModelLimits,
    /// The label over a draft or its steps.
    pub draft_badge: Option<String>,
    /// The folder relative picture paths are read from.
    pub base: Option<PathBuf>,
    pub ctx: egui::Context,
    /// Opacity of the spatial map layer.
    pub map_opacity: f32,
    /// The semantic map in palette colours, when it is shown instead of its grey indices.
    pub sem_layer: Option<egui::TextureId>,
}

/// How an entity is drawn this frame.
struct Look {
    color: Color32,
    /// The outline: red when the entity has a problem to fix.
    stroke: Color32,
    selected: bool,
    usable: bool,
    /// "(!) " when the model does not use it, "! " when it has a problem.
    warn: &'static str,
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max).collect();
        s.push('…');
        s
    }
}

/// Diagonal hatching inside `rect` (what inpainting regenerates).
fn hatch(painter: &Painter, rect: Rect, color: Color32) {
    let p = painter.with_clip_rect(painter.clip_rect().intersect(rect));
    let step = 9.0;
    let h = rect.height();
    let mut x = rect.min.x - h;
    while x < rect.max.x {
        p.line_segment(
            [pos2(x, rect.max.y), pos2(x + h, rect.min.y)],
            Stroke::new(1.5, color),
        );
        x += step;
    }
}

/// A `size` picture fitted (whole, centred) into `rect`.
fn fit_into(rect: Rect, aspect: f32) -> Rect {
    let (w, h) = if rect.width() / rect.height().max(1e-3) > aspect {
        (rect.height() * aspect, rect.height())
    } else {
        (rect.width(), rect.width() / aspect.max(1e-3))
    };
    Rect::from_center_size(rect.center(), vec2(w, h))
}

impl StudioApp {
    /// Draws the canvas; returns what it showed under the layout.
    pub(super) fn paint_canvas(
        &mut self,
        ui: &egui::Ui,
        painter: &Painter,
        tf: &CanvasTransform,
    ) -> CanvasBackground {
        let scene = Scene {
            doc: &self.doc,
            canvas: &self.canvas,
            image: self.generation.canvas_image.as_ref(),
            settings: &self.files.settings,
            limits: self.generation.model_limits(),
            draft_badge: self.draft_badge(),
            base: self.base_dir(),
            ctx: ui.ctx().clone(),
            map_opacity: self.maps.opacity,
            sem_layer: self.sem_layer(),
        };
        let pictures = &mut self.files.pictures;
        let painter = painter.with_clip_rect(painter.clip_rect().intersect(ui.max_rect()));
        let background = background(&painter, tf, &scene, pictures);
        if !scene.settings.show_boxes {
            return background;
        }
        map_layer(&painter, tf, &scene, pictures);
        entities(&painter, tf, &scene, pictures);
        if let Some(CanvasDrag {
            op: DragOp::Draw { start },
            current,
            ..
        }) = &scene.canvas.drag
        {
            drawing(&painter, tf, &scene, *start, *current);
        }
        background
    }
}

/// The canvas under the layout: the preview, result or draft (when shown), else the picture to
/// inpaint; the draft and inpainting notes, the frame and the empty canvas's hint.
fn background(
    painter: &Painter,
    tf: &CanvasTransform,
    scene: &Scene,
    pictures: &mut PictureCache,
) -> CanvasBackground {
    let layout = scene.doc.layout();
    let r = tf.rect;
    painter.rect_filled(r, 0.0, Color32::from_gray(38));
    let mut background = CanvasBackground::Blank;
    if scene.settings.show_image {
        match scene.image {
            Some(CanvasImage::Preview { texture, .. }) => {
                painter.image(texture.id(), r, FULL_UV, Color32::WHITE);
                background = CanvasBackground::Preview;
            }
            Some(CanvasImage::Result { texture, .. }) => {
                painter.image(texture.id(), r, FULL_UV, Color32::WHITE);
                background = CanvasBackground::Result;
            }
            Some(CanvasImage::Draft { texture, .. }) => {
                // Drawn at the canvas's size whatever size the draft was rendered at.
                painter.image(texture.id(), r, FULL_UV, Color32::WHITE);
                background = CanvasBackground::Draft;
            }
            None => {}
        }
        if let Some(badge) = scene.draft_badge.clone() {
            let galley = painter.layout_no_wrap(
                badge,
                egui::FontId::proportional(13.0),
                Color32::from_rgb(255, 225, 150),
            );
            let pos = r.left_top() + vec2(6.0, 6.0);
            painter.rect_filled(
                Rect::from_min_size(pos - vec2(4.0, 2.0), galley.size() + vec2(8.0, 4.0)),
                3.0,
                Color32::from_black_alpha(190),
            );
            painter.galley(pos, galley, Color32::WHITE);
        }
    }
    let small = egui::FontId::proportional(13.0);
    if let Some(inpaint) = &layout.inpaint {
        if background == CanvasBackground::Blank {
            match pictures.get(&scene.ctx, &inpaint.image, scene.base.as_deref()) {
                PictureState::Ready(p) => {
                    // What the pipeline keeps: the centre crop at the canvas's aspect ratio.
                    let crop = p.centre_crop_uv(layout.width, layout.height);
                    painter.image(p.texture.id(), r, crop, Color32::WHITE);
                    background = CanvasBackground::Inpaint;
                }
                PictureState::Loading => {
                    painter.text(
                        r.center(),
                        egui::Align2::CENTER_CENTER,
                        "Loading the picture to inpaint…",
                        small.clone(),
                        Color32::from_gray(170),
                    );
                }
                PictureState::Failed(e) => {
                    painter.text(
                        r.center(),
                        egui::Align2::CENTER_CENTER,
                        format!("(!) The picture to inpaint cannot be shown: {e}"),
                        small.clone(),
                        Color32::from_rgb(255, 120, 120),
                    );
                }
            }
        }
        let note = if scene.limits.supports_inpainting {
            "Inpainting: hatched boxes are regenerated, the rest of the picture is kept".to_string()
        } else {
            "(!) Inpainting picture not used: this model does not inpaint".to_string()
        };
        let galley = painter.layout_no_wrap(note, small, Color32::WHITE);
        let pos = r.left_bottom() + vec2(4.0, -galley.size().y - 6.0);
        painter.rect_filled(
            Rect::from_min_size(pos - vec2(3.0, 2.0), galley.size() + vec2(6.0, 4.0)),
            3.0,
            Color32::from_black_alpha(170),
        );
        painter.galley(pos, galley, Color32::WHITE);
    }
    painter.rect_stroke(
        r,
        0.0,
        Stroke::new(1.0, Color32::from_gray(90)),
        StrokeKind::Outside,
    );
    if background == CanvasBackground::Blank
        && layout.entities.is_empty()
        && scene.canvas.drag.is_none()
        && layout.inpaint.is_none()
    {
        let hint = match scene.canvas.tool {
            Tool::Person => "Click on the canvas to place a person",
            Tool::Draw => "Drag on the canvas to draw a box, or drop a picture on it",
            _ => "Draw a box (B), place a person (P) or drop a picture on the canvas",
        };
        painter.text(
            r.center(),
            egui::Align2::CENTER_CENTER,
            hint,
            egui::FontId::proportional(18.0),
            Color32::from_gray(130),
        );
    }
    background
}

/// The spatial map under the boxes, as the model sees it: the centred square of the picture
/// stretched over the canvas.
fn map_layer(painter: &Painter, tf: &CanvasTransform, scene: &Scene, pictures: &mut PictureCache) {
    let alpha = (scene.map_opacity.clamp(0.0, 1.0) * 255.0).round() as u8;
    if let Some(texture) = scene.sem_layer {
        if alpha > 0 {
            // Already the centred square at the canvas side.
            let rect = tf.screen_rect_from_box([0.0, 0.0, 1.0, 1.0]);
            painter.image(texture, rect, FULL_UV, Color32::from_white_alpha(alpha));
        }
        return;
    }
    let Some(image) = scene.doc.layout().entities.iter().find_map(|e| match e {
        Entity::Map { image, .. } => Some(image),
        _ => None,
    }) else {
        return;
    };
    if scene.map_opacity <= 0.0 {
        return;
    }
    if let PictureState::Ready(p) = pictures.get(&scene.ctx, image, scene.base.as_deref()) {
        let side = p.size[0].min(p.size[1]);
        let uv = p.centre_crop_uv(side, side);
        painter.image(
            p.texture.id(),
            tf.screen_rect_from_box([0.0, 0.0, 1.0, 1.0]),
            uv,
            Color32::from_white_alpha(alpha),
        );
    }
}

/// Every entity in order (later ones on top).
fn entities(painter: &Painter, tf: &CanvasTransform, scene: &Scene, pictures: &mut PictureCache) {
    let font = egui::FontId::proportional(13.0);
    let doc = scene.doc;
    for (i, entity) in doc.layout().entities.iter().enumerate() {
        let usable = scene.limits.supports(entity.kind());
        let color = if usable { entity_color(i) } else { UNUSABLE };
        let has_issue = doc.has_issue(i);
        let look = Look {
            color,
            stroke: if has_issue && usable {
                Color32::from_rgb(255, 80, 80)
            } else {
                color
            },
            selected: doc.selection == Some(i),
            usable,
            warn: if !usable {
                "(!) "
            } else if has_issue {
                "! "
            } else {
                ""
            },
        };
        match entity {
            Entity::Keypoints { .. } => person(painter, tf, scene, i, &look, &font),
            Entity::StyleImage { image } => {
                if style_index(doc.layout()) == Some(i) {
                    style_badge(painter, tf, scene, pictures, image, &look, &font);
                }
            }
            _ => boxed(painter, tf, scene, pictures, i, entity, &look, &font),
        }
    }
}

/// A text box or an image box (with its picture): fill, outline, label, resize handles, and
/// hatching where inpainting regenerates.
#[allow(clippy::too_many_arguments)]
fn boxed(
    painter: &Painter,
    tf: &CanvasTransform,
    scene: &Scene,
    pictures: &mut PictureCache,
    i: usize,
    entity: &Entity,
    look: &Look,
    font: &egui::FontId,
) {
    let Some(b) = entity.bbox() else { return };
    let rect = tf.screen_rect_from_box(b);
    let mut picture_note = None;
    if let Entity::ImageBox { image, .. } = entity {
        match pictures.get(&scene.ctx, image, scene.base.as_deref()) {
            PictureState::Ready(p) => {
                let tint = if look.usable {
                    Color32::from_white_alpha(235)
                } else {
                    Color32::from_white_alpha(70)
                };
                painter.image(
                    p.texture.id(),
                    fit_into(rect.shrink(2.0), p.aspect()),
                    FULL_UV,
                    tint,
                );
            }
            PictureState::Loading => picture_note = Some("loading…".to_string()),
            PictureState::Failed(_) => picture_note = Some("(!) picture missing".to_string()),
        }
    }
    // Hatched: what inpainting regenerates (only when the model inpaints).
    if scene.doc.layout().inpaint.is_some() && scene.limits.supports_inpainting {
        hatch(painter, rect, look.color.gamma_multiply(0.55));
    }
    painter.rect_filled(
        rect,
        0.0,
        look.color
            .gamma_multiply(if look.selected { 0.22 } else { 0.12 }),
    );
    painter.rect_stroke(
        rect,
        0.0,
        Stroke::new(if look.selected { 3.0 } else { 2.0 }, look.stroke),
        StrokeKind::Inside,
    );
    let phrase = entity.phrase().unwrap_or("");
    let mut label = match entity {
        Entity::ImageBox { .. } if phrase.trim().is_empty() => format!("{} picture", i + 1),
        Entity::ImageBox { .. } => format!("{} picture · {}", i + 1, short(phrase, 36)),
        _ if phrase.trim().is_empty() => format!("{} (no phrase)", i + 1),
        _ => format!("{} {}", i + 1, short(phrase, 40)),
    };
    if !look.usable {
        label.push_str(" · not used by this model");
    }
    let label = format!("{}{label}", look.warn);
    let galley = painter.layout_no_wrap(label, font.clone(), Color32::BLACK);
    let pos = rect.min + vec2(2.0, 2.0);
    let bg = Rect::from_min_size(pos, galley.size() + vec2(6.0, 2.0));
    painter.rect_filled(bg, 2.0, look.stroke);
    painter.galley(pos + vec2(3.0, 1.0), galley, Color32::BLACK);
    if let Some(note) = picture_note {
        painter.text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            note,
            font.clone(),
            Color32::WHITE,
        );
    }
    if look.selected {
        for h in Handle::ALL {
            let c = h.pos(rect);
            let hr = Rect::from_center_size(c, vec2(8.0, 8.0));
            painter.rect_filled(hr, 1.0, Color32::WHITE);
            painter.rect_stroke(
                hr,
                1.0,
                Stroke::new(1.0, Color32::BLACK),
                StrokeKind::Inside,
            );
        }
    }
}

/// The style image: a thumbnail badge in the canvas's top-right corner (it has no box).
fn style_badge(
    painter: &Painter,
    tf: &CanvasTransform,
    scene: &Scene,
    pictures: &mut PictureCache,
    image: &str,
    look: &Look,
    font: &egui::FontId,
) {
    let badge = style_badge_rect(tf);
    painter.rect_filled(badge.expand(2.0), 3.0, Color32::from_black_alpha(180));
    match pictures.get(&scene.ctx, image, scene.base.as_deref()) {
        PictureState::Ready(p) => {
            let tint = if look.usable {
                Color32::WHITE
            } else {
                Color32::from_white_alpha(90)
            };
            painter.image(p.texture.id(), fit_into(badge, p.aspect()), FULL_UV, tint);
        }
        PictureState::Loading => {}
        PictureState::Failed(_) => {
            painter.text(
                badge.center(),
                egui::Align2::CENTER_CENTER,
                "(!)",
                font.clone(),
                Color32::from_rgb(255, 120, 120),
            );
        }
    }
    painter.rect_stroke(
        badge.expand(2.0),
        3.0,
        Stroke::new(if look.selected { 3.0 } else { 1.5 }, look.stroke),
        StrokeKind::Outside,
    );
    painter.text(
        badge.center_bottom() + vec2(0.0, 4.0),
        egui::Align2::CENTER_TOP,
        format!("{}style", look.warn),
        font.clone(),
        look.stroke,
    );
}

/// A person: bones between placed joints (the person's left side lighter), joint dots, a label,
/// and the name of the joint under the pointer.
fn person(
    painter: &Painter,
    tf: &CanvasTransform,
    scene: &Scene,
    i: usize,
    look: &Look,
    font: &egui::FontId,
) {
    let (color, selected) = (look.color, look.selected);
    let joints = joint_positions(scene.doc.layout(), tf, i);
    let placed: Vec<Pos2> = joints.iter().flatten().copied().collect();
    if placed.is_empty() {
        return;
    }
    let right = color.gamma_multiply(0.6);
    let width = if selected { 4.0 } else { 3.0 };
    for &(a, b) in &COCO_SKELETON {
        if let (Some(Some(pa)), Some(Some(pb))) = (joints.get(a), joints.get(b)) {
            let c = if is_left_joint(a) || is_left_joint(b) {
                color
            } else if a <= 4 && b <= 4 {
                color.gamma_multiply(0.8)
            } else {
                right
            };
            painter.line_segment(
                [*pa, *pb],
                Stroke::new(width + 2.0, Color32::from_black_alpha(120)),
            );
            painter.line_segment([*pa, *pb], Stroke::new(width, c));
        }
    }
    for (k, p) in joints.iter().enumerate() {
        let Some(p) = p else { continue };
        let c = if is_left_joint(k) { color } else { right };
        let radius = if selected { 5.5 } else { 4.0 };
        painter.circle_filled(*p, radius, c);
        painter.circle_stroke(
            *p,
            radius,
            Stroke::new(
                if selected { 1.5 } else { 1.0 },
                if selected {
                    Color32::WHITE
                } else {
                    Color32::BLACK
                },
            ),
        );
    }
    let bounds = Rect::from_points(&placed).expand(PERSON_PAD);
    if selected {
        painter.rect_stroke(
            bounds,
            2.0,
            Stroke::new(1.0, color.gamma_multiply(0.7)),
            StrokeKind::Outside,
        );
    }
    let hidden = joints.iter().filter(|p| p.is_none()).count();
    let mut label = format!("{}{} person", look.warn, i + 1);
    if hidden > 0 {
        label.push_str(&format!(" · {hidden} hidden"));
    }
    if look.warn == "(!) " {
        label.push_str(" · not used by this model");
    }
    let galley = painter.layout_no_wrap(label, font.clone(), Color32::BLACK);
    let pos = bounds.left_top() - vec2(0.0, galley.size().y + 4.0);
    painter.rect_filled(
        Rect::from_min_size(pos, galley.size() + vec2(6.0, 2.0)),
        2.0,
        color,
    );
    painter.galley(pos + vec2(3.0, 1.0), galley, Color32::BLACK);
    if let Some((hi, hk)) = scene.canvas.hovered_joint {
        if hi == i {
            if let Some(Some(p)) = joints.get(hk) {
                let text = joint_label(hk);
                let galley = painter.layout_no_wrap(text, font.clone(), Color32::WHITE);
                let pos = *p + vec2(9.0, -galley.size().y / 2.0);
                painter.rect_filled(
                    Rect::from_min_size(pos - vec2(3.0, 1.0), galley.size() + vec2(6.0, 2.0)),
                    2.0,
                    Color32::from_black_alpha(200),
                );
                painter.galley(pos, galley, Color32::WHITE);
            }
        }
    }
}

/// The box being drawn, with its size in pixels.
fn drawing(painter: &Painter, tf: &CanvasTransform, scene: &Scene, start: Pos2, current: Pos2) {
    let layout = scene.doc.layout();
    let b = drawn_box(layout, start, current, scene.settings.snap);
    let rect = tf.screen_rect_from_box(b);
    let color = entity_color(layout.entities.len());
    painter.rect_filled(rect, 0.0, color.gamma_multiply(0.15));
    painter.rect_stroke(rect, 0.0, Stroke::new(2.0, color), StrokeKind::Inside);
    let label = format!(
        "{:.0} × {:.0}",
        (b[2] - b[0]) * layout.width as f64,
        (b[3] - b[1]) * layout.height as f64
    );
    painter.text(
        rect.right_bottom() + vec2(4.0, 4.0),
        egui::Align2::LEFT_TOP,
        label,
        egui::FontId::proportional(13.0),
        Color32::WHITE,
    );
}

/// The size, zoom and pointer position, in the canvas area's bottom-left corner.
pub(super) fn readout(
    ui: &egui::Ui,
    painter: &Painter,
    tf: &CanvasTransform,
    area: Rect,
    layout: &Layout,
    view: CanvasView,
    hover: Option<Pos2>,
) {
    let mut info = format!(
        "{} × {} px · {:.0}%",
        layout.width,
        layout.height,
        view.zoom * 100.0
    );
    if let Some(p) = hover {
        let lp = tf.layout_from_screen(p);
        if (0.0..=1.0).contains(&lp.x) && (0.0..=1.0).contains(&lp.y) {
            info.push_str(&format!(
                " · x {:.0} y {:.0}",
                lp.x * layout.width as f32,
                lp.y * layout.height as f32
            ));
        }
    }
    painter.text(
        area.left_bottom() + vec2(6.0, -4.0),
        egui::Align2::LEFT_BOTTOM,
        info,
        egui::FontId::proportional(12.0),
        ui.visuals().weak_text_color(),
    );
}

/// What dropping the hovered files does (`image_boxes`: the model takes image boxes).
pub(super) fn drop_hint(painter: &Painter, area: Rect, image_boxes: bool) {
    painter.rect_filled(area, 0.0, Color32::from_black_alpha(160));
    let text = if image_boxes {
        "Drop a picture to add an image box (on an image box: replace its picture),\nor a layout JSON or a Glichen PNG to open it"
    } else {
        "Drop a layout JSON or a Glichen PNG to open it"
    };
    painter.text(
        area.center(),
        egui::Align2::CENTER_CENTER,
        text,
        egui::FontId::proportional(20.0),
        Color32::WHITE,
    );
}
