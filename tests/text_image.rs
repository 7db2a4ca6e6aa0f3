//! Text+image grounding pieces against diffusers 0.42.1 / transformers 5.24
//! (`StableDiffusionGLIGENTextImagePipeline`; fixtures from `tests/fixtures/make_text_image_fixtures.py`):
//! CLIPImageProcessor preprocessing, the CLIP image tower, `image_project` and the normalised grounding
//! feature, the text-image position net (2N tokens) and the UNet fed with them. Print the measured
//! errors with `cargo test --release --test text_image -- --nocapture`.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{check, get, load_st, max_abs_diff, model_dir, ref_file, rel_l2, MODULE_TOL};
use glichen::model::clip_vision::{
    grounding_image_feature, ClipVisionConfig, ClipVisionModelWithProjection, ImageProjection,
};
use glichen::model::{Grounding, PositionNetInput, UNet2DConditionModel, UNetConfig};
use glichen::pipeline::image_prep::{
    pil_resize_rgb, ClipImageProcessorConfig, PilFilter, ResizeTarget,
};
use glichen::weights::DiffusersFolder;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

const MODEL: &str = "tiny-text-image";
/// diffusers' `gligen_normalize_constant` default.
const NORMALIZE_CONSTANT: f64 = 28.7;
/// Preprocessing without resampling is the same f32 arithmetic as transformers'.
const PIXEL_TOL: f64 = 1e-6;

fn folder() -> DiffusersFolder {
    DiffusersFolder::open(&model_dir(MODEL)).unwrap_or_else(|e| panic!("{MODEL}: {e}"))
}

fn refs(file: &str) -> HashMap<String, Tensor> {
    load_st(&ref_file(MODEL, file))
}

fn ref_png(name: &str) -> image::DynamicImage {
    let path: PathBuf = ref_file(MODEL, name);
    image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Vision {
    encoder: ClipVisionModelWithProjection,
    project: ImageProjection,
    processor: ClipImageProcessorConfig,
}

fn vision() -> &'static Vision {
    static V: OnceLock<Vision> = OnceLock::new();
    V.get_or_init(|| {
        let f = folder();
        let cfg: ClipVisionConfig = f.config("image_encoder").unwrap();
        let vb = f
            .weights("image_encoder")
            .unwrap()
            .into_var_builder(DType::F32, &Device::Cpu);
        let encoder = ClipVisionModelWithProjection::new(vb, &cfg).unwrap();
        let unet_cfg: UNetConfig = f.config("unet").unwrap();
        let vb = f
            .weights("image_project")
            .unwrap()
            .into_var_builder(DType::F32, &Device::Cpu);
        let project = ImageProjection::new(
            vb,
            cfg.projection_dim,
            unet_cfg
                .cross_attention_dim
                .resolve(1, "cross_attention_dim")
                .unwrap()[0],
        )
        .unwrap();
        let processor = ClipImageProcessorConfig::from_folder(&f.root.join("processor")).unwrap();
        Vision {
            encoder,
            project,
            processor,
        }
    })
}

fn unet() -> &'static UNet2DConditionModel {
    static U: OnceLock<UNet2DConditionModel> = OnceLock::new();
    U.get_or_init(|| {
        let f = folder();
        let cfg: UNetConfig = f.config("unet").unwrap();
        assert_eq!(cfg.attention_type.as_deref(), Some("gated-text-image"));
        let vb = f
            .weights("unet")
            .unwrap()
            .into_var_builder(DType::F32, &Device::Cpu);
        UNet2DConditionModel::new(vb, &cfg).unwrap()
    })
}

/// Elementwise comparison of pixel values, printing both measures.
fn check_pixels(what: &str, ours: &Tensor, reference: &Tensor, tol: f64) {
    assert_eq!(ours.dims(), reference.dims(), "{what}: shape");
    let abs = max_abs_diff(ours, reference);
    println!(
        "{what}: max |diff| {abs:.3e}, rel L2 {:.3e} (tol max |diff| {tol:.0e})",
        rel_l2(ours, reference)
    );
    assert!(abs <= tol, "{what}: max |diff| {abs:.3e} exceeds {tol:.0e}");
}

// ---------------------------------------------------------------------------------------------------
// Processor

