//! The whole GLIGEN pipeline against diffusers 0.42.1's `StableDiffusionGLIGENPipeline`
//! (`tests/fixtures/cases/`, written by `tests/fixtures/make_fixtures.py`): every case run in-process
//! from its recorded initial latents, final latents within relative L2 1e-4 (float32, CPU); the cases
//! are sensitive enough for that tolerance to mean something; the per-step callback, cancellation,
//! scheduled sampling with α₀ = 0, the refusals of layouts a model cannot take, and the command
//! line end to end. Print the measured errors with
//! `cargo test --release --test pipeline_parity -- --nocapture`.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{
    case_dir, case_dirs, case_model, check, fixtures, load_tensor, max_abs_diff, rel_l2, TempDir,
    PIPELINE_TOL,
};
use glichen::layout::{Entity, Layout};
use glichen::pipeline::{
    CancelToken, GenerateInputs, GenerateOptions, Generated, GligenModel, PipelineError,
    RecordedNoise,
};
use glichen::weights::ModelSource;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Each fixture model is loaded once per test binary.
fn model(path: &Path) -> &'static GligenModel {
    static A: OnceLock<GligenModel> = OnceLock::new();
    static B: OnceLock<GligenModel> = OnceLock::new();
    static INPAINT: OnceLock<GligenModel> = OnceLock::new();
    static TEXT_IMAGE: OnceLock<GligenModel> = OnceLock::new();
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let cell = match name.as_str() {
        "tiny-a" => &A,
        "tiny-b" => &B,
        "tiny-inpaint" => &INPAINT,
        "tiny-text-image" => &TEXT_IMAGE,
        other => panic!("unknown fixture model {other}"),
    };
    cell.get_or_init(|| {
        GligenModel::load(
            &ModelSource::Folder(path.to_path_buf()),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
    })
}

struct Case {
    name: String,
    dir: PathBuf,
    layout: Layout,
    init: Tensor,
    model: &'static GligenModel,
}

fn case(dir: &Path) -> Case {
    Case {
        name: dir.file_name().unwrap().to_string_lossy().to_string(),
        dir: dir.to_path_buf(),
        layout: Layout::load(dir.join("layout.json")).unwrap_or_else(|e| panic!("{e}")),
        init: load_tensor(&dir.join("init_latents.safetensors"), "latents"),
        model: model(&case_model(dir)),
    }
}

fn named(name: &str) -> Case {
    case(&case_dir(name))
}

fn options(c: &Case, layout: &Layout) -> GenerateOptions {
    let mut opts = GenerateOptions::from_layout(layout, c.model.default_scheduler);
    opts.decode = false;
    opts
}

/// Runs `layout` with the case's model, initial latents and (for inpainting) recorded noise, no
/// decode, ignoring the callback. Image paths resolve against the case folder.
fn run(c: &Case, layout: &Layout) -> Result<Generated, PipelineError> {
    let noise_path = c.dir.join("noise.safetensors");
    let inputs = GenerateInputs {
        init_latents: Some(c.init.clone()),
        noise: if noise_path.is_file() {
            Some(RecordedNoise::load(&noise_path)?)
        } else {
            None
        },
        base_dir: Some(c.dir.clone()),
        on_phase: None,
    };
    c.model.generate_with(
        layout,
        &options(c, layout),
        &inputs,
        &mut |_| {},
        &CancelToken::new(),
    )
}

fn expected(c: &Case) -> Tensor {
    load_tensor(&c.dir.join("expected_latents.safetensors"), "latents")
}

#[test]
fn every_case_matches_diffusers() {
    let dirs = case_dirs(&fixtures().join("cases"));
    assert!(dirs.len() >= 18, "{} cases", dirs.len());
    let mut failures = Vec::new();
    let mut worst = (0f64, String::new());
    let mut worst_image = (0f64, String::new());
    for dir in &dirs {
        let c = case(dir);
        let started = std::time::Instant::now();
        let out = run(&c, &c.layout).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let err = rel_l2(&out.latents, &expected(&c));
        // The decoded image (pre-clamp) against the reference's VAE decode of its own latents.
        let image = c.model.vae.decode(&out.latents).unwrap();
        let image_err = rel_l2(
            &image,
            &load_tensor(&dir.join("expected_image.safetensors"), "image"),
        );
        println!(
            "{:<26} latents rel L2 {err:.3e}, image rel L2 {image_err:.3e} ({:.2?})",
            c.name,
            started.elapsed()
        );
        if err > worst.0 {
            worst = (err, c.name.clone());
        }
        if image_err > worst_image.0 {
            worst_image = (image_err, c.name.clone());
        }
        if !(err <= PIPELINE_TOL && image_err <= PIPELINE_TOL) {
            failures.push(format!(
                "{}: latents {err:.3e}, image {image_err:.3e}",
                c.name
            ));
        }
    }
    println!(
        "worst latents: {:.3e} ({}); worst image: {:.3e} ({})",
        worst.0, worst.1, worst_image.0, worst_image.1
    );
    assert!(
        failures.is_empty(),
        "over the {PIPELINE_TOL:.0e} tolerance:\n{}",
        failures.join("\n")
    );
}

