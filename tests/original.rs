//! Original-format GLIGEN checkpoints (github gligen/GLIGEN, commit f9dccb9) against the original
//! code's own sampling (`tests/fixtures/original/`, see its README): the tiny text-box, keypoint,
//! text-image and inpainting checkpoints loaded from their `.pth` files (text-image with the CLIP
//! folder `image_encoder/` beside them), sampled with the original PLMS sampler's timesteps and
//! three-stage gate schedule (inpainting with the recorded noise draws), final latents and the
//! decoded image within relative L2 1e-4 (float32, CPU). Print the measured errors with
//! `cargo test --release --test original -- --nocapture`.

mod common;

use candle_core::{DType, Device};
use common::{case_dirs, case_model, check, fixtures, load_tensor, PIPELINE_TOL};
use glichen::layout::Layout;
use glichen::pipeline::{
    CancelToken, GenerateInputs, GenerateOptions, GligenModel, ModelOrigin, RecordedNoise,
};
use glichen::weights::{resolve_model, ModelSource};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn original_dir() -> PathBuf {
    fixtures().join("original")
}

fn run_case(dir: &Path, models: &mut HashMap<PathBuf, GligenModel>) -> (f64, f64) {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let checkpoint = case_model(dir);
    let model = models.entry(checkpoint.clone()).or_insert_with(|| {
        GligenModel::load(
            &ModelSource::OriginalCheckpoint(checkpoint.clone()),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap_or_else(|e| panic!("loading {}: {e}", checkpoint.display()))
    });
    let layout = Layout::load(dir.join("layout.json")).unwrap_or_else(|e| panic!("{e}"));
    let init = load_tensor(&dir.join("init_latents.safetensors"), "latents");
    let mut opts = GenerateOptions::from_layout(&layout, model.default_scheduler);
    opts.decode = false;
    let noise = dir.join("noise.safetensors");
    let inputs = GenerateInputs {
        init_latents: Some(init),
        noise: noise
            .is_file()
            .then(|| RecordedNoise::load(&noise).unwrap_or_else(|e| panic!("{name}: {e}"))),
        base_dir: Some(dir.to_path_buf()),
        on_phase: None,
    };
    let mut steps = Vec::new();
    let started = std::time::Instant::now();
    let out = model
        .generate_with(
            &layout,
            &opts,
            &inputs,
            &mut |u| {
                if !u.partial {
                    steps.push((u.step, u.gate_scale, u.total));
                }
            },
            &CancelToken::new(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    println!(
        "{name}: {} steps, gate scales {:?} ({:.2?})",
        steps.len(),
        steps.iter().map(|s| s.1).collect::<Vec<_>>(),
        started.elapsed()
    );
    assert_eq!(
        steps.iter().map(|s| s.0).collect::<Vec<_>>(),
        (0..steps[0].2).collect::<Vec<_>>(),
        "{name}: steps"
    );
    // The original sampler's `range(0, 1000, 1000 // steps)` may run a step more than asked (6 → 7).
    assert!(
        steps[0].2 >= opts.steps && steps.iter().all(|s| s.2 == steps[0].2),
        "{name}: total"
    );
    let latents_err = check(
        &format!("{name} final latents"),
        &out.latents,
        &load_tensor(&dir.join("expected_latents.safetensors"), "latents"),
        PIPELINE_TOL,
    );
    let image = model.vae.decode(&out.latents).unwrap();
    let image_err = check(
        &format!("{name} decoded image"),
        &image,
        &load_tensor(&dir.join("expected_image.safetensors"), "image"),
        PIPELINE_TOL,
    );
    (latents_err, image_err)
}

/// Each checkpoint is loaded once and shared by its cases.
#[test]
fn original_cases_match_the_original_code() {
    let dirs = case_dirs(&original_dir());
    assert_eq!(dirs.len(), 21, "original cases: {dirs:?}");
    let mut models = HashMap::new();
    let mut worst = (0f64, 0f64);
    for dir in &dirs {
        let (l, i) = run_case(dir, &mut models);
        worst = (worst.0.max(l), worst.1.max(i));
    }
    println!("worst: latents {:.3e}, image {:.3e}", worst.0, worst.1);
    assert_eq!(
        models.len(),
        10,
        "the text-box, keypoint, text-image, inpainting, text-image inpainting and five \
         spatial-map checkpoints"
    );
}

/// What the text-image and inpainting checkpoints are recognised as, and how the image tower is
/// found: beside the checkpoint, given explicitly, or refused with a message naming the folder.
#[test]
fn text_image_and_inpainting_checkpoints() {
    let ti = original_dir().join("gligen-tiny-text-image.pth");
    let ip = original_dir().join("gligen-tiny-inpaint-text.pth");
    let m = GligenModel::load(
        &ModelSource::OriginalCheckpoint(ti.clone()),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let l = m.limits();
    assert!(l.supports_image_boxes && l.supports_text_boxes && !l.supports_inpainting);
    assert_eq!(m.origin, ModelOrigin::Original);
    let g = m.image_grounding.as_ref().unwrap();
    // the original code opens pictures with PIL's convert("RGB")
    assert!(g.drop_alpha);
    assert_eq!(g.project.in_dim().unwrap(), 48);

    let explicit = glichen::pipeline::LoadOptions {
        image_encoder: Some(original_dir().join("image_encoder").display().to_string()),
        ..Default::default()
    };
    let lonely = tempdir("lonely-text-image");
    std::fs::copy(&ti, lonely.join("ck.pth")).unwrap();
    assert!(GligenModel::load_with(
        &ModelSource::OriginalCheckpoint(lonely.join("ck.pth")),
        &Device::Cpu,
        DType::F32,
        &explicit,
    )
    .is_ok());
    // a folder that is not a CLIP model is named
    let not_clip = glichen::pipeline::LoadOptions {
        image_encoder: Some(lonely.display().to_string()),
        ..Default::default()
    };
    let err = GligenModel::load_with(
        &ModelSource::OriginalCheckpoint(lonely.join("ck.pth")),
        &Device::Cpu,
        DType::F32,
        &not_clip,
    )
    .err()
    .expect("a folder without config.json is not a CLIP model")
    .to_string();
    assert!(err.contains("not a CLIP folder"), "{err}");
    // without its projection matrix the tiny tower meets the built-in ViT-L/14 one (768 wide)
    let tower = lonely.join("tower");
    std::fs::create_dir_all(&tower).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        std::fs::copy(original_dir().join("image_encoder").join(f), tower.join(f)).unwrap();
    }
    let err = GligenModel::load_with(
        &ModelSource::OriginalCheckpoint(lonely.join("ck.pth")),
        &Device::Cpu,
        DType::F32,
        &glichen::pipeline::LoadOptions {
            image_encoder: Some(tower.display().to_string()),
            ..Default::default()
        },
    )
    .err()
    .expect("a 48-wide tower with the 768-wide matrix")
    .to_string();
    assert!(
        err.contains("projection matrix takes 768")
            && err.contains("projection_matrix.safetensors"),
        "{err}"
    );

    let p = GligenModel::load(
        &ModelSource::OriginalCheckpoint(ip),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let pl = p.limits();
    assert!(pl.supports_inpainting && pl.supports_text_boxes && !pl.supports_image_boxes);
    // an inpainting model needs the picture
    let layout = Layout::load(original_dir().join("tb_dev_two_boxes/layout.json")).unwrap();
    let opts = GenerateOptions::from_layout(&layout, p.default_scheduler);
    let err = p
        .generate(&layout, &opts, None, &mut |_| {}, &CancelToken::new())
        .err()
        .expect("no inpaint picture")
        .to_string();
    assert!(err.contains("inpaint"), "{err}");
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("glichen-original-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn checkpoint_kinds_are_recognised() {
    let text = original_dir().join("gligen-tiny-text.pth");
    let keypoint = original_dir().join("gligen-tiny-keypoint.pth");
    // A checkpoint file given as --model is an original checkpoint.
    assert_eq!(
        resolve_model(text.to_str().unwrap(), false).unwrap(),
        ModelSource::OriginalCheckpoint(text.clone())
    );
    let t = GligenModel::load(
        &ModelSource::OriginalCheckpoint(text),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let k = GligenModel::load(
        &ModelSource::OriginalCheckpoint(keypoint),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let (tl, kl) = (t.limits(), k.limits());
    assert!(tl.supports_text_boxes && !tl.supports_keypoints);
    assert!(kl.supports_keypoints && !kl.supports_text_boxes);
    assert_eq!(kl.max_people, 8);
    assert_eq!(t.vae_scale_factor(), 2);
    // A keypoint layout is refused by the text-box model, naming the problem.
    let kp_layout = Layout::load(original_dir().join("kp_dev_one_person/layout.json")).unwrap();
    let opts = GenerateOptions::from_layout(&kp_layout, t.default_scheduler);
    match t.generate(&kp_layout, &opts, None, &mut |_| {}, &CancelToken::new()) {
        Ok(_) => panic!("the text-box model accepted keypoints"),
        Err(e) => {
            let msg = e.to_string();
            println!("{msg}");
            assert!(msg.contains("entities[0]"), "{msg}");
        }
    }
}

#[test]
fn fixtures_are_self_contained() {
    // The original reference data lives in the project, not in ../shared.
    for dir in case_dirs(&original_dir()) {
        let model = case_model(&dir);
        assert!(
            model.starts_with(original_dir().canonicalize().unwrap()),
            "{}",
            model.display()
        );
        assert!(model.is_file());
    }
    assert!(original_dir().join("README.md").is_file());
}
