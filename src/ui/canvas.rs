//! The canvas: the layout drawn over the preview, the result or the picture to inpaint, and its
//! editing: boxes (draw, select, move, resize by handles), image boxes with their pictures, people
//! (move the whole skeleton or one joint, right-click hides a joint), the style image's badge,
//! zoom and pan.
//!
//! Layout coordinates are normalised (`[0, 1]²`, origin top left, as in the file); the canvas maps
//! them to screen points with [`CanvasTransform::screen_from_layout`] and back with
//! [`CanvasTransform::layout_from_screen`].

use super::edit::{inside_offset, is_left_joint, joint_label, offset_points, COCO_SKELETON};
use super::pictures::PictureState;
use super::{CanvasBackground, CanvasImage, StudioApp, Tool};
use crate::layout::{Entity, EntityKind, Layout};
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
    /// One joint of a person.
    MoveJoint {
        index: usize,
        joint: usize,
        grab: Pos2,
        original: [f64; 2],
    },
    /// A whole person.
    MovePerson {
        index: usize,
        grab: Pos2,
        original: Vec<Option<[f64; 2]>>,
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

/// Radius within which a bone catches the pointer, in points.
const BONE_REACH: f32 = 6.0;
/// Padding around a person's joints that still counts as the person, in points.
const PERSON_PAD: f32 = 10.0;

/// Distance from `p` to the segment `a`–`b`.
fn segment_distance(p: Pos2, a: Pos2, b: Pos2) -> f32 {
    let ab = b - a;
    let len2 = ab.length_sq();
    if len2 <= f32::EPSILON {
        return p.distance(a);
    }
    let t = ((p - a).dot(ab) / len2).clamp(0.0, 1.0);
    p.distance(a + ab * t)
}

/// Diagonal hatching inside `rect` (what inpainting regenerates).
fn hatch(painter: &egui::Painter, rect: Rect, color: Color32) {
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

const UNUSABLE: Color32 = Color32::from_gray(140);

impl StudioApp {
    /// Joint screen positions of person `i` (`None` where hidden).
    fn joint_positions(&self, tf: &CanvasTransform, i: usize) -> Vec<Option<Pos2>> {
        match self.layout.entities.get(i) {
            Some(Entity::Keypoints { points }) => points
                .iter()
                .map(|p| p.map(|p| tf.screen_from_layout(pos2(p[0] as f32, p[1] as f32))))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The joint nearest `screen` within reach: the selected person's first, then the topmost.
    /// `any`: every person, else only the selected one.
    fn joint_at(&self, tf: &CanvasTransform, screen: Pos2, any: bool) -> Option<(usize, usize)> {
        let n = self.layout.entities.len();
        let order = self
            .selection
            .into_iter()
            .chain((0..n).rev().filter(|_| any));
        for i in order {
            let best = self
                .joint_positions(tf, i)
                .iter()
                .enumerate()
                .filter_map(|(k, p)| p.map(|p| (k, p.distance(screen))))
                .filter(|(_, d)| *d <= HANDLE_REACH)
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((k, _)) = best {
                return Some((i, k));
            }
        }
        None
    }

    /// Whether `screen` is on entity `i`: inside a box, or on a person (a joint, a bone, or inside
    /// the joints' padded bounding box).
    fn entity_hit(&self, tf: &CanvasTransform, i: usize, screen: Pos2) -> bool {
        match self.layout.entities.get(i) {
            Some(Entity::Keypoints { .. }) => {
                let joints = self.joint_positions(tf, i);
                let placed: Vec<Pos2> = joints.iter().flatten().copied().collect();
                if placed.is_empty() {
                    return false;
                }
                let on_bone = COCO_SKELETON.iter().any(|&(a, b)| {
                    match (
                        joints.get(a).copied().flatten(),
                        joints.get(b).copied().flatten(),
                    ) {
                        (Some(a), Some(b)) => segment_distance(screen, a, b) <= BONE_REACH,
                        _ => false,
                    }
                });
                on_bone
                    || placed.iter().any(|p| p.distance(screen) <= HANDLE_REACH)
                    || Rect::from_points(&placed)
                        .expand(PERSON_PAD)
                        .contains(screen)
            }
            Some(e) => e
                .bbox()
                .is_some_and(|b| contains(b, tf.layout_from_screen(screen))),
            None => false,
        }
    }

    /// The topmost entity under `screen`; later entities are on top.
    fn entity_at(&self, tf: &CanvasTransform, screen: Pos2) -> Option<usize> {
        (0..self.layout.entities.len())
            .rev()
            .find(|&i| self.entity_hit(tf, i, screen))
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

    /// What a drag that starts at `screen` does (may place a person with the person tool).
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
        if let Some((index, joint)) = self.joint_at(tf, screen, self.tool != Tool::Draw) {
            self.selection = Some(index);
            if let Some(Entity::Keypoints { points }) = self.layout.entities.get(index) {
                if let Some(Some(original)) = points.get(joint) {
                    return DragOp::MoveJoint {
                        index,
                        joint,
                        grab: p,
                        original: *original,
                    };
                }
            }
        }
        let selected_hit = self.selection.filter(|&i| self.entity_hit(tf, i, screen));
        let target = match self.tool {
            Tool::Select | Tool::Person => selected_hit.or_else(|| self.entity_at(tf, screen)),
            _ => selected_hit,
        };
        if let Some(index) = target {
            self.selection = Some(index);
            return self.move_op(index, p);
        }
        match self.tool {
            Tool::Draw if self.tool_blocker(Tool::Draw).is_none() => {
                DragOp::Draw { start: clamp01(p) }
            }
            Tool::Person if tf.rect.contains(screen) => {
                let at = clamp01(p);
                match self.place_person([at.x as f64, at.y as f64], false) {
                    Some(index) => self.move_op(index, p),
                    None => DragOp::None,
                }
            }
            _ => DragOp::None,
        }
    }

    fn move_op(&self, index: usize, grab: Pos2) -> DragOp {
        match &self.layout.entities[index] {
            Entity::Keypoints { points } => DragOp::MovePerson {
                index,
                grab,
                original: points.clone(),
            },
            e => match e.bbox() {
                Some(original) => DragOp::Move {
                    index,
                    grab,
                    original,
                },
                None => DragOp::None,
            },
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
            DragOp::MoveJoint {
                index,
                joint,
                grab,
                original,
            } => {
                let x = (original[0] + (p.x - grab.x) as f64).clamp(0.0, 1.0);
                let y = (original[1] + (p.y - grab.y) as f64).clamp(0.0, 1.0);
                if let Some(Entity::Keypoints { points }) = self.layout.entities.get_mut(*index) {
                    if let Some(slot) = points.get_mut(*joint) {
                        *slot = Some([x, y]);
                    }
                }
            }
            DragOp::MovePerson {
                index,
                grab,
                original,
            } => {
                let (dx, dy) =
                    inside_offset(original, (p.x - grab.x) as f64, (p.y - grab.y) as f64);
                if let Some(Entity::Keypoints { points }) = self.layout.entities.get_mut(*index) {
                    let mut moved = original.clone();
                    offset_points(&mut moved, dx, dy);
                    *points = moved;
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
            DragOp::MoveJoint { .. } | DragOp::MovePerson { .. } => {
                // Includes a person placed by this drag (the person tool): one undo step.
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
                self.clamp_selection();
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

    /// Where the style image's badge is drawn (the canvas's top-right corner).
    fn style_badge_rect(tf: &CanvasTransform) -> Rect {
        let side = (tf.rect.width().min(tf.rect.height()) * 0.18).clamp(28.0, 72.0);
        Rect::from_min_size(
            tf.rect.right_top() + vec2(-side - 6.0, 6.0),
            vec2(side, side),
        )
    }

    fn style_index(&self) -> Option<usize> {
        self.layout
            .entities
            .iter()
            .position(|e| matches!(e, Entity::StyleImage { .. }))
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
            let before = self.layout.clone();
            let op = self.drag_op_at(&tf, origin);
            self.drag = Some(CanvasDrag {
                op,
                before,
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
                let badge = self
                    .style_index()
                    .filter(|_| Self::style_badge_rect(&tf).contains(p));
                let hit = badge.or_else(|| self.entity_at(&tf, p));
                if self.tool == Tool::Person && hit.is_none() {
                    let at = clamp01(tf.layout_from_screen(p));
                    if tf.rect.contains(p) {
                        self.place_person([at.x as f64, at.y as f64], true);
                    }
                } else {
                    self.selection = hit;
                    if hit.is_some() && self.tool == Tool::Pan {
                        self.tool = Tool::Select;
                    }
                }
            }
        }
        if response.secondary_clicked() {
            // Right-click on a joint hides it (shown again from the inspector).
            if let Some((i, k)) = pointer.and_then(|p| self.joint_at(&tf, p, true)) {
                self.selection = Some(i);
                self.set_joint_visible(i, k, false);
            }
        }

        // The joint under the pointer (or being dragged) gets its name shown.
        self.hovered_joint = match &self.drag {
            Some(CanvasDrag {
                op: DragOp::MoveJoint { index, joint, .. },
                ..
            }) => Some((*index, *joint)),
            Some(_) => None,
            None => response
                .hover_pos()
                .and_then(|p| self.joint_at(&tf, p, self.tool != Tool::Draw)),
        };

        // Cursor.
        if let Some(p) = response.hover_pos() {
            let icon = match &self.drag {
                Some(CanvasDrag {
                    op: DragOp::Resize { handle, .. },
                    ..
                }) => handle.cursor(),
                Some(CanvasDrag {
                    op: DragOp::Move { .. } | DragOp::MovePerson { .. } | DragOp::MoveJoint { .. },
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
                    None if self.hovered_joint.is_some() => CursorIcon::Move,
                    None => match self.tool {
                        Tool::Pan => CursorIcon::Grab,
                        Tool::Select | Tool::Person => {
                            if self.entity_at(&tf, p).is_some() {
                                CursorIcon::Grab
                            } else if self.tool == Tool::Person {
                                if self.person_blocker().is_some() {
                                    CursorIcon::NotAllowed
                                } else {
                                    CursorIcon::Crosshair
                                }
                            } else {
                                CursorIcon::Default
                            }
                        }
                        Tool::Draw => {
                            if self.selection.is_some_and(|i| self.entity_hit(&tf, i, p)) {
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

        self.last_background = self.paint_canvas(ui, &painter, &tf);

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
            let text = if self.unsupported_reason(EntityKind::ImageBox).is_none() {
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
    }

    /// Draws the canvas; returns what it showed under the layout.
    fn paint_canvas(
        &mut self,
        ui: &egui::Ui,
        painter: &egui::Painter,
        tf: &CanvasTransform,
    ) -> CanvasBackground {
        let ctx = ui.ctx().clone();
        let base = self.picture_base();
        let limits = self.model_limits();
        let painter = painter.with_clip_rect(painter.clip_rect().intersect(ui.max_rect()));
        let r = tf.rect;
        painter.rect_filled(r, 0.0, Color32::from_gray(38));
        let uv = Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0));
        let mut background = CanvasBackground::Blank;
        if self.settings.show_image {
            match &self.canvas_image {
                Some(CanvasImage::Preview { texture, .. }) => {
                    painter.image(texture.id(), r, uv, Color32::WHITE);
                    background = CanvasBackground::Preview;
                }
                Some(CanvasImage::Result { texture, .. }) => {
                    painter.image(texture.id(), r, uv, Color32::WHITE);
                    background = CanvasBackground::Result;
                }
                Some(CanvasImage::Draft { texture, .. }) => {
                    // Drawn at the canvas's size whatever size the draft was rendered at.
                    painter.image(texture.id(), r, uv, Color32::WHITE);
                    background = CanvasBackground::Draft;
                }
                None => {}
            }
            if let Some(badge) = self.draft_badge() {
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
        if let Some(inpaint) = self.layout.inpaint.clone() {
            if background == CanvasBackground::Blank {
                match self.pictures.get(&ctx, &inpaint.image, base.as_deref()) {
                    PictureState::Ready(p) => {
                        // What the pipeline keeps: the centre crop at the canvas's aspect ratio.
                        let crop = p.centre_crop_uv(self.layout.width, self.layout.height);
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
            let note = if limits.supports_inpainting {
                "Inpainting: hatched boxes are regenerated, the rest of the picture is kept"
                    .to_string()
            } else {
                "(!) Inpainting picture not used: this model does not inpaint".to_string()
            };
            let galley = painter.layout_no_wrap(note, small.clone(), Color32::WHITE);
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
            && self.layout.entities.is_empty()
            && self.drag.is_none()
            && self.layout.inpaint.is_none()
        {
            let hint = match self.tool {
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
        if !self.settings.show_boxes {
            return background;
        }
        let font = small;
        // Hatched: what inpainting regenerates (only when the model inpaints).
        let inpainting = self.layout.inpaint.is_some() && limits.supports_inpainting;
        // The cache is taken out while the entities are drawn (they borrow the layout).
        let mut pictures = std::mem::take(&mut self.pictures);
        for (i, entity) in self.layout.entities.iter().enumerate() {
            let usable = limits.supports(entity.kind());
            let color = if usable { entity_color(i) } else { UNUSABLE };
            let selected = self.selection == Some(i);
            let has_issue = self
                .issues
                .under(&format!("entities[{i}]"))
                .next()
                .is_some();
            let warn = if !usable {
                "(!) "
            } else if has_issue {
                "! "
            } else {
                ""
            };
            let stroke_color = if has_issue && usable {
                Color32::from_rgb(255, 80, 80)
            } else {
                color
            };
            match entity {
                Entity::Keypoints { .. } => {
                    self.paint_person(&painter, tf, i, color, selected, warn, &font);
                    continue;
                }
                Entity::StyleImage { image } => {
                    if self.style_index() == Some(i) {
                        let badge = Self::style_badge_rect(tf);
                        painter.rect_filled(badge.expand(2.0), 3.0, Color32::from_black_alpha(180));
                        match pictures.get(&ctx, image, base.as_deref()) {
                            PictureState::Ready(p) => {
                                let tint = if usable {
                                    Color32::WHITE
                                } else {
                                    Color32::from_white_alpha(90)
                                };
                                painter.image(
                                    p.texture.id(),
                                    fit_into(badge, p.aspect()),
                                    uv,
                                    tint,
                                );
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
                            Stroke::new(if selected { 3.0 } else { 1.5 }, stroke_color),
                            StrokeKind::Outside,
                        );
                        painter.text(
                            badge.center_bottom() + vec2(0.0, 4.0),
                            egui::Align2::CENTER_TOP,
                            format!("{warn}style"),
                            font.clone(),
                            stroke_color,
                        );
                    }
                    continue;
                }
                _ => {}
            }
            let Some(b) = entity.bbox() else { continue };
            let rect = tf.screen_rect_from_box(b);
            let mut picture_note = None;
            if let Entity::ImageBox { image, .. } = entity {
                match pictures.get(&ctx, image, base.as_deref()) {
                    PictureState::Ready(p) => {
                        let tint = if usable {
                            Color32::from_white_alpha(235)
                        } else {
                            Color32::from_white_alpha(70)
                        };
                        painter.image(
                            p.texture.id(),
                            fit_into(rect.shrink(2.0), p.aspect()),
                            uv,
                            tint,
                        );
                    }
                    PictureState::Loading => picture_note = Some("loading…".to_string()),
                    PictureState::Failed(_) => {
                        picture_note = Some("(!) picture missing".to_string())
                    }
                }
            }
            if inpainting {
                hatch(&painter, rect, color.gamma_multiply(0.55));
            }
            painter.rect_filled(
                rect,
                0.0,
                color.gamma_multiply(if selected { 0.22 } else { 0.12 }),
            );
            painter.rect_stroke(
                rect,
                0.0,
                Stroke::new(if selected { 3.0 } else { 2.0 }, stroke_color),
                StrokeKind::Inside,
            );
            let phrase = entity.phrase().unwrap_or("");
            let mut label = match entity {
                Entity::ImageBox { .. } if phrase.trim().is_empty() => format!("{} picture", i + 1),
                Entity::ImageBox { .. } => format!("{} picture · {}", i + 1, short(phrase, 36)),
                _ if phrase.trim().is_empty() => format!("{} (no phrase)", i + 1),
                _ => format!("{} {}", i + 1, short(phrase, 40)),
            };
            if !usable {
                label.push_str(" · not used by this model");
            }
            let label = format!("{warn}{label}");
            let galley = painter.layout_no_wrap(label, font.clone(), Color32::BLACK);
            let pos = rect.min + vec2(2.0, 2.0);
            let bg = Rect::from_min_size(pos, galley.size() + vec2(6.0, 2.0));
            painter.rect_filled(bg, 2.0, stroke_color);
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
        self.pictures = pictures;
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
        background
    }

    /// A person: bones between placed joints (the person's left side lighter), joint dots, a label.
    #[allow(clippy::too_many_arguments)]
    fn paint_person(
        &self,
        painter: &egui::Painter,
        tf: &CanvasTransform,
        i: usize,
        color: Color32,
        selected: bool,
        warn: &str,
        font: &egui::FontId,
    ) {
        let joints = self.joint_positions(tf, i);
        let placed: Vec<Pos2> = joints.iter().flatten().copied().collect();
        if placed.is_empty() {
            return;
        }
        let right = color.gamma_multiply(0.6);
        let width = if selected { 4.0 } else { 3.0 };
        for &(a, b) in COCO_SKELETON.iter() {
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
        let mut label = format!("{warn}{} person", i + 1);
        if hidden > 0 {
            label.push_str(&format!(" · {hidden} hidden"));
        }
        if warn == "(!) " {
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
        if let Some((hi, hk)) = self.hovered_joint {
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
