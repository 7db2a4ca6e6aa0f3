//! The canvas: the layout drawn over the preview or result, and box editing (draw, select, move,
//! resize by handles, zoom and pan).
//!
//! Layout coordinates are normalised (`[0, 1]²`, origin top left, as in the file); the canvas maps
//! them to screen points with [`CanvasTransform::screen_from_layout`] and back with
//! [`CanvasTransform::layout_from_screen`].

use super::{CanvasImage, StudioApp, Tool};
use crate::layout::{Entity, Layout};
use egui::{
    pos2, vec2, Color32, CursorIcon, PointerButton, Pos2, Rect, Sense, Stroke, StrokeKind, Vec2,
};

/// Zoom and pan of the canvas view (zoom 1 = fit the window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanvasView {
    pub zoom: f32,
    pub pan: Vec2,
}

impl Default for CanvasView {
    fn default() -> Self {
        Self {
            zoom: 1.0,
            pan: Vec2::ZERO,
        }
    }
}

/// Where the layout's unit square lies on the screen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanvasTransform {
    /// The canvas (the whole picture) in screen points.
    pub rect: Rect,
    /// The layout's size in pixels.
    pub width: u32,
    pub height: u32,
}

/// Margin around the fitted canvas, in points.
pub const CANVAS_MARGIN: f32 = 16.0;

impl CanvasTransform {
    /// The canvas at the layout's aspect ratio, fitted into `available`, then zoomed and panned.
    pub fn fit(available: Rect, width: u32, height: u32, view: &CanvasView) -> Self {
        let avail = available.shrink(CANVAS_MARGIN);
        let aspect = width.max(1) as f32 / height.max(1) as f32;
        let (w, h) = if avail.width() / avail.height().max(1.0) > aspect {
            (avail.height() * aspect, avail.height())
        } else {
            (avail.width(), avail.width() / aspect)
        };
        let size = vec2(w.max(1.0), h.max(1.0)) * view.zoom;
        Self {
            rect: Rect::from_center_size(avail.center() + view.pan, size),
            width,
            height,
        }
    }

    /// Layout (normalised) → screen.
    pub fn screen_from_layout(&self, p: Pos2) -> Pos2 {
        pos2(
            self.rect.min.x + p.x * self.rect.width(),
            self.rect.min.y + p.y * self.rect.height(),
        )
    }

    /// Screen → layout (normalised; not clamped).
    pub fn layout_from_screen(&self, p: Pos2) -> Pos2 {
        pos2(
            (p.x - self.rect.min.x) / self.rect.width(),
            (p.y - self.rect.min.y) / self.rect.height(),
        )
    }

    /// A layout box `[x0, y0, x1, y1]` on the screen.
    pub fn screen_rect_from_box(&self, b: [f64; 4]) -> Rect {
        Rect::from_two_pos(
            self.screen_from_layout(pos2(b[0] as f32, b[1] as f32)),
            self.screen_from_layout(pos2(b[2] as f32, b[3] as f32)),
        )
    }

    /// Layout pixels per screen point.
    pub fn pixels_per_point(&self) -> f32 {
        self.width as f32 / self.rect.width()
    }
}

/// The eight resize handles of a box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handle {
    NW,
    N,
    NE,
    E,
    SE,
    S,
    SW,
    W,
}

impl Handle {
    pub const ALL: [Handle; 8] = [
        Handle::NW,
        Handle::N,
        Handle::NE,
        Handle::E,
        Handle::SE,
        Handle::S,
        Handle::SW,
        Handle::W,
    ];

    pub fn pos(self, r: Rect) -> Pos2 {
        let (x, y) = match self {
            Handle::NW => (r.min.x, r.min.y),
            Handle::N => (r.center().x, r.min.y),
            Handle::NE => (r.max.x, r.min.y),
            Handle::E => (r.max.x, r.center().y),
            Handle::SE => (r.max.x, r.max.y),
            Handle::S => (r.center().x, r.max.y),
            Handle::SW => (r.min.x, r.max.y),
            Handle::W => (r.min.x, r.center().y),
        };
        pos2(x, y)
    }

