//! The studio, driven through egui_kittest like a user would: drawing and editing boxes, undo/redo,
//! α₀, files, and generation through the background worker with the tiny fixture model; image
//! boxes, the style image, people (keypoints) and inpainting, gated by the loaded model's
//! capabilities and generated end to end with the tiny text-image, inpainting and keypoint models.
//!
//! Also here: the worker on its own (previews, final image, cancel within one step, a new Generate
//! cancelling the old one, panic recovery), the WGSL preview against the CPU projection, the
//! headless screenshot (`GLICHEN_UPDATE_SCREENSHOT=1` rewrites `assets/screenshot.png`) and an
//! ignored frame-time harness:
//! `cargo test --release --test studio frame_times -- --ignored --nocapture`.

use egui::{pos2, Modifiers, Pos2, Vec2};
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use glichen::layout::{Entity, Layout, KEYPOINTS_PER_PERSON};
use glichen::pipeline::scheduler::SchedulerKind;
use glichen::pipeline::GenerateOptions;
use glichen::ui::canvas::CanvasTransform;
use glichen::ui::{
    CanvasBackground, CanvasImage, Dialogs, ModelState, StudioApp, StudioOptions, Tool,
};
use glichen::worker::{Command, Event, JobId, LatentFrame, LoadRequest, Worker};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn tiny_model() -> String {
    format!("{ROOT}/tests/fixtures/models/tiny-a")
}

fn fixture_layout(case: &str) -> Layout {
    Layout::load(format!("{ROOT}/tests/fixtures/cases/{case}/layout.json")).expect("fixture layout")
}

