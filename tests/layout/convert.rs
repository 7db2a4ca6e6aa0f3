//! Conversions: diffusers pipeline arguments, GLIGEN `gligen_inference.py` meta entries and
//! COCO annotations, each way, with refusals for what a target cannot express.

use glichen::layout::{
    CocoImageSelector, DiffusersArgs, Entity, GligenLocations, GligenMeta, Inpaint, Layout,
    LayoutError, ModelLimits, Sampling, SchedulerKind,
};
use serde_json::json;

use crate::{
    assert_issue, example_json, field_error, full_person, person, simple_layout, text_box,
};

#[test]
fn diffusers_args_round_trip() {
    let mut layout = simple_layout();
    layout.negative_prompt = "blurry".into();
    layout.sampling = Sampling {
        steps: Some(30),
        guidance_scale: Some(6.0),
        alpha0: Some(0.4),
        seed: Some(7),
        ..Sampling::default()
    };
    layout.inpaint = Some(Inpaint {
        image: "room.png".into(),
    });
    let args = layout.to_diffusers_args().expect("text boxes convert");
    assert_eq!(args.gligen_phrases, ["a dog", "an apple"]);
    assert_eq!(args.gligen_boxes[0], [0.1387, 0.2051, 0.4277, 0.709]);
    assert_eq!(args.gligen_scheduled_sampling_beta, Some(0.4));
    assert_eq!(args.gligen_inpaint_image.as_deref(), Some("room.png"));
    assert_eq!((args.width, args.height), (512, 512));
    assert_eq!(Layout::from_diffusers_args(&args).expect("back"), layout);

    // Through JSON, as a Python user would dump kwargs.
    let text = serde_json::to_string(&args).expect("json");
    let parsed: DiffusersArgs = serde_json::from_str(&text).expect("parse");
    assert_eq!(parsed, args);
    assert_eq!(Layout::from_diffusers_args(&parsed).expect("back"), layout);
}

#[test]
fn diffusers_kwargs_from_python_convert_losslessly() {
    // json.dumps of a kwargs dict: None for unset values.
    let kwargs = r#"{
        "prompt": "a waterfall and a modern high speed train",
        "negative_prompt": null,
        "height": null, "width": null,
        "num_inference_steps": 50,
        "guidance_scale": null,
        "gligen_scheduled_sampling_beta": 1,
        "gligen_phrases": ["a waterfall", "a modern high speed train"],
        "gligen_boxes": [[0.1387, 0.2051, 0.4277, 0.7090], [0.4980, 0.4355, 0.8516, 0.7266]]
    }"#;
    let args: DiffusersArgs = serde_json::from_str(kwargs).expect("kwargs");
    assert_eq!((args.width, args.height), (512, 512));
    let layout = Layout::from_diffusers_args(&args).expect("layout");
    assert_eq!(layout.sampling.alpha0, Some(1.0));
    assert_eq!(layout.sampling.steps, Some(50));
    assert_eq!(layout.sampling.guidance_scale, None);
    assert_eq!(layout.entities.len(), 2);
    assert_eq!(layout.to_diffusers_args().expect("args"), args);
    layout
        .validate_for(&ModelLimits::default())
        .expect("valid for SD");

    let mut mismatched = args.clone();
    mismatched.gligen_phrases.pop();
    let err = Layout::from_diffusers_args(&mismatched).expect_err("mismatch");
    assert!(
        err.to_string()
            .starts_with("gligen_boxes: 2 boxes but 1 phrases"),
        "{err}"
    );
}

