//! Tests of the layout document: reading, writing, validation, conversions,
//! images and undo history.

use std::path::{Path, PathBuf};

use glichen::layout::{
    base64_decode, base64_encode, decode_data_uri, encode_data_uri, grounding_alphas, is_data_uri,
    CocoImageSelector, DiffusersArgs, Entity, EntityKind, GligenLocations, GligenMeta, History,
    Inpaint, Layout, LayoutError, ModelLimits, Sampling, SchedulerKind, ValidationErrors,
    COCO_KEYPOINT_NAMES, LAYOUT_VERSION, STYLE_IMAGE_BOX,
};
use serde_json::json;

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// A fresh, empty directory for one test (no tempfile crate here).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("glichen-layout-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read temp dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn seventeen_nulls_but_nose() -> String {
    let mut points = vec!["[0.45, 0.08]".to_string()];
    points.extend(std::iter::repeat_n("null".to_string(), 16));
    format!("[{}]", points.join(", "))
}

/// The example document of the format description, verbatim in shape.
fn example_json() -> String {
    format!(
        r#"{{
  "version": 1,
  "width": 512, "height": 512,
  "prompt": "a dog and a red umbrella in the rain",
  "negative_prompt": "",
  "entities": [
    {{"type": "text_box", "phrase": "a dog", "box": [0.0, 0.5, 0.4, 1.0]}},
    {{"type": "image_box", "image": "ref.png", "box": [0.1, 0.1, 0.5, 0.5], "phrase": "optional text"}},
    {{"type": "style_image", "image": "data:image/png;base64,..."}},
    {{"type": "keypoints", "points": {}}}
  ],
  "inpaint": {{"image": "photo.png"}},
  "sampling": {{"steps": 50, "guidance_scale": 7.5, "alpha0": 0.3, "alpha_decay": 0.0, "seed": 42, "scheduler": "pndm"}}
}}"#,
        seventeen_nulls_but_nose()
    )
}

fn text_box(phrase: &str, bbox: [f64; 4]) -> Entity {
    Entity::TextBox {
        phrase: phrase.to_string(),
        bbox,
    }
}

fn person(points: Vec<Option<[f64; 2]>>) -> Entity {
    Entity::Keypoints { points }
}

fn full_person() -> Vec<Option<[f64; 2]>> {
    (0..17)
        .map(|k| {
            if k % 4 == 3 {
                None
            } else {
                Some([0.2 + 0.01 * k as f64, 0.1 + 0.04 * k as f64])
            }
        })
        .collect()
}

fn simple_layout() -> Layout {
    Layout {
        prompt: "a dog and an apple".into(),
        entities: vec![
            text_box("a dog", [0.1387, 0.2051, 0.4277, 0.709]),
            text_box("an apple", [0.498, 0.4355, 0.8516, 0.7266]),
        ],
        ..Layout::default()
    }
}

fn errors_of(layout: &Layout, limits: Option<&ModelLimits>) -> ValidationErrors {
    let result = match limits {
        Some(l) => layout.validate_for(l),
        None => layout.validate(),
    };
    result.expect_err("expected validation errors")
}

/// Asserts an issue exists at `path` whose message contains `needle`.
#[track_caller]
fn assert_issue(errors: &ValidationErrors, path: &str, needle: &str) {
    assert!(
        errors
            .iter()
            .any(|i| i.path == path && i.message.contains(needle)),
        "no issue at {path:?} containing {needle:?}; got:\n{errors}"
    );
}

fn field_error(result: Result<Layout, LayoutError>) -> (String, String) {
    match result {
        Err(LayoutError::Field { path, message }) => (path, message),
        other => panic!("expected a field error, got {other:?}"),
    }
}

fn png_bytes(img: &image::RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .expect("encode png");
    bytes
}

fn test_image() -> image::RgbImage {
    image::RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 50, y as u8 * 80, 200]))
}

// ---------------------------------------------------------------------------
// reading
// ---------------------------------------------------------------------------

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
        r#"{"version": 1, "width": 512, "height": 512, "sampling": {"scheduler": "euler"}}"#,
    ));
    assert_eq!(path, "sampling.scheduler");
    assert!(msg.contains("euler"), "{msg}");

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

// ---------------------------------------------------------------------------
// writing
// ---------------------------------------------------------------------------