fn temp_dir(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "glichen-studio-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

type Answers = Arc<Mutex<VecDeque<Option<PathBuf>>>>;

fn studio(data_dir: &Path, model: bool, wgpu: bool) -> (Harness<'static, StudioApp>, Answers) {
    studio_with(data_dir, model.then(tiny_model), wgpu)
}

/// The studio loading `model` (a folder or checkpoint) at start, if given.
fn studio_with(
    data_dir: &Path,
    model: Option<String>,
    wgpu: bool,
) -> (Harness<'static, StudioApp>, Answers) {
    studio_clocked(data_dir, model, wgpu, None)
}

/// [`studio_with`] whose frame clock advances `step_dt` seconds a step (the harness's default is
/// 0.25 s, too coarse for timing a debounce).
fn studio_clocked(
    data_dir: &Path,
    model: Option<String>,
    wgpu: bool,
    step_dt: Option<f32>,
) -> (Harness<'static, StudioApp>, Answers) {
    let (dialogs, answers) = Dialogs::scripted();
    let mut options = StudioOptions::for_tests(data_dir, dialogs);
    if let Some(model) = model {
        options.model = Some(LoadRequest::cpu(model));
    }
    let mut builder = Harness::builder()
        .with_size(Vec2::new(1400.0, 900.0))
        .with_max_steps(64);
    if wgpu {
        builder = builder.wgpu();
    }
    if let Some(dt) = step_dt {
        builder = builder.with_step_dt(dt);
    }
    let harness = builder.build_eframe(move |cc| StudioApp::new(cc, options));
    (harness, answers)
}

/// Steps the UI (never blocking on the worker) until `cond` holds.
fn wait_for(
    h: &mut Harness<'static, StudioApp>,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&StudioApp) -> bool,
) {
    let start = Instant::now();
    loop {
        h.step();
        if cond(h.state()) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}; notices: {:?}",
            h.state().notices()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_model(h: &mut Harness<'static, StudioApp>) {
    wait_for(h, "the model", Duration::from_secs(120), |a| {
        !matches!(a.model_state(), ModelState::Loading { .. })
    });
    assert!(
        matches!(h.state().model_state(), ModelState::Ready(_)),
        "model: {:?}",
        h.state().model_state()
    );
}

fn transform(h: &Harness<'static, StudioApp>) -> CanvasTransform {
    h.state().canvas_transform().expect("the canvas was shown")
}

/// Presses at `from`, moves in a few steps to `to` and releases, like a mouse drag.
fn drag(h: &mut Harness<'static, StudioApp>, from: Pos2, to: Pos2) {
    h.hover_at(from);
    h.run();
    h.drag_at(from);
    h.run();
    for k in 1..=6 {
        h.hover_at(from + (to - from) * (k as f32 / 6.0));
        h.run();
    }
    h.drop_at(to);
    h.run();
}

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

// ---------------------------------------------------------------------------------------------
// Editing
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

#[test]
fn save_and_reopen_a_layout() {
    let dir = temp_dir("files");
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.run();
    let layout = fixture_layout("a_three_boxes");
    h.state_mut().set_layout(layout.clone());
    h.run();

    let path = dir.join("saved.json");
    answers.lock().unwrap().push_back(Some(path.clone()));
    h.get_by_label("Save as…").click();
    wait_for(&mut h, "the save", Duration::from_secs(10), |a| {
        !a.is_busy_with_files()
    });
    assert_eq!(Layout::load(&path).unwrap(), layout);
    assert_eq!(h.state().document_path(), Some(path.as_path()));
    assert_eq!(h.state().settings().recent.first(), Some(&path));

    h.get_by_label("New").click();
    h.run();
    assert!(h.state().layout().entities.is_empty());

    answers.lock().unwrap().push_back(Some(path.clone()));
    h.get_by_label("Open…").click();
    wait_for(&mut h, "the open", Duration::from_secs(10), |a| {
        !a.is_busy_with_files()
    });
    assert_eq!(h.state().layout(), &layout);

    // A cancelled dialog changes nothing.
    answers.lock().unwrap().push_back(None);
    h.get_by_label("Open…").click();
    wait_for(
        &mut h,
        "the cancelled dialog",
        Duration::from_secs(10),
        |a| !a.is_busy_with_files(),
    );
    assert_eq!(h.state().layout(), &layout);
}

#[test]
fn a_bad_file_is_refused_with_a_visible_message() {
    let dir = temp_dir("bad");
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.run();
    let before = h.state().layout().clone();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "this is not a layout").unwrap();
    answers.lock().unwrap().push_back(Some(bad.clone()));
    h.get_by_label("Open…").click();
    wait_for(&mut h, "the open", Duration::from_secs(10), |a| {
        !a.is_busy_with_files()
    });
    h.run();
    h.get_by_label_contains("Could not open");
    h.get_by_label_contains("not valid JSON");
    assert_eq!(h.state().layout(), &before);

    // A newer version is refused too, with its reason.
    let newer = dir.join("newer.json");
    std::fs::write(
        &newer,
        r#"{"version": 99, "width": 512, "height": 512, "prompt": "", "entities": []}"#,
    )
    .unwrap();
    answers.lock().unwrap().push_back(Some(newer));
    h.get_by_label("Open…").click();
    wait_for(&mut h, "the open", Duration::from_secs(10), |a| {
        !a.is_busy_with_files()
    });
    h.run();
    h.get_by_label_contains("newer than this Glichen supports");
    assert_eq!(h.state().layout(), &before);
}

#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

#[test]
fn dropping_a_glichen_png_opens_its_layout_and_image() {
    let dir = temp_dir("drop");
    let (mut h, _) = studio(&dir.join("data"), false, false);
    h.run();
    let layout = fixture_layout("b_three_boxes");
    let image = image::RgbImage::from_pixel(32, 32, image::Rgb([200, 30, 30]));
    let bytes =
        glichen::layout::png::encode_png_with_layout(&image, &layout.to_json_pretty().unwrap())
            .unwrap();
    let png = dir.join("result.png");
    std::fs::write(&png, bytes).unwrap();
    h.input_mut().dropped_files.push(Arc::new(Dropped(png)));
    wait_for(&mut h, "the drop", Duration::from_secs(10), |a| {
        a.layout() == &layout
    });
    h.run();
    assert!(matches!(
        h.state().canvas_image(),
        Some(CanvasImage::Result { .. })
    ));
    // The picture can be exported again, with its layout.
    assert!(h.query_by_label("Export PNG…").is_some());
}

#[test]
fn autosave_restores_the_work_after_a_restart() {
    let dir = temp_dir("autosave");
    let data = dir.join("data");
    {
        let (mut h, _) = studio(&data, false, false);
        h.run();
        let tf = transform(&h);
        drag(
            &mut h,
            tf.screen_from_layout(pos2(0.1, 0.1)),
            tf.screen_from_layout(pos2(0.6, 0.7)),
        );
        h.get_by_label("Phrase").type_text("a lighthouse");
        h.run();
        h.state().flush_autosave();
        // Simulated crash: no on_exit, the harness is just dropped.
    }
    assert!(data.join("autosave.json").is_file());
    let (mut h, _) = studio(&data, false, false);
    h.run();
    assert_eq!(h.state().layout().entities.len(), 1);
    assert_eq!(
        h.state().layout().entities[0].phrase(),
        Some("a lighthouse")
    );
}

// ---------------------------------------------------------------------------------------------
// Generation through the worker, in the window
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// The worker on its own
// ---------------------------------------------------------------------------------------------

fn ready_worker() -> Worker {
    let worker = Worker::spawn(Box::new(|| {}));
    worker.load_model(LoadRequest::cpu(tiny_model()));
    loop {
        match worker
            .events()
            .recv_timeout(Duration::from_secs(120))
            .expect("worker event")
        {
            Event::ModelReady { .. } => return worker,
            Event::LoadFailed { message, .. } => panic!("load failed: {message}"),
            _ => {}
        }
    }
}

fn options_for(layout: &Layout) -> GenerateOptions {
    GenerateOptions::from_layout(layout, SchedulerKind::Pndm)
}

fn next_event(worker: &Worker) -> Event {
    worker
        .events()
        .recv_timeout(Duration::from_secs(120))
        .expect("worker event")
}

#[test]
fn worker_generates_with_previews_and_a_final_image() {
    let worker = ready_worker();
    let layout = fixture_layout("a_three_boxes");
    let job = worker.generate(layout.clone(), options_for(&layout));
    let mut steps = Vec::new();
    loop {
        match next_event(&worker) {
            Event::Step {
                job: j,
                step,
                total,
                latents,
                ..
            } => {
                assert_eq!(j, job);
                assert_eq!(total, 6);
                assert_eq!(
                    (latents.channels, latents.height, latents.width),
                    (4, 16, 16)
                );
                assert_eq!(latents.data.len(), 4 * 16 * 16);
                steps.push(step);
            }
            Event::Finished {
                job: j,
                image,
                latents,
                seed,
                ..
            } => {
                assert_eq!(j, job);
                assert_eq!((image.width(), image.height()), (32, 32));
                assert_eq!(latents.data.len(), 4 * 16 * 16);
                assert_eq!(seed, 12);
                break;
            }
            Event::Failed { message, .. } => panic!("failed: {message}"),
            _ => {}
        }
    }
    assert_eq!(steps, (0..6).collect::<Vec<_>>());
    worker.shutdown();
}

#[test]
fn worker_cancels_within_one_step() {
    let worker = ready_worker();
    // 48 px (24×24 latent cells) so that a step takes far longer than sending Cancel.
    let mut layout = fixture_layout("a_three_boxes");
    layout.width = 48;
    layout.height = 48;
    layout.sampling.steps = Some(500);
    let job = worker.generate(layout.clone(), options_for(&layout));
    let mut after_cancel = None;
    loop {
        match next_event(&worker) {
            Event::Step { step, .. } => match after_cancel.as_mut() {
                None => {
                    worker.cancel(job);
                    after_cancel = Some(0);
                    assert!(step < 10);
                }
                Some(n) => *n += 1,
            },
            Event::Cancelled { job: j } => {
                assert_eq!(j, job);
                break;
            }
            Event::Finished { .. } => panic!("the job finished instead of stopping"),
            Event::Failed { message, .. } => panic!("failed: {message}"),
            _ => {}
        }
    }
    assert!(
        after_cancel.unwrap() <= 1,
        "{} steps after Cancel",
        after_cancel.unwrap()
    );
    worker.shutdown();
}

#[test]
fn a_new_generate_cancels_the_running_job() {
    let worker = ready_worker();
    let mut long = fixture_layout("a_three_boxes");
    long.sampling.steps = Some(500);
    let first = worker.generate(long.clone(), options_for(&long));
    let short = fixture_layout("b_one_box");
    let mut second: Option<JobId> = None;
    let mut first_cancelled = false;
    loop {
        match next_event(&worker) {
            Event::Step { job, .. } if job == first && second.is_none() => {
                second = Some(worker.generate(short.clone(), options_for(&short)));
            }
            Event::Cancelled { job } => {
                assert_eq!(job, first);
                first_cancelled = true;
            }
            Event::Finished { job, .. } => {
                assert_eq!(Some(job), second);
                break;
            }
            Event::Failed { message, .. } => panic!("failed: {message}"),
            _ => {}
        }
    }
    assert!(first_cancelled);
    worker.shutdown();
}

#[test]
fn worker_survives_a_panic() {
    let worker = ready_worker();
    worker.send(Command::Panic("test panic".into()));
    loop {
        if let Event::WorkerRestarted { message } = next_event(&worker) {
            assert!(message.contains("test panic"));
            break;
        }
    }
    // The model is still there and jobs still run.
    let layout = fixture_layout("b_one_box");
    worker.generate(layout.clone(), options_for(&layout));
    loop {
        match next_event(&worker) {
            Event::Finished { .. } => break,
            Event::Failed { message, .. } => panic!("failed after restart: {message}"),
            _ => {}
        }
    }
    worker.shutdown();
}

#[test]
fn generating_without_a_model_fails_cleanly() {
    let worker = Worker::spawn(Box::new(|| {}));
    let layout = fixture_layout("b_one_box");
    let job = worker.generate(layout.clone(), options_for(&layout));
    loop {
        match next_event(&worker) {
            Event::Failed { job: j, message } => {
                assert_eq!(j, job);
                assert!(message.contains("no model"));
                break;
            }
            Event::Started { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GPU: the WGSL preview and the screenshot (software Vulkan is enough: .ci/setup-system.sh)
// ---------------------------------------------------------------------------------------------

#[test]
fn wgsl_preview_matches_the_cpu_projection() {
    let rs = egui_kittest::wgpu::create_render_state(
        egui_kittest::wgpu::default_wgpu_setup(),
        eframe::egui_wgpu::RendererOptions::PREDICTABLE,
    );
    let mut gpu = glichen::ui::preview::GpuPreview::new(&rs);
    let (h, w) = (24, 40);
    let data: Vec<f32> = (0..4 * h * w)
        .map(|i| (i as f32 * 0.37).sin() * 1.7)
        .collect();
    let frame = LatentFrame {
        channels: 4,
        height: h,
        width: w,
        data,
    };
    let (_, size) = gpu.render(&frame).expect("rendered");
    assert_eq!(size, [w, h]);
    let gpu_img = gpu.read_back().expect("read back");
    let cpu_img = frame.to_rgb().unwrap();
    assert_eq!((gpu_img.width(), gpu_img.height()), (w as u32, h as u32));
    let mut worst = 0i32;
    for (g, c) in gpu_img.pixels().zip(cpu_img.pixels()) {
        for k in 0..3 {
            worst = worst.max((g[k] as i32 - c[k] as i32).abs());
        }
        assert_eq!(g[3], 255);
    }
    assert!(worst <= 1, "GPU and CPU previews differ by {worst}");
}

#[test]
fn studio_previews_run_through_wgpu_and_screenshot() {
    let dir = temp_dir("shot");
    let (mut h, _) = studio(&dir.join("data"), true, true);
    assert!(
        h.state().preview_renderer().uses_gpu(),
        "the app did not get the wgpu render state"
    );
    wait_model(&mut h);
    // The tiny fixture model has random weights: its picture is noise, and it gets slow fast with
    // size (attention over every latent cell), hence the small canvas.
    let mut layout = fixture_layout("a_three_boxes");
    layout.width = 64;
    layout.height = 48;
    layout.sampling.steps = Some(6);
    h.state_mut().set_layout(layout);
    h.run();
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the result", Duration::from_secs(300), |a| {
        !a.history_items().is_empty()
    });
    assert!(h.state().previews_received() >= 1);
    assert!(
        h.state()
            .preview_renderer()
            .gpu()
            .is_some_and(|g| g.frames >= 1),
        "no preview went through the shader"
    );
    // Select a box so the screenshot shows the handles.
    let centre = transform(&h).screen_from_layout(pos2(0.2, 0.75));
    h.hover_at(centre);
    h.run();
    h.drag_at(centre);
    h.run();
    h.drop_at(centre);
    h.run();
    h.remove_cursor();
    h.run();
    let image = h.render().expect("rendering through wgpu");
    assert_eq!((image.width(), image.height()), (1400, 900));
    let out = PathBuf::from(ROOT)
        .join("target")
        .join("studio-screenshot.png");
    image.save(&out).unwrap();
    if std::env::var_os("GLICHEN_UPDATE_SCREENSHOT").is_some() {
        image
            .save(PathBuf::from(ROOT).join("assets").join("screenshot.png"))
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Frame times while generating on the CPU
// ---------------------------------------------------------------------------------------------

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// `cargo test --release --test studio frame_times -- --ignored --nocapture`
///
/// Runs the real app at ~60 Hz, moving a box around with the pointer, while the worker generates
/// a 64×64 layout on the CPU with the tiny fixture model (32×32 latent cells: every core busy for
/// seconds per step), and reports the UI frame times: the app's own logic + ui, and the whole egui
/// pass plus tessellation (the UI thread's share of a frame; the GPU draws the rest).
/// `GLICHEN_BENCH_STEPS` (default 12) sets the number of steps.
#[test]
#[ignore]
fn frame_times_during_generation() {
    let dir = temp_dir("frames");
    // GLICHEN_BENCH_RENDER=1 also renders every frame through wgpu (software Vulkan here, so it
    // measures lavapipe on a CPU busy with the model, not a GPU).
    let render = std::env::var_os("GLICHEN_BENCH_RENDER").is_some();
    let mut render_times = Vec::new();
    let (mut h, _) = studio(&dir.join("data"), true, render);
    wait_model(&mut h);
    let mut layout = fixture_layout("a_three_boxes");
    layout.width = 64;
    layout.height = 64;
    layout.sampling.steps = Some(
        std::env::var("GLICHEN_BENCH_STEPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(12),
    );
    h.state_mut().set_layout(layout);
    h.run();
    h.state_mut().frame_stats_mut().clear();
    h.get_by_label("Generate").click();
    h.step();
    let tf = transform(&h);
    let mut pass_times = Vec::new();
    let started = Instant::now();
    let mut frame = 0usize;
    // Grab the third box and circle it around while the model runs.
    let grab = tf.screen_from_layout(pos2(0.5, 0.25));
    h.hover_at(grab);
    h.step();
    h.drag_at(grab);
    h.step();
    while h.state().run_state().is_some() {
        let t = frame as f32 / 30.0;
        let p = grab + Vec2::new(t.cos() * 60.0, t.sin() * 40.0);
        h.hover_at(p);
        let t0 = Instant::now();
        h.step();
        // What eframe does next on the UI thread: tessellate the shapes (then the GPU renders).
        let shapes = h.output().shapes.clone();
        let primitives = h.ctx.tessellate(shapes, h.ctx.pixels_per_point());
        std::hint::black_box(primitives);
        let dt = t0.elapsed();
        pass_times.push(dt);
        if render {
            let r0 = Instant::now();
            h.render().expect("render");
            render_times.push(r0.elapsed());
        }
        frame += 1;
        if let Some(rest) = Duration::from_millis(16).checked_sub(dt) {
            std::thread::sleep(rest);
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "generation did not finish"
        );
    }
    h.drop_at(grab);
    h.step();
    let app_stats = h.state().frame_stats().clone();
    let mut app_times: Vec<Duration> = app_stats.samples.iter().copied().collect();
    app_times.sort();
    pass_times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let previews = h.state().previews_received();
    println!(
        "frame times over {} frames ({:.1}s of generation, {} previews, {} cores):",
        pass_times.len(),
        started.elapsed().as_secs_f64(),
        previews,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "  app logic + ui          : p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(quantile(&app_times, 0.5)),
        ms(quantile(&app_times, 0.99)),
        ms(*app_times.last().unwrap())
    );
    println!(
        "  egui pass + tessellation: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(quantile(&pass_times, 0.5)),
        ms(quantile(&pass_times, 0.99)),
        ms(*pass_times.last().unwrap())
    );
    if render {
        render_times.sort();
        println!(
            "  wgpu render (software)  : p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(quantile(&render_times, 0.5)),
            ms(quantile(&render_times, 0.99)),
            ms(*render_times.last().unwrap())
        );
    }
    assert!(previews >= 1);
    assert!(
        quantile(&pass_times, 0.99) < Duration::from_millis(16),
        "p99 frame time is over 16 ms"
    );
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

#[test]
fn imports_diffusers_arguments_through_open() {
    let dir = temp_dir("import");
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.run();
    let args = dir.join("call.json");
    std::fs::write(
        &args,
        r#"{"prompt": "a dog on a sofa", "gligen_phrases": ["a dog", "a sofa"], "gligen_boxes": [[0.1, 0.4, 0.5, 0.9], [0.0, 0.5, 1.0, 1.0]], "height": 512, "width": 768, "gligen_scheduled_sampling_beta": 0.4}"#,
    )
    .unwrap();
    answers.lock().unwrap().push_back(Some(args));
    h.get_by_label("Open…").click();
    wait_for(&mut h, "the import", Duration::from_secs(10), |a| {
        !a.is_busy_with_files()
    });
    let layout = h.state().layout();
    assert_eq!((layout.width, layout.height), (768, 512));
    assert_eq!(layout.entities.len(), 2);
    assert_eq!(layout.sampling.alpha0, Some(0.4));
    // An import has no file to save back to.
    assert_eq!(h.state().document_path(), None);
}

// ---------------------------------------------------------------------------------------------
// Image boxes, the style image, people and inpainting
// ---------------------------------------------------------------------------------------------

/// Presses and releases the primary button at `at` without moving: a click.
fn click(h: &mut Harness<'static, StudioApp>, at: Pos2) {
    h.hover_at(at);
    h.run();
    h.drag_at(at);
    h.run();
    h.drop_at(at);
    h.run();
}

fn right_click(h: &mut Harness<'static, StudioApp>, at: Pos2) {
    h.hover_at(at);
    h.run();
    for pressed in [true, false] {
        h.event(egui::Event::PointerButton {
            pos: at,
            button: egui::PointerButton::Secondary,
            pressed,
            modifiers: Modifiers::NONE,
        });
        h.run();
    }
}

fn points_of(app: &StudioApp, i: usize) -> Vec<Option<[f64; 2]>> {
    match &app.layout().entities[i] {
        Entity::Keypoints { points } => points.clone(),
        other => panic!("entity {i} is a {}, not a person", other.kind()),
    }
}

fn screen_of(tf: &CanvasTransform, p: [f64; 2]) -> Pos2 {
    tf.screen_from_layout(pos2(p[0] as f32, p[1] as f32))
}

/// A plain (non-Glichen) PNG of `w × h` pixels.
fn write_picture(dir: &Path, name: &str, w: u32, h: u32, rgb: [u8; 3]) -> PathBuf {
    let path = dir.join(name);
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            rgb[0],
            rgb[1].wrapping_add((x * 3) as u8),
            rgb[2].wrapping_add(y as u8),
        ])
    })
    .save(&path)
    .unwrap();
    path
}

fn wait_files(h: &mut Harness<'static, StudioApp>, what: &str) {
    wait_for(h, what, Duration::from_secs(20), |a| {
        !a.is_busy_with_files()
    });
    h.run();
}

fn wait_pictures(h: &mut Harness<'static, StudioApp>) {
    wait_for(h, "the pictures", Duration::from_secs(20), |a| {
        a.pictures_loading() == 0
    });
    h.run();
}

fn is_disabled(h: &Harness<'static, StudioApp>, label: &str) -> bool {
    h.get_by_label(label).accesskit_node().is_disabled()
}

#[test]
fn person_tool_places_poses_moves_and_hides_joints() {
    let dir = temp_dir("people");
    let (mut h, _) = studio(&dir.join("data"), false, false);
    h.run();
    h.get_by_label("Person (P)").click();
    h.run();
    assert_eq!(h.state().tool(), Tool::Person);

    // A click places a standing 17-joint person there.
    let tf = transform(&h);
    click(&mut h, tf.screen_from_layout(pos2(0.3, 0.5)));
    assert_eq!(h.state().layout().entities.len(), 1);
    assert_eq!(h.state().selection(), Some(0));
    let placed = points_of(h.state(), 0);
    assert_eq!(placed.len(), KEYPOINTS_PER_PERSON);
    assert!(placed.iter().all(Option::is_some));
    let mean_x: f64 = placed.iter().flatten().map(|p| p[0]).sum::<f64>() / 17.0;
    assert!((mean_x - 0.3).abs() < 0.01, "placed around x {mean_x}");
    // The nose is above the ankles.
    assert!(placed[0].unwrap()[1] < placed[15].unwrap()[1]);
    h.get_by_label_contains("person 1 (17 of 17 joints)");

    // Dragging a joint moves only that joint.
    let wrist = placed[9].unwrap();
    let tf = transform(&h);
    drag(
        &mut h,
        screen_of(&tf, wrist),
        screen_of(&tf, [wrist[0] + 0.1, wrist[1] + 0.05]),
    );
    let posed = points_of(h.state(), 0);
    let moved = posed[9].unwrap();
    assert!(
        (moved[0] - wrist[0] - 0.1).abs() < 0.01 && (moved[1] - wrist[1] - 0.05).abs() < 0.01,
        "wrist {wrist:?} -> {moved:?}"
    );
    for k in (0..17).filter(|&k| k != 9) {
        assert_eq!(posed[k], placed[k], "joint {k} moved too");
    }

    // Dragging the body (on the bone between the hips) moves every joint alike.
    let (lh, rh) = (posed[11].unwrap(), posed[12].unwrap());
    let mid = [(lh[0] + rh[0]) / 2.0, (lh[1] + rh[1]) / 2.0];
    drag(
        &mut h,
        screen_of(&tf, mid),
        screen_of(&tf, [mid[0] + 0.2, mid[1] - 0.1]),
    );
    let shifted = points_of(h.state(), 0);
    for k in 0..17 {
        let (a, b) = (posed[k].unwrap(), shifted[k].unwrap());
        assert!(
            (b[0] - a[0] - 0.2).abs() < 0.01 && (b[1] - a[1] + 0.1).abs() < 0.01,
            "joint {k}: {a:?} -> {b:?}"
        );
    }

    // Hiding a joint in the inspector writes null; showing it puts it back near its place.
    h.get_by_label("left wrist").click();
    h.run();
    assert_eq!(points_of(h.state(), 0)[9], None);
    let json = h.state().layout().to_json_pretty().unwrap();
    assert!(json.contains("null"), "{json}");
    h.get_by_label_contains("(16 of 17 joints)");
    h.get_by_label("left wrist").click();
    h.run();
    let back = points_of(h.state(), 0)[9].expect("shown again");
    let was = shifted[9].unwrap();
    assert!((back[0] - was[0]).abs() < 0.1 && (back[1] - was[1]).abs() < 0.1);

    // A right-click on a joint hides it too.
    let nose = points_of(h.state(), 0)[0].unwrap();
    right_click(&mut h, screen_of(&tf, nose));
    assert_eq!(points_of(h.state(), 0)[0], None);

    // Each edit is one undo step: nose, wrist shown, wrist hidden, body move, joint move, place.
    for _ in 0..3 {
        h.state_mut().undo();
    }
    assert_eq!(points_of(h.state(), 0), shifted);
    h.state_mut().undo();
    assert_eq!(points_of(h.state(), 0), posed);
    h.state_mut().undo();
    h.state_mut().undo();
    assert!(h.state().layout().entities.is_empty());
}

#[test]
fn a_ninth_person_is_refused_with_a_notice() {
    let dir = temp_dir("people-limit");
    let (mut h, _) = studio(&dir.join("data"), false, false);
    let mut layout = Layout::default();
    for k in 0..8 {
        let mut points = vec![None; KEYPOINTS_PER_PERSON];
        points[0] = Some([0.05 + 0.02 * k as f64, 0.05]);
        layout.entities.push(Entity::Keypoints { points });
    }
    h.state_mut().set_layout(layout);
    h.run();
    h.key_press(egui::Key::P);
    h.run();
    assert_eq!(h.state().tool(), Tool::Person);
    h.get_by_label("8 of 8 people");
    let tf = transform(&h);
    click(&mut h, tf.screen_from_layout(pos2(0.7, 0.7)));
    assert_eq!(h.state().layout().people_count(), 8);
    h.get_by_label_contains("No person added: the model takes at most 8 people");
}

#[test]
fn picking_and_dropping_pictures_makes_image_boxes() {
    let dir = temp_dir("image-box");
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.run();
    let wide = write_picture(&dir, "wide.png", 64, 32, [200, 20, 20]);

    // The button asks for a picture and adds a box with its aspect ratio in the middle.
    answers.lock().unwrap().push_back(Some(wide.clone()));
    h.get_by_label("Add image box…").click();
    wait_files(&mut h, "the picked picture");
    let layout = h.state().layout().clone();
    assert_eq!(layout.entities.len(), 1);
    let Entity::ImageBox {
        image,
        bbox,
        phrase,
    } = &layout.entities[0]
    else {
        panic!("not an image box: {:?}", layout.entities[0]);
    };
    assert_eq!(Path::new(image), wide.as_path());
    assert_eq!(phrase, &None);
    let (bw, bh) = ((bbox[2] - bbox[0]) * 512.0, (bbox[3] - bbox[1]) * 512.0);
    assert!((bw / bh - 2.0).abs() < 1e-6, "{bw} × {bh}");
    assert!(((bbox[0] + bbox[2]) / 2.0 - 0.5).abs() < 1e-9);
    wait_pictures(&mut h);
    assert!(h.state().layout().entities[0].image().is_some());

    // The optional phrase.
    h.get_by_label("Phrase (optional)").focus();
    h.run();
    h.get_by_label("Phrase (optional)").type_text("a red car");
    h.run();
    assert_eq!(h.state().layout().entities[0].phrase(), Some("a red car"));
    h.key_press(egui::Key::Escape);
    h.run();

    // Dropped on the canvas: a new box where it was dropped.
    let tall = write_picture(&dir, "tall.png", 20, 40, [20, 200, 20]);
    let tf = transform(&h);
    h.hover_at(tf.screen_from_layout(pos2(0.8, 0.25)));
    h.run();
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(tall.clone())));
    wait_for(
        &mut h,
        "the dropped picture",
        Duration::from_secs(20),
        |a| a.layout().entities.len() == 2,
    );
    let dropped = h.state().layout().entities[1].clone();
    assert_eq!(dropped.image(), Some(tall.to_str().unwrap()));
    let b = dropped.bbox().unwrap();
    assert!(((b[0] + b[2]) / 2.0 - 0.8).abs() < 0.01 && ((b[1] + b[3]) / 2.0 - 0.25).abs() < 0.01);
    assert_eq!(h.state().selection(), Some(1));

    // Dropped on an image box: it replaces that box's picture.
    let other = write_picture(&dir, "other.jpg", 30, 30, [20, 20, 200]);
    let inside = tf.screen_from_layout(pos2(0.5, 0.5));
    h.hover_at(inside);
    h.run();
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(other.clone())));
    wait_for(
        &mut h,
        "the replaced picture",
        Duration::from_secs(20),
        |a| a.layout().entities[0].image() == Some(other.to_str().unwrap()),
    );
    assert_eq!(h.state().layout().entities.len(), 2);
    assert_eq!(h.state().layout().entities[0].phrase(), Some("a red car"));
    wait_pictures(&mut h);

    // Undo takes the replacement back; the autosave has the boxes.
    h.state_mut().undo();
    assert_eq!(
        h.state().layout().entities[0].image(),
        Some(wide.to_str().unwrap())
    );
    h.run();
    h.state().flush_autosave();
    let saved = Layout::load(dir.join("data").join("autosave.json")).unwrap();
    assert_eq!(&saved, h.state().layout());

    // With no pointer position over the canvas (some platforms report none while dragging
    // files), the selected image box takes the picture.
    let tf = transform(&h);
    click(&mut h, tf.screen_from_layout(pos2(0.8, 0.25)));
    assert_eq!(h.state().selection(), Some(1));
    h.remove_cursor();
    h.run();
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(other.clone())));
    wait_for(
        &mut h,
        "the selected box's picture",
        Duration::from_secs(20),
        |a| a.layout().entities[1].image() == Some(other.to_str().unwrap()),
    );
    assert_eq!(h.state().layout().entities.len(), 2);

    // Something that is no picture is refused with a message.
    let junk = dir.join("junk.png");
    std::fs::write(&junk, b"not a picture at all").unwrap();
    h.input_mut().dropped_files.push(Arc::new(Dropped(junk)));
    wait_files(&mut h, "the junk");
    h.get_by_label_contains("Could not use the picture");
    assert_eq!(h.state().layout().entities.len(), 2);
}

