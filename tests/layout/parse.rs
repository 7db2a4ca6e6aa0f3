//! Reading layout JSON: the documented example, defaults, unknown fields and entity types,
//! errors that carry their field path, version checks, entity order and load errors.

use glichen::layout::{
    Entity, EntityKind, Inpaint, Layout, LayoutError, Sampling, SchedulerKind, LAYOUT_VERSION,
    STYLE_IMAGE_BOX,
};

use crate::{example_json, field_error, simple_layout, text_box, TempDir};

#[test]
fn parses_the_documented_example() {
    let layout = Layout::from_json_str(&example_json()).expect("parse example");
    assert_eq!((layout.width, layout.height), (512, 512));
    assert_eq!(layout.prompt, "a dog and a red umbrella in the rain");
    assert_eq!(layout.negative_prompt, "");
    assert_eq!(layout.entities.len(), 4);
    assert_eq!(layout.entities[0], text_box("a dog", [0.0, 0.5, 0.4, 1.0]));
    assert_eq!(
        layout.entities[1],
        Entity::ImageBox {
            image: "ref.png".into(),
            bbox: [0.1, 0.1, 0.5, 0.5],
            phrase: Some("optional text".into()),
        }
    );
    assert_eq!(
        layout.entities[2],
        Entity::StyleImage {
            image: "data:image/png;base64,...".into()
        }
    );
    let Entity::Keypoints { points } = &layout.entities[3] else {
        panic!("expected keypoints");
    };
    assert_eq!(points.len(), 17);
    assert_eq!(points[0], Some([0.45, 0.08]));
    assert!(points[1..].iter().all(Option::is_none));
    assert_eq!(
        layout.inpaint,
        Some(Inpaint {
            image: "photo.png".into()
        })
    );
    assert_eq!(
        layout.sampling,
        Sampling {
            steps: Some(50),
            guidance_scale: Some(7.5),
            alpha0: Some(0.3),
            alpha_decay: Some(0.0),
            seed: Some(42),
            scheduler: Some(SchedulerKind::Pndm),
        }
    );
    // Accessors the pipeline uses.
    assert_eq!(layout.entities[0].box_f32(), Some([0.0f32, 0.5, 0.4, 1.0]));
    assert_eq!(layout.entities[2].bbox(), None);
    assert_eq!(layout.entities[2].grounding_box(), Some(STYLE_IMAGE_BOX));
    assert_eq!(layout.entities[3].kind(), EntityKind::Keypoints);
    assert_eq!(layout.grounded_count(), 3);
    assert_eq!(layout.people_count(), 1);
}

#[test]
fn minimal_document_uses_defaults() {
    let layout = Layout::from_json_str(r#"{"version": 1, "width": 64, "height": 32}"#)
        .expect("parse minimal");
    assert_eq!(layout.prompt, "");
    assert_eq!(layout.negative_prompt, "");
    assert!(layout.entities.is_empty());
    assert!(layout.inpaint.is_none());
    assert_eq!(layout.sampling, Sampling::default());
    let r = layout.sampling.resolve();
    assert_eq!(r.steps, 50);
    assert_eq!(r.guidance_scale, 7.5);
    assert_eq!(r.alpha0, 0.3);
    assert_eq!(r.alpha_decay, 0.0);
    assert_eq!(r.seed, None);
    assert_eq!(r.scheduler, SchedulerKind::Pndm);
}

#[test]
fn unknown_fields_are_ignored_for_forward_compatibility() {
    let json = r#"{
        "version": 1, "width": 512, "height": 512, "prompt": "p",
        "created_by": "a future Glichen", "canvas_color": [1, 2, 3],
        "entities": [{"type": "text_box", "phrase": "a", "box": [0, 0, 1, 1], "color": "red"}],
        "sampling": {"steps": 20, "eta": 0.5}
    }"#;
    let layout = Layout::from_json_str(json).expect("unknown fields must be ignored");
    assert_eq!(layout.entities, vec![text_box("a", [0.0, 0.0, 1.0, 1.0])]);
    assert_eq!(layout.sampling.steps, Some(20));
}

#[test]
fn unknown_entity_type_names_its_index() {
    let json = r#"{"version": 1, "width": 512, "height": 512, "entities": [
        {"type": "text_box", "phrase": "a", "box": [0, 0, 1, 1]},
        {"type": "text_box", "phrase": "b", "box": [0, 0, 1, 1]},
        {"type": "text_box", "phrase": "c", "box": [0, 0, 1, 1]},
        {"type": "circle", "center": [0.5, 0.5]}
    ]}"#;
    let err = Layout::from_json_str(json).expect_err("unknown type");
    assert_eq!(
        err.to_string(),
        r#"entities[3]: unknown entity type "circle" (expected text_box, image_box, style_image, keypoints)"#
    );
}

