//! Undo/redo for the layout editor.
//!
//! Whole-layout snapshots rather than a command log: layouts are small
//! (images embedded as data URIs are the exception, hence the bound), and
//! snapshots cannot get out of step with the document the way inverse
//! operations can when a new kind of edit forgets to implement its undo.

use std::collections::VecDeque;

use super::Layout;

/// How many undo steps are kept by default.
pub const DEFAULT_HISTORY_LIMIT: usize = 200;

/// Undo/redo stacks of layout snapshots.
///
/// Call [`History::push`] with the layout *before* each edit. Continuous
/// edits (dragging a box, typing a phrase) should be one undo step: either
/// wrap them in [`History::begin_group`]/[`History::end_group`] or push
/// with [`History::push_coalesced`] and a key naming what is being edited.
#[derive(Debug, Clone)]
pub struct History {
    undo: VecDeque<Layout>,
    redo: Vec<Layout>,
    limit: usize,
    /// Nesting depth of open groups, and whether the open group already
    /// recorded its snapshot.
    group_depth: usize,
    group_recorded: bool,
    /// Key of the last coalesced push; cleared by anything else.
    coalesce_key: Option<String>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    pub fn new() -> Self {
        History::with_limit(DEFAULT_HISTORY_LIMIT)
    }

    /// A history keeping at most `limit` undo steps (at least 1); the
    /// oldest are forgotten first.
    pub fn with_limit(limit: usize) -> Self {
        History {
            undo: VecDeque::new(),
            redo: Vec::new(),
            limit: limit.max(1),
            group_depth: 0,
            group_recorded: false,
            coalesce_key: None,
        }
    }

    fn record(&mut self, before: &Layout) {
        self.redo.clear();
        self.undo.push_back(before.clone());
        while self.undo.len() > self.limit {
            self.undo.pop_front();
        }
    }

    /// Records `before` (the layout as it is before an edit) as an undo
    /// step and forgets the redo stack, as every editor does: redoing into
    /// a branch the user has edited away from would be surprising.
    /// Inside a group only the first push is recorded.
    pub fn push(&mut self, before: &Layout) {
        self.coalesce_key = None;
        if self.group_depth > 0 {
            if !self.group_recorded {
                self.group_recorded = true;
                self.record(before);
            }
            return;
        }
        self.record(before);
    }

    /// Like [`History::push`], but consecutive pushes with the same `key`
    /// (e.g. `"move entities[3]"` for every mouse-move of a drag) make a
    /// single undo step. Any other push, undo or redo ends the run.
    pub fn push_coalesced(&mut self, before: &Layout, key: &str) {
        if self.group_depth == 0 && self.coalesce_key.as_deref() == Some(key) {
            return;
        }
        self.push(before);
        if self.group_depth == 0 {
            self.coalesce_key = Some(key.to_string());
        }
    }

    /// Ends a coalescing run, so that the next [`History::push_coalesced`]
    /// starts a new undo step even with the same key (call it on mouse-up).
    pub fn break_coalescing(&mut self) {
        self.coalesce_key = None;
    }

    /// Starts a group: all pushes until the matching
    /// [`History::end_group`] form one undo step. Groups nest.
    pub fn begin_group(&mut self) {
        if self.group_depth == 0 {
            self.group_recorded = false;
            self.coalesce_key = None;
        }
        self.group_depth += 1;
    }

    /// Ends the innermost group (extra calls are ignored, so an error path
    /// that ends a group twice does no harm).
    pub fn end_group(&mut self) {
        self.group_depth = self.group_depth.saturating_sub(1);
        if self.group_depth == 0 {
            self.group_recorded = false;
        }
    }

    pub fn in_group(&self) -> bool {
        self.group_depth > 0
    }

    /// Restores the previous state into `current`, keeping `current` for
    /// redo. Steps that would not change anything (an edit that was pushed
    /// but did nothing, like a click without a drag) are skipped, so undo
    /// always visibly does something. Returns whether it did.
    pub fn undo(&mut self, current: &mut Layout) -> bool {
        self.close_runs();
        while let Some(previous) = self.undo.pop_back() {
            if previous != *current {
                self.redo.push(std::mem::replace(current, previous));
                return true;
            }
        }
        false
    }

    /// Re-applies the last undone state. Returns whether it did.
    pub fn redo(&mut self, current: &mut Layout) -> bool {
        self.close_runs();
        while let Some(next) = self.redo.pop() {
            if next != *current {
                self.undo.push_back(std::mem::replace(current, next));
                while self.undo.len() > self.limit {
                    self.undo.pop_front();
                }
                return true;
            }
        }
        false
    }

    /// Undo/redo end any drag or group in progress: continuing to coalesce
    /// into a step that was just undone would lose the undone state.
    fn close_runs(&mut self) {
        self.coalesce_key = None;
        self.group_depth = 0;
        self.group_recorded = false;
    }

    /// Whether there is a step to undo. May be true for a step that turns
    /// out to change nothing, in which case [`History::undo`] skips it.
    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    pub fn undo_len(&self) -> usize {
        self.undo.len()
    }

    pub fn redo_len(&self) -> usize {
        self.redo.len()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Forgets everything (e.g. after opening another file).
    pub fn clear(&mut self) {
        self.undo.clear();
        self.redo.clear();
        self.close_runs();
    }
}
