//! The canvas: the layout drawn over the preview, the result or the picture to inpaint, and its
//! editing: boxes (draw, select, move, resize by handles), image boxes with their pictures, people
//! (move the whole skeleton or one joint, right-click hides a joint), the style image's badge,
//! zoom and pan.
//!
//! Layout coordinates are normalised (`[0, 1]²`, origin top left, as in the file); the canvas maps
//! them to screen points with [`CanvasTransform::screen_from_layout`] and back with
//! [`CanvasTransform::layout_from_screen`].
//!
//! `CanvasState` is what the canvas keeps between frames (tool, view, drag, hover). Submodules:
//! `hit` (what is under the pointer, from the document alone), `interact` (zoom, pan, drags,
//! clicks, the cursor) and `paint` (the background, boxes, people, badges and readouts).

mod hit;
mod interact;
mod paint;

use super::StudioApp;
use crate::layout::Layout;
use egui::{pos2, vec2, Color32, CursorIcon, Pos2, Rect, Sense, Vec2};

/// Drawing tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// Drag to draw a box (drag inside the selected box moves it).
    Draw,
    /// Click to select, drag to move; drag on empty canvas does nothing.
    Select,
    /// Drag to pan the view.
    Pan,
    /// Click to place a person (17 COCO keypoints); drag a joint or the body to pose and move.
    Person,
    /// Drag to paint ADE20K classes into the semantic map.
    Brush,
    /// Click to fill a region of the semantic map with a class.
    Fill,
}

/// What the canvas showed under the layout in the last frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CanvasBackground {
    #[default]
    Blank,
    Preview,
    Result,
    /// A finished draft.
    Draft,
    /// The picture to inpaint (centre-cropped to the canvas).
    Inpaint,
}

/// What the canvas keeps between frames.
pub(crate) struct CanvasState {
    pub(crate) tool: Tool,
    pub(crate) view: CanvasView,
    /// The drag in progress with the primary button.
    pub(crate) drag: Option<CanvasDrag>,
    /// The joint under the pointer (entity, joint), for its name label.
    pub(crate) hovered_joint: Option<(usize, usize)>,
    /// Focus the phrase field of the selection next frame (a box was just drawn).
    pub(crate) focus_phrase: bool,
    /// The canvas area of the last frame (tests and drops aim with it).
    pub(crate) last_rect: Option<Rect>,
    /// What the canvas showed under the layout in the last frame.
    pub(crate) last_background: CanvasBackground,
}

impl Default for CanvasState {
    fn default() -> Self {
        Self {
            tool: Tool::Draw,
            view: CanvasView::default(),
            drag: None,
            hovered_joint: None,
            focus_phrase: false,
            last_rect: None,
            last_background: CanvasBackground::Blank,
        }
    }
}

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
    pub(super) fn edges(self) -> [bool; 4] {
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

    pub(super) fn cursor(self) -> CursorIcon {
        match self {
            Handle::NW | Handle::SE => CursorIcon::ResizeNwSe,
            Handle::NE | Handle::SW => CursorIcon::ResizeNeSw,
            Handle::N | Handle::S => CursorIcon::ResizeVertical,
            Handle::E | Handle::W => CursorIcon::ResizeHorizontal,
        }
    }
}

/// Radius within which a handle catches the pointer, in points.
pub(super) const HANDLE_REACH: f32 = 7.0;
/// Boxes smaller than this many layout pixels on a side are taken as clicks, not drawn.
pub(super) const MIN_BOX_PIXELS: f64 = 3.0;

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
    /// A brush stroke on the semantic map (the last point painted to).
    Paint {
        last: Pos2,
    },
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

pub(super) fn clamp01(p: Pos2) -> Pos2 {
    pos2(p.x.clamp(0.0, 1.0), p.y.clamp(0.0, 1.0))
}

pub(super) fn normalised(b: [f64; 4]) -> [f64; 4] {
    [
        b[0].min(b[2]),
        b[1].min(b[3]),
        b[0].max(b[2]),
        b[1].max(b[3]),
    ]
}

impl StudioApp {
    /// The canvas transform for the last frame's canvas area (tests use it to aim the pointer).
    pub fn canvas_transform(&self) -> Option<CanvasTransform> {
        let layout = self.doc.layout();
        self.canvas
            .last_rect
            .map(|r| CanvasTransform::fit(r, layout.width, layout.height, &self.canvas.view))
    }

    pub fn reset_view(&mut self) {
        self.canvas.view = CanvasView::default();
    }

    pub fn canvas_ui(&mut self, ui: &mut egui::Ui) {
        let (response, painter) = ui.allocate_painter(ui.available_size(), Sense::click_and_drag());
        let area = response.rect;
        self.canvas.last_rect = Some(area);
        self.sync_sem_raster(ui.ctx());
        let mut tf = self.zoom_and_pan_ui(ui, &response, area);
        self.drag_ui(ui, &response, area, &mut tf);
        self.clicks_ui(&response, &tf);
        self.update_hover(&response, &tf);
        if let Some(p) = response.hover_pos() {
            let icon = self.cursor_icon(&tf, p);
            ui.ctx().set_cursor_icon(icon);
        }
        self.canvas.last_background = self.paint_canvas(ui, &painter, &tf);
        paint::readout(
            ui,
            &painter,
            &tf,
            area,
            self.doc.layout(),
            self.canvas.view,
            response.hover_pos(),
        );
        if ui.input(|i| !i.raw.hovered_files.is_empty()) {
            let image_boxes = self
                .unsupported_reason(crate::layout::EntityKind::ImageBox)
                .is_none();
            paint::drop_hint(&painter, area, image_boxes);
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