/// Cases that differ by one moved box or one changed phrase must differ by far more than the parity
/// tolerance, or passing the parity test would not show that boxes and phrases are honoured.
#[test]
fn sensitivity_pairs_differ_by_ten_tolerances() {
    let path = fixtures().join("sensitivity.json");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(s["tolerance"].as_f64(), Some(PIPELINE_TOL));
    let pairs = s["pairs"].as_array().unwrap();
    assert!(!pairs.is_empty());
    for pair in pairs {
        let (a, b) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        let la = load_tensor(&case_dir(a).join("expected_latents.safetensors"), "latents");
        let lb = load_tensor(&case_dir(b).join("expected_latents.safetensors"), "latents");
        let d = rel_l2(&lb, &la);
        println!("{a} vs {b}: rel L2 {d:.3e}");
        assert!(d >= 10.0 * PIPELINE_TOL, "{a} vs {b}: only {d:.3e} apart");
    }
}

fn callback_fires_per_step(name: &str) {
    let c = named(name);
    let opts = options(&c, &c.layout);
    let shape = c.init.dims().to_vec();
    let mut seen = Vec::new();
    let mut partial = Vec::new();
    let out = c
        .model
        .generate(
            &c.layout,
            &opts,
            Some(&c.init),
            &mut |u| {
                assert_eq!(u.pred_x0.dims(), shape.as_slice(), "pred_x0 shape");
                assert_eq!(u.latents.dims(), shape.as_slice(), "latents shape");
                if u.partial {
                    partial.push((u.step, seen.len()));
                } else {
                    seen.push((u.step, u.total, u.timestep));
                }
            },
            &CancelToken::new(),
        )
        .unwrap();
    let steps: Vec<usize> = seen.iter().map(|s| s.0).collect();
    println!(
        "{name}: callback steps {steps:?}, timesteps {:?}",
        seen.iter().map(|s| s.2).collect::<Vec<_>>()
    );
    assert_eq!(
        steps,
        (0..opts.steps).collect::<Vec<_>>(),
        "{name}: one callback per sampling step, in order"
    );
    assert!(seen.iter().all(|s| s.1 == opts.steps), "{name}: total");
    // A step of several UNet evaluations (PLMS's first, PRK's) previews after its first one,
    // before its own final update; single-evaluation steps send no partial updates.
    let sched_cfg = c.model.scheduler_config(opts.scheduler).unwrap();
    let evals =
        glichen::pipeline::scheduler::build_scheduler(&sched_cfg, opts.scheduler, opts.steps)
            .unwrap();
    let want_partial: Vec<(usize, usize)> = (0..opts.steps)
        .filter(|&k| {
            (0..evals.timesteps().len())
                .filter(|&i| evals.sampling_step(i) == k)
                .count()
                > 1
        })
        .map(|k| (k, k))
        .collect();
    assert_eq!(
        partial, want_partial,
        "{name}: partial updates (step, finals before it)"
    );
    // The reported timestep is that of the evaluation that produced `pred_x0` (with PNDM the first
    // step's second evaluation, which repeats in step 1), so it never increases and ends at the
    // scheduler's last timestep.
    assert!(
        seen.windows(2).all(|w| w[1].2 <= w[0].2),
        "{name}: timesteps never increase"
    );
    let cfg = c.model.scheduler_config(opts.scheduler).unwrap();
    let sched =
        glichen::pipeline::scheduler::build_scheduler(&cfg, opts.scheduler, opts.steps).unwrap();
    assert_eq!(
        seen.last().map(|s| s.2),
        sched.timesteps().last().copied(),
        "{name}: last timestep"
    );
    // The callback does not change the result.
    check(
        &format!("{name} (with callback)"),
        &out.latents,
        &expected(&c),
        PIPELINE_TOL,
    );
}

