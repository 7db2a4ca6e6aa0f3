//! Validation: boxes, phrases, grounding slots, keypoints, canvas size, sampling settings,
//! model capabilities and inpainting, with every problem collected at once.

use glichen::layout::{
    Entity, Inpaint, Layout, LayoutError, ModelLimits, Sampling, ValidationErrors,
    COCO_KEYPOINT_NAMES,
};

use crate::{assert_issue, example_json, full_person, person, simple_layout, text_box};

fn errors_of(layout: &Layout, limits: Option<&ModelLimits>) -> ValidationErrors {
    let result = match limits {
        Some(l) => layout.validate_for(l),
        None => layout.validate(),
    };
    result.expect_err("expected validation errors")
}

#[test]
fn valid_layouts_pass() {
    let layout = Layout::from_json_str(&example_json()).expect("parse");
    // The example mixes every modality: fine without a model...
    layout.validate().expect("valid without a model");
    // ...but no single GLIGEN checkpoint takes all of it.
    assert!(layout.validate_for(&ModelLimits::default()).is_err());
    simple_layout()
        .validate_for(&ModelLimits::default())
        .expect("text boxes on the text-box model");
}

#[test]
fn box_problems_are_reported_per_coordinate() {
    let layout = Layout {
        entities: vec![
            text_box("ok", [0.0, 0.0, 1.0, 1.0]),
            text_box("out", [-0.1, 0.2, 1.5, 0.4]),
            text_box("nan", [0.1, f64::NAN, 0.2, f64::INFINITY]),
            text_box("flipped", [0.6, 0.7, 0.4, 0.7]),
        ],
        ..Layout::default()
    };
    let errors = errors_of(&layout, None);
    assert_issue(&errors, "entities[1].box[0]", "x0 = -0.1 is outside [0, 1]");
    assert_issue(&errors, "entities[1].box[2]", "x1 = 1.5 is outside [0, 1]");
    assert_issue(&errors, "entities[2].box[1]", "not a finite number");
    assert_issue(&errors, "entities[2].box[3]", "not a finite number");
    assert_issue(
        &errors,
        "entities[3].box",
        "x0 (0.6) must be less than x1 (0.4)",
    );
    assert_issue(
        &errors,
        "entities[3].box",
        "y0 (0.7) must be less than y1 (0.7)",
    );
    assert_eq!(errors.under("entities[0]").count(), 0);
    assert_eq!(errors.len(), 6, "{errors}");
}

#[test]
fn empty_phrases_are_reported() {
    let layout = Layout {
        entities: vec![
            text_box("  ", [0.0, 0.0, 1.0, 1.0]),
            Entity::ImageBox {
                image: "ref.png".into(),
                bbox: [0.0, 0.0, 0.5, 0.5],
                phrase: Some(String::new()),
            },
            Entity::ImageBox {
                image: "ref.png".into(),
                bbox: [0.0, 0.0, 0.5, 0.5],
                phrase: None,
            },
            Entity::StyleImage {
                image: String::new(),
            },
        ],
        ..Layout::default()
    };
    let errors = errors_of(&layout, None);
    assert_issue(&errors, "entities[0].phrase", "empty");
    assert_issue(&errors, "entities[1].phrase", "empty");
    assert_issue(&errors, "entities[3].image", "no image");
    assert_eq!(errors.under("entities[2]").count(), 0, "{errors}");
}

#[test]
fn too_many_grounded_entities_are_refused_not_dropped() {
    let mut layout = Layout::default();
    for i in 0..31 {
        layout
            .entities
            .push(text_box(&format!("thing {i}"), [0.0, 0.0, 0.5, 0.5]));
    }
    let errors = errors_of(&layout, None);
    assert_issue(
        &errors,
        "entities",
        "the model has 30 grounding slots; this layout has 31 boxes: remove 1",
    );
    assert_eq!(errors.len(), 1);

    // Style images take a slot too.
    layout.entities.truncate(30);
    layout.validate().expect("30 fit");
    layout.entities.push(Entity::StyleImage {
        image: "style.png".into(),
    });
    let errors = errors_of(&layout, None);
    assert_issue(&errors, "entities", "this layout has 31 boxes: remove 1");

    // Keypoint people do not.
    layout.entities.pop();
    layout.entities.push(person(full_person()));
    layout.validate().expect("people have their own budget");

    // A smaller model says so with its own numbers.
    let limits = ModelLimits {
        max_grounding_slots: 4,
        ..ModelLimits::permissive()
    };
    let errors = errors_of(&layout, Some(&limits));
    assert_issue(
        &errors,
        "entities",
        "the model has 4 grounding slots; this layout has 30 boxes: remove 26",
    );
}

