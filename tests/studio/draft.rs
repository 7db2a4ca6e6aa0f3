//! Draft mode: drafts once the layout settles, Render full with the real settings, and draft mode
//! remembered in the settings.

use crate::harness::*;

#[test]
fn draft_mode_renders_once_the_layout_settles_and_render_full_sends_the_real_settings() {
    use egui::accesskit::Role;
    let dir = temp_dir("draft");
    let data = dir.join("data");
    let (mut h, _) = studio_clocked(&data, Some(tiny_model()), false, Some(1.0 / 60.0));
    wait_model(&mut h);
    let mut layout = fixture_layout("a_three_boxes"); // 32 × 32, seed 12, DDIM
    layout.sampling.steps = Some(12);
    h.state_mut().set_layout(layout);
    h.run();
    assert!(h.query_by_label("Render full").is_none());

    // Draft on (persisted in the settings); Generate becomes "Render full".
    h.get_by_label("Draft").click();
    h.run();
    assert!(h.state().settings().draft.enabled);
    h.get_by_label("Render full");
    assert_eq!(
        h.state().settings().draft.steps,
        8,
        "the default draft steps"
    );

    // An edit (α₀), then quickly another (a box dragged): one debounced draft, not two.
    h.get_by_role_and_label(Role::Slider, "α₀")
        .set_value_accesskit(0.5);
    h.run();
    assert_eq!(h.state().layout().sampling.alpha0, Some(0.5));
    frames(&mut h, 12); // 0.2 s: less than the 0.6 s the layout must be still
    assert_eq!(h.state().drafts_started(), 0);
    assert!(h.state().draft_pending());
    h.state_mut().set_tool(Tool::Select);
    let tf = transform(&h);
    drag(
        &mut h,
        tf.screen_from_layout(pos2(0.5, 0.25)),
        tf.screen_from_layout(pos2(0.5, 0.35)),
    );
    let edited = h.state().layout().clone();
    assert_ne!(edited.entities[2].bbox(), Some([0.3, 0.0, 0.7, 0.5]));
    frames(&mut h, 24); // 0.4 s more (the drop took a few frames): still waiting
    assert_eq!(h.state().drafts_started(), 0);
    wait_for(&mut h, "the draft to start", Duration::from_secs(10), |a| {
        a.drafts_started() > 0
    });
    assert_eq!(h.state().drafts_started(), 1);
    let request = h.state().last_request().unwrap().clone();
    assert!(request.draft);
    assert_eq!(request.options.steps, 8);
    assert_eq!((request.layout.width, request.layout.height), (16, 16));
    // the half-size draft starts from the full canvas's noise, pooled: the same composition
    assert_eq!(request.options.noise_canvas, Some((32, 32)));
    assert_eq!(request.layout.sampling.steps, Some(8));
    assert_eq!(
        request.options.alpha0, 0.5,
        "α₀ is a fraction: it carries over"
    );
    assert_eq!(request.options.seed, 12);
    assert_eq!(request.options.scheduler, SchedulerKind::Ddim);
    assert_eq!(
        request.layout.entities, edited.entities,
        "the layout carries over"
    );

    wait_for(&mut h, "the draft", Duration::from_secs(60), |a| {
        matches!(a.canvas_image(), Some(CanvasImage::Draft { .. })) && a.run_state().is_none()
    });
    h.run();
    assert_eq!(h.state().canvas_background(), CanvasBackground::Draft);
    assert!(
        h.state().history_items().is_empty(),
        "drafts stay out of the history"
    );
    h.get_by_label("up to date");
    frames(&mut h, 60);
    assert_eq!(h.state().drafts_started(), 1, "no edit, no new draft");

    // Render full: the user's real settings, into the history.
    h.get_by_label("Render full").click();
    h.run();
    let full = h.state().last_request().unwrap().clone();
    assert!(!full.draft);
    assert_eq!(full.options.steps, 12);
    assert_eq!((full.layout.width, full.layout.height), (32, 32));
    assert_eq!(full.options.noise_canvas, None);
    assert_eq!(full.options.alpha0, 0.5);
    assert_eq!(full.options.seed, 12);
    assert_eq!(full.layout.entities, edited.entities);
    wait_for(&mut h, "the full render", Duration::from_secs(60), |a| {
        a.history_items().len() == 1 && a.run_state().is_none()
    });
    h.run();
    assert_eq!(h.state().canvas_background(), CanvasBackground::Result);
    assert_eq!(h.state().history_items()[0].image.width(), 32);
    frames(&mut h, 60);
    assert_eq!(
        h.state().drafts_started(),
        1,
        "the full render is not drafted over"
    );

    // With the seed "new each run", drafts keep one seed and Render full uses it.
    // (Only the seed switched to "new each run": the result shown is still a render of it.)
    h.state_mut().layout_mut().sampling.seed = None;
    frames(&mut h, 60);
    assert_eq!(h.state().drafts_started(), 1);
    h.state_mut().layout_mut().prompt.push_str(", at dusk");
    wait_for(&mut h, "a draft", Duration::from_secs(10), |a| {
        a.drafts_started() == 2
    });
    let draft_seed = h.state().last_request().unwrap().options.seed;
    h.state_mut().layout_mut().prompt.push_str(" in winter");
    wait_for(&mut h, "a draft", Duration::from_secs(10), |a| {
        a.drafts_started() == 3
    });
    assert_eq!(h.state().last_request().unwrap().options.seed, draft_seed);
    h.get_by_label("Render full").click();
    h.run();
    let full = h.state().last_request().unwrap().clone();
    assert!(!full.draft);
    assert_eq!(full.options.seed, draft_seed);
    assert_eq!(full.layout.sampling.seed, Some(draft_seed));

    // A long draft is cancelled by the next edit (its result would be stale).
    let mut long = h.state().layout().clone();
    long.sampling.steps = Some(1000);
    long.width = 64;
    long.height = 64;
    h.state_mut().set_layout(long);
    h.get_by_role_and_label(Role::SpinButton, "Draft steps")
        .set_value_accesskit(50.0);
    h.run();
    assert_eq!(h.state().settings().draft.steps, 50);
    h.get_by_label("Full size").click();
    h.run();
    let before = h.state().drafts_started();
    wait_for(&mut h, "the long draft", Duration::from_secs(20), |a| {
        a.drafts_started() > before && a.run_state().is_some_and(|r| r.draft && r.done > 0)
    });
    let request = h.state().last_request().unwrap().clone();
    assert_eq!(request.options.steps, 50);
    assert_eq!((request.layout.width, request.layout.height), (64, 64));
    h.state_mut().layout_mut().prompt.push('!');
    h.step();
    assert!(h.state().run_state().is_some_and(|r| r.cancelling));
    wait_for(&mut h, "the next draft", Duration::from_secs(20), |a| {
        a.drafts_started() == before + 2
    });
    h.state_mut().set_draft_mode(false);
    h.step();
    wait_for(&mut h, "the cancel", Duration::from_secs(60), |a| {
        a.run_state().is_none()
    });

    // The draft settings were saved with the other settings.
    h.state().flush_autosave();
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("settings.json")).unwrap())
            .unwrap();
    assert_eq!(settings["draft"]["steps"], 50);
    assert_eq!(settings["draft"]["scale"], "full");
}

#[test]
fn draft_mode_remembered_in_the_settings_drafts_once_the_model_is_ready() {
    let dir = temp_dir("draft-restart");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("settings.json"),
        r#"{"draft": {"enabled": true, "steps": 3, "scale": "half"}}"#,
    )
    .unwrap();
    fixture_layout("a_three_boxes")
        .save(data.join("autosave.json"))
        .unwrap();
    let (mut h, _) = studio_clocked(&data, Some(tiny_model()), false, Some(1.0 / 60.0));
    frames(&mut h, 3);
    assert!(h.state().settings().draft.enabled);
    assert_eq!(h.state().drafts_started(), 0, "no draft without a model");
    wait_model(&mut h);
    wait_for(&mut h, "the first draft", Duration::from_secs(20), |a| {
        a.drafts_started() == 1
    });
    let request = h.state().last_request().unwrap();
    assert!(request.draft);
    assert_eq!(request.options.steps, 3);
    assert_eq!((request.layout.width, request.layout.height), (16, 16));
    wait_for(&mut h, "the draft", Duration::from_secs(60), |a| {
        a.run_state().is_none()
    });
    frames(&mut h, 60);
    assert_eq!(h.state().drafts_started(), 1);
}
