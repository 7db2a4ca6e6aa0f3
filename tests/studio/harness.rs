//! What every studio test uses: the studio in a kittest harness with scripted dialogs and its own
//! data folder, waiting without blocking, and the pointer gestures (drag, click, right-click).

pub use egui::{pos2, Modifiers, Pos2, Vec2};
pub use egui_kittest::kittest::{NodeT, Queryable};
pub use egui_kittest::Harness;
pub use glichen::layout::{Entity, Layout, KEYPOINTS_PER_PERSON};
pub use glichen::pipeline::scheduler::SchedulerKind;
pub use glichen::ui::canvas::CanvasTransform;
pub use glichen::ui::{
    CanvasBackground, CanvasImage, Dialogs, ModelState, StudioApp, StudioOptions, Tool,
};
pub use glichen::worker::{Command, LatentFrame, LoadRequest};
pub use std::collections::VecDeque;
pub use std::path::{Path, PathBuf};
pub use std::sync::{Arc, Mutex};
pub use std::time::{Duration, Instant};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub fn tiny_model() -> String {
    format!("{ROOT}/tests/fixtures/models/tiny-a")
}

pub fn fixture_layout(case: &str) -> Layout {
    Layout::load(format!("{ROOT}/tests/fixtures/cases/{case}/layout.json")).expect("fixture layout")
}

pub fn temp_dir(name: &str) -> PathBuf {
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

pub type Answers = Arc<Mutex<VecDeque<Option<PathBuf>>>>;

pub fn studio(data_dir: &Path, model: bool, wgpu: bool) -> (Harness<'static, StudioApp>, Answers) {
    studio_with(data_dir, model.then(tiny_model), wgpu)
}

/// The studio loading `model` (a folder or checkpoint) at start, if given.
pub fn studio_with(
    data_dir: &Path,
    model: Option<String>,
    wgpu: bool,
) -> (Harness<'static, StudioApp>, Answers) {
    studio_clocked(data_dir, model, wgpu, None)
}

/// [`studio_with`] whose frame clock advances `step_dt` seconds a step (the harness's default is
/// 0.25 s, too coarse for timing a debounce).
pub fn studio_clocked(
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
pub fn wait_for(
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

pub fn wait_model(h: &mut Harness<'static, StudioApp>) {
    wait_for(h, "the model", Duration::from_secs(120), |a| {
        !matches!(a.model_state(), ModelState::Loading { .. })
    });
    assert!(
        matches!(h.state().model_state(), ModelState::Ready(_)),
        "model: {:?}",
        h.state().model_state()
    );
}

pub fn transform(h: &Harness<'static, StudioApp>) -> CanvasTransform {
    h.state().canvas_transform().expect("the canvas was shown")
}

/// Presses at `from`, moves in a few steps to `to` and releases, like a mouse drag.
pub fn drag(h: &mut Harness<'static, StudioApp>, from: Pos2, to: Pos2) {
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

#[derive(Debug)]
pub struct Dropped(pub PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

/// Presses and releases the primary button at `at` without moving: a click.
pub fn click(h: &mut Harness<'static, StudioApp>, at: Pos2) {
    h.hover_at(at);
    h.run();
    h.drag_at(at);
    h.run();
    h.drop_at(at);
    h.run();
}

pub fn right_click(h: &mut Harness<'static, StudioApp>, at: Pos2) {
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

pub fn points_of(app: &StudioApp, i: usize) -> Vec<Option<[f64; 2]>> {
    match &app.layout().entities[i] {
        Entity::Keypoints { points } => points.clone(),
        other => panic!("entity {i} is a {}, not a person", other.kind()),
    }
}

pub fn screen_of(tf: &CanvasTransform, p: [f64; 2]) -> Pos2 {
    tf.screen_from_layout(pos2(p[0] as f32, p[1] as f32))
}

/// A plain (non-Glichen) PNG of `w × h` pixels.
pub fn write_picture(dir: &Path, name: &str, w: u32, h: u32, rgb: [u8; 3]) -> PathBuf {
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

pub fn wait_files(h: &mut Harness<'static, StudioApp>, what: &str) {
    wait_for(h, what, Duration::from_secs(20), |a| {
        !a.is_busy_with_files()
    });
    h.run();
}

pub fn wait_pictures(h: &mut Harness<'static, StudioApp>) {
    wait_for(h, "the pictures", Duration::from_secs(20), |a| {
        a.pictures_loading() == 0
    });
    h.run();
}

pub fn is_disabled(h: &Harness<'static, StudioApp>, label: &str) -> bool {
    h.get_by_label(label).accesskit_node().is_disabled()
}

/// Steps `n` frames (each advances the frame clock by 1/60 s with `studio_clocked(.., Some(1.0 / 60.0))`).
pub fn frames(h: &mut Harness<'static, StudioApp>, n: usize) {
    for _ in 0..n {
        h.step();
    }
}