#[test]
fn keypoint_problems_are_reported() {
    let mut short = full_person();
    short.pop();
    let mut outside = full_person();
    outside[1] = Some([1.5, 0.5]);
    outside[2] = Some([0.5, -0.25]);
    let layout = Layout {
        entities: vec![
            person(full_person()),
            person(short),
            person(outside),
            person(vec![None; 17]),
        ],
        ..Layout::default()
    };
    let errors = errors_of(&layout, None);
    assert_issue(&errors, "entities[1].points", "expected 17 points");
    assert_issue(&errors, "entities[1].points", "found 16");
    assert_issue(
        &errors,
        "entities[2].points[1][0]",
        "left_eye x = 1.5 is outside [0, 1]",
    );
    assert_issue(
        &errors,
        "entities[2].points[2][1]",
        "right_eye y = -0.25 is outside",
    );
    assert_issue(&errors, "entities[3].points", "no point is placed");
    assert_eq!(errors.under("entities[0]").count(), 0);
    assert_eq!(errors.len(), 4, "{errors}");

    let nine = Layout {
        entities: (0..9).map(|_| person(full_person())).collect(),
        ..Layout::default()
    };
    let errors = errors_of(&nine, None);
    assert_issue(
        &errors,
        "entities",
        "the model takes at most 8 people; this layout has 9: remove 1",
    );
    assert_eq!(COCO_KEYPOINT_NAMES[0], "nose");
    assert_eq!(COCO_KEYPOINT_NAMES[16], "right_ankle");
}

#[test]
fn canvas_size_checks_depend_on_the_model() {
    let sized = |w, h| Layout {
        width: w,
        height: h,
        ..Layout::default()
    };
    // Without a model: positive and at most 2048, nothing else.
    let errors = errors_of(&sized(0, 4096), None);
    assert_issue(&errors, "width", "must be positive");
    assert_issue(&errors, "height", "4096 px exceeds the 2048 px limit");
    sized(32, 32)
        .validate()
        .expect("tiny test canvases are fine");
    sized(33, 100).validate().expect("no factor known yet");

    // Stable Diffusion (factor 8, 8 latent cells).
    let sd = ModelLimits::default();
    let errors = errors_of(&sized(500, 32), Some(&sd));
    assert_issue(&errors, "width", "500 is not a multiple of 8");
    assert_issue(&errors, "width", "use 496 or 504");
    assert_issue(&errors, "height", "32 px is too small");
    assert_issue(&errors, "height", "at least 64 px");
    sized(64, 2048).validate_for(&sd).expect("limits inclusive");

    // Tiny models: 32 px with a factor of 2 or 4.
    for factor in [2, 4] {
        let tiny = ModelLimits::default().with_vae_scale_factor(factor);
        sized(32, 32)
            .validate_for(&tiny)
            .unwrap_or_else(|e| panic!("factor {factor}: {e}"));
    }
    let tiny = ModelLimits::default().with_vae_scale_factor(4);
    let errors = errors_of(&sized(30, 16), Some(&tiny));
    assert_issue(&errors, "width", "not a multiple of 4");
    assert_issue(&errors, "height", "16 px is too small");
}

