//! The document the studio edits: the layout, its undo history, the selection, what validation
//! says about it, and the snapshots that tell whether it is saved and autosaved.
//!
//! Every change goes through one of three doors, so that the undo steps are exactly the user's
//! edits and a change is never recorded twice:
//! - [`Document::edit`]: a change made at once (delete, duplicate, reorder, a picture, a person,
//!   a joint, opening or restoring a layout) is one undo step; [`Document::edit_merged`] makes
//!   repeated edits under one key (nudges) one step;
//! - [`Document::live`] + [`Document::mark_edit`]: widgets write into the layout while the user
//!   types or drags a value; the change since the frame began is one step at its end (consecutive
//!   frames under one key coalesce);
//! - [`Document::live`] + [`Document::finish_live`]: a canvas drag changes the layout live and is
//!   one step when released ([`Document::restore`] aborts it).
//!
//! Validation runs once a frame ([`Document::revalidate`]); the autosave compares the layout with
//! the [`Document::autosaved`] snapshot at the end of the frame.

use super::{NoticeLevel, StudioApp};
use crate::layout::keypoints::{inside_offset, offset_points};
use crate::layout::{Entity, EntityKind, History, Layout, ModelLimits, ValidationErrors};
use std::path::PathBuf;

/// The studio's document (see the module docs).
pub(crate) struct Document {
    layout: Layout,
    history: History,
    /// The selected entity (an index into the layout's entities; may be stale until clamped).
    pub(crate) selection: Option<usize>,
    /// The layout when this frame began, and the key of a widget edit made during it.
    frame_start: Layout,
    pending_edit: Option<String>,
    issues: ValidationErrors,
    /// The layout as it is in its file (`None`: not saved, or the autosave is newer than the file).
    pub(crate) saved: Option<Layout>,
    /// "Embed pictures in the file" as it was at the last save or open.
    pub(crate) saved_embed: bool,
    /// The layout as the last autosave wrote it.
    pub(crate) autosaved: Option<Layout>,
    /// The file the layout was last opened or imported from.
    pub(crate) opened_from: Option<PathBuf>,
}

