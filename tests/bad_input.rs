//! Hostile and broken inputs get a clear error naming what is wrong and where, never a panic, a
//! hang or unbounded memory (issue 14's findings, each with the input that found it).

mod common;

use glichen::layout::{Layout, MAX_LAYOUT_VALUES};

#[test]
fn a_layout_of_millions_of_entities_is_refused_before_it_is_parsed() {
    let entity = r#"{"type": "text_box", "phrase": "a", "box": [0.1, 0.1, 0.2, 0.2]},"#;
    let mut json = String::from(r#"{"version": 1, "width": 512, "height": 512, "entities": ["#);
    json.push_str(&entity.repeat(200_000));
    json.push_str(r#"{"type": "text_box", "phrase": "a", "box": [0.1, 0.1, 0.2, 0.2]}]}"#);
    let err = Layout::from_json_str(&json).unwrap_err().to_string();
    assert!(
        err.contains(&format!("more than {MAX_LAYOUT_VALUES} JSON values")),
        "{err}"
    );
}

#[test]
fn a_layout_with_a_few_hundred_values_still_reads() {
    let json = r#"{"version": 1, "width": 512, "height": 512, "prompt": "a \"quoted\" [x] {y}",
        "entities": [{"type": "text_box", "phrase": "tr{ue", "box": [0.1, 0.1, 0.2, 0.2]}],
        "sampling": {"steps": 4, "seed": -1e0}}"#;
    // (the seed is invalid; what matters is that counting never trips on strings and numbers)
    let err = Layout::from_json_str(json).unwrap_err().to_string();
    assert!(err.contains("sampling.seed"), "{err}");
}

#[cfg(unix)]
#[test]
fn layout_paths_that_are_devices_fifos_or_folders_are_refused_at_once() {
    let tmp = common::TempDir::new("layout-paths");
    let fifo = tmp.join("layout.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for path in [fifo.as_path(), Path::new("/dev/zero"), tmp.path()] {
        if !path.exists() {
            continue;
        }
        let err = Layout::load(path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(
            err.contains("not a regular file") || err.contains("is a folder"),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Models and generation

use candle_core::{DType, Device, Tensor};
use glichen::pipeline::{CancelToken, GenerateOptions, GligenModel, PipelineError};
use glichen::weights::ModelSource;
use std::path::Path;

fn load(root: &Path) -> Result<GligenModel, PipelineError> {
    GligenModel::load(
        &ModelSource::Folder(root.to_path_buf()),
        &Device::Cpu,
        DType::F32,
    )
}

/// A copy of tiny-a with `key` of `<component>/<file>` set to `value`.
fn edited_model(tag: &str, file: &str, key: &str, value: serde_json::Value) -> common::TempDir {
    let tmp = common::TempDir::new(tag);
    common::copy_dir(&common::model_dir("tiny-a"), &tmp.join("m"));
    let path = tmp.join("m").join(file);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg[key] = value;
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    tmp
}

fn load_err(tmp: &common::TempDir) -> String {
    match load(&tmp.join("m")) {
        Ok(_) => panic!("the edited model was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_beta_of_one_is_refused_at_load_naming_the_file() {
    let tmp = edited_model(
        "beta-one",
        "scheduler/scheduler_config.json",
        "beta_end",
        1.0.into(),
    );
    let err = load_err(&tmp);
    assert!(err.contains("scheduler_config.json"), "{err}");
    assert!(
        err.contains("every beta must be a number in [0, 1)"),
        "{err}"
    );
}

#[test]
fn a_trillion_training_timesteps_are_refused_not_allocated() {
    let tmp = edited_model(
        "timesteps-1e12",
        "scheduler/scheduler_config.json",
        "num_train_timesteps",
        1_000_000_000_000u64.into(),
    );
    let err = load_err(&tmp);
    assert!(
        err.contains("num_train_timesteps 1000000000000 exceeds"),
        "{err}"
    );
}

#[test]
fn a_zero_vae_scaling_factor_is_refused() {
    let tmp = edited_model("vae-scale-0", "vae/config.json", "scaling_factor", 0.into());
    let err = load_err(&tmp);
    assert!(
        err.contains("VAE scaling_factor 0 must be a positive number"),
        "{err}"
    );
}

#[test]
fn an_unknown_scheduler_class_loads_with_pndm_as_the_default() {
    let tmp = edited_model(
        "sched-class",
        "scheduler/scheduler_config.json",
        "_class_name",
        "LMSDiscreteScheduler".into(),
    );
    let model = load(&tmp.join("m")).unwrap();
    assert_eq!(
        model.default_scheduler,
        glichen::layout::SchedulerKind::Pndm
    );
}

fn one_box_layout() -> Layout {
    Layout::load(common::case_dir("a_one_box").join("layout.json")).unwrap()
}

/// The tiny model's latent grid for `layout`, `[1, 4, h, w]`.
fn latent_shape(layout: &Layout) -> (usize, usize, usize, usize) {
    let f = load(&common::model_dir("tiny-a"))
        .unwrap()
        .vae_scale_factor();
    (1, 4, layout.height as usize / f, layout.width as usize / f)
}

fn generate_err(layout: &Layout, init: Option<&Tensor>) -> PipelineError {
    let model = load(&common::model_dir("tiny-a")).unwrap();
    let options = GenerateOptions::from_layout(layout, model.default_scheduler);
    match model.generate(layout, &options, init, &mut |_| {}, &CancelToken::new()) {
        Ok(_) => panic!("generated from bad input"),
        Err(e) => e,
    }
}

#[test]
fn nan_initial_latents_are_refused() {
    let layout = one_box_layout();
    let shape = latent_shape(&layout);
    let mut values = vec![0.5f32; 4 * shape.2 * shape.3];
    values[3] = f32::NAN;
    let init = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
    let err = generate_err(&layout, Some(&init)).to_string();
    assert!(
        err.contains("the initial latents hold 1 NaN or infinite values"),
        "{err}"
    );
}

#[test]
fn latents_that_overflow_fail_instead_of_a_black_picture() {
    let layout = one_box_layout();
    let init = Tensor::full(3e38f32, latent_shape(&layout), &Device::Cpu).unwrap();
    let err = generate_err(&layout, Some(&init));
    assert!(matches!(err, PipelineError::NonFinite(_)), "{err}");
    assert!(err.to_string().contains("the final latents"), "{err}");
}

#[test]
fn an_absurd_guidance_scale_is_refused() {
    let mut layout = one_box_layout();
    layout.sampling.guidance_scale = Some(1e308);
    let err = generate_err(&layout, None).to_string();
    assert!(err.contains("sampling.guidance_scale"), "{err}");
    assert!(err.contains("from 0 to 100"), "{err}");
}