#[test]
fn style_image_slot_sets_replaces_and_clears_the_one_style_image() {
    let dir = temp_dir("style");
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.run();
    let a = write_picture(&dir, "style-a.png", 16, 16, [10, 10, 10]);
    let b = write_picture(&dir, "style-b.png", 16, 16, [250, 250, 10]);
    let styles = |app: &StudioApp| -> Vec<String> {
        app.layout()
            .entities
            .iter()
            .filter_map(|e| match e {
                Entity::StyleImage { image } => Some(image.clone()),
                _ => None,
            })
            .collect()
    };
    assert!(is_disabled(&h, "Clear style image"));
    answers.lock().unwrap().push_back(Some(a.clone()));
    h.get_by_label("Choose style image…").click();
    wait_files(&mut h, "the style image");
    assert_eq!(styles(h.state()), vec![a.display().to_string()]);
    wait_pictures(&mut h);

    answers.lock().unwrap().push_back(Some(b.clone()));
    h.get_by_label("Replace style image…").click();
    wait_files(&mut h, "the new style image");
    assert_eq!(styles(h.state()), vec![b.display().to_string()]);

    // A cancelled dialog changes nothing.
    answers.lock().unwrap().push_back(None);
    h.get_by_label("Replace style image…").click();
    wait_files(&mut h, "the cancelled dialog");
    assert_eq!(styles(h.state()), vec![b.display().to_string()]);

    h.get_by_label("Clear style image").click();
    h.run();
    assert!(styles(h.state()).is_empty());
    h.state_mut().undo();
    assert_eq!(styles(h.state()), vec![b.display().to_string()]);
}