#[test]
fn diffusers_conversion_refuses_what_it_cannot_express() {
    let mut layout = Layout::from_json_str(&example_json()).expect("parse");
    layout.sampling.alpha_decay = Some(0.2);
    layout.sampling.scheduler = Some(SchedulerKind::Ddim);
    let err = layout.to_diffusers_args().expect_err("not text-box only");
    let LayoutError::Unsupported { target, issues } = &err else {
        panic!("expected Unsupported, got {err:?}");
    };
    assert_eq!(*target, "diffusers arguments");
    assert_issue(issues, "entities[1]", "text boxes only, not image boxes");
    assert_issue(issues, "entities[2]", "not style images");
    assert_issue(issues, "entities[3]", "no keypoint GLIGEN pipeline");
    assert_issue(
        issues,
        "sampling.alpha_decay",
        "no decaying grounding stage",
    );
    assert_issue(issues, "sampling.scheduler", "DDIMScheduler");
    assert_eq!(issues.len(), 5);
    assert!(err
        .to_string()
        .starts_with("cannot convert to diffusers arguments:\n"));

    // PNDM is diffusers' default for GLIGEN and a zero decay is no decay.
    let mut ok = simple_layout();
    ok.sampling.scheduler = Some(SchedulerKind::Pndm);
    ok.sampling.alpha_decay = Some(0.0);
    ok.to_diffusers_args().expect("expressible");
}

/// The text-box entry of `meta_list` in GLIGEN's gligen_inference.py.
const GLIGEN_TEXT_META: &str = r#"{
    "ckpt": "../gligen_checkpoints/checkpoint_generation_text.pth",
    "prompt": "a teddy bear sitting next to a bird",
    "phrases": ["a teddy bear", "a bird"],
    "locations": [[0.0, 0.09, 0.33, 0.76], [0.55, 0.11, 1.0, 0.8]],
    "alpha_type": [0.3, 0.0, 0.7],
    "save_folder_name": "glichen"
}"#;

#[test]
fn gligen_meta_round_trip() {
    let meta: GligenMeta = serde_json::from_str(GLIGEN_TEXT_META).expect("meta");
    let layout = Layout::from_gligen_meta(&meta).expect("layout");
    assert_eq!((layout.width, layout.height), (512, 512));
    assert_eq!(
        layout.entities,
        vec![
            text_box("a teddy bear", [0.0, 0.09, 0.33, 0.76]),
            text_box("a bird", [0.55, 0.11, 1.0, 0.8]),
        ]
    );
    assert_eq!(layout.sampling.alpha0, Some(0.3));
    assert_eq!(layout.sampling.alpha_decay, Some(0.0));
    layout
        .validate_for(&ModelLimits::default())
        .expect("valid for the text-box model");

    // meta → layout → meta gives the same meta...
    let again = layout.to_gligen_meta().expect("meta again");
    assert_eq!(again, meta);
    // ...and it serialises to what the Python script reads.
    let value = serde_json::to_value(&again).expect("json");
    assert_eq!(value["alpha_type"], json!([0.3, 0.0, 0.7]));
    assert_eq!(value["phrases"], json!(["a teddy bear", "a bird"]));
    assert!(value.get("images").is_none());

    // layout → meta → layout, with everything the meta has no field for
    // (negative prompt, CLI sampling flags) carried along.
    let mut rich = layout.clone();
    rich.negative_prompt = "lowres".into();
    rich.sampling = Sampling {
        steps: Some(250),
        guidance_scale: Some(5.0),
        alpha0: Some(0.5),
        alpha_decay: Some(0.25),
        seed: Some(3),
        scheduler: Some(SchedulerKind::Ddim),
    };
    rich.entities.push(Entity::ImageBox {
        image: "clock.png".into(),
        bbox: [0.0, 0.09, 0.53, 0.76],
        phrase: Some("alarm clock".into()),
    });
    rich.entities.push(Entity::StyleImage {
        image: "style_golden.jpg".into(),
    });
    rich.inpaint = Some(Inpaint {
        image: "beach.jpg".into(),
    });
    let rich_meta = rich.to_gligen_meta().expect("rich meta");
    assert_eq!(
        rich_meta.ckpt.as_deref(),
        Some("../gligen_checkpoints/checkpoint_inpainting_text_image.pth")
    );
    assert_eq!(rich_meta.alpha_type, Some([0.5, 0.25, 0.25]));
    assert_eq!(
        rich_meta.images,
        Some(vec![
            None,
            None,
            Some("clock.png".into()),
            Some("style_golden.jpg".into())
        ])
    );
    let text = serde_json::to_string(&rich_meta).expect("json");
    let parsed: GligenMeta = serde_json::from_str(&text).expect("parse");
    assert_eq!(Layout::from_gligen_meta(&parsed).expect("back"), rich);
}

