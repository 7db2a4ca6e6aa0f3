//! GPU: the WGSL preview and the screenshot (software Vulkan is enough: .ci/setup-system.sh), and
//! the frame times while generating on the CPU (ignored; run by hand).

use crate::harness::*;

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

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// `cargo test --release --features testing --test studio frame_times -- --ignored --nocapture`
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
            .map(std::num::NonZero::get)
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