#[test]
fn a_picture_opened_for_inpainting_is_shown_under_the_boxes() {
    let dir = temp_dir("inpaint");
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.state_mut().set_layout(fixture_layout("a_one_box"));
    h.run();
    assert_eq!(h.state().canvas_background(), CanvasBackground::Blank);
    let photo = write_picture(&dir, "photo.png", 80, 40, [120, 90, 60]);
    answers.lock().unwrap().push_back(Some(photo.clone()));
    h.get_by_label("Open picture for inpainting…").click();
    wait_files(&mut h, "the picture");
    assert_eq!(
        h.state().layout().inpaint.as_ref().map(|i| i.image.clone()),
        Some(photo.display().to_string())
    );
    wait_for(
        &mut h,
        "the picture on the canvas",
        Duration::from_secs(20),
        |a| a.canvas_background() == CanvasBackground::Inpaint,
    );
    h.get_by_label_contains("the boxes mark what is regenerated");

    // Without boxes there is nothing to regenerate: said inline.
    let mut boxless = h.state().layout().clone();
    boxless.entities.clear();
    h.state_mut().set_layout(boxless);
    h.run();
    h.get_by_label_contains("the region to repaint comes from the boxes");
    h.state_mut().undo();
    h.run();

    h.get_by_label("Clear inpainting").click();
    h.run();
    assert!(h.state().layout().inpaint.is_none());
    h.run();
    assert_eq!(h.state().canvas_background(), CanvasBackground::Blank);
    h.state_mut().undo();
    assert!(h.state().layout().inpaint.is_some());
}