    /// Which edges the handle moves: left, top, right, bottom.
    fn edges(self) -> [bool; 4] {
        match self {
            Handle::NW => [true, true, false, false],
            Handle::N => [false, true, false, false],
            Handle::NE => [false, true, true, false],
            Handle::E => [false, false, true, false],
            Handle::SE => [false, false, true, true],
            Handle::S => [false, false, false, true],
            Handle::SW => [true, false, false, true],
            Handle::W => [true, false, false, false],
        }
    }

    fn cursor(self) -> CursorIcon {
        match self {
            Handle::NW | Handle::SE => CursorIcon::ResizeNwSe,
            Handle::NE | Handle::SW => CursorIcon::ResizeNeSw,
            Handle::N | Handle::S => CursorIcon::ResizeVertical,
            Handle::E | Handle::W => CursorIcon::ResizeHorizontal,
        }
    }
}

/// Radius within which a handle catches the pointer, in points.
const HANDLE_REACH: f32 = 7.0;
/// Boxes smaller than this many layout pixels on a side are taken as clicks, not drawn.
const MIN_BOX_PIXELS: f64 = 3.0;

/// What a drag on the canvas does.
#[derive(Debug, Clone, PartialEq)]
pub enum DragOp {
    Draw {
        start: Pos2,
    },
    Move {
        index: usize,
        grab: Pos2,
        original: [f64; 4],
    },
    Resize {
        index: usize,
        handle: Handle,
        original: [f64; 4],
    },
    Pan,
    None,
}

/// A drag in progress and the layout before it (one undo step per drag).
#[derive(Debug, Clone)]
pub struct CanvasDrag {
    pub op: DragOp,
    pub before: Layout,
    pub current: Pos2,
}

/// The colour of entity `i`: hues spread by the golden ratio so neighbours differ.
pub fn entity_color(i: usize) -> Color32 {
    let h = (i as f32 * 0.618_034 + 0.08).fract();
    egui::ecolor::Hsva::new(h, 0.75, 1.0, 1.0).into()
}

/// Rounds a normalised coordinate to the latent grid (8 px) of a side of `side` pixels.
pub fn snap(v: f64, side: u32, on: bool) -> f64 {
    if !on || side == 0 {
        return v;
    }
    let cells = side as f64 / 8.0;
    ((v * cells).round() / cells).clamp(0.0, 1.0)
}

fn clamp01(p: Pos2) -> Pos2 {
    pos2(p.x.clamp(0.0, 1.0), p.y.clamp(0.0, 1.0))
}

fn normalised(b: [f64; 4]) -> [f64; 4] {
    [
        b[0].min(b[2]),
        b[1].min(b[3]),
        b[0].max(b[2]),
        b[1].max(b[3]),
    ]
}