#[test]
fn callback_fires_once_per_step_ddim() {
    callback_fires_per_step("a_one_box");
}

#[test]
fn callback_fires_once_per_step_pndm() {
    // PNDM evaluates the first step twice; the callback still fires once per step.
    callback_fires_per_step("b_one_box");
}

#[test]
fn cancel_from_the_callback_stops_generation() {
    for name in ["a_three_boxes", "b_three_boxes"] {
        let c = named(name);
        let opts = options(&c, &c.layout);
        assert!(opts.steps >= 4);
        let cancel = CancelToken::new();
        let mut steps = Vec::new();
        let result = c.model.generate(
            &c.layout,
            &opts,
            Some(&c.init),
            &mut |u| {
                if u.partial {
                    return;
                }
                steps.push(u.step);
                if u.step == 1 {
                    cancel.cancel();
                }
            },
            &cancel,
        );
        assert!(
            matches!(result, Err(PipelineError::Cancelled)),
            "{name}: expected Cancelled, got {:?}",
            result.map(|_| ())
        );
        assert_eq!(steps, vec![0, 1], "{name}: no step after the cancel");
        assert!(cancel.is_cancelled());
    }
}

#[test]
fn cancelled_before_start_does_nothing() {
    let c = named("a_one_box");
    let cancel = CancelToken::new();
    cancel.cancel();
    let mut calls = 0;
    let result = c.model.generate(
        &c.layout,
        &options(&c, &c.layout),
        Some(&c.init),
        &mut |_| calls += 1,
        &cancel,
    );
    assert!(matches!(result, Err(PipelineError::Cancelled)));
    assert_eq!(calls, 0);
}

/// α₀ = 0 turns grounding off from the first step: the boxes and phrases then change nothing, and
/// the result is the run without any grounding entity.
#[test]
fn alpha_zero_equals_no_grounding() {
    for name in ["a_alpha_zero", "b_alpha_zero"] {
        let c = named(name);
        assert_eq!(c.layout.sampling.alpha0, Some(0.0));
        assert!(!c.layout.entities.is_empty());
        let grounded = run(&c, &c.layout).unwrap();
        check(
            &format!("{name} vs diffusers"),
            &grounded.latents,
            &expected(&c),
            PIPELINE_TOL,
        );

        let mut plain = c.layout.clone();
        plain.entities.clear();
        let ungrounded = run(&c, &plain).unwrap();
        let d = max_abs_diff(&grounded.latents, &ungrounded.latents);
        println!("{name}: max |grounded - ungrounded| = {d:e}");
        assert_eq!(d, 0.0, "{name}: with α₀ = 0 the boxes must change nothing");

        // With grounding on, the same boxes do change the result (the check above is not vacuous).
        let mut on = c.layout.clone();
        on.sampling.alpha0 = Some(1.0);
        let with = run(&c, &on).unwrap();
        let effect = rel_l2(&with.latents, &ungrounded.latents);
        println!("{name}: α₀ = 1 vs no grounding: rel L2 {effect:.3e}");
        assert!(
            effect > 10.0 * PIPELINE_TOL,
            "{name}: grounding has no effect ({effect:.3e})"
        );
    }
}

fn invalid_message(result: Result<Generated, PipelineError>) -> String {
    match result {
        Err(e @ PipelineError::Invalid(_)) => e.to_string(),
        Err(e) => panic!("expected PipelineError::Invalid, got {e:?}"),
        Ok(_) => panic!("expected the layout to be refused"),
    }
}

#[test]
fn thirty_one_boxes_are_refused() {
    for name in ["a_thirty_boxes", "b_thirty_boxes"] {
        let c = named(name);
        assert_eq!(c.layout.entities.len(), 30);
        let mut layout = c.layout.clone();
        layout.entities.push(Entity::TextBox {
            phrase: "one too many".into(),
            bbox: [0.1, 0.1, 0.2, 0.2],
        });
        let msg = invalid_message(run(&c, &layout));
        println!("{name} + 1: {msg}");
        assert!(msg.contains("30 grounding slots"), "{name}: {msg}");
        assert!(msg.contains("31"), "{name}: {msg}");
    }
}