#[test]
fn a_text_only_model_turns_off_the_tools_it_cannot_use() {
    let dir = temp_dir("gating");
    let (mut h, _) = studio(&dir.join("data"), false, false);
    h.run();
    // Before a model is loaded every tool is on.
    for label in [
        "Draw box (B)",
        "Person (P)",
        "Add image box…",
        "Choose style image…",
        "Open picture for inpainting…",
    ] {
        assert!(!is_disabled(&h, label), "{label} is off without a model");
    }
    h.state_mut().load_model(LoadRequest::cpu(tiny_model()));
    wait_model(&mut h);
    h.run();
    assert!(!is_disabled(&h, "Draw box (B)"));
    for label in [
        "Person (P)",
        "Add image box…",
        "Choose style image…",
        "Open picture for inpainting…",
    ] {
        assert!(
            is_disabled(&h, label),
            "{label} is on with a text-box model"
        );
    }
    // The keyboard cannot pick the person tool either.
    h.key_press(egui::Key::P);
    h.run();
    assert_ne!(h.state().tool(), Tool::Person);
    h.get_by_label_contains("That tool is off: this model does not take people");

    // An image box from a file is kept, marked unusable with the reason, and blocks Generate.
    let pic = write_picture(&dir, "ref.png", 16, 16, [1, 2, 3]);
    let mut layout = fixture_layout("a_one_box");
    layout.entities.push(Entity::ImageBox {
        image: pic.display().to_string(),
        bbox: [0.5, 0.5, 0.9, 0.9],
        phrase: None,
    });
    h.state_mut().set_layout(layout.clone());
    h.run();
    h.get_by_label_contains("(!) not used by this model: this model does not take image boxes");
    assert_eq!(h.state().layout(), &layout);
    assert!(h
        .state()
        .generate_blocker()
        .is_some_and(|b| b.contains("problem")));
    assert!(is_disabled(&h, "Generate"));
}

