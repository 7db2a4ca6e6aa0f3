//! Generation through the worker, in the window: previews, the result and the history strip; a
//! worker crash, and a panic inside a job.

use crate::harness::*;

#[test]
fn generate_in_the_studio_shows_previews_and_the_result() {
    let dir = temp_dir("generate");
    let (mut h, answers) = studio(&dir.join("data"), true, false);
    wait_model(&mut h);
    h.state_mut().set_layout(fixture_layout("a_three_boxes"));
    h.run();
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the result", Duration::from_secs(120), |a| {
        !a.history_items().is_empty()
    });
    let app = h.state();
    assert!(app.previews_received() >= 1, "no preview arrived");
    assert!(matches!(
        app.canvas_image(),
        Some(CanvasImage::Result { .. })
    ));
    let item = &app.history_items()[0];
    assert_eq!((item.image.width(), item.image.height()), (32, 32));
    assert_eq!(item.seed, 12);

    // Export the PNG: it carries the layout.
    let out = dir.join("out.png");
    answers.lock().unwrap().push_back(Some(out.clone()));
    h.run();
    h.get_by_label("Export PNG…").click();
    wait_for(&mut h, "the export", Duration::from_secs(10), |a| {
        !a.is_busy_with_files()
    });
    let json = glichen::layout::png::read_layout_chunk(&out).unwrap();
    assert_eq!(
        Layout::from_json_str(&json).unwrap(),
        fixture_layout("a_three_boxes")
    );

    // Cancel mid-run from the window: it stops within one step.
    // (A larger canvas makes each step take long enough to see where Cancel landed.)
    let mut long = fixture_layout("a_three_boxes");
    long.sampling.steps = Some(400);
    long.width = 48;
    long.height = 48;
    h.state_mut().set_layout(long);
    h.run();
    let before = h.state().previews_received();
    h.get_by_label("Generate").click();
    wait_for(&mut h, "a preview", Duration::from_secs(60), |a| {
        a.previews_received() > before
    });
    h.get_by_label("Cancel").click();
    h.step(); // the click is handled in this frame, after it drained the events so far
    assert!(h.state().run_state().is_some_and(|r| r.cancelling));
    let at_cancel = h.state().previews_received();
    wait_for(&mut h, "the cancel", Duration::from_secs(60), |a| {
        a.run_state().is_none()
    });
    let after = h.state().previews_received();
    assert!(
        after - at_cancel <= 1,
        "{} steps ran after Cancel",
        after - at_cancel
    );
    assert_eq!(
        h.state().history_items().len(),
        1,
        "a cancelled run adds no result"
    );

    // Restoring the history item brings its layout back.
    h.run();
    h.state_mut().restore_history_item(0);
    assert_eq!(h.state().layout(), &fixture_layout("a_three_boxes"));
}

#[test]
fn a_worker_crash_is_reported_and_the_layout_kept() {
    let dir = temp_dir("crash");
    let (mut h, _) = studio(&dir.join("data"), false, false);
    let layout = fixture_layout("a_three_boxes");
    h.state_mut().set_layout(layout.clone());
    h.run();
    h.state()
        .worker()
        .send(Command::Panic("simulated crash".into()));
    wait_for(&mut h, "the crash report", Duration::from_secs(10), |a| {
        a.notices().iter().any(|n| n.text.contains("crashed"))
    });
    h.run();
    h.get_by_label_contains("The model worker crashed (simulated crash) and was restarted");
    assert_eq!(h.state().layout(), &layout);
}

/// A panic inside a job (a UNet step): the job's failure names the stage, the worker restarts
/// with the model, the layout is untouched and the next Generate makes the picture.
#[test]
fn a_panic_in_a_unet_step_is_reported_and_the_layout_kept() {
    use glichen::worker::Stage;
    let dir = temp_dir("step-panic");
    let (mut h, _) = studio(&dir.join("data"), true, false);
    wait_model(&mut h);
    let layout = fixture_layout("a_three_boxes");
    h.state_mut().set_layout(layout.clone());
    h.run();
    h.state()
        .worker()
        .send(Command::InjectPanic(Stage::Step { step: 1, total: 6 }));
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the restart", Duration::from_secs(60), |a| {
        a.notices().iter().any(|n| n.text.contains("was restarted"))
    });
    h.run();
    h.get_by_label_contains(
        "failed: the worker crashed: injected panic while running the UNet for step 2 of 6",
    );
    h.get_by_label_contains(
        "The model worker crashed (injected panic while running the UNet for step 2 of 6) and \
         was restarted; your layout is safe.",
    );
    assert!(h.state().run_state().is_none());
    assert_eq!(h.state().layout(), &layout);
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the result", Duration::from_secs(120), |a| {
        !a.history_items().is_empty()
    });
    assert_eq!(h.state().layout(), &layout);
}

/// With a preview decoder loaded beside the model, every step's preview is its TAESD decode (not
/// the latent projection), and a draft finishes with TAESD while a full render uses the VAE.
#[test]
fn previews_come_from_taesd_when_it_is_loaded() {
    let dir = temp_dir("taesd-previews");
    let (dialogs, _answers) = Dialogs::scripted();
    let mut options = StudioOptions::for_tests(dir.join("data"), dialogs);
    let mut request = LoadRequest::cpu(tiny_model());
    request.preview_decoder = Some(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/taesd/tiny-taesd")
            .display()
            .to_string(),
    );
    options.model = Some(request);
    let mut h = Harness::builder()
        .with_size(Vec2::new(1400.0, 900.0))
        .with_max_steps(64)
        .build_eframe(move |cc| StudioApp::new(cc, options));
    wait_model(&mut h);
    let mut layout = fixture_layout("a_three_boxes");
    layout.sampling.steps = Some(4);
    h.state_mut().set_layout(layout);
    h.run();
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the result", Duration::from_secs(120), |a| {
        !a.history_items().is_empty()
    });
    let app = h.state();
    assert!(app.previews_received() >= 1, "no preview arrived");
    assert_eq!(
        app.preview_renderer().decoded_shown(),
        app.previews_received(),
        "every preview shown came decoded by TAESD"
    );
    // the full render is the VAE's (32×32 for the tiny model; TAESD would give 8× the latents)
    assert_eq!(app.history_items()[0].image.width(), 32);
}