#[test]
fn processor_configs_both_layouts() {
    let saved = folder().root.join("processor");
    // transformers 5 writes processor_config.json with the fields under `image_processor`
    assert!(saved.join("processor_config.json").is_file());
    let new = ClipImageProcessorConfig::from_folder(&saved).unwrap();
    // transformers 4 / the released model: preprocessor_config.json, int sizes, fewer fields
    let legacy_dir = ref_file(MODEL, "legacy_processor");
    assert!(legacy_dir.join("preprocessor_config.json").is_file());
    let legacy = ClipImageProcessorConfig::from_folder(&legacy_dir).unwrap();
    for c in [&new, &legacy] {
        assert_eq!(c.resize_target().unwrap(), ResizeTarget::ShortestEdge(32));
        assert_eq!(c.crop_target().unwrap(), (32, 32));
        assert_eq!(c.resample, 3);
        assert!(
            c.do_resize && c.do_center_crop && c.do_rescale && c.do_normalize && c.do_convert_rgb
        );
    }
    assert_eq!(new.rescale_factor, legacy.rescale_factor);
    assert_eq!(new.image_mean, legacy.image_mean);
    assert_eq!(new.image_std, legacy.image_std);
    // and they process alike
    let img = ref_png("vision_1.png");
    let a = new.preprocess(&img, &Device::Cpu).unwrap();
    let b = legacy.preprocess(&img, &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

#[test]
fn preprocess_matches_clip_processor() {
    let r = refs("vision.safetensors");
    let p = &vision().processor;
    let pv = get(&r, "pixel_values");
    // RGB, and RGBA with an alpha ramp (composited onto white exactly as PIL does)
    for (i, name) in ["vision_0.png", "vision_1.png"].iter().enumerate() {
        let ours = p.preprocess(&ref_png(name), &Device::Cpu).unwrap();
        check_pixels(
            &format!("pixel values {name}"),
            &ours,
            &pv.i(i..i + 1).unwrap(),
            PIXEL_TOL,
        );
    }
    // 45x32: shortest edge already 32 (no resampling), center crop from column 6
    let ours = p.preprocess(&ref_png("crop.png"), &Device::Cpu).unwrap();
    check_pixels(
        "pixel values crop.png (45x32)",
        &ours,
        get(&r, "crop_pixel_values"),
        PIXEL_TOL,
    );
    // greyscale
    let ours = p.preprocess(&ref_png("gray.png"), &Device::Cpu).unwrap();
    check_pixels(
        "pixel values gray.png (L)",
        &ours,
        get(&r, "gray_pixel_values"),
        PIXEL_TOL,
    );
    // crop larger than the image: zero padding before rescale and normalisation
    let pad = ClipImageProcessorConfig::from_folder(&ref_file(MODEL, "pad_processor")).unwrap();
    let ours = pad.preprocess(&ref_png("crop.png"), &Device::Cpu).unwrap();
    check_pixels(
        "pixel values crop.png, crop 40x36 (padded)",
        &ours,
        get(&r, "pad_pixel_values"),
        PIXEL_TOL,
    );
}

/// 57x41 → bicubic to 44x32 → crop: the resampling is a port of Pillow's, so this is exact too.
#[test]
fn preprocess_resampled_matches_pil() {
    let r = refs("vision.safetensors");
    let ours = vision()
        .processor
        .preprocess(&ref_png("resize.png"), &Device::Cpu)
        .unwrap();
    check_pixels(
        "pixel values resize.png (57x41, bicubic to 44x32)",
        &ours,
        get(&r, "resize_pixel_values"),
        PIXEL_TOL,
    );
}

/// Pillow's `Image.resize` with each filter (0 nearest, 1 Lanczos, 2 bilinear, 3 bicubic, 4 box,
/// 5 Hamming), shrinking and enlarging, byte for byte.
#[test]
fn pil_resize_every_filter() {
    let r = refs("pil_resize.safetensors");
    let src = ref_png("resize.png").to_rgb8();
    let (w, h) = (src.width() as usize, src.height() as usize);
    let filters = [
        PilFilter::Nearest,
        PilFilter::Lanczos,
        PilFilter::Bilinear,
        PilFilter::Bicubic,
        PilFilter::Box,
        PilFilter::Hamming,
    ];
    let mut names: Vec<&String> = r.keys().collect();
    names.sort();
    assert_eq!(names.len(), 18);
    for name in names {
        let reference = get(&r, name);
        let (nh, nw, _) = reference.dims3().unwrap();
        let f: usize = name["filter".len()..name.find('_').unwrap()]
            .parse()
            .unwrap();
        let ours = pil_resize_rgb(src.as_raw(), h, w, nh, nw, filters[f]);
        let reference = reference.flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let diff = ours.iter().zip(&reference).filter(|(a, b)| a != b).count();
        let worst = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        println!(
            "PIL resize {name} ({filters:?}): {diff} of {} bytes differ (max {worst})",
            ours.len(),
            filters = filters[f]
        );
        assert_eq!(
            diff, 0,
            "{name}: {diff} bytes differ from Pillow (max {worst})"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Image tower, projection, grounding feature

#[test]
fn vision_image_embeds_and_features() {
    let r = refs("vision.safetensors");
    let v = vision();
    let pv = get(&r, "pixel_values");
    let embeds = v.encoder.forward(pv).unwrap();
    check(
        "image_embeds [2,32]",
        &embeds,
        get(&r, "image_embeds"),
        MODULE_TOL,
    );
    for row in 0..2 {
        check(
            &format!("image_embeds row {row}"),
            &embeds.i(row).unwrap(),
            &get(&r, "image_embeds").i(row).unwrap(),
            MODULE_TOL,
        );
    }
    // projection alone on the reference embeddings, then the normalised feature
    let projected = candle_core::Module::forward(&v.project, get(&r, "image_embeds")).unwrap();
    check(
        "image_project(image_embeds)",
        &projected,
        get(&r, "projected"),
        MODULE_TOL,
    );
    let feats =
        grounding_image_feature(get(&r, "image_embeds"), &v.project, NORMALIZE_CONSTANT).unwrap();
    assert_eq!(feats.dtype(), DType::F32);
    check("p / |p| * 28.7", &feats, get(&r, "features"), MODULE_TOL);
    let norms = feats
        .sqr()
        .unwrap()
        .sum(1)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(
        norms.iter().all(|n| (n - 28.7).abs() < 1e-4),
        "feature norms {norms:?}"
    );
    // the whole chain from the PNG files
    let imgs: Vec<Tensor> = ["vision_0.png", "vision_1.png"]
        .iter()
        .map(|n| v.processor.preprocess(&ref_png(n), &Device::Cpu).unwrap())
        .collect();
    let chain = grounding_image_feature(
        &v.encoder.forward(&Tensor::cat(&imgs, 0).unwrap()).unwrap(),
        &v.project,
        NORMALIZE_CONSTANT,
    )
    .unwrap();
    check(
        "PNG → processor → tower → project → normalise",
        &chain,
        get(&r, "features"),
        MODULE_TOL,
    );
}

#[test]
fn vision_refuses_wrong_sizes() {
    let v = vision();
    let bad = Tensor::zeros((1, 3, 40, 40), DType::F32, &Device::Cpu).unwrap();
    assert!(v.encoder.forward(&bad).is_err());
    let f = folder();
    let vb = f
        .weights("image_project")
        .unwrap()
        .into_var_builder(DType::F32, &Device::Cpu);
    let err = ImageProjection::new(vb, 32, 768).unwrap_err().to_string();
    assert!(err.contains("768"), "{err}");
}

#[test]
fn vision_weights_layout() {
    let f = folder();
    let w = f.weights("image_encoder").unwrap();
    assert!(w.contains("vision_model.pre_layrnorm.weight"));
    assert!(w.contains("visual_projection.weight"));
    let cfg: ClipVisionConfig = f.config("image_encoder").unwrap();
    assert_eq!(
        (
            cfg.hidden_size,
            cfg.num_hidden_layers,
            cfg.image_size,
            cfg.patch_size,
            cfg.projection_dim
        ),
        (32, 2, 32, 8, 32)
    );
}

// ---------------------------------------------------------------------------------------------------
// Position net and UNet

fn grounding_input(r: &HashMap<String, Tensor>) -> PositionNetInput {
    PositionNetInput {
        boxes: get(r, "boxes").clone(),
        masks: get(r, "masks").clone(),
        phrase_embeddings: get(r, "phrases_embeddings").clone(),
        phrase_masks: Some(get(r, "phrases_masks").clone()),
        image_masks: Some(get(r, "image_masks").clone()),
        image_embeddings: Some(get(r, "image_embeddings").clone()),
    }
}

#[test]
fn position_net_text_image() {
    let r = refs("position_net.safetensors");
    // row 0 unconditional, row 1: text only, image only, text + image
    let pm = get(&r, "phrases_masks").to_vec2::<f32>().unwrap();
    let im = get(&r, "image_masks").to_vec2::<f32>().unwrap();
    assert_eq!(&pm[1][..3], &[1.0, 0.0, 1.0]);
    assert_eq!(&im[1][..3], &[0.0, 1.0, 1.0]);
    let u = unet();
    assert!(u.position_net.as_ref().unwrap().is_text_image());
    let objs = u.grounding_tokens(&grounding_input(&r)).unwrap();
    let reference = get(&r, "objs");
    assert_eq!(objs.dims(), &[2, 60, 32]);
    check(
        "text-image position net objs [2,60,32]",
        &objs,
        reference,
        MODULE_TOL,
    );
    for row in 0..2 {
        check(
            &format!("position net row {row}"),
            &objs.i(row).unwrap(),
            &reference.i(row).unwrap(),
            MODULE_TOL,
        );
    }
    // text tokens first, image tokens second
    for (half, range) in [("text", 0..30), ("image", 30..60)] {
        check(
            &format!("position net {half} tokens"),
            &objs.i((1, range.clone())).unwrap(),
            &reference.i((1, range)).unwrap(),
            MODULE_TOL,
        );
    }
}

#[test]
fn unet_with_text_image_grounding() {
    let r = refs("unet.safetensors");
    let u = unet();
    let sample = get(&r, "sample");
    let t = get(&r, "timestep").to_scalar::<f32>().unwrap() as f64;
    let context = get(&r, "encoder_hidden_states");
    let objs = u.grounding_tokens(&grounding_input(&r)).unwrap();
    let on = u
        .forward(
            sample,
            t,
            context,
            Some(&Grounding {
                objs,
                gate_scale: 1.0,
            }),
        )
        .unwrap();
    check(
        "UNet, 60 grounding tokens, fusers on",
        &on,
        get(&r, "out_fuser_on"),
        MODULE_TOL,
    );
    let none = u.forward(sample, t, context, None).unwrap();
    check(
        "UNet, no grounding",
        &none,
        get(&r, "out_no_gligen"),
        MODULE_TOL,
    );
    let effect = rel_l2(&on, &none);
    println!("fuser effect rel L2(on, none): {effect:.3e}");
    assert!(effect > 1e-2);
}

// ---------------------------------------------------------------------------------------------------
// Whole-pipeline cases (run by the pipeline tests / parity.sh): their layouts parse and every
// image box's picture goes through the processor and tower.

#[test]
fn text_image_case_layouts_load() {
    let cases = common::case_dirs(&common::fixtures().join("cases"));
    let ti: Vec<_> = cases
        .iter()
        .filter(|c| c.file_name().unwrap().to_string_lossy().starts_with("ti_"))
        .collect();
    assert_eq!(ti.len(), 2, "{ti:?}");
    let v = vision();
    for dir in ti {
        let path = dir.join("layout.json");
        let layout = glichen::layout::Layout::load(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            std::fs::read_to_string(dir.join("model")).unwrap().trim(),
            format!("../models/{MODEL}")
        );
        let base = glichen::layout::Layout::base_dir(&path);
        let mut images = 0;
        for (i, e) in layout.entities.iter().enumerate() {
            if e.image().is_some() {
                let img = layout.entity_image(i, base).unwrap();
                let f = grounding_image_feature(
                    &v.encoder
                        .forward(&v.processor.preprocess(&img, &Device::Cpu).unwrap())
                        .unwrap(),
                    &v.project,
                    NORMALIZE_CONSTANT,
                )
                .unwrap();
                assert_eq!(f.dims(), &[1, 32]);
                images += 1;
            }
        }
        assert!(images > 0, "{}: no image box", dir.display());
    }
}