#[test]
fn gligen_meta_style_example_with_masks() {
    // The style entry of gligen_inference.py: a placeholder phrase and a
    // placeholder image, masked out.
    let meta: GligenMeta = serde_json::from_value(json!({
        "ckpt": "../gligen_checkpoints/checkpoint_generation_text_image.pth",
        "prompt": "a brick house in the woods, anime, oil painting",
        "phrases": ["a brick house", "placehoder"],
        "images": ["inference_images/placeholder.png", "inference_images/style_golden.jpg"],
        "locations": [[0.4, 0.2, 1.0, 0.8], [0.0, 1.0, 0.0, 1.0]],
        "alpha_type": [1, 0, 0],
        "text_mask": [1, 0],
        "image_mask": [0, 1],
        "save_folder_name": "generation_box_text_style"
    }))
    .expect("meta");
    let layout = Layout::from_gligen_meta(&meta).expect("layout");
    assert_eq!(
        layout.entities,
        vec![
            text_box("a brick house", [0.4, 0.2, 1.0, 0.8]),
            Entity::StyleImage {
                image: "inference_images/style_golden.jpg".into()
            },
        ]
    );
    assert_eq!(layout.sampling.alpha0, Some(1.0));
    layout
        .validate_for(&ModelLimits::text_image())
        .expect("valid for text+image");
}

#[test]
fn gligen_meta_keypoints() {
    let mut first = vec![[0.0, 0.0]; 17];
    first[0] = [0.7598, 0.2542];
    first[5] = [0.7806, 0.2917];
    let meta: GligenMeta = serde_json::from_value(json!({
        "ckpt": "../gligen_checkpoints/checkpoint_generation_keypoint.pth",
        "prompt": "A young man and a small boy are talking",
        "locations": [first, vec![[0.2681, 0.4313]; 17]],
        "alpha_type": [0.3, 0.0, 0.7],
        "save_folder_name": "glichen"
    }))
    .expect("meta");
    assert!(matches!(meta.locations, GligenLocations::Keypoints(_)));
    let layout = Layout::from_gligen_meta(&meta).expect("layout");
    assert_eq!(layout.people_count(), 2);
    let Entity::Keypoints { points } = &layout.entities[0] else {
        panic!("keypoints expected");
    };
    assert_eq!(points[0], Some([0.7598, 0.2542]));
    assert_eq!(points[1], None);
    assert_eq!(points[5], Some([0.7806, 0.2917]));
    layout
        .validate_for(&ModelLimits::keypoints())
        .expect("valid for the keypoint model");
    assert_eq!(layout.to_gligen_meta().expect("back"), meta);

    // Boxes and keypoints never share a GLIGEN checkpoint.
    let mut mixed = layout.clone();
    mixed.entities.push(text_box("a boy", [0.0, 0.0, 0.5, 0.5]));
    let err = mixed.to_gligen_meta().expect_err("mixed");
    let LayoutError::Unsupported { issues, .. } = &err else {
        panic!("{err:?}")
    };
    assert_issue(
        issues,
        "entities[2]",
        "keypoint checkpoint takes no text boxes",
    );
}

