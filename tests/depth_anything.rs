//! Depth Anything (`glichen::model::depth_anything`) and the depth estimator (`glichen::maps::depth`)
//! against transformers 5.24.0 on the tiny random model of `tests/fixtures/make_depth_fixtures.py`
//! (`tests/fixtures/depth/`): the network on inputs at the config's patch grid, a larger non-square
//! grid and a smaller one (position-embedding interpolation both ways, sides that are not multiples of
//! the patch, a batch of 2), the metric head, and the whole estimator path (the DPT processor with
//! PIL's resize, the network, the bicubic resize back) on a picture resized down and one resized up;
//! the 8-bit map (near = bright); errors for incomplete folders and bad configs, each naming the file
//! and field; cancellation. Tolerances: relative L2 <= 1e-5 for the network, <= 1e-4 for the estimator,
//! float32 on the CPU. Print the measured errors with
//! `cargo test --release --features testing --test depth_anything -- --nocapture`.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{check, copy_dir, fixtures, get, load_st, TempDir, MODULE_TOL, PIPELINE_TOL};
use glichen::maps::depth::{DepthError, DepthEstimator, DptPreprocessor};
use glichen::maps::normalize_depth;
use glichen::model::depth_anything::{
    load_folder, DepthAnythingConfig, DepthAnythingError, DepthEstimationType,
};
use glichen::weights::WeightsError;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn model_dir() -> PathBuf {
    fixtures().join("depth").join("tiny-depth-anything")
}

fn refs() -> HashMap<String, Tensor> {
    load_st(&fixtures().join("depth").join("refs.safetensors"))
}