#[test]
fn json_round_trip_is_exact() {
    let layout = Layout::from_json_str(&example_json()).expect("parse");
    let text = layout.to_json_pretty().expect("serialise");
    let back = Layout::from_json_str(&text).expect("reparse");
    assert_eq!(back, layout);
    // Writing again gives the same bytes: files diff cleanly.
    assert_eq!(back.to_json_pretty().expect("serialise"), text);
    // Short number arrays stay on one line; the version comes first.
    assert!(text.contains(r#""box": [0.0, 0.5, 0.4, 1.0]"#), "{text}");
    assert!(text.contains("[0.45, 0.08]"), "{text}");
    assert!(
        text.trim_start().starts_with("{\n  \"version\": 1,"),
        "{text}"
    );
}

#[test]
fn json_round_trip_keeps_awkward_floats() {
    let awkward = [
        0.1 + 0.2,
        1.0 / 3.0,
        2.0 / 3.0,
        123.4 / 640.0,
        0.7 - 1e-17,
        f64::MIN_POSITIVE,
        1.0 - f64::EPSILON,
    ];
    let mut layout = Layout::default();
    for (i, v) in awkward.iter().enumerate() {
        layout
            .entities
            .push(text_box(&format!("e{i}"), [*v, *v / 2.0, 1.0, 1.0]));
    }
    layout.sampling.guidance_scale = Some(7.123456789012345);
    let text = layout.to_json_pretty().expect("json");
    assert_eq!(Layout::from_json_str(&text).expect("parse"), layout);
}

#[test]
fn json_round_trip_is_exact_for_any_f64() {
    // serde_json's default float parser is sometimes one ULP off; the
    // layout reader must not be.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut layout = Layout::default();
    for i in 0..2000 {
        let (a, b, c, d) = (next(), next(), next(), next());
        layout
            .entities
            .push(text_box(&format!("e{i}"), [a, b, c, d]));
    }
    layout.sampling.guidance_scale = Some(next() * 20.0);
    layout.sampling.seed = Some(u64::MAX);
    let text = layout.to_json_pretty().expect("json");
    assert_eq!(Layout::from_json_str(&text).expect("parse"), layout);
}

#[test]
fn exact_reader_keeps_strings_and_error_positions() {
    let json = r#"{"version": 1, "width": 512, "height": 512,
        "prompt": "3.14 apples, -2 pears \"5\" e10", "negative_prompt": "1e999"}"#;
    let layout = Layout::from_json_str(json).expect("parse");
    assert_eq!(layout.prompt, r#"3.14 apples, -2 pears "5" e10"#);
    assert_eq!(layout.negative_prompt, "1e999");

    let err = Layout::from_json_str("{\n  \"version\": 1,\n  oops\n}").expect_err("syntax");
    assert!(matches!(err, LayoutError::Json(_)));
    assert!(err.to_string().contains("line 3"), "{err}");
    let err = Layout::from_json_str(r#"{"version": 1, "width": 01, "height": 2}"#)
        .expect_err("leading zero");
    assert!(matches!(err, LayoutError::Json(_)), "{err}");
    let err = Layout::from_json_str(r#"{"version": 1, "width": 1e999, "height": 2}"#)
        .expect_err("out of range");
    assert!(matches!(err, LayoutError::Json(_)), "{err}");
    let (path, _) = field_error(Layout::from_json_str(
        r#"{"version": 1, "width": 512.5, "height": 512}"#,
    ));
    assert_eq!(path, "width");
}

#[test]
fn default_layout_and_empty_sampling() {
    let layout = Layout::default();
    assert_eq!((layout.width, layout.height), (512, 512));
    assert!(layout.prompt.is_empty() && layout.entities.is_empty());
    let text = layout.to_json_pretty().expect("json");
    assert!(!text.contains("sampling"), "{text}");
    assert!(!text.contains("inpaint"), "{text}");
    assert!(text.contains(r#""entities": []"#), "{text}");
    assert_eq!(Layout::from_json_str(&text).expect("parse"), layout);
    assert!(layout.validate().is_ok());
    assert!(layout.validate_for(&ModelLimits::default()).is_ok());
}

#[test]
fn serde_impls_go_through_the_checked_reader() {
    let layout: Layout = serde_json::from_str(&example_json()).expect("serde");
    assert_eq!(
        layout,
        Layout::from_json_str(&example_json()).expect("parse")
    );
    let err = serde_json::from_str::<Layout>(r#"{"version": 3, "width": 1, "height": 1}"#)
        .expect_err("v3");
    assert!(err.to_string().contains("newer"), "{err}");
    let e: Entity =
        serde_json::from_str(r#"{"type": "text_box", "phrase": "x", "box": [0, 0, 1, 1]}"#)
            .expect("entity");
    assert_eq!(e, text_box("x", [0.0, 0.0, 1.0, 1.0]));
    assert_eq!(
        serde_json::to_value(&e).expect("to value"),
        json!({"type": "text_box", "phrase": "x", "box": [0.0, 0.0, 1.0, 1.0]})
    );
}

#[test]
fn save_is_atomic_and_leaves_no_temp_files() {
    let dir = TempDir::new("save");
    let path = dir.path().join("scene.layout.json");
    let layout = Layout::from_json_str(&example_json()).expect("parse");
    layout.save(&path).expect("save");
    assert_eq!(dir.entries(), ["scene.layout.json"]);
    assert_eq!(Layout::load(&path).expect("load"), layout);

    // Overwrite.
    let mut edited = layout.clone();
    edited.prompt = "edited".into();
    edited.save(&path).expect("save again");
    assert_eq!(dir.entries(), ["scene.layout.json"]);
    assert_eq!(Layout::load(&path).expect("load").prompt, "edited");

    // A layout that cannot be serialised leaves the file untouched.
    let before = std::fs::read(&path).expect("read");
    let mut broken = edited.clone();
    if let Some(b) = broken.entities[0].bbox_mut() {
        b[2] = f64::NAN;
    }
    broken.sampling.guidance_scale = Some(f64::INFINITY);
    let err = broken.save(&path).expect_err("NaN cannot be saved");
    let text = err.to_string();
    assert!(text.contains("entities[0].box[2]"), "{text}");
    assert!(text.contains("sampling.guidance_scale"), "{text}");
    assert_eq!(std::fs::read(&path).expect("read"), before);
    assert_eq!(dir.entries(), ["scene.layout.json"]);

    // A folder that does not exist: error names the file, nothing created.
    let nowhere = dir.path().join("no-such-dir").join("x.json");
    let err = layout.save(&nowhere).expect_err("no folder");
    assert!(err.to_string().contains("x.json"), "{err}");
    assert_eq!(dir.entries(), ["scene.layout.json"]);
}

// ---------------------------------------------------------------------------
// validation
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// conversions
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// images
// ---------------------------------------------------------------------------

#[test]
fn base64_matches_the_rfc_vectors() {
    let vectors = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in vectors {
        assert_eq!(base64_encode(plain.as_bytes()), encoded);
        assert_eq!(base64_decode(encoded).expect("decode"), plain.as_bytes());
    }
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(base64_decode(&base64_encode(&all)).expect("decode"), all);
    // Lenient: no padding, line breaks, URL-safe alphabet.
    assert_eq!(base64_decode("Zm9vYg").expect("no pad"), b"foob");
    assert_eq!(base64_decode("Zm9v\nYmFy\n").expect("newlines"), b"foobar");
    assert_eq!(
        base64_decode("-_8=").expect("url-safe"),
        base64_decode("+/8=").expect("std")
    );
    assert!(base64_decode("Zm9v!").is_err());
    assert!(base64_decode("Zm9vY").is_err());
    assert!(base64_decode("Zg==Zg==").is_err());
}

#[test]
fn data_uri_round_trip_with_a_generated_png() {
    let dir = TempDir::new("data-uri");
    let img = test_image();
    let bytes = png_bytes(&img);
    std::fs::write(dir.path().join("ref.png"), &bytes).expect("write png");
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(img.clone())
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .expect("encode jpeg");
    std::fs::write(dir.path().join("photo.jpg"), &jpeg).expect("write jpeg");

    let mut layout = Layout {
        entities: vec![
            text_box("a dog", [0.0, 0.0, 0.5, 0.5]),
            Entity::ImageBox {
                image: "ref.png".into(),
                bbox: [0.5, 0.5, 1.0, 1.0],
                phrase: None,
            },
            Entity::StyleImage {
                image: "ref.png".into(),
            },
        ],
        inpaint: Some(Inpaint {
            image: "photo.jpg".into(),
        }),
        ..Layout::default()
    };
    let base = Some(dir.path());
    let from_file = layout.resolve_image("ref.png", base).expect("resolve path");
    assert_eq!(from_file.to_rgb8(), img);
    assert_eq!(layout.entity_image(2, base).expect("style").to_rgb8(), img);

    // A layout saved next to its images finds them via base_dir.
    let layout_path = dir.path().join("scene.json");
    layout.save(&layout_path).expect("save");
    let loaded = Layout::load(&layout_path).expect("load");
    let base_dir = Layout::base_dir(&layout_path);
    assert_eq!(
        loaded.entity_image(1, base_dir).expect("image").to_rgb8(),
        img
    );

    assert_eq!(layout.embed_images(base).expect("embed"), 2);
    let uri = layout.entities[1].image().expect("image").to_string();
    assert!(uri.starts_with("data:image/png;base64,"), "{uri}");
    assert!(is_data_uri(&uri));
    assert_eq!(layout.entities[2].image(), Some(uri.as_str()));
    // Embedded byte for byte, no re-encoding.
    let (media_type, decoded) = decode_data_uri(&uri).expect("decode");
    assert_eq!(media_type, "image/png");
    assert_eq!(decoded, bytes);
    let inpaint_uri = &layout.inpaint.as_ref().expect("inpaint").image;
    assert!(inpaint_uri.starts_with("data:image/jpeg;base64,"));
    assert_eq!(decode_data_uri(inpaint_uri).expect("jpeg").1, jpeg);

    // Resolvable without any folder, and through a JSON round trip.
    assert_eq!(
        layout.resolve_image(&uri, None).expect("uri").to_rgb8(),
        img
    );
    let back = Layout::from_json_str(&layout.to_json_pretty().expect("json")).expect("parse");
    assert_eq!(back, layout);
    assert_eq!(back.entity_image(1, None).expect("image").to_rgb8(), img);
    let photo = back.inpaint_image(None).expect("inpaint").expect("some");
    assert_eq!((photo.width(), photo.height()), (5, 3));
    assert_eq!(layout.embed_images(None).expect("idempotent"), 0);

    // encode_data_uri builds the same thing by hand.
    assert_eq!(encode_data_uri(&bytes, "image/png"), uri);
    back.validate().expect("valid");
}

#[test]
fn image_errors_name_the_entity() {
    let dir = TempDir::new("image-errors");
    std::fs::write(dir.path().join("notes.png"), b"this is not a png").expect("write");
    let mut layout = Layout {
        entities: vec![
            text_box("a", [0.0, 0.0, 1.0, 1.0]),
            Entity::ImageBox {
                image: "missing.png".into(),
                bbox: [0.0, 0.0, 1.0, 1.0],
                phrase: None,
            },
            Entity::StyleImage {
                image: "notes.png".into(),
            },
            Entity::StyleImage {
                image: "data:image/png;base64,@@@".into(),
            },
        ],
        ..Layout::default()
    };
    let base = Some(dir.path());
    let err = layout
        .resolve_image("missing.png", base)
        .expect_err("missing");
    let text = err.to_string();
    assert!(
        text.starts_with("entities[1].image: cannot read "),
        "{text}"
    );
    assert!(text.contains("missing.png"), "{text}");

    let err = layout.entity_image(2, base).expect_err("not a png");
    assert!(err.to_string().starts_with("entities[2].image: "), "{err}");
    assert!(err.to_string().contains("notes.png"), "{err}");

    let err = layout.entity_image(3, base).expect_err("bad base64");
    assert!(err.to_string().starts_with("entities[3].image: "), "{err}");
    let err = layout.entity_image(0, base).expect_err("text box");
    assert!(err.to_string().contains("text_box has no image"), "{err}");

    // Embedding is all-or-nothing.
    let before = layout.clone();
    let err = layout.embed_images(base).expect_err("missing file");
    assert!(err.to_string().starts_with("entities[1].image"), "{err}");
    assert_eq!(layout, before);
}

// ---------------------------------------------------------------------------
// history
// ---------------------------------------------------------------------------

fn with_prompt(prompt: &str) -> Layout {
    Layout {
        prompt: prompt.into(),
        ..Layout::default()
    }
}

#[test]
fn history_undo_redo() {
    let mut history = History::new();
    let mut doc = with_prompt("a");
    assert!(!history.can_undo() && !history.can_redo());
    assert!(!history.undo(&mut doc));

    for next in ["b", "c"] {
        history.push(&doc);
        doc = with_prompt(next);
    }
    assert!(history.can_undo());
    assert!(history.undo(&mut doc));
    assert_eq!(doc.prompt, "b");
    assert!(history.undo(&mut doc));
    assert_eq!(doc.prompt, "a");
    assert!(!history.undo(&mut doc));
    assert!(history.can_redo());
    assert!(history.redo(&mut doc));
    assert_eq!(doc.prompt, "b");

    // A new edit forgets the redo branch.
    history.push(&doc);
    doc = with_prompt("d");
    assert!(!history.can_redo());
    assert!(!history.redo(&mut doc));
    assert!(history.undo(&mut doc));
    assert_eq!(doc.prompt, "b");
    assert!(history.redo(&mut doc));
    assert_eq!(doc.prompt, "d");
}

#[test]
fn history_coalesces_drags() {
    let mut history = History::new();
    let mut doc = simple_layout();
    let start = doc.clone();
    // A drag: one push per mouse move, same key.
    for step in 1..=10 {
        history.push_coalesced(&doc, "move entities[0]");
        if let Some(b) = doc.entities[0].bbox_mut() {
            b[0] = 0.01 * step as f64;
        }
    }
    assert_eq!(history.undo_len(), 1);
    let dragged = doc.clone();
    assert!(history.undo(&mut doc));
    assert_eq!(doc, start);
    assert!(history.redo(&mut doc));
    assert_eq!(doc, dragged);

    // Another key, or a broken run, starts a new step.
    history.push_coalesced(&doc, "move entities[1]");
    doc.entities[1] = text_box("a pear", [0.5, 0.5, 0.9, 0.9]);
    history.break_coalescing();
    history.push_coalesced(&doc, "move entities[1]");
    doc.prompt = "pears".into();
    assert_eq!(history.undo_len(), 3);
}

#[test]
fn history_groups_and_noops() {
    let mut history = History::new();
    let mut doc = with_prompt("start");
    history.begin_group();
    for word in ["one", "two", "three"] {
        history.push(&doc);
        doc.prompt = word.into();
        history.begin_group(); // nested groups are part of the outer one
        history.push(&doc);
        doc.prompt.push('!');
        history.end_group();
    }
    history.end_group();
    history.end_group(); // extra end is harmless
    assert!(!history.in_group());
    assert_eq!(history.undo_len(), 1);
    assert!(history.undo(&mut doc));
    assert_eq!(doc.prompt, "start");

    // A pushed edit that changed nothing is skipped by undo.
    let mut history = History::new();
    let mut doc = with_prompt("x");
    history.push(&doc);
    doc.prompt = "y".into();
    history.push(&doc); // click without drag: nothing changes
    assert!(history.undo(&mut doc));
    assert_eq!(doc.prompt, "x");
}

#[test]
fn history_is_bounded() {
    let mut history = History::with_limit(3);
    let mut doc = with_prompt("0");
    for i in 1..=10 {
        history.push(&doc);
        doc = with_prompt(&i.to_string());
    }
    assert_eq!(history.undo_len(), 3);
    let mut undone = 0;
    while history.undo(&mut doc) {
        undone += 1;
    }
    assert_eq!(undone, 3);
    assert_eq!(doc.prompt, "7");
    history.clear();
    assert!(!history.can_undo() && !history.can_redo());
}

// ---------------------------------------------------------------------------
// small pieces
// ---------------------------------------------------------------------------

#[test]
fn scheduler_kind_parses_and_prints() {
    assert_eq!("ddim".parse::<SchedulerKind>(), Ok(SchedulerKind::Ddim));
    assert_eq!(" PNDM ".parse::<SchedulerKind>(), Ok(SchedulerKind::Pndm));
    assert_eq!("plms".parse::<SchedulerKind>(), Ok(SchedulerKind::Pndm));
    let err = "euler".parse::<SchedulerKind>().expect_err("unknown");
    assert_eq!(
        err.to_string(),
        r#"unknown scheduler "euler" (expected ddim or pndm)"#
    );
    for kind in SchedulerKind::ALL {
        assert_eq!(kind.to_string().parse::<SchedulerKind>(), Ok(kind));
        assert_eq!(
            serde_json::to_value(kind).expect("json"),
            json!(kind.to_string())
        );
    }
}

#[test]
fn grounding_alphas_follow_gligen() {
    assert_eq!(
        grounding_alphas(0.3, 0.0, 10),
        [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
    assert_eq!(
        grounding_alphas(0.2, 0.4, 10),
        [1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
    assert_eq!(grounding_alphas(1.0, 0.0, 4), [1.0; 4]);
    assert!(grounding_alphas(0.0, 0.0, 0).is_empty());
    let r = Sampling::default().resolve();
    assert_eq!(r.grounding_alphas().len(), 50);
    assert_eq!(
        r.grounding_alphas().iter().filter(|a| **a == 1.0).count(),
        15
    );
}