#[test]
fn gligen_meta_refusals() {
    let mut big = simple_layout();
    big.width = 768;
    let err = big.to_gligen_meta().expect_err("768");
    assert!(err
        .to_string()
        .contains("width: gligen_inference.py always generates 512×512"));

    let hed: GligenMeta = serde_json::from_value(json!({
        "prompt": "a man is eating breakfast",
        "hed_image": "inference_images/hed_man_eat.png",
        "alpha_type": [0.9, 0, 0.1]
    }))
    .expect("meta");
    let (path, _) = field_error(Layout::from_gligen_meta(&hed));
    assert_eq!(path, "hed_image");

    let bad_alpha: GligenMeta = serde_json::from_value(json!({
        "prompt": "p", "phrases": ["a"], "locations": [[0, 0, 1, 1]], "alpha_type": [0.5, 0.5, 0.5]
    }))
    .expect("meta");
    let (path, _) = field_error(Layout::from_gligen_meta(&bad_alpha));
    assert_eq!(path, "alpha_type");

    let short: GligenMeta = serde_json::from_value(json!({
        "prompt": "p", "phrases": ["a"], "locations": [[0, 0, 1, 1], [0, 0, 0.5, 0.5]]
    }))
    .expect("meta");
    let (path, _) = field_error(Layout::from_gligen_meta(&short));
    assert_eq!(path, "phrases");

    // No alpha_type means the script's [1, 0, 0].
    let no_alpha: GligenMeta = serde_json::from_value(json!({
        "prompt": "p", "phrases": ["a"], "locations": [[0, 0, 1, 1]]
    }))
    .expect("meta");
    let layout = Layout::from_gligen_meta(&no_alpha).expect("layout");
    assert_eq!(layout.sampling.alpha0, Some(1.0));
    assert_eq!(layout.sampling.alpha_decay, Some(0.0));
}

fn coco_json() -> String {
    let mut kp = vec![0.0; 51];
    // nose visible, left eye labelled but hidden, right eye unlabelled.
    kp[0..3].copy_from_slice(&[320.0, 96.0, 2.0]);
    kp[3..6].copy_from_slice(&[330.0, 90.0, 1.0]);
    // left ankle outside the picture: clamped.
    kp[45..48].copy_from_slice(&[650.0, 470.0, 2.0]);
    json!({
        "images": [
            {"id": 1, "file_name": "000000000001.jpg", "width": 640, "height": 427},
            {"id": 397133, "file_name": "000000397133.jpg", "width": 640, "height": 480}
        ],
        "categories": [
            {"id": 1, "name": "person"},
            {"id": 18, "name": "dog"},
            {"id": 28, "name": "umbrella"}
        ],
        "annotations": [
            {"id": 10, "image_id": 397133, "category_id": 18, "bbox": [64.0, 240.0, 192.0, 240.0], "area": 1.0, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 18, "bbox": [0, 0, 10, 10]},
            {"id": 12, "image_id": 397133, "category_id": 28, "bbox": [600.0, -2.0, 48.0, 100.0]},
            {"id": 13, "image_id": 397133, "category_id": 1, "bbox": [300.0, 80.0, 60.0, 200.0],
             "keypoints": kp, "num_keypoints": 3},
            {"id": 14, "image_id": 397133, "category_id": 18, "bbox": [320.0, 0.0, 160.0, 120.0],
             "keypoints": vec![0.0; 51], "num_keypoints": 0},
            {"id": 15, "image_id": 397133, "caption": "A dog under an umbrella."}
        ]
    })
    .to_string()
}

