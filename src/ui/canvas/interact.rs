//! Interaction: zoom and pan, drags with the primary button (draw, move, resize, pose), clicks
//! (select, place a person, hide a joint) and the cursor. A drag changes the layout live and is
//! one undo step when released ([`Document::finish_live`]).
//!
//! [`Document::finish_live`]: crate::ui::document::Document::finish_live

use super::hit::{entity_at, entity_hit, handle_at, joint_at, style_badge_rect, style_index};
use super::{clamp01, normalised, snap, CanvasDrag, CanvasTransform, DragOp, Tool, MIN_BOX_PIXELS};
use crate::layout::keypoints::{inside_offset, offset_points};
use crate::layout::{Entity, Layout};
use crate::ui::StudioApp;
use egui::{CursorIcon, PointerButton, Pos2, Rect, Response, Vec2};

/// The box a draw drag from `start` to `end` (normalised) makes, snapped when `snap_on`.
pub(super) fn drawn_box(layout: &Layout, start: Pos2, end: Pos2, snap_on: bool) -> [f64; 4] {
    let (w, h, s) = (layout.width, layout.height, snap_on);
    let e = clamp01(end);
    normalised([
        snap(start.x as f64, w, s),
        snap(start.y as f64, h, s),
        snap(e.x as f64, w, s),
        snap(e.y as f64, h, s),
    ])
}