#[test]
fn canvas_not_a_multiple_of_the_vae_factor_is_refused() {
    // tiny-a downscales by 2, tiny-b by 4.
    for (name, factor) in [("a_one_box", 2), ("b_one_box", 4)] {
        let c = named(name);
        assert_eq!(c.model.vae_scale_factor(), factor);
        let mut wide = c.layout.clone();
        wide.width += 1;
        let msg = invalid_message(run(&c, &wide));
        println!("{name} width {}: {msg}", wide.width);
        assert!(msg.contains("width"), "{msg}");
        assert!(
            msg.contains(&format!("not a multiple of {factor}")),
            "{msg}"
        );
        assert!(!msg.contains("height"), "{msg}");

        let mut tall = c.layout.clone();
        tall.height += factor as u32 / 2;
        let msg = invalid_message(run(&c, &tall));
        println!("{name} height {}: {msg}", tall.height);
        assert!(msg.contains("height"), "{msg}");
        assert!(!msg.contains("width"), "{msg}");
    }
}

#[test]
fn init_latents_of_the_wrong_shape_are_refused() {
    let c = named("a_one_box");
    let wrong = Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let result = c.model.generate(
        &c.layout,
        &options(&c, &c.layout),
        Some(&wrong),
        &mut |_| {},
        &CancelToken::new(),
    );
    let msg = invalid_message(result);
    println!("{msg}");
    assert!(msg.contains("[1, 4, 8, 8]"), "names the given shape: {msg}");
    assert!(
        msg.contains("[1, 4, 16, 16]"),
        "names the expected shape: {msg}"
    );
}

#[test]
fn decode_gives_an_image_of_the_canvas_size() {
    let c = named("b_nonsquare");
    let mut opts = options(&c, &c.layout);
    opts.decode = true;
    let out = c
        .model
        .generate(
            &c.layout,
            &opts,
            Some(&c.init),
            &mut |_| {},
            &CancelToken::new(),
        )
        .unwrap();
    let img = out.image.expect("decode on gives an image");
    assert_eq!(
        (img.width(), img.height()),
        (c.layout.width, c.layout.height)
    );
    check(
        "b_nonsquare (decode on)",
        &out.latents,
        &expected(&c),
        PIPELINE_TOL,
    );
}

// ---------------------------------------------------------------------------------------------------
// The command line

fn glichen(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_glichen"))
        .args(args)
        .output()
        .expect("running glichen")
}