#[test]
fn text_image_model_generates_with_an_image_box_and_a_style_image() {
    let dir = temp_dir("text-image");
    let model = format!("{ROOT}/tests/fixtures/models/tiny-text-image");
    let (mut h, answers) = studio_with(&dir.join("data"), Some(model), false);
    wait_model(&mut h);
    let case = PathBuf::from(ROOT).join("tests/fixtures/cases/ti_image_and_text");
    let mut layout = fixture_layout("ti_image_and_text");
    layout.entities.clear();
    layout.entities.push(Entity::TextBox {
        phrase: "a dog".into(),
        bbox: [0.2, 0.5, 0.6, 0.98],
    });
    h.state_mut().set_layout(layout);
    h.run();
    assert!(!is_disabled(&h, "Add image box…"));
    assert!(is_disabled(&h, "Person (P)"));

    answers
        .lock()
        .unwrap()
        .push_back(Some(case.join("case_a.png")));
    h.get_by_label("Add image box…").click();
    wait_files(&mut h, "the image box");
    answers
        .lock()
        .unwrap()
        .push_back(Some(case.join("case_c.png")));
    h.get_by_label("Choose style image…").click();
    wait_files(&mut h, "the style image");
    assert_eq!(h.state().generate_blocker(), None);

    h.get_by_label("Generate").click();
    wait_for(&mut h, "the result", Duration::from_secs(120), |a| {
        !a.history_items().is_empty()
    });
    let request = h.state().last_request().unwrap();
    let kinds: Vec<&str> = request
        .layout
        .entities
        .iter()
        .map(|e| e.kind().as_str())
        .collect();
    assert_eq!(kinds, ["text_box", "image_box", "style_image"]);
    assert_eq!(
        request.layout.entities[1].image(),
        Some(case.join("case_a.png").to_str().unwrap())
    );
    let item = &h.state().history_items()[0];
    assert_eq!((item.image.width(), item.image.height()), (32, 32));
    assert!(h
        .state()
        .notices()
        .iter()
        .all(|n| !n.text.contains("failed")));
}

