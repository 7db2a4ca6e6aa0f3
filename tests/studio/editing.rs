//! Editing: drawing, typing, moving and resizing boxes, undo and redo, the keyboard, the box limit
//! and the α₀ slider.

use crate::harness::*;

fn assert_box(actual: [f64; 4], expected: [f64; 4], tol: f64) {
    for k in 0..4 {
        assert!(
            (actual[k] - expected[k]).abs() <= tol,
            "box {actual:?} differs from {expected:?} at {k} (tolerance {tol})"
        );
    }
}

fn first_box(app: &StudioApp) -> [f64; 4] {
    app.layout().entities[0].bbox().expect("a box")
}

#[test]
fn draw_type_move_resize_undo_redo() {
    let dir = temp_dir("edit");
    let (mut h, _) = studio(&dir, false, false);
    h.run();
    assert!(h.state().layout().entities.is_empty());
    h.get_by_label_contains("No model yet");

    // Draw a box by dragging.
    let tf = transform(&h);
    drag(
        &mut h,
        tf.screen_from_layout(pos2(0.1, 0.2)),
        tf.screen_from_layout(pos2(0.5, 0.6)),
    );
    assert_eq!(h.state().layout().entities.len(), 1);
    assert_box(first_box(h.state()), [0.1, 0.2, 0.5, 0.6], 0.01);
    assert_eq!(h.state().selection(), Some(0));
    let drawn = first_box(h.state());

    // Type its phrase (the phrase field has the focus after drawing).
    h.get_by_label("Phrase").type_text("a cat");
    h.run();
    assert_eq!(h.state().layout().entities[0].phrase(), Some("a cat"));
    h.get_by_label_contains("1. a cat"); // the inspector's list
    h.key_press(egui::Key::Escape); // leave the text field
    h.run();

    // Move it: drag from inside the selected box.
    let tf = transform(&h);
    let from = tf.screen_from_layout(pos2(0.3, 0.4));
    let to = tf.screen_from_layout(pos2(0.5, 0.5));
    drag(&mut h, from, to);
    let moved = first_box(h.state());
    assert_box(
        moved,
        [
            drawn[0] + 0.2,
            drawn[1] + 0.1,
            drawn[2] + 0.2,
            drawn[3] + 0.1,
        ],
        0.01,
    );

    // Resize it by the bottom-right handle.
    let tf = transform(&h);
    let corner = tf.screen_from_layout(pos2(moved[2] as f32, moved[3] as f32));
    drag(&mut h, corner, tf.screen_from_layout(pos2(0.9, 0.95)));
    let resized = first_box(h.state());
    assert_box(resized, [moved[0], moved[1], 0.9, 0.95], 0.01);

    // Undo (button): back to the moved box; undo (Ctrl+Z): back to the drawn one.
    h.get_by_label("Undo").click();
    h.run();
    assert_box(first_box(h.state()), moved, 1e-9);
    h.key_press_modifiers(Modifiers::COMMAND, egui::Key::Z);
    h.run();
    assert_box(first_box(h.state()), drawn, 1e-9);
    assert_eq!(h.state().layout().entities[0].phrase(), Some("a cat"));
    // Redo (Ctrl+Shift+Z) twice: moved, then resized.
    h.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, egui::Key::Z);
    h.run();
    assert_box(first_box(h.state()), moved, 1e-9);
    h.get_by_label("Redo").click();
    h.run();
    assert_box(first_box(h.state()), resized, 1e-9);

    // Undo all the way: the phrase typing is one step, the drawing another.
    for _ in 0..4 {
        h.state_mut().undo();
    }
    assert!(h.state().layout().entities.is_empty());
}

#[test]
fn keyboard_delete_duplicate_nudge() {
    let dir = temp_dir("keys");
    let (mut h, _) = studio(&dir, false, false);
    h.run();
    let tf = transform(&h);
    drag(
        &mut h,
        tf.screen_from_layout(pos2(0.2, 0.2)),
        tf.screen_from_layout(pos2(0.4, 0.4)),
    );
    h.key_press(egui::Key::Escape);
    h.run();
    // Escape only left the phrase field: the new box is still selected.
    assert_eq!(h.state().selection(), Some(0));
    h.get_by_label_contains("(no phrase)");
    let before = first_box(h.state());

    h.key_press(egui::Key::ArrowRight);
    h.run();
    let dx = 1.0 / h.state().layout().width as f64;
    assert_box(
        first_box(h.state()),
        [before[0] + dx, before[1], before[2] + dx, before[3]],
        1e-9,
    );
    h.key_press_modifiers(Modifiers::SHIFT, egui::Key::ArrowDown);
    h.run();
    let dy = 10.0 / h.state().layout().height as f64;
    assert_box(
        first_box(h.state()),
        [
            before[0] + dx,
            before[1] + dy,
            before[2] + dx,
            before[3] + dy,
        ],
        1e-9,
    );

    h.key_press_modifiers(Modifiers::COMMAND, egui::Key::D);
    h.run();
    assert_eq!(h.state().layout().entities.len(), 2);
    assert_eq!(h.state().selection(), Some(1));
    h.key_press(egui::Key::Delete);
    h.run();
    assert_eq!(h.state().layout().entities.len(), 1);
    h.state_mut().undo();
    assert_eq!(h.state().layout().entities.len(), 2);
}

#[test]
fn thirty_box_limit_is_shown_inline() {
    let dir = temp_dir("limit");
    let (mut h, _) = studio(&dir, false, false);
    let mut layout = Layout::default();
    for i in 0..31 {
        let x = (i % 6) as f64 * 0.15;
        let y = (i / 6) as f64 * 0.15;
        layout.entities.push(Entity::TextBox {
            phrase: format!("thing {i}"),
            bbox: [x, y, x + 0.1, y + 0.1],
        });
    }
    h.state_mut().set_layout(layout);
    h.run();
    h.get_by_label("31 of 30 boxes");
    h.get_by_label_contains("remove 1");
    assert!(h.state().generate_blocker().is_some());
}

#[test]
fn alpha0_slider_label_and_generation_request() {
    let dir = temp_dir("alpha");
    let (mut h, _) = studio(&dir, true, false);
    wait_model(&mut h);
    let mut layout = fixture_layout("a_three_boxes");
    layout.sampling.steps = Some(50);
    layout.sampling.alpha0 = None;
    h.state_mut().set_layout(layout);
    h.run();
    h.get_by_label("grounding for the first 15 of 50 steps");

    h.get_by_role_and_label(egui::accesskit::Role::Slider, "α₀")
        .set_value_accesskit(0.6);
    h.run();
    assert_eq!(h.state().layout().sampling.alpha0, Some(0.6));
    h.get_by_label("grounding for the first 30 of 50 steps");

    h.get_by_label("Generate").click();
    h.run();
    let request = h
        .state()
        .last_request()
        .expect("Generate sent a request")
        .clone();
    assert_eq!(request.options.alpha0, 0.6);
    assert_eq!(request.layout.sampling.alpha0, Some(0.6));
    assert_eq!(request.options.steps, 50);
    assert_eq!(request.options.seed, 12, "the fixture's fixed seed");
    // Undo brings the old α₀ back.
    h.state_mut().undo();
    assert_eq!(h.state().layout().sampling.alpha0, None);
    h.state_mut().cancel_generation();
    wait_for(&mut h, "the cancel", Duration::from_secs(60), |a| {
        a.run_state().is_none()
    });
}