fn picture(name: &str) -> image::RgbImage {
    let path = fixtures().join("depth").join(format!("picture_{name}.png"));
    image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

fn estimator() -> DepthEstimator {
    DepthEstimator::load(&model_dir(), &Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
}

/// A copy of the fixture folder with `config.json` changed by `edit`.
fn with_config(tag: &str, edit: impl FnOnce(&mut serde_json::Value)) -> TempDir {
    let dir = TempDir::new(tag);
    copy_dir(&model_dir(), dir.path());
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut json);
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    dir
}

#[test]
fn network_matches_transformers() {
    let model = load_folder(&model_dir(), &Device::Cpu, DType::F32).unwrap();
    let refs = refs();
    for name in ["square", "wide", "odd"] {
        let pixels = get(&refs, &format!("pixel_values_{name}"));
        let ours = model.forward(pixels).unwrap();
        check(
            &format!("predicted_depth {name} {:?}", pixels.dims()),
            &ours,
            get(&refs, &format!("predicted_depth_{name}")),
            MODULE_TOL,
        );
    }
    let features = model
        .backbone_features(get(&refs, "pixel_values_wide"))
        .unwrap();
    assert_eq!(features.len(), 4);
    for (i, f) in features.iter().enumerate() {
        check(
            &format!("backbone feature map {i} (wide)"),
            f,
            get(&refs, &format!("backbone_wide_{i}")),
            MODULE_TOL,
        );
    }
}

#[test]
fn metric_head_matches_transformers() {
    let dir = with_config("depth-metric", |j| {
        j["depth_estimation_type"] = "metric".into();
        j["max_depth"] = 20.into();
    });
    let model = load_folder(dir.path(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(
        model.config.depth_estimation_type,
        DepthEstimationType::Metric
    );
    let refs = refs();
    let ours = model.forward(get(&refs, "pixel_values_wide")).unwrap();
    check(
        "predicted_depth wide, metric (max_depth 20)",
        &ours,
        get(&refs, "predicted_depth_wide_metric"),
        MODULE_TOL,
    );
}

#[test]
fn config_is_read_from_the_folder() {
    let c = DepthAnythingConfig::from_file(&model_dir().join("config.json")).unwrap();
    let b = &c.backbone;
    assert_eq!(
        (b.hidden_size, b.num_hidden_layers, b.num_attention_heads),
        (32, 5, 2)
    );
    assert_eq!(b.mlp_hidden_size(), 64);
    assert_eq!(b.out_indices, [1, 2, 4, 5]);
    assert_eq!((b.image_size, b.patch_size, b.position_grid()), (56, 14, 4));
    // left out of the file: Dinov2Config's defaults, not the top-level layer_norm_eps of 1e-5
    assert_eq!(b.layer_norm_eps, 1e-6);
    assert!(b.qkv_bias && b.apply_layernorm);
    assert_eq!(c.neck_hidden_sizes, [8, 12, 16, 24]);
    assert_eq!(c.reassemble_factors, [4.0, 2.0, 1.0, 0.5]);
    assert_eq!((c.fusion_hidden_size, c.head_hidden_size), (12, 8));
    assert_eq!(c.depth_estimation_type, DepthEstimationType::Relative);
    assert_eq!(c.max_depth, 1.0);

    let p = DptPreprocessor::from_file(&model_dir().join("preprocessor_config.json")).unwrap();
    assert_eq!(p.size, (56, 56));
    assert!(p.keep_aspect_ratio && p.do_resize && p.do_rescale && p.do_normalize);
    assert_eq!(p.ensure_multiple_of, 14);
    // the picture shrinks (short side to 56) or grows (long side to 56), each side to a multiple
    assert_eq!(p.network_size(100, 60), (98, 56));
    assert_eq!(p.network_size(30, 45), (42, 56));
    // the hub's 518: a 640×480 photo
    let hub = DptPreprocessor {
        size: (518, 518),
        ..p.clone()
    };
    assert_eq!(hub.network_size(640, 480), (686, 518));
    // transformers would resize a side to 0 here; one multiple instead
    assert_eq!(p.network_size(1000, 3), (56, 14));
}

#[test]
fn preprocessing_matches_the_transformers_processor() {
    let est = estimator();
    let refs = refs();
    for name in ["wide", "tall"] {
        let ours = est.preprocessor().pixel_values(&picture(name)).unwrap();
        let reference = get(&refs, &format!("picture_{name}_pixel_values"));
        let worst = common::max_abs_diff(&ours, reference);
        println!("pixel_values {name}: max abs diff {worst:.3e}");
        assert!(worst <= 1e-6, "{name}: {worst}");
    }
}

#[test]
fn estimator_matches_the_transformers_pipeline() {
    let est = estimator();
    assert!(est.near_is_large());
    let refs = refs();
    for name in ["wide", "tall"] {
        let rgb = picture(name);
        let (values, w, h) = est.estimate_values(&rgb).unwrap();
        assert_eq!((w, h), rgb.dimensions());
        let reference = get(&refs, &format!("picture_{name}_depth"));
        let ours =
            Tensor::from_vec(values.clone(), (h as usize, w as usize), &Device::Cpu).unwrap();
        check(
            &format!("estimated depth {name} {w}x{h}"),
            &ours,
            reference,
            PIPELINE_TOL,
        );

        // the 8-bit map is normalize_depth of the values, not inverted: near (large) is bright
        let map = est.estimate(&rgb).unwrap();
        let expected = normalize_depth(
            &reference.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            w,
            h,
            false,
        )
        .unwrap();
        let off: Vec<i32> = map
            .pixels()
            .zip(expected.pixels())
            .map(|(a, b)| i32::from(a.0[0]) - i32::from(b.0[0]))
            .filter(|d| *d != 0)
            .collect();
        println!("8-bit map {name}: {} pixels differ", off.len());
        assert!(off.iter().all(|d| d.abs() <= 1), "{name}: {off:?}");
        assert!(off.len() * 100 <= (w * h) as usize, "{name}: {}", off.len());
        let largest =
            values
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |m, (i, &v)| if v > m.1 { (i, v) } else { m });
        // 255·range/range in float32, truncated as MiDaS's astype does, may land on 254
        let brightest = map.as_raw().iter().copied().max().unwrap();
        assert!(
            map.as_raw()[largest.0] == brightest && brightest >= 254,
            "{name}: the nearest pixel is white"
        );
    }
}

#[test]
fn a_metric_model_is_inverted() {
    let dir = with_config("depth-metric-map", |j| {
        j["depth_estimation_type"] = "metric".into();
        j["max_depth"] = 20.into();
    });
    let est = DepthEstimator::load(dir.path(), &Device::Cpu).unwrap();
    assert!(!est.near_is_large());
    let rgb = picture("tall");
    let (values, w, h) = est.estimate_values(&rgb).unwrap();
    let map = est.estimate(&rgb).unwrap();
    assert_eq!(map, normalize_depth(&values, w, h, true).unwrap());
    let nearest = values
        .iter()
        .enumerate()
        .fold((0, f32::MAX), |m, (i, &v)| if v < m.1 { (i, v) } else { m });
    let brightest = map.as_raw().iter().copied().max().unwrap();
    assert!(
        map.as_raw()[nearest.0] == brightest && brightest >= 254,
        "the smallest distance is white"
    );
}

#[test]
fn missing_files_are_named() {
    let err =
        DepthEstimator::load(&fixtures().join("depth/no-such-folder"), &Device::Cpu).unwrap_err();
    assert!(
        matches!(
            err,
            DepthError::Model(DepthAnythingError::NotAFolder { .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-folder"), "{err}");

    for file in [
        "config.json",
        "preprocessor_config.json",
        "model.safetensors",
    ] {
        let dir = TempDir::new("depth-missing");
        copy_dir(&model_dir(), dir.path());
        std::fs::remove_file(dir.join(file)).unwrap();
        let err = DepthEstimator::load(dir.path(), &Device::Cpu).unwrap_err();
        assert!(
            matches!(
                err,
                DepthError::Model(DepthAnythingError::Weights(WeightsError::Io { .. }))
            ),
            "{file}: {err:?}"
        );
        assert!(err.to_string().contains(file), "{err}");
    }
}

#[test]
fn bad_configs_name_the_file_and_field() {
    let field_of = |err: DepthError| match err {
        DepthError::Model(
            DepthAnythingError::Config { field, .. }
            | DepthAnythingError::Unsupported { field, .. },
        ) => field,
        other => panic!("{other:?}"),
    };
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 5] = [
        ("backbone_config.use_swiglu_ffn", |j| {
            j["backbone_config"]["use_swiglu_ffn"] = true.into();
        }),
        ("backbone_config.hidden_size", |j| {
            j["backbone_config"]["hidden_size"] = "wide".into();
        }),
        ("depth_estimation_type", |j| {
            j["depth_estimation_type"] = "absolute".into();
        }),
        ("neck_hidden_sizes", |j| {
            j["neck_hidden_sizes"] = serde_json::json!([8, 12, 0, 24]);
        }),
        ("backbone_config.out_indices", |j| {
            j["backbone_config"]
                .as_object_mut()
                .unwrap()
                .remove("out_features");
            j["backbone_config"]["out_indices"] = serde_json::json!([1, 2, 5]);
        }),
    ];
    for (field, edit) in cases {
        let dir = with_config("depth-bad-config", edit);
        let err = DepthEstimator::load(dir.path(), &Device::Cpu).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("config.json") && msg.contains(field), "{msg}");
        assert_eq!(field_of(err), field);
    }

    let dir = TempDir::new("depth-bad-preprocessor");
    copy_dir(&model_dir(), dir.path());
    std::fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"image_processor_type": "DPTImageProcessor", "resample": 9}"#,
    )
    .unwrap();
    let err = DepthEstimator::load(dir.path(), &Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("preprocessor_config.json"), "{msg}");
    assert_eq!(field_of(err), "resample");
}

#[test]
fn weights_that_do_not_fit_the_config_name_the_tensor() {
    let dir = with_config("depth-mismatch", |j| {
        j["fusion_hidden_size"] = 16.into();
    });
    let err = DepthEstimator::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(
        matches!(err, DepthError::Model(DepthAnythingError::Build { .. })),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("neck."),
        "{msg}"
    );
}

#[test]
fn empty_pictures_and_cancellation_are_errors() {
    let est = estimator();
    let err = est.estimate(&image::RgbImage::new(0, 7)).unwrap_err();
    assert!(matches!(err, DepthError::Picture(_)), "{err:?}");

    let flag = Arc::new(AtomicBool::new(true));
    let err =
        glichen::model::interrupt::with_flag(&flag, || est.estimate(&picture("tall"))).unwrap_err();
    assert!(matches!(err, DepthError::Cancelled), "{err:?}");
    // a one-pixel picture still makes a map (one patch after the resize)
    let map = est.estimate(&image::RgbImage::new(1, 1)).unwrap();
    assert_eq!(map.dimensions(), (1, 1));
}
