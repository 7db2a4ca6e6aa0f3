//! Writing layout JSON: exact round trips (awkward and arbitrary floats), the exact reader,
//! defaults, the serde impls, and atomic saving.

use glichen::layout::{Entity, Layout, LayoutError, ModelLimits};
use serde_json::json;

use crate::{example_json, field_error, text_box, TempDir};

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