#[test]
fn inpainting_model_generates_from_the_opened_picture() {
    let dir = temp_dir("inpaint-gen");
    let model = format!("{ROOT}/tests/fixtures/models/tiny-inpaint");
    let (mut h, answers) = studio_with(&dir.join("data"), Some(model), false);
    wait_model(&mut h);
    let mut layout = fixture_layout("inpaint_one_box");
    layout.inpaint = None;
    h.state_mut().set_layout(layout);
    h.run();
    assert!(h
        .state()
        .generate_blocker()
        .is_some_and(|b| b.contains("open a picture to inpaint")));
    assert!(is_disabled(&h, "Add image box…"));
    answers.lock().unwrap().push_back(Some(
        PathBuf::from(ROOT).join("tests/fixtures/cases/inpaint_one_box/inpaint.png"),
    ));
    h.get_by_label("Open picture for inpainting…").click();
    wait_files(&mut h, "the picture");
    wait_for(
        &mut h,
        "the picture on the canvas",
        Duration::from_secs(20),
        |a| a.canvas_background() == CanvasBackground::Inpaint,
    );
    assert_eq!(h.state().generate_blocker(), None);
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the result", Duration::from_secs(120), |a| {
        !a.history_items().is_empty()
    });
    assert!(h.state().last_request().unwrap().layout.inpaint.is_some());
    h.run();
    assert_eq!(h.state().canvas_background(), CanvasBackground::Result);
}

/// An original text-image inpainting checkpoint (its CLIP image tower in `image_encoder/` beside
/// it): image boxes and inpainting are on, people off; a picture opened for inpainting and a
/// reference picture in a box reach the generation.
#[test]
fn original_text_image_inpainting_checkpoint_in_the_studio() {
    let dir = temp_dir("original-ti-inpaint");
    let model = format!("{ROOT}/tests/fixtures/original/gligen-tiny-inpaint-text-image.pth");
    let (mut h, answers) = studio_with(&dir.join("data"), Some(model), false);
    wait_model(&mut h);
    let case = PathBuf::from(ROOT).join("tests/fixtures/original/ip_orig_image_box");
    let mut layout = fixture_layout("a_one_box");
    layout.prompt = "a clock and a lamp on a table".into();
    layout.entities.clear();
    layout.entities.push(Entity::TextBox {
        phrase: "a lamp".into(),
        bbox: [0.55, 0.1, 0.9, 0.7],
    });
    h.state_mut().set_layout(layout);
    h.run();
    assert!(!is_disabled(&h, "Add image box…"));
    assert!(is_disabled(&h, "Person (P)"));
    assert!(h
        .state()
        .generate_blocker()
        .is_some_and(|b| b.contains("open a picture to inpaint")));
    answers
        .lock()
        .unwrap()
        .push_back(Some(case.join("inpaint_a.png")));
    h.get_by_label("Open picture for inpainting…").click();
    wait_files(&mut h, "the picture");
    answers
        .lock()
        .unwrap()
        .push_back(Some(case.join("case_alt.png")));
    h.get_by_label("Add image box…").click();
    wait_files(&mut h, "the image box");
    assert_eq!(h.state().generate_blocker(), None);
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the result", Duration::from_secs(120), |a| {
        !a.history_items().is_empty()
    });
    let request = h.state().last_request().unwrap();
    assert!(request.layout.inpaint.is_some());
    let kinds: Vec<&str> = request
        .layout
        .entities
        .iter()
        .map(|e| e.kind().as_str())
        .collect();
    assert_eq!(kinds, ["text_box", "image_box"]);
    assert_eq!(h.state().history_items()[0].image.width(), 32);
    assert!(h
        .state()
        .notices()
        .iter()
        .all(|n| !n.text.contains("failed")));
}

/// The "Image tower" setting points an original text-image checkpoint that has no `image_encoder/`
/// beside it at a CLIP folder elsewhere; it is remembered in the settings.
#[test]
fn the_image_tower_setting_reaches_an_original_text_image_checkpoint() {
    let dir = temp_dir("image-tower");
    let lonely = dir.join("checkpoints");
    std::fs::create_dir_all(&lonely).unwrap();
    let original = PathBuf::from(ROOT).join("tests/fixtures/original");
    std::fs::copy(
        original.join("gligen-tiny-text-image.pth"),
        lonely.join("ck.pth"),
    )
    .unwrap();
    let tower = original.join("image_encoder");
    let (mut h, answers) = studio_with(&dir.join("data"), None, false);
    h.run();
    h.get_by_label("Image tower:").focus();
    h.run();
    h.get_by_label("Image tower:")
        .type_text(tower.to_str().unwrap());
    h.run();
    assert_eq!(h.state().settings().image_encoder, tower.to_str().unwrap());
    answers
        .lock()
        .unwrap()
        .push_back(Some(lonely.join("ck.pth")));
    h.get_by_label("Choose checkpoint file…").click();
    wait_for(&mut h, "the model", Duration::from_secs(120), |a| {
        matches!(
            a.model_state(),
            ModelState::Ready(_) | ModelState::Failed { .. }
        )
    });
    assert!(
        matches!(h.state().model_state(), ModelState::Ready(_)),
        "model: {:?}",
        h.state().model_state()
    );
    assert!(!is_disabled(&h, "Add image box…"));
}

#[test]
fn keypoint_checkpoint_poses_two_people_and_generates() {
    let dir = temp_dir("keypoints");
    let model = format!("{ROOT}/tests/fixtures/original/gligen-tiny-keypoint.pth");
    let (mut h, _) = studio_with(&dir.join("data"), Some(model), false);
    wait_model(&mut h);
    let mut layout = fixture_layout("a_one_box");
    layout.prompt = "two dancers on a stage".into();
    layout.entities.clear();
    h.state_mut().set_layout(layout);
    h.run();
    // A keypoint model takes people, not boxes.
    assert!(is_disabled(&h, "Draw box (B)"));
    assert!(!is_disabled(&h, "Person (P)"));
    h.get_by_label("Person (P)").click();
    h.run();
    let tf = transform(&h);
    click(&mut h, tf.screen_from_layout(pos2(0.3, 0.5)));
    click(&mut h, tf.screen_from_layout(pos2(0.72, 0.5)));
    assert_eq!(h.state().layout().people_count(), 2);
    // Raise the second person's right wrist.
    let wrist = points_of(h.state(), 1)[10].unwrap();
    drag(
        &mut h,
        screen_of(&tf, wrist),
        screen_of(&tf, [wrist[0], wrist[1] - 0.3]),
    );
    assert!(points_of(h.state(), 1)[10].unwrap()[1] < wrist[1] - 0.25);
    assert_eq!(h.state().generate_blocker(), None);
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the result", Duration::from_secs(120), |a| {
        !a.history_items().is_empty()
    });
    let request = h.state().last_request().unwrap();
    assert_eq!(request.layout.people_count(), 2);
    assert_eq!(h.state().history_items()[0].image.width(), 32);
}