#[test]
fn coco_import() {
    let json = coco_json();
    let layout = Layout::from_coco(&json, CocoImageSelector::Id(397133), None).expect("import");
    assert_eq!((layout.width, layout.height), (640, 480));
    assert_eq!(layout.prompt, "A dog under an umbrella.");
    assert_eq!(layout.entities.len(), 5, "{:#?}", layout.entities);
    assert_eq!(layout.entities[0], text_box("dog", [0.1, 0.5, 0.4, 1.0]));
    // Overhanging box clamped to the canvas.
    assert_eq!(
        layout.entities[1],
        text_box("umbrella", [600.0 / 640.0, 0.0, 1.0, 98.0 / 480.0])
    );
    assert_eq!(
        layout.entities[2],
        text_box(
            "person",
            [300.0 / 640.0, 80.0 / 480.0, 360.0 / 640.0, 280.0 / 480.0]
        )
    );
    let Entity::Keypoints { points } = &layout.entities[3] else {
        panic!("keypoints after their person box");
    };
    assert_eq!(points[0], Some([0.5, 0.2]));
    assert_eq!(points[1], Some([330.0 / 640.0, 90.0 / 480.0]));
    assert_eq!(points[2], None);
    assert_eq!(points[15], Some([1.0, 470.0 / 480.0]));
    // No labelled keypoints: no keypoints entity.
    assert_eq!(layout.entities[4], text_box("dog", [0.5, 0.0, 0.75, 0.25]));
    layout.validate().expect("imported layout is valid");

    // By file name (also given as a path), with an explicit prompt.
    let by_name = Layout::from_coco(
        &json,
        CocoImageSelector::from("val2017/000000397133.jpg"),
        Some("a rainy street".into()),
    )
    .expect("by name");
    assert_eq!(by_name.prompt, "a rainy street");
    assert_eq!(by_name.entities, layout.entities);

    // Canvas rounded to a multiple of 8 (427 → 424); prompt from categories.
    let first = Layout::from_coco(&json, 1u64.into(), None).expect("image 1");
    assert_eq!((first.width, first.height), (640, 424));
    assert_eq!(first.prompt, "dog");
    first
        .validate_for(&ModelLimits::default())
        .expect("runs on SD as imported");

    let err = Layout::from_coco(&json, CocoImageSelector::Id(5), None).expect_err("no image");
    assert_eq!(err.to_string(), "images: no image with id 5");
}

#[test]
fn coco_round_trip() {
    let layout = Layout {
        width: 640,
        height: 480,
        prompt: "people and dogs".into(),
        entities: vec![
            text_box("dog", [0.1, 0.5, 0.4, 1.0]),
            text_box("person", [0.25, 0.125, 0.5, 0.875]),
            person(full_person()),
            text_box("dog", [0.5, 0.0, 0.75, 0.25]),
        ],
        ..Layout::default()
    };
    let coco = layout.to_coco(42, "scene.png").expect("export");
    assert_eq!(coco["images"][0]["width"], json!(640));
    assert_eq!(coco["annotations"].as_array().map(Vec::len), Some(3));
    assert_eq!(coco["annotations"][1]["num_keypoints"], json!(13));
    assert_eq!(coco["categories"].as_array().map(Vec::len), Some(2));
    let back = Layout::from_coco(
        &coco.to_string(),
        CocoImageSelector::FileName("scene.png".into()),
        Some(layout.prompt.clone()),
    )
    .expect("import");
    assert_eq!((back.width, back.height), (640, 480));
    assert_eq!(back.entities.len(), layout.entities.len());
    for (a, b) in back.entities.iter().zip(&layout.entities) {
        assert_eq!(a.kind(), b.kind());
        assert_eq!(a.phrase(), b.phrase());
        match (a, b) {
            (Entity::Keypoints { points: pa }, Entity::Keypoints { points: pb }) => {
                for (p, q) in pa.iter().zip(pb) {
                    match (p, q) {
                        (Some(p), Some(q)) => {
                            assert!((p[0] - q[0]).abs() < 1e-12 && (p[1] - q[1]).abs() < 1e-12);
                        }
                        (p, q) => assert_eq!(p, q),
                    }
                }
            }
            _ => {
                let (ba, bb) = (a.bbox().expect("box"), b.bbox().expect("box"));
                for k in 0..4 {
                    assert!((ba[k] - bb[k]).abs() < 1e-12, "{ba:?} vs {bb:?}");
                }
            }
        }
    }

    let with_image = Layout {
        entities: vec![Entity::StyleImage {
            image: "s.png".into(),
        }],
        ..Layout::default()
    };
    assert!(matches!(
        with_image.to_coco(1, "x.png"),
        Err(LayoutError::Unsupported { target: "COCO", .. })
    ));
}
