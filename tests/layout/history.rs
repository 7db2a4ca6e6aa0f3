//! Undo history: undo/redo, coalesced drags, groups, no-op edits and the size limit.

use glichen::layout::{History, Layout};

use crate::{simple_layout, text_box};

fn with_prompt(prompt: &str) -> Layout {
    Layout {
        prompt: prompt.into(),
        ..Layout::default()
    }
}

#[test]
fn history_undo_redo() {
    let mut history = History::new();
    let mut doc = with_prompt("a");
    assert!(!history.can_undo() && !history.can_redo());
    assert!(!history.undo(&mut doc));

    for next in ["b", "c"] {
        history.push(&doc);
        doc = with_prompt(next);
    }
    assert!(history.can_undo());
    assert!(history.undo(&mut doc));
    assert_eq!(doc.prompt, "b");
    assert!(history.undo(&mut doc));
    assert_eq!(doc.prompt, "a");
    assert!(!history.undo(&mut doc));
    assert!(history.can_redo());
    assert!(history.redo(&mut doc));
    assert_eq!(doc.prompt, "b");

    // A new edit forgets the redo branch.
    history.push(&doc);
    doc = with_prompt("d");
    assert!(!history.can_redo());
    assert!(!history.redo(&mut doc));
    assert!(history.undo(&mut doc));
    assert_eq!(doc.prompt, "b");
    assert!(history.redo(&mut doc));
    assert_eq!(doc.prompt, "d");
}

#[test]
fn history_coalesces_drags() {
    let mut history = History::new();
    let mut doc = simple_layout();
    let start = doc.clone();
    // A drag: one push per mouse move, same key.
    for step in 1..=10 {
        history.push_coalesced(&doc, "move entities[0]");
        if let Some(b) = doc.entities[0].bbox_mut() {
            b[0] = 0.01 * step as f64;
        }
    }
    assert_eq!(history.undo_len(), 1);
    let dragged = doc.clone();
    assert!(history.undo(&mut doc));
    assert_eq!(doc, start);
    assert!(history.redo(&mut doc));
    assert_eq!(doc, dragged);

    // Another key, or a broken run, starts a new step.
    history.push_coalesced(&doc, "move entities[1]");
    doc.entities[1] = text_box("a pear", [0.5, 0.5, 0.9, 0.9]);
    history.break_coalescing();
    history.push_coalesced(&doc, "move entities[1]");
    doc.prompt = "pears".into();
    assert_eq!(history.undo_len(), 3);
}

#[test]
fn history_groups_and_noops() {
    let mut history = History::new();
    let mut doc = with_prompt("start");
    history.begin_group();
    for word in ["one", "two", "three"] {
        history.push(&doc);
        doc.prompt = word.into();
        history.begin_group(); // nested groups are part of the outer one
        history.push(&doc);
        doc.prompt.push('!');
        history.end_group();
    }
    history.end_group();
    history.end_group(); // extra end is harmless
    assert!(!history.in_group());
    assert_eq!(history.undo_len(), 1);
    assert!(history.undo(&mut doc));
    assert_eq!(doc.prompt, "start");

    // A pushed edit that changed nothing is skipped by undo.
    let mut history = History::new();
    let mut doc = with_prompt("x");
    history.push(&doc);
    doc.prompt = "y".into();
    history.push(&doc); // click without drag: nothing changes
    assert!(history.undo(&mut doc));
    assert_eq!(doc.prompt, "x");
}

#[test]
fn history_is_bounded() {
    let mut history = History::with_limit(3);
    let mut doc = with_prompt("0");
    for i in 1..=10 {
        history.push(&doc);
        doc = with_prompt(&i.to_string());
    }
    assert_eq!(history.undo_len(), 3);
    let mut undone = 0;
    while history.undo(&mut doc) {
        undone += 1;
    }
    assert_eq!(undone, 3);
    assert_eq!(doc.prompt, "7");
    history.clear();
    assert!(!history.can_undo() && !history.can_redo());
}