impl Document {
    pub(crate) fn new(layout: Layout, autosaved: Option<Layout>) -> Self {
        Self {
            frame_start: layout.clone(),
            layout,
            history: History::new(),
            selection: None,
            pending_edit: None,
            issues: ValidationErrors::default(),
            saved: None,
            saved_embed: false,
            autosaved,
            opened_from: None,
        }
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The layout to change in place: a widget marks its change with [`Document::mark_edit`], a
    /// drag ends with [`Document::finish_live`] or [`Document::restore`]. Anything else is an
    /// [`Document::edit`].
    pub(crate) fn live(&mut self) -> &mut Layout {
        &mut self.layout
    }

    #[cfg(feature = "testing")]
    pub(crate) fn history(&self) -> &History {
        &self.history
    }

    pub(crate) fn can_undo(&self) -> bool {
        self.history.can_undo()
    }

    pub(crate) fn can_redo(&self) -> bool {
        self.history.can_redo()
    }

    /// What is wrong with the layout for the loaded model, as of this frame.
    pub(crate) fn issues(&self) -> &ValidationErrors {
        &self.issues
    }

    /// Whether entity `i` has a problem to fix.
    pub(crate) fn has_issue(&self, i: usize) -> bool {
        self.issues
            .under(&format!("entities[{i}]"))
            .next()
            .is_some()
    }

    /// Validates once a frame, before the panels read the issues.
    pub(crate) fn revalidate(&mut self, limits: &ModelLimits) {
        self.issues = match self.layout.validate_for(limits) {
            Ok(()) => ValidationErrors::default(),
            Err(e) => e,
        };
    }

    /// The selection, if it is an entity of the layout.
    pub(crate) fn selected(&self) -> Option<usize> {
        self.selection.filter(|&i| i < self.layout.entities.len())
    }

    pub(crate) fn clamp_selection(&mut self) {
        if let Some(i) = self.selection {
            if i >= self.layout.entities.len() {
                self.selection = None;
            }
        }
    }

    /// One undo step: `f` changes the layout, and the layout before is recorded (even if `f`
    /// changed nothing: callers leave out edits that would be no-ops). `label` names the step in
    /// the log.
    pub(crate) fn edit<R>(&mut self, label: &str, f: impl FnOnce(&mut Layout) -> R) -> R {
        let before = self.layout.clone();
        let out = f(&mut self.layout);
        tracing::trace!("edit: {label}");
        self.history.push(&before);
        self.resync();
        out
    }

    /// Like [`Document::edit`], but recorded only if the layout changed, and consecutive edits
    /// under the same `key` (nudging one entity with the arrow keys) are one undo step.
    pub(crate) fn edit_merged<R>(&mut self, key: &str, f: impl FnOnce(&mut Layout) -> R) -> R {
        let before = self.layout.clone();
        let out = f(&mut self.layout);
        if self.layout != before {
            self.history.push_coalesced(&before, key);
        }
        self.resync();
        out
    }

    /// Records a live change (a drag) as one undo step from `before`, the layout when it began,
    /// if it changed anything.
    pub(crate) fn finish_live(&mut self, before: &Layout) {
        if self.layout != *before {
            self.history.push(before);
        }
        self.resync();
    }

    /// Puts the layout back as it was before a live change (an aborted drag); no undo step.
    pub(crate) fn restore(&mut self, before: Layout) {
        self.layout = before;
        self.resync();
    }

    /// After a change outside the widget path: the frame's end must not record it again.
    fn resync(&mut self) {
        self.frame_start = self.layout.clone();
        self.clamp_selection();
    }

    /// Records a widget edit made this frame under `key` (consecutive edits with one key coalesce).
    pub(crate) fn mark_edit(&mut self, key: impl Into<String>) {
        self.pending_edit = Some(key.into());
    }

    pub(crate) fn begin_frame(&mut self) {
        self.frame_start = self.layout.clone();
    }

    /// Records the frame's widget edits as one step.
    pub(crate) fn end_frame(&mut self) {
        if let Some(key) = self.pending_edit.take() {
            if self.layout != self.frame_start {
                self.history.push_coalesced(&self.frame_start, &key);
            }
        }
        self.clamp_selection();
    }

    pub(crate) fn undo(&mut self) -> bool {
        let done = self.history.undo(&mut self.layout);
        if done {
            self.clamp_selection();
        }
        self.frame_start = self.layout.clone();
        done
    }

    pub(crate) fn redo(&mut self) -> bool {
        let done = self.history.redo(&mut self.layout);
        if done {
            self.clamp_selection();
        }
        self.frame_start = self.layout.clone();
        done
    }

    /// Whether the file is behind: the layout changed since, or Save would now write its pictures
    /// differently (`embed`: "Embed pictures in the file" now).
    pub(crate) fn is_dirty(&self, embed: bool) -> bool {
        self.saved.as_ref() != Some(&self.layout)
            || (self.saved_embed != embed
                && self
                    .layout
                    .image_refs()
                    .iter()
                    .any(|(_, r)| !crate::layout::is_data_uri(r)))
    }

    // ----- edits of the selected entity -----

    /// Deletes the selected entity and selects its neighbour; returns what was deleted.
    pub(crate) fn delete_selected(&mut self) -> Option<(usize, EntityKind)> {
        let i = self.selected()?;
        let kind = self.edit("delete", |l| l.entities.remove(i).kind());
        let n = self.layout.entities.len();
        self.selection = (n > 0).then(|| i.min(n - 1));
        Some((i, kind))
    }

    /// Puts a copy of entity `i`, offset by 16 px, after it and selects the copy.
    pub(crate) fn duplicate(&mut self, i: usize) {
        self.edit("duplicate", |l| {
            let mut copy = l.entities[i].clone();
            let (dx, dy) = (16.0 / l.width.max(1) as f64, 16.0 / l.height.max(1) as f64);
            offset_entity(&mut copy, dx, dy);
            l.entities.insert(i + 1, copy);
        });
        self.selection = Some(i + 1);
    }

    /// Moves the selected box or person by (dx, dy) layout pixels, staying on the canvas.
    pub(crate) fn nudge_selected(&mut self, dx: f64, dy: f64) {
        let Some(i) = self.selection else { return };
        self.edit_merged(&format!("nudge entities[{i}]"), |l| {
            let (w, h) = (l.width.max(1) as f64, l.height.max(1) as f64);
            if let Some(e) = l.entities.get_mut(i) {
                offset_entity(e, dx / w, dy / h);
            }
        });
    }

    /// Moves entity `from` to position `to` (an earlier or later grounding token) and selects it.
    pub(crate) fn move_entity(&mut self, from: usize, to: usize) {
        let n = self.layout.entities.len();
        if from == to || from >= n || to >= n {
            return;
        }
        self.edit("reorder", |l| {
            let e = l.entities.remove(from);
            l.entities.insert(to, e);
        });
        self.selection = Some(to);
    }
}

/// Moves an entity by `(dx, dy)` (normalised), staying on the canvas. Style images do not move.
pub fn offset_entity(entity: &mut Entity, dx: f64, dy: f64) {
    match entity {
        Entity::Keypoints { points } => {
            let (dx, dy) = inside_offset(points, dx, dy);
            offset_points(points, dx, dy);
        }
        other => {
            if let Some(b) = other.bbox_mut() {
                let (w, h) = (b[2] - b[0], b[3] - b[1]);
                let x0 = (b[0] + dx).clamp(0.0, (1.0 - w).max(0.0));
                let y0 = (b[1] + dy).clamp(0.0, (1.0 - h).max(0.0));
                *b = [x0, y0, x0 + w, y0 + h];
            }
        }
    }
}

/// The studio's side of document edits: what the status bar says, what the model refuses.
impl StudioApp {
    pub fn undo(&mut self) {
        self.canvas.drag = None;
        if self.doc.undo() {
            self.status = "Undone".into();
        }
    }