/// What dragging entity `index` from `grab` moves: the whole box or person.
fn move_op(layout: &Layout, index: usize, grab: Pos2) -> DragOp {
    match &layout.entities[index] {
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
pub(super) fn apply_drag(layout: &mut Layout, drag: &CanvasDrag, snap_on: bool) {
    let (w, h) = (layout.width, layout.height);
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
            if let Some(b) = layout.entities.get_mut(*index).and_then(Entity::bbox_mut) {
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
            if let Some(b) = layout.entities.get_mut(*index).and_then(Entity::bbox_mut) {
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
            if let Some(Entity::Keypoints { points }) = layout.entities.get_mut(*index) {
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
            let (dx, dy) = inside_offset(original, (p.x - grab.x) as f64, (p.y - grab.y) as f64);
            if let Some(Entity::Keypoints { points }) = layout.entities.get_mut(*index) {
                let mut moved = original.clone();
                offset_points(&mut moved, dx, dy);
                *points = moved;
            }
        }
        _ => {}
    }
}

impl StudioApp {
    /// Zoom (Ctrl+wheel or pinch) around the pointer, wheel and middle-drag pan; returns the
    /// transform for this frame.
    pub(super) fn zoom_and_pan_ui(
        &mut self,
        ui: &egui::Ui,
        response: &Response,
        area: Rect,
    ) -> CanvasTransform {
        let (w, h) = (self.doc.layout().width, self.doc.layout().height);
        let view = &mut self.canvas.view;
        let mut tf = CanvasTransform::fit(area, w, h, view);
        if response.hovered() {
            let (zoom, scroll, pointer) =
                ui.input(|i| (i.zoom_delta(), i.smooth_scroll_delta, i.pointer.hover_pos()));
            if zoom != 1.0 {
                let anchor_screen = pointer.unwrap_or(tf.rect.center());
                let anchor = tf.layout_from_screen(anchor_screen);
                view.zoom = (view.zoom * zoom).clamp(0.1, 32.0);
                let moved = CanvasTransform::fit(area, w, h, view);
                view.pan += anchor_screen - moved.screen_from_layout(anchor);
            } else if scroll != Vec2::ZERO {
                view.pan += scroll;
            }
            tf = CanvasTransform::fit(area, w, h, view);
        }
        if response.dragged_by(PointerButton::Middle) {
            view.pan += response.drag_delta();
            tf = CanvasTransform::fit(area, w, h, view);
        }
        tf
    }

    /// Primary-button drags: starts, follows and ends them (`tf` follows a pan drag).
    pub(super) fn drag_ui(
        &mut self,
        ui: &egui::Ui,
        response: &Response,
        area: Rect,
        tf: &mut CanvasTransform,
    ) {
        let pointer = response
            .interact_pointer_pos()
            .or_else(|| response.hover_pos());
        if response.drag_started_by(PointerButton::Primary) {
            let origin = ui
                .input(|i| i.pointer.press_origin())
                .or(pointer)
                .unwrap_or(tf.rect.center());
            let before = self.doc.layout().clone();
            let op = self.drag_op_at(tf, origin);
            self.canvas.drag = Some(CanvasDrag {
                op,
                before,
                current: tf.layout_from_screen(origin),
            });
        }
        if let Some(mut drag) = self.canvas.drag.take() {
            if let Some(p) = pointer {
                if response.dragged_by(PointerButton::Primary)
                    || response.drag_stopped_by(PointerButton::Primary)
                {
                    if drag.op == DragOp::Pan {
                        self.canvas.view.pan += response.drag_delta();
                        let layout = self.doc.layout();
                        *tf = CanvasTransform::fit(
                            area,
                            layout.width,
                            layout.height,
                            &self.canvas.view,
                        );
                    }
                    drag.current = tf.layout_from_screen(p);
                    if let DragOp::Paint { last } = &mut drag.op {
                        if !self.sem_stroke(*last, drag.current) {
                            drag.op = DragOp::None;
                        } else {
                            *last = drag.current;
                        }
                    } else {
                        apply_drag(self.doc.live(), &drag, self.files.settings.snap);
                    }
                }
            }
            // Released here, or somewhere we did not see (e.g. outside the window).
            if response.drag_stopped() || !ui.input(|i| i.pointer.any_down()) {
                self.finish_drag(drag);
            } else {
                self.canvas.drag = Some(drag);
            }
        }
    }

    /// What a drag that starts at `screen` does (may place a person with the person tool).
    fn drag_op_at(&mut self, tf: &CanvasTransform, screen: Pos2) -> DragOp {
        let tool = self.canvas.tool;
        match tool {
            Tool::Pan => return DragOp::Pan,
            Tool::Brush => {
                let p = tf.layout_from_screen(screen);
                return if self.sem_stroke(p, p) {
                    DragOp::Paint { last: p }
                } else {
                    DragOp::None
                };
            }
            Tool::Fill => return DragOp::None,
            _ => {}
        }
        if let Some((index, handle)) = handle_at(&self.doc, tf, screen) {
            let original = self.doc.layout().entities[index].bbox().unwrap_or_default();
            return DragOp::Resize {
                index,
                handle,
                original,
            };
        }
        let p = tf.layout_from_screen(screen);
        if let Some((index, joint)) = joint_at(&self.doc, tf, screen, tool != Tool::Draw) {
            self.doc.selection = Some(index);
            if let Some(Entity::Keypoints { points }) = self.doc.layout().entities.get(index) {
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
        let layout = self.doc.layout();
        let selected_hit = self
            .doc
            .selection
            .filter(|&i| entity_hit(layout, tf, i, screen));
        let target = match tool {
            Tool::Select | Tool::Person => selected_hit.or_else(|| entity_at(layout, tf, screen)),
            _ => selected_hit,
        };
        if let Some(index) = target {
            self.doc.selection = Some(index);
            return move_op(self.doc.layout(), index, p);
        }
        match tool {
            Tool::Draw if self.tool_blocker(Tool::Draw).is_none() => {
                DragOp::Draw { start: clamp01(p) }
            }
            Tool::Person if tf.rect.contains(screen) => {
                let at = clamp01(p);
                // Part of this drag: its release records the new person and its move as one step.
                match self.place_person([at.x as f64, at.y as f64], false) {
                    Some(index) => move_op(self.doc.layout(), index, p),
                    None => DragOp::None,
                }
            }
            _ => DragOp::None,
        }
    }

    fn finish_drag(&mut self, drag: CanvasDrag) {
        match drag.op {
            DragOp::Draw { start } => {
                let b = drawn_box(
                    self.doc.layout(),
                    start,
                    drag.current,
                    self.files.settings.snap,
                );
                let (pw, ph) = (
                    (b[2] - b[0]) * self.doc.layout().width as f64,
                    (b[3] - b[1]) * self.doc.layout().height as f64,
                );
                if pw >= MIN_BOX_PIXELS && ph >= MIN_BOX_PIXELS {
                    let i = self.doc.edit("draw a box", |l| {
                        l.entities.push(Entity::TextBox {
                            phrase: String::new(),
                            bbox: b,
                        });
                        l.entities.len() - 1
                    });
                    self.doc.selection = Some(i);
                    self.canvas.focus_phrase = true;
                    self.status = "Box drawn: type its phrase".into();
                }
            }
            DragOp::Move { index, .. } | DragOp::Resize { index, .. } => {
                if let Some(b) = self
                    .doc
                    .live()
                    .entities
                    .get_mut(index)
                    .and_then(Entity::bbox_mut)
                {
                    *b = normalised(*b);
                }
                self.doc.finish_live(&drag.before);
            }
            // Includes a person placed by this drag (the person tool): one undo step.
            DragOp::MoveJoint { .. } | DragOp::MovePerson { .. } => {
                self.doc.finish_live(&drag.before);
            }
            DragOp::Paint { .. } => self.commit_sem_raster("paint the map"),
            DragOp::Pan | DragOp::None => {}
        }
    }

    /// Aborts the drag in progress and restores the layout from before it.
    pub(crate) fn cancel_drag(&mut self) -> bool {
        match self.canvas.drag.take() {
            Some(drag) => {
                if matches!(drag.op, DragOp::Paint { .. }) {
                    self.discard_sem_strokes();
                }
                self.doc.restore(drag.before);
                true
            }
            None => false,
        }
    }

    /// Clicks: select what is under the pointer (the style badge first), place a person with the
    /// person tool; a right-click on a joint hides it (shown again from the inspector).
    pub(super) fn clicks_ui(&mut self, response: &Response, tf: &CanvasTransform) {
        let pointer = response
            .interact_pointer_pos()
            .or_else(|| response.hover_pos());
        if response.clicked() && matches!(self.canvas.tool, Tool::Brush | Tool::Fill) {
            if let Some(p) = pointer {
                let at = tf.layout_from_screen(p);
                if self.canvas.tool == Tool::Fill {
                    self.sem_fill(at);
                } else if self.sem_stroke(at, at) {
                    self.commit_sem_raster("paint the map");
                }
            }
            return;
        }
        if response.clicked() {
            if let Some(p) = pointer {
                let layout = self.doc.layout();
                let badge = style_index(layout).filter(|_| style_badge_rect(tf).contains(p));
                let hit = badge.or_else(|| entity_at(layout, tf, p));
                if self.canvas.tool == Tool::Person && hit.is_none() {
                    let at = clamp01(tf.layout_from_screen(p));
                    if tf.rect.contains(p) {
                        self.place_person([at.x as f64, at.y as f64], true);
                    }
                } else {
                    self.doc.selection = hit;
                    if hit.is_some() && self.canvas.tool == Tool::Pan {
                        self.canvas.tool = Tool::Select;
                    }
                }
            }
        }
        if response.secondary_clicked() {
            if let Some((i, k)) = pointer.and_then(|p| joint_at(&self.doc, tf, p, true)) {
                self.doc.selection = Some(i);
                self.set_joint_visible(i, k, false);
            }
        }
    }

    /// The joint under the pointer (or being dragged), whose name is shown.
    pub(super) fn update_hover(&mut self, response: &Response, tf: &CanvasTransform) {
        self.canvas.hovered_joint = match &self.canvas.drag {
            Some(CanvasDrag {
                op: DragOp::MoveJoint { index, joint, .. },
                ..
            }) => Some((*index, *joint)),
            Some(_) => None,
            None => response
                .hover_pos()
                .and_then(|p| joint_at(&self.doc, tf, p, self.canvas.tool != Tool::Draw)),
        };
    }

    /// The cursor over `p`: what a drag there would do, or what the one in progress does.
    pub(super) fn cursor_icon(&self, tf: &CanvasTransform, p: Pos2) -> CursorIcon {
        match &self.canvas.drag {
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
                op: DragOp::Draw { .. } | DragOp::Paint { .. },
                ..
            }) => CursorIcon::Crosshair,
            _ if matches!(self.canvas.tool, Tool::Brush | Tool::Fill) => {
                if self.sem_blocker().is_some() {
                    CursorIcon::NotAllowed
                } else {
                    CursorIcon::Crosshair
                }
            }
            _ => match handle_at(&self.doc, tf, p) {
                Some((_, h)) => h.cursor(),
                None if self.canvas.hovered_joint.is_some() => CursorIcon::Move,
                None => {
                    let layout = self.doc.layout();
                    match self.canvas.tool {
                        Tool::Pan => CursorIcon::Grab,
                        Tool::Brush | Tool::Fill => CursorIcon::Crosshair,
                        Tool::Select | Tool::Person => {
                            if entity_at(layout, tf, p).is_some() {
                                CursorIcon::Grab
                            } else if self.canvas.tool == Tool::Person {
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
                            if self
                                .doc
                                .selection
                                .is_some_and(|i| entity_hit(layout, tf, i, p))
                            {
                                CursorIcon::Grab
                            } else {
                                CursorIcon::Crosshair
                            }
                        }
                    }
                }
            },
        }
    }
}