#[test]
fn serde_errors_carry_their_path() {
    let doc = |entities: &str| {
        format!(r#"{{"version": 1, "width": 512, "height": 512, "entities": {entities}}}"#)
    };
    let (path, msg) = field_error(Layout::from_json_str(&doc(
        r#"[{"type": "text_box", "phrase": "a", "box": [0, 0, 1, 1]},
            {"type": "text_box", "phrase": "b", "box": [0, 0, 1, 1]},
            {"type": "text_box", "phrase": "c", "box": [0, 0, 1]}]"#,
    )));
    assert_eq!(path, "entities[2].box");
    assert!(msg.contains("length"), "{msg}");

    let (path, msg) = field_error(Layout::from_json_str(&doc(
        r#"[{"type": "text_box", "box": [0, 0, 1, 1]}]"#,
    )));
    assert_eq!(path, "entities[0].phrase");
    assert!(msg.contains("missing"), "{msg}");

    let (path, _) = field_error(Layout::from_json_str(&doc(
        r#"[{"type": "text_box", "phrase": "a", "box": [0, "x", 1, 1]}]"#,
    )));
    assert_eq!(path, "entities[0].box");

    let (path, _) = field_error(Layout::from_json_str(&doc(
        r#"[{"type": "keypoints", "points": [null, null, null, [0.1]]}]"#,
    )));
    assert_eq!(path, "entities[0].points[3]");

    let (path, _) = field_error(Layout::from_json_str(&doc(r#"[{"phrase": "a"}]"#)));
    assert_eq!(path, "entities[0]");

    let (path, _) = field_error(Layout::from_json_str(&doc(r#"{"a": 1}"#)));
    assert_eq!(path, "entities");

    let (path, msg) = field_error(Layout::from_json_str(
        r#"{"version": 1, "width": 512, "height": 512, "sampling": {"scheduler": "lms"}}"#,
    ));
    assert_eq!(path, "sampling.scheduler");
    assert!(msg.contains("lms"), "{msg}");

    let (path, _) = field_error(Layout::from_json_str(
        r#"{"version": 1, "width": 512, "height": 512, "sampling": {"steps": -3}}"#,
    ));
    assert_eq!(path, "sampling.steps");

    let (path, _) = field_error(Layout::from_json_str(
        r#"{"version": 1, "width": "wide", "height": 512}"#,
    ));
    assert_eq!(path, "width");

    let (path, _) = field_error(Layout::from_json_str(r#"{"version": 1, "width": 512}"#));
    assert_eq!(path, "height");

    let (path, _) = field_error(Layout::from_json_str(
        r#"{"version": 1, "width": 512, "height": 512, "inpaint": {}}"#,
    ));
    assert_eq!(path, "inpaint.image");

    assert!(matches!(
        Layout::from_json_str("{not json"),
        Err(LayoutError::Json(_))
    ));
}

#[test]
fn newer_versions_are_refused() {
    let err = Layout::from_json_str(r#"{"version": 2, "width": 512, "height": 512}"#)
        .expect_err("version 2");
    assert_eq!(
        err.to_string(),
        "layout version 2 is newer than this Glichen supports (1)"
    );
    assert!(matches!(
        err,
        LayoutError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    ));
    // Refused before the rest is read: a newer document may have changed it.
    let err = Layout::from_json_str(r#"{"version": 7, "width": "changed"}"#).expect_err("v7");
    assert!(matches!(
        err,
        LayoutError::UnsupportedVersion { found: 7, .. }
    ));

    let (path, _) = field_error(Layout::from_json_str(r#"{"width": 512, "height": 512}"#));
    assert_eq!(path, "version");
    let (path, _) = field_error(Layout::from_json_str(
        r#"{"version": "1", "width": 512, "height": 512}"#,
    ));
    assert_eq!(path, "version");
    let (path, _) = field_error(Layout::from_json_str(
        r#"{"version": 0, "width": 512, "height": 512}"#,
    ));
    assert_eq!(path, "version");
    assert_eq!(LAYOUT_VERSION, 1);
}

#[test]
fn entity_order_and_duplicates_are_kept() {
    let mut layout = simple_layout();
    layout
        .entities
        .push(text_box("a dog", [0.1387, 0.2051, 0.4277, 0.709]));
    layout
        .entities
        .insert(0, text_box("a cat", [0.5, 0.5, 0.6, 0.6]));
    let back = Layout::from_json_str(&layout.to_json_pretty().expect("json")).expect("parse");
    let phrases: Vec<_> = back.entities.iter().filter_map(|e| e.phrase()).collect();
    assert_eq!(phrases, ["a cat", "a dog", "an apple", "a dog"]);
    assert_eq!(back, layout);
}

#[test]
fn load_errors_name_the_file() {
    let dir = TempDir::new("load-errors");
    let missing = dir.path().join("missing.json");
    let err = Layout::load(&missing).expect_err("missing file");
    assert!(matches!(err, LayoutError::Io { .. }));
    assert!(err.to_string().contains("missing.json"), "{err}");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"version": 2, "width": 1, "height": 1}"#).expect("write");
    let err = Layout::load(&bad).expect_err("newer version");
    let text = err.to_string();
    assert!(text.starts_with(&bad.display().to_string()), "{text}");
    assert!(text.ends_with("layout version 2 is newer than this Glichen supports (1)"));
}
