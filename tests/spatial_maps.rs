//! Spatial-map checkpoints beyond the parity cases (those run in `tests/original.rs` and through
//! `parity.sh`): finding Stable Diffusion's first conv, refusing clearly without it, recognising
//! the map kind, and the map-specific input errors.

mod common;

use candle_core::{DType, Device};
use common::{fixtures, load_tensor, rel_l2};
use glichen::layout::{Layout, MapKind};
use glichen::pipeline::{
    CancelToken, GenerateInputs, GenerateOptions, GligenModel, LoadOptions, PipelineError,
};
use glichen::weights::ModelSource;
use std::path::{Path, PathBuf};

fn original() -> PathBuf {
    fixtures().join("original")
}

/// The HF cache must not supply SD's conv in these tests.
fn isolate_hf_cache() {
    let empty = std::env::temp_dir().join("glichen-spatial-empty-hf-home");
    std::fs::create_dir_all(&empty).unwrap();
    // SAFETY: every test of this binary sets the same value before loading anything.
    unsafe { std::env::set_var("HF_HOME", &empty) };
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glichen-spatial-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn load(path: &Path, options: &LoadOptions) -> Result<GligenModel, PipelineError> {
    GligenModel::load_with(
        &ModelSource::OriginalCheckpoint(path.to_path_buf()),
        &Device::Cpu,
        DType::F32,
        options,
    )
}

fn run(
    model: &GligenModel,
    case: &Path,
    layout: &Layout,
) -> Result<candle_core::Tensor, PipelineError> {
    let mut opts = GenerateOptions::from_layout(layout, model.default_scheduler);
    opts.decode = false;
    let inputs = GenerateInputs {
        init_latents: Some(load_tensor(
            &case.join("init_latents.safetensors"),
            "latents",
        )),
        noise: None,
        base_dir: Some(case.to_path_buf()),
        on_phase: None,
    };
    model
        .generate_with(layout, &opts, &inputs, &mut |_| {}, &CancelToken::new())
        .map(|g| g.latents)
}

#[test]
fn first_conv_is_found_beside_given_or_refused_by_name() {
    isolate_hf_cache();
    let case = original().join("sp_canny_swap");
    let layout = Layout::load(case.join("layout.json")).unwrap();
    let expected = load_tensor(&case.join("expected_latents.safetensors"), "latents");

    // alone in a folder: loads (a fully grounded run needs no SD conv) but refuses this run
    let lonely = tempdir("lonely");
    let ck = lonely.join("gligen-tiny-canny.pth");
    std::fs::copy(original().join("gligen-tiny-canny.pth"), &ck).unwrap();
    let model = load(&ck, &LoadOptions::default()).unwrap();
    let err = run(&model, &case, &layout).unwrap_err().to_string();
    for needle in [
        "SD_input_conv_weight_bias.pth",
        "--sd-conv-in",
        "alpha0",
        "canny",
    ] {
        assert!(err.contains(needle), "{err}");
    }
    let mut full = layout.clone();
    full.sampling.alpha0 = Some(1.0);
    full.sampling.alpha_decay = Some(0.0);
    run(&model, &case, &full).expect("a run grounded throughout needs no SD conv");

    // given explicitly: the same result as beside the checkpoint
    let options = LoadOptions {
        sd_conv_in: Some(original().join("SD_input_conv_weight_bias.pth")),
        ..LoadOptions::default()
    };
    let model = load(&ck, &options).unwrap();
    let ours = run(&model, &case, &layout).unwrap();
    let e = rel_l2(&ours, &expected);
    assert!(e < 1e-4, "explicit SD conv: rel L2 {e:.2e}");

    // a conv of the wrong width is refused naming the file
    let options = LoadOptions {
        sd_conv_in: Some(original().join("gligen-tiny-depth.pth")),
        ..LoadOptions::default()
    };
    let err = load(&ck, &options).err().unwrap().to_string();
    assert!(err.contains("gligen-tiny-depth.pth"), "{err}");
}

/// Canny and depth share one network: the checkpoint's config_dict tells them apart, whatever the
/// file is called; the others by their weights.
#[test]
fn map_kind_is_recognised_without_the_file_name() {
    isolate_hf_cache();
    let dir = tempdir("kinds");
    for kind in MapKind::ALL {
        let ck = dir.join(format!("checkpoint-{}.pth", kind as u8));
        std::fs::copy(original().join(format!("gligen-tiny-{kind}.pth")), &ck).unwrap();
        let model = load(&ck, &LoadOptions::default()).unwrap();
        let limits = model.limits();
        assert_eq!(limits.map_kind, Some(kind), "{kind}");
        assert!(!limits.supports_text_boxes, "{kind}");
        assert_eq!(model.spatial.as_ref().unwrap().kind, kind);
        // HED's downsampler resizes to any latent grid; the others fit one canvas
        let side = if kind == MapKind::Hed { None } else { Some(64) };
        assert_eq!(limits.map_canvas_side, side, "{kind}");
    }
}

#[test]
fn map_input_errors_name_the_problem() {
    isolate_hf_cache();
    let model = load(
        &original().join("gligen-tiny-sem.pth"),
        &LoadOptions::default(),
    )
    .unwrap();
    let case = original().join("sp_sem_full");
    let layout = Layout::load(case.join("layout.json")).unwrap();

    // the wrong kind
    let mut wrong = layout.clone();
    wrong.entities[0] = glichen::layout::Entity::Map {
        kind: MapKind::Depth,
        image: "map.png".into(),
    };
    let err = run(&model, &case, &wrong).unwrap_err().to_string();
    assert!(
        err.contains("entities[0].kind") && err.contains("sem"),
        "{err}"
    );

    // a colour-coded segmentation instead of class indices
    let dir = tempdir("colour");
    let mut colour = image::RgbImage::new(40, 40);
    for (x, _, p) in colour.enumerate_pixels_mut() {
        p.0 = if x < 20 {
            [120, 120, 120]
        } else {
            [180, 120, 120]
        };
    }
    colour.save(dir.join("seg.png")).unwrap();
    let mut coloured = layout.clone();
    coloured.entities[0] = glichen::layout::Entity::Map {
        kind: MapKind::Sem,
        image: dir.join("seg.png").display().to_string(),
    };
    let err = run(&model, &case, &coloured).unwrap_err().to_string();
    assert!(
        err.contains("colour") && err.contains("entities[0].image"),
        "{err}"
    );

    // a class index the checkpoint does not know
    image::GrayImage::from_pixel(40, 40, image::Luma([200]))
        .save(dir.join("classes.png"))
        .unwrap();
    let mut unknown = layout.clone();
    unknown.entities[0] = glichen::layout::Entity::Map {
        kind: MapKind::Sem,
        image: dir.join("classes.png").display().to_string(),
    };
    let err = run(&model, &case, &unknown).unwrap_err().to_string();
    assert!(err.contains("class 200") && err.contains("0–151"), "{err}");

    // a canvas the map network does not cover
    let mut big = layout.clone();
    big.width = 96;
    big.height = 96;
    let err = run(&model, &case, &big).unwrap_err().to_string();
    assert!(err.contains("64×64"), "{err}");

    // no map at all
    let mut none = layout.clone();
    none.entities.clear();
    let err = run(&model, &case, &none).unwrap_err().to_string();
    assert!(err.contains("map entity"), "{err}");
}

#[test]
fn map_entities_parse_and_validate() {
    let doc = |entities: &str| {
        format!(r#"{{"version": 1, "width": 64, "height": 64, "entities": {entities}}}"#)
    };
    let layout = Layout::from_json_str(&doc(
        r#"[{"type": "map", "kind": "depth", "image": "d.png"}]"#,
    ))
    .unwrap();
    assert_eq!(
        layout.entities[0],
        glichen::layout::Entity::Map {
            kind: MapKind::Depth,
            image: "d.png".into()
        }
    );
    // written and read back unchanged
    let again = Layout::from_json_str(&layout.to_json_pretty().unwrap()).unwrap();
    assert_eq!(again, layout);

    let err = Layout::from_json_str(&doc(
        r#"[{"type": "map", "kind": "segm", "image": "d.png"}]"#,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("entities[0].kind") && err.contains("segm"),
        "{err}"
    );

    let two = Layout::from_json_str(&doc(r#"[{"type": "map", "kind": "hed", "image": "a.png"},
            {"type": "map", "kind": "hed", "image": "b.png"}]"#))
    .unwrap();
    let err = two
        .validate_for(&glichen::layout::ModelLimits::spatial_map(MapKind::Hed))
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most one spatial map"), "{err}");
    // a text-box model takes no map
    let err = layout
        .validate_for(&glichen::layout::ModelLimits::default().with_vae_scale_factor(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("spatial maps"), "{err}");
}