    pub fn redo(&mut self) {
        self.canvas.drag = None;
        if self.doc.redo() {
            self.status = "Redone".into();
        }
    }

    /// Replaces the layout as one undoable edit.
    pub fn set_layout(&mut self, layout: Layout) {
        if layout != *self.doc.layout() {
            self.doc.edit("replace the layout", |l| *l = layout);
        }
    }

    /// Deletes the selected entity (undoable).
    pub fn delete_selected(&mut self) {
        if let Some((i, kind)) = self.doc.delete_selected() {
            let kind = match kind {
                EntityKind::TextBox => "box",
                EntityKind::ImageBox => "image box",
                EntityKind::StyleImage => "style image",
                EntityKind::Keypoints => "person",
                EntityKind::Map => "map",
            };
            self.status = format!("Deleted {kind} {}", i + 1);
        }
    }

    /// Duplicates the selected entity, offset by 16 px (undoable).
    pub fn duplicate_selected(&mut self) {
        let Some(i) = self.doc.selected() else {
            return;
        };
        if matches!(self.doc.layout().entities[i], Entity::Keypoints { .. }) {
            if let Some(reason) = self.person_blocker() {
                self.notify(NoticeLevel::Warning, format!("No person added: {reason}."));
                return;
            }
        }
        self.doc.duplicate(i);
    }

    /// Moves the selected box or person by (dx, dy) layout pixels, staying on the canvas.
    pub fn nudge_selected(&mut self, dx: f64, dy: f64) {
        self.doc.nudge_selected(dx, dy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::keypoints::{default_person, points_bbox};

    #[test]
    fn moving_a_person_keeps_it_on_the_canvas() {
        let mut e = Entity::Keypoints {
            points: default_person([0.5, 0.5], 512, 512),
        };
        offset_entity(&mut e, 2.0, -2.0);
        let Entity::Keypoints { points } = &e else {
            unreachable!()
        };
        let b = points_bbox(points).unwrap();
        assert!((b[2] - 1.0).abs() < 1e-9 && b[1].abs() < 1e-9);
    }
}