#[test]
fn sampling_problems_are_reported() {
    let with = |sampling: Sampling| Layout {
        sampling,
        ..Layout::default()
    };
    let errors = errors_of(
        &with(Sampling {
            steps: Some(0),
            guidance_scale: Some(-1.0),
            alpha0: Some(1.5),
            alpha_decay: Some(-0.1),
            ..Sampling::default()
        }),
        None,
    );
    assert_issue(&errors, "sampling.steps", "at least 1");
    assert_issue(&errors, "sampling.guidance_scale", "-1");
    assert_issue(&errors, "sampling.alpha0", "outside [0, 1]");
    assert_issue(&errors, "sampling.alpha_decay", "outside [0, 1]");
    assert_eq!(errors.len(), 4, "{errors}");

    let errors = errors_of(
        &with(Sampling {
            guidance_scale: Some(f64::NAN),
            alpha0: Some(0.7),
            alpha_decay: Some(0.4),
            ..Sampling::default()
        }),
        None,
    );
    assert_issue(&errors, "sampling.guidance_scale", "finite");
    assert_issue(&errors, "sampling", "alpha0 + alpha_decay");
    assert_issue(&errors, "sampling", "exceeds 1");

    // The default alpha0 (0.3) counts when only the decay is given.
    let errors = errors_of(
        &with(Sampling {
            alpha_decay: Some(0.8),
            ..Sampling::default()
        }),
        None,
    );
    assert_issue(&errors, "sampling", "exceeds 1");

    // Float noise at exactly 1 is fine.
    with(Sampling {
        alpha0: Some(0.7),
        alpha_decay: Some(0.3),
        steps: Some(1),
        guidance_scale: Some(0.0),
        ..Sampling::default()
    })
    .validate()
    .expect("boundary values are valid");
}

#[test]
fn model_capabilities_name_the_entity() {
    let layout = Layout::from_json_str(&example_json()).expect("parse");
    let errors = errors_of(&layout, Some(&ModelLimits::default()));
    assert_issue(
        &errors,
        "entities[1]",
        "this model does not take image boxes (it is a text-box model)",
    );
    assert_issue(
        &errors,
        "entities[2]",
        "this model does not take style images (it is a text-box model)",
    );
    assert_issue(
        &errors,
        "entities[3]",
        "this model does not take keypoints (it is a text-box model)",
    );
    assert_issue(&errors, "inpaint", "this model does not inpaint");
    assert_eq!(
        errors.to_string(),
        "entities[1]: this model does not take image boxes (it is a text-box model)\n\
         entities[2]: this model does not take style images (it is a text-box model)\n\
         entities[3]: this model does not take keypoints (it is a text-box model)\n\
         inpaint: this model does not inpaint (it is a text-box model)"
    );

    let errors = errors_of(&layout, Some(&ModelLimits::keypoints()));
    assert_issue(
        &errors,
        "entities[0]",
        "does not take text boxes (it is a keypoint model)",
    );
    let errors = errors_of(
        &layout,
        Some(&ModelLimits::text_image().with_inpainting(true)),
    );
    assert_issue(
        &errors,
        "entities[3]",
        "(it is an inpainting text-and-image-box model)",
    );
    assert_eq!(errors.len(), 1, "{errors}");
}

#[test]
fn inpainting_needs_boxes_and_an_image() {
    let layout = Layout {
        inpaint: Some(Inpaint {
            image: "data:image/gif;base64,R0lG".into(),
        }),
        ..Layout::default()
    };
    let errors = errors_of(&layout, None);
    assert_issue(&errors, "inpaint", "comes from the boxes");
    assert_issue(&errors, "inpaint.image", "unsupported data URI media type");
}

#[test]
fn all_problems_are_collected_at_once() {
    let json = r#"{"version": 1, "width": 0, "height": 100000, "entities": [
        {"type": "text_box", "phrase": "", "box": [2, 0, 1, 1]},
        {"type": "keypoints", "points": [[0.5, 2.0]]}
    ], "sampling": {"steps": 0, "alpha0": 2}}"#;
    let layout = Layout::from_json_str(json).expect("shape is fine");
    let errors = errors_of(&layout, None);
    let paths: Vec<&str> = errors.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "width",
            "height",
            "entities[0].phrase",
            "entities[0].box[0]",
            "entities[0].box",
            "entities[1].points",
            "entities[1].points[0][1]",
            "sampling.steps",
            "sampling.alpha0",
        ],
        "{errors}"
    );
    // One per line.
    assert_eq!(errors.to_string().lines().count(), errors.len());
    let as_layout_error: LayoutError = errors.into();
    assert!(as_layout_error
        .to_string()
        .starts_with("invalid layout:\nwidth: "));
}