#[test]
fn cli_generate_then_layout_from_png() {
    let c = named("a_one_box");
    let tmp = TempDir::new("cli");
    let out_png = tmp.join("out.png");
    let latents = tmp.join("latents.safetensors");
    let model = case_model(&c.dir);
    let layout_path = c.dir.join("layout.json");
    let init = c.dir.join("init_latents.safetensors");
    let output = glichen(&[
        "generate".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--layout".as_ref(),
        layout_path.as_os_str(),
        "--init-latents".as_ref(),
        init.as_os_str(),
        "--save-latents".as_ref(),
        latents.as_os_str(),
        "--out".as_ref(),
        out_png.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "glichen generate failed: {stderr}");
    assert!(out_png.is_file(), "no PNG written");
    let img = image::open(&out_png).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (c.layout.width, c.layout.height)
    );
    check(
        "CLI a_one_box latents",
        &load_tensor(&latents, "latents"),
        &expected(&c),
        PIPELINE_TOL,
    );

    let output = glichen(&["layout-from-png".as_ref(), out_png.as_os_str()]);
    assert!(
        output.status.success(),
        "layout-from-png failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = String::from_utf8(output.stdout).unwrap();
    let back = Layout::from_json_str(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    assert_eq!(
        back, c.layout,
        "the PNG carries the layout it was made from"
    );
}

#[test]
fn cli_rejects_a_bad_layout_with_a_message() {
    let tmp = TempDir::new("cli-bad");
    let bad = tmp.join("bad.json");
    let mut doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(case_dir("a_one_box").join("layout.json")).unwrap(),
    )
    .unwrap();
    doc["entities"][0]["box"] = serde_json::json!([0.6, 0.2, 0.1, 0.9]);
    let text = serde_json::to_string_pretty(&doc).unwrap();
    std::fs::write(&bad, text).unwrap();
    let model = case_model(&case_dir("a_one_box"));
    let out_png = tmp.join("out.png");
    let output = glichen(&[
        "generate".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--layout".as_ref(),
        bad.as_os_str(),
        "--out".as_ref(),
        out_png.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stderr}");
    assert!(!output.status.success(), "an invalid layout must fail");
    assert!(stderr.contains("bad.json"), "names the file: {stderr}");
    assert!(stderr.contains("entities[0]"), "names the entity: {stderr}");
    assert!(
        stderr.contains("x0 (0.6) must be less than x1 (0.1)"),
        "names the problem: {stderr}"
    );
    assert!(!out_png.exists());

    // Not JSON at all.
    std::fs::write(&bad, "{ not json").unwrap();
    let output = glichen(&[
        "generate".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--layout".as_ref(),
        bad.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stderr}");
    assert!(!output.status.success());
    assert!(
        stderr.contains("bad.json") && stderr.contains("JSON"),
        "{stderr}"
    );
}

/// bf16 asked for on a CPU with AMX: an f32 model whose UNet linear layers multiply bf16 operands
/// with f32 accumulation (PyTorch's CPU autocast). There is no bf16 reference to hold it to (the
/// kernel itself is checked against bf16-rounded operands to 1e-5 in `cpu_ops::amx`), so this
/// checks what bf16 rounding allows: one UNet evaluation of each fixture model within 1e-2 of f32
/// (8-bit mantissas: ~4e-3 per rounded operand), and whole generations, where the tiny random
/// models amplify differences over the steps, within 1e-1 of diffusers' f32 result, far from the
/// O(1) a wrong tile layout or a missing bias gives. Both differ from f32, so bf16 really ran.
#[test]
fn bf16_on_an_amx_cpu_is_f32_with_bf16_products() {
    if !glichen::model::linear::bf16_matmuls_supported() {
        let source = ModelSource::Folder(fixtures().join("models/tiny-a"));
        let m = GligenModel::load(&source, &Device::Cpu, DType::BF16).unwrap();
        assert_eq!(m.dtype, DType::BF16, "without AMX bf16 is candle's bf16");
        assert!(!m.unet.bf16_matmuls());
        eprintln!("no AMX-BF16 on this CPU: the bf16-product comparison is skipped");
        return;
    }
    let mut worst = 0f64;
    let mut checked = 0;
    for name in ["tiny-a", "tiny-b"] {
        let path = fixtures().join("models").join(name);
        let bf16 = GligenModel::load(
            &ModelSource::Folder(path.clone()),
            &Device::Cpu,
            DType::BF16,
        )
        .unwrap();
        assert_eq!(bf16.dtype, DType::F32);
        assert!(bf16.unet.bf16_matmuls());

        let f32_model = model(&path);
        let cfg = &f32_model.unet.config;
        let dev = Device::Cpu;
        let sample = Tensor::randn(0f32, 1.0, (2, cfg.in_channels, 16, 16), &dev).unwrap();
        let hidden = f32_model.text_encoder.config.hidden_size;
        let context = Tensor::randn(0f32, 1.0, (2, 77, hidden), &dev).unwrap();
        let want = f32_model
            .unet
            .forward(&sample, 500.0, &context, None)
            .unwrap();
        let got = bf16.unet.forward(&sample, 500.0, &context, None).unwrap();
        let one = rel_l2(&got, &want);
        println!("{name}: one UNet evaluation, bf16 products against f32: rel L2 {one:.3e}");
        assert!(one > 1e-6 && one <= 1e-2, "{name}: {one:.3e}");

        for dir in case_dirs(&fixtures().join("cases")) {
            if case_model(&dir).file_name().unwrap() != name {
                continue;
            }
            let c = case(&dir);
            if c.dir.join("noise.safetensors").is_file() {
                continue;
            }
            let inputs = GenerateInputs {
                init_latents: Some(c.init.clone()),
                noise: None,
                base_dir: Some(c.dir.clone()),
                on_phase: None,
            };
            let out = bf16
                .generate_with(
                    &c.layout,
                    &options(&c, &c.layout),
                    &inputs,
                    &mut |_| {},
                    &CancelToken::new(),
                )
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            let err = rel_l2(&out.latents, &expected(&c));
            println!("{:<34} whole generation: rel L2 {err:.3e}", c.name);
            assert!(err > 1e-6 && err <= 1e-1, "{}: {err:.3e}", c.name);
            worst = worst.max(err);
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} cases");
    println!("worst whole generation: {worst:.3e} over {checked} cases");
}