// ---------------------------------------------------------------------------------------------
// Draft mode
// ---------------------------------------------------------------------------------------------

/// Steps `n` frames (each advances the frame clock by 1/60 s with `studio_clocked(.., Some(1.0 / 60.0))`).
fn frames(h: &mut Harness<'static, StudioApp>, n: usize) {
    for _ in 0..n {
        h.step();
    }
}

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

// ---------------------------------------------------------------------------------------------
// Pictures travel with the layout
// ---------------------------------------------------------------------------------------------

fn saved_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn saved_picture_paths_are_relative_to_the_layout_and_travel_with_its_folder() {
    let dir = temp_dir("relative");
    let project = dir.join("project");
    let shared = dir.join("shared");
    std::fs::create_dir_all(project.join("pictures")).unwrap();
    std::fs::create_dir_all(&shared).unwrap();
    let pic = write_picture(&project.join("pictures"), "red.png", 24, 16, [200, 20, 20]);
    let style = write_picture(&shared, "style.png", 16, 16, [20, 20, 200]);
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.run();
    answers.lock().unwrap().push_back(Some(pic.clone()));
    h.get_by_label("Add image box…").click();
    wait_files(&mut h, "the picture");
    answers.lock().unwrap().push_back(Some(style.clone()));
    h.get_by_label("Choose style image…").click();
    wait_files(&mut h, "the style image");
    assert_eq!(h.state().layout().entities.len(), 2);

    let path = project.join("layout.json");
    answers.lock().unwrap().push_back(Some(path.clone()));
    h.get_by_label("Save as…").click();
    wait_files(&mut h, "the save");
    let json = saved_json(&path);
    assert_eq!(json["entities"][0]["image"], "pictures/red.png");
    assert_eq!(json["entities"][1]["image"], "../shared/style.png");
    // The document in memory keeps working (absolute paths), and is not dirty.
    assert_eq!(h.state().layout().entities[0].image(), pic.to_str());
    h.get_by_label(&path.display().to_string()); // without the "• " of unsaved changes
    drop(h);

    // Both folders move elsewhere: the layout opens there with its pictures.
    let moved = temp_dir("relative-moved");
    std::fs::rename(&project, moved.join("project")).unwrap();
    std::fs::rename(&shared, moved.join("shared")).unwrap();
    let (mut h, answers) = studio(&dir.join("data2"), false, false);
    h.run();
    answers
        .lock()
        .unwrap()
        .push_back(Some(moved.join("project/layout.json")));
    h.get_by_label("Open…").click();
    wait_files(&mut h, "the open");
    let moved_pic = moved.join("project/pictures/red.png");
    let moved_style = moved.join("shared/style.png");
    let layout = h.state().layout().clone();
    assert_eq!(
        layout.entities[0].image().map(PathBuf::from),
        Some(moved_pic.clone())
    );
    assert_eq!(
        layout.entities[1].image().map(PathBuf::from),
        Some(moved_style.clone())
    );
    wait_pictures(&mut h);
    assert!(h.state().picture_ready(layout.entities[0].image().unwrap()));
    assert!(h.state().picture_ready(layout.entities[1].image().unwrap()));
    assert!(h.query_by_label_contains("cannot be shown").is_none());

    // Saved again into another folder: relative to that one.
    std::fs::create_dir_all(moved.join("copies")).unwrap();
    let copy = moved.join("copies/copy.json");
    answers.lock().unwrap().push_back(Some(copy.clone()));
    h.get_by_label("Save as…").click();
    wait_files(&mut h, "the second save");
    let json = saved_json(&copy);
    assert_eq!(json["entities"][0]["image"], "../project/pictures/red.png");
    assert_eq!(json["entities"][1]["image"], "../shared/style.png");
    assert_eq!(h.state().document_path(), Some(copy.as_path()));
    assert_eq!(h.state().layout(), &layout);
}

#[test]
fn saving_with_pictures_embedded_writes_one_file_that_opens_without_them() {
    let dir = temp_dir("embed");
    let pic = write_picture(&dir, "pic.png", 20, 12, [10, 200, 10]);
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.run();
    answers.lock().unwrap().push_back(Some(pic.clone()));
    h.get_by_label("Add image box…").click();
    wait_files(&mut h, "the picture");
    h.get_by_label("Embed pictures in the file").click();
    h.run();
    assert!(h.state().settings().embed_pictures);
    let path = dir.join("one.json");
    answers.lock().unwrap().push_back(Some(path.clone()));
    h.get_by_label("Save as…").click();
    wait_files(&mut h, "the save");
    let json = saved_json(&path);
    let uri = json["entities"][0]["image"].as_str().unwrap().to_string();
    assert!(uri.starts_with("data:image/png;base64,"), "{uri:.40}");
    let (_, bytes) = glichen::layout::decode_data_uri(&uri).unwrap();
    assert_eq!(
        bytes,
        std::fs::read(&pic).unwrap(),
        "embedded byte for byte"
    );
    assert_eq!(h.state().layout().entities[0].image(), pic.to_str());
    drop(h);

    // Without the picture file, the layout still opens with its picture.
    std::fs::remove_file(&pic).unwrap();
    let (mut h, answers) = studio(&dir.join("data2"), false, false);
    h.run();
    answers.lock().unwrap().push_back(Some(path.clone()));
    h.get_by_label("Open…").click();
    wait_files(&mut h, "the open");
    assert_eq!(h.state().layout().entities[0].image(), Some(uri.as_str()));
    wait_pictures(&mut h);
    assert!(h.state().picture_ready(&uri));
    assert!(
        h.state().settings().embed_pictures,
        "a file with embedded pictures is saved embedded again"
    );

    // A picture that cannot be read is named in a notice and kept as a path; the save happens.
    let mut layout = h.state().layout().clone();
    layout.entities.push(Entity::ImageBox {
        image: dir.join("missing.png").to_string_lossy().into_owned(),
        bbox: [0.5, 0.5, 0.9, 0.9],
        phrase: Some("a corgi".into()),
    });
    h.state_mut().set_layout(layout.clone());
    h.run();
    h.get_by_label("Save").click();
    wait_files(&mut h, "the save with a missing picture");
    h.get_by_label_contains("could not be embedded");
    h.get_by_label_contains("image box 2 (\u{201c}a corgi\u{201d})");
    let json = saved_json(&path);
    assert_eq!(json["entities"][0]["image"].as_str(), Some(uri.as_str()));
    assert_eq!(json["entities"][1]["image"], "missing.png");
    assert_eq!(json["entities"][1]["phrase"], "a corgi");
    assert_eq!(
        h.state().layout(),
        &layout,
        "nothing in the document changed"
    );
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