fn contains(b: [f64; 4], p: Pos2) -> bool {
    let (x, y) = (p.x as f64, p.y as f64);
    x >= b[0].min(b[2]) && x <= b[0].max(b[2]) && y >= b[1].min(b[3]) && y <= b[1].max(b[3])
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

impl StudioApp {
    /// The topmost entity with a box under `p` (layout coordinates); later entities are on top.
    fn entity_at(&self, p: Pos2) -> Option<usize> {
        self.layout
            .entities
            .iter()
            .enumerate()
            .rev()
            .find(|(_, e)| e.bbox().is_some_and(|b| contains(b, p)))
            .map(|(i, _)| i)
    }

    fn handle_at(&self, tf: &CanvasTransform, screen: Pos2) -> Option<(usize, Handle)> {
        let i = self.selection?;
        let b = self.layout.entities.get(i)?.bbox()?;
        let r = tf.screen_rect_from_box(b);
        Handle::ALL
            .iter()
            .copied()
            .find(|h| h.pos(r).distance(screen) <= HANDLE_REACH)
            .map(|h| (i, h))
    }

    fn drag_op_at(&mut self, tf: &CanvasTransform, screen: Pos2) -> DragOp {
        if self.tool == Tool::Pan {
            return DragOp::Pan;
        }
        if let Some((index, handle)) = self.handle_at(tf, screen) {
            let original = self.layout.entities[index].bbox().unwrap_or_default();
            return DragOp::Resize {
                index,
                handle,
                original,
            };
        }
        let p = tf.layout_from_screen(screen);
        let selected_hit = self.selection.filter(|&i| {
            self.layout
                .entities
                .get(i)
                .and_then(Entity::bbox)
                .is_some_and(|b| contains(b, p))
        });
        let target = match self.tool {
            Tool::Select => selected_hit.or_else(|| self.entity_at(p)),
            _ => selected_hit,
        };
        if let Some(index) = target {
            self.selection = Some(index);
            let original = self.layout.entities[index].bbox().unwrap_or_default();
            return DragOp::Move {
                index,
                grab: p,
                original,
            };
        }
        match self.tool {
            Tool::Draw => DragOp::Draw { start: clamp01(p) },
            _ => DragOp::None,
        }
    }

    /// Applies the drag to the layout (live for move/resize; drawing is added on release).
    fn apply_drag(&mut self, drag: &CanvasDrag) {
        let (w, h, snap_on) = (self.layout.width, self.layout.height, self.settings.snap);
        let p = drag.current;
        match &drag.op {
            DragOp::Move {
                index,
                grab,
                original,
            } => {
                let (bw, bh) = (original[2] - original[0], original[3] - original[1]);
                let mut x0 = original[0] + (p.x - grab.x) as f64;
                let mut y0 = original[1] + (p.y - grab.y) as f64;
                x0 = snap(x0, w, snap_on).clamp(0.0, (1.0 - bw).max(0.0));
                y0 = snap(y0, h, snap_on).clamp(0.0, (1.0 - bh).max(0.0));
                if let Some(b) = self
                    .layout
                    .entities
                    .get_mut(*index)
                    .and_then(Entity::bbox_mut)
                {
                    *b = [x0, y0, x0 + bw, y0 + bh];
                }
            }
            DragOp::Resize {
                index,
                handle,
                original,
            } => {
                let q = clamp01(p);
                let [l, t, r, btm] = handle.edges();
                let mut nb = *original;
                if l {
                    nb[0] = snap(q.x as f64, w, snap_on);
                }
                if t {
                    nb[1] = snap(q.y as f64, h, snap_on);
                }
                if r {
                    nb[2] = snap(q.x as f64, w, snap_on);
                }
                if btm {
                    nb[3] = snap(q.y as f64, h, snap_on);
                }
                if let Some(b) = self
                    .layout
                    .entities
                    .get_mut(*index)
                    .and_then(Entity::bbox_mut)
                {
                    *b = normalised(nb);
                }
            }
            _ => {}
        }
    }

    fn drawn_box(&self, start: Pos2, end: Pos2) -> [f64; 4] {
        let (w, h, s) = (self.layout.width, self.layout.height, self.settings.snap);
        let e = clamp01(end);
        normalised([
            snap(start.x as f64, w, s),
            snap(start.y as f64, h, s),
            snap(e.x as f64, w, s),
            snap(e.y as f64, h, s),
        ])
    }

    fn finish_drag(&mut self, drag: CanvasDrag) {
        match drag.op {
            DragOp::Draw { start } => {
                let b = self.drawn_box(start, drag.current);
                let (pw, ph) = (
                    (b[2] - b[0]) * self.layout.width as f64,
                    (b[3] - b[1]) * self.layout.height as f64,
                );
                if pw >= MIN_BOX_PIXELS && ph >= MIN_BOX_PIXELS {
                    self.history.push(&self.layout);
                    self.layout.entities.push(Entity::TextBox {
                        phrase: String::new(),
                        bbox: b,
                    });
                    self.selection = Some(self.layout.entities.len() - 1);
                    self.focus_phrase = true;
                    self.status = "Box drawn: type its phrase".into();
                }
            }
            DragOp::Move { index, .. } | DragOp::Resize { index, .. } => {
                if let Some(b) = self
                    .layout
                    .entities
                    .get_mut(index)
                    .and_then(Entity::bbox_mut)
                {
                    *b = normalised(*b);
                }
                if self.layout != drag.before {
                    self.history.push(&drag.before);
                }
            }
            DragOp::Pan | DragOp::None => {}
        }
        // The layout changed outside the widget path; don't count it twice.
        self.frame_start = self.layout.clone();
    }

    /// Aborts the drag in progress and restores the layout from before it.
    pub(super) fn cancel_drag(&mut self) -> bool {
        match self.drag.take() {
            Some(drag) => {
                self.layout = drag.before;
                self.frame_start = self.layout.clone();
                true
            }
            None => false,
        }
    }

    /// The canvas transform for the last frame's canvas area (tests use it to aim the pointer).
    pub fn canvas_transform(&self) -> Option<CanvasTransform> {
        self.last_canvas_rect
            .map(|r| CanvasTransform::fit(r, self.layout.width, self.layout.height, &self.view))
    }

    pub fn view(&self) -> CanvasView {
        self.view
    }

    pub fn reset_view(&mut self) {
        self.view = CanvasView::default();
    }

    pub fn canvas_ui(&mut self, ui: &mut egui::Ui) {
        let (response, painter) = ui.allocate_painter(ui.available_size(), Sense::click_and_drag());
        let area = response.rect;
        self.last_canvas_rect = Some(area);
        let mut tf = CanvasTransform::fit(area, self.layout.width, self.layout.height, &self.view);

        // Zoom (Ctrl+wheel or pinch) around the pointer; wheel pans.
        if response.hovered() {
            let (zoom, scroll, pointer) =
                ui.input(|i| (i.zoom_delta(), i.smooth_scroll_delta, i.pointer.hover_pos()));
            if zoom != 1.0 {
                let anchor_screen = pointer.unwrap_or(tf.rect.center());
                let anchor = tf.layout_from_screen(anchor_screen);
                self.view.zoom = (self.view.zoom * zoom).clamp(0.1, 32.0);
                let moved =
                    CanvasTransform::fit(area, self.layout.width, self.layout.height, &self.view);
                self.view.pan += anchor_screen - moved.screen_from_layout(anchor);
            } else if scroll != Vec2::ZERO {
                self.view.pan += scroll;
            }
            tf = CanvasTransform::fit(area, self.layout.width, self.layout.height, &self.view);
        }
        if response.dragged_by(PointerButton::Middle) {
            self.view.pan += response.drag_delta();
            tf = CanvasTransform::fit(area, self.layout.width, self.layout.height, &self.view);
        }

        // Primary-button editing.
        let pointer = response
            .interact_pointer_pos()
            .or_else(|| response.hover_pos());
        if response.drag_started_by(PointerButton::Primary) {
            let origin = ui
                .input(|i| i.pointer.press_origin())
                .or(pointer)
                .unwrap_or(tf.rect.center());
            let op = self.drag_op_at(&tf, origin);
            self.drag = Some(CanvasDrag {
                op,
                before: self.layout.clone(),
                current: tf.layout_from_screen(origin),
            });
        }
        if let Some(mut drag) = self.drag.take() {
            if let Some(p) = pointer {
                if response.dragged_by(PointerButton::Primary)
                    || response.drag_stopped_by(PointerButton::Primary)
                {
                    if drag.op == DragOp::Pan {
                        self.view.pan += response.drag_delta();
                        tf = CanvasTransform::fit(
                            area,
                            self.layout.width,
                            self.layout.height,
                            &self.view,
                        );
                    }
                    drag.current = tf.layout_from_screen(p);
                    self.apply_drag(&drag);
                }
            }
            // Released here, or somewhere we did not see (e.g. outside the window).
            if response.drag_stopped() || !ui.input(|i| i.pointer.any_down()) {
                self.finish_drag(drag);
            } else {
                self.drag = Some(drag);
            }
        }
        if response.clicked() {
            if let Some(p) = pointer {
                let hit = self.entity_at(tf.layout_from_screen(p));
                self.selection = hit;
                if hit.is_some() && self.tool == Tool::Pan {
                    self.tool = Tool::Select;
                }
            }
        }

        // Cursor.
        if let Some(p) = response.hover_pos() {
            let icon = match &self.drag {
                Some(CanvasDrag {
                    op: DragOp::Resize { handle, .. },
                    ..
                }) => handle.cursor(),
                Some(CanvasDrag {
                    op: DragOp::Move { .. },
                    ..
                }) => CursorIcon::Grabbing,
                Some(CanvasDrag {
                    op: DragOp::Pan, ..
                }) => CursorIcon::Grabbing,
                Some(CanvasDrag {
                    op: DragOp::Draw { .. },
                    ..
                }) => CursorIcon::Crosshair,
                _ => match self.handle_at(&tf, p) {
                    Some((_, h)) => h.cursor(),
                    None => match self.tool {
                        Tool::Pan => CursorIcon::Grab,
                        Tool::Select => {
                            if self.entity_at(tf.layout_from_screen(p)).is_some() {
                                CursorIcon::Grab
                            } else {
                                CursorIcon::Default
                            }
                        }
                        Tool::Draw => {
                            let lp = tf.layout_from_screen(p);
                            if self
                                .selection
                                .and_then(|i| self.layout.entities.get(i))
                                .and_then(Entity::bbox)
                                .is_some_and(|b| contains(b, lp))
                            {
                                CursorIcon::Grab
                            } else {
                                CursorIcon::Crosshair
                            }
                        }
                    },
                },
            };
            ui.ctx().set_cursor_icon(icon);
        }

        self.paint_canvas(ui, &painter, &tf);

        // Hover readout and drop hint.
        let visuals = ui.visuals().clone();
        let mut info = format!(
            "{} × {} px · {:.0}%",
            self.layout.width,
            self.layout.height,
            self.view.zoom * 100.0
        );
        if let Some(p) = response.hover_pos() {
            let lp = tf.layout_from_screen(p);
            if (0.0..=1.0).contains(&lp.x) && (0.0..=1.0).contains(&lp.y) {
                info.push_str(&format!(
                    " · x {:.0} y {:.0}",
                    lp.x * self.layout.width as f32,
                    lp.y * self.layout.height as f32
                ));
            }
        }
        painter.text(
            area.left_bottom() + vec2(6.0, -4.0),
            egui::Align2::LEFT_BOTTOM,
            info,
            egui::FontId::proportional(12.0),
            visuals.weak_text_color(),
        );
        if ui.input(|i| !i.raw.hovered_files.is_empty()) {
            painter.rect_filled(area, 0.0, Color32::from_black_alpha(160));
            painter.text(
                area.center(),
                egui::Align2::CENTER_CENTER,
                "Drop a layout JSON or a Glichen PNG to open it",
                egui::FontId::proportional(22.0),
                Color32::WHITE,
            );
        }
    }

    fn paint_canvas(&self, ui: &egui::Ui, painter: &egui::Painter, tf: &CanvasTransform) {
        let painter = painter.with_clip_rect(painter.clip_rect().intersect(ui.max_rect()));
        let r = tf.rect;
        // Checkerboard-free neutral backdrop with a frame.
        painter.rect_filled(r, 0.0, Color32::from_gray(38));
        let uv = Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0));
        let mut showing_image = false;
        if self.settings.show_image {
            match &self.canvas_image {
                Some(CanvasImage::Preview { texture, .. }) => {
                    painter.image(texture.id(), r, uv, Color32::WHITE);
                    showing_image = true;
                }
                Some(CanvasImage::Result { texture, .. }) => {
                    painter.image(texture.id(), r, uv, Color32::WHITE);
                    showing_image = true;
                }
                None => {}
            }
        }
        painter.rect_stroke(
            r,
            0.0,
            Stroke::new(1.0, Color32::from_gray(90)),
            StrokeKind::Outside,
        );
        if !showing_image && self.layout.entities.is_empty() && self.drag.is_none() {
            painter.text(
                r.center(),
                egui::Align2::CENTER_CENTER,
                "Drag on the canvas to draw a box",
                egui::FontId::proportional(18.0),
                Color32::from_gray(130),
            );
        }
        if !self.settings.show_boxes {
            return;
        }
        let font = egui::FontId::proportional(13.0);
        for (i, entity) in self.layout.entities.iter().enumerate() {
            let color = entity_color(i);
            let selected = self.selection == Some(i);
            let has_issue = self
                .issues
                .under(&format!("entities[{i}]"))
                .next()
                .is_some();
            match entity {
                Entity::Keypoints { points } => {
                    for p in points.iter().flatten() {
                        let s = tf.screen_from_layout(pos2(p[0] as f32, p[1] as f32));
                        painter.circle_filled(s, if selected { 5.0 } else { 3.5 }, color);
                    }
                    continue;
                }
                Entity::StyleImage { .. } => continue,
                _ => {}
            }
            let Some(b) = entity.bbox() else { continue };
            let rect = tf.screen_rect_from_box(b);
            painter.rect_filled(
                rect,
                0.0,
                color.gamma_multiply(if selected { 0.22 } else { 0.12 }),
            );
            let stroke_color = if has_issue {
                Color32::from_rgb(255, 80, 80)
            } else {
                color
            };
            painter.rect_stroke(
                rect,
                0.0,
                Stroke::new(if selected { 3.0 } else { 2.0 }, stroke_color),
                StrokeKind::Inside,
            );
            let phrase = entity.phrase().unwrap_or("");
            let label = if phrase.trim().is_empty() {
                format!("{} (no phrase)", i + 1)
            } else {
                format!("{} {}", i + 1, short(phrase, 40))
            };
            let label = if has_issue {
                format!("! {label}")
            } else {
                label
            };
            let galley = painter.layout_no_wrap(label, font.clone(), Color32::BLACK);
            let pos = rect.min + vec2(2.0, 2.0);
            let bg = Rect::from_min_size(pos, galley.size() + vec2(6.0, 2.0));
            painter.rect_filled(bg, 2.0, stroke_color);
            painter.galley(pos + vec2(3.0, 1.0), galley, Color32::BLACK);
            if selected {
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
        if let Some(CanvasDrag {
            op: DragOp::Draw { start },
            current,
            ..
        }) = &self.drag
        {
            let b = self.drawn_box(*start, *current);
            let rect = tf.screen_rect_from_box(b);
            let color = entity_color(self.layout.entities.len());
            painter.rect_filled(rect, 0.0, color.gamma_multiply(0.15));
            painter.rect_stroke(rect, 0.0, Stroke::new(2.0, color), StrokeKind::Inside);
            let label = format!(
                "{:.0} × {:.0}",
                (b[2] - b[0]) * self.layout.width as f64,
                (b[3] - b[1]) * self.layout.height as f64
            );
            painter.text(
                rect.right_bottom() + vec2(4.0, 4.0),
                egui::Align2::LEFT_TOP,
                label,
                font,
                Color32::WHITE,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_are_inverse() {
        let tf = CanvasTransform::fit(
            Rect::from_min_size(pos2(100.0, 50.0), vec2(800.0, 600.0)),
            768,
            512,
            &CanvasView::default(),
        );
        assert!((tf.rect.width() / tf.rect.height() - 1.5).abs() < 1e-4);
        for p in [pos2(0.0, 0.0), pos2(0.25, 0.75), pos2(1.0, 1.0)] {
            let back = tf.layout_from_screen(tf.screen_from_layout(p));
            assert!((back - p).length() < 1e-5);
        }
    }

    #[test]
    fn snapping_rounds_to_8px() {
        assert_eq!(snap(0.1, 512, true) * 512.0, 48.0);
        assert_eq!(snap(0.1, 512, false), 0.1);
    }
}
