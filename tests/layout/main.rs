//! Tests of the layout document (`glichen::layout`), one module per area: reading JSON with
//! field paths and versions (`parse`), writing and saving exactly (`write`), validation against
//! model limits (`validate`), diffusers / GLIGEN meta / COCO conversions (`convert`), image paths,
//! data URIs and embedding (`images`), undo history (`history`) and sampling settings
//! (`sampling`). The helpers below are shared by the modules.

mod convert;
mod history;
mod images;
mod parse;
mod sampling;
mod validate;
mod write;

use std::path::{Path, PathBuf};

use glichen::layout::{Entity, Layout, LayoutError, ValidationErrors};

/// A fresh, empty directory for one test (no tempfile crate here).
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("glichen-layout-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn entries(&self) -> Vec<String> {
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
pub(crate) fn example_json() -> String {
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

pub(crate) fn text_box(phrase: &str, bbox: [f64; 4]) -> Entity {
    Entity::TextBox {
        phrase: phrase.to_string(),
        bbox,
    }
}

pub(crate) fn person(points: Vec<Option<[f64; 2]>>) -> Entity {
    Entity::Keypoints { points }
}

pub(crate) fn full_person() -> Vec<Option<[f64; 2]>> {
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

pub(crate) fn simple_layout() -> Layout {
    Layout {
        prompt: "a dog and an apple".into(),
        entities: vec![
            text_box("a dog", [0.1387, 0.2051, 0.4277, 0.709]),
            text_box("an apple", [0.498, 0.4355, 0.8516, 0.7266]),
        ],
        ..Layout::default()
    }
}

/// Asserts an issue exists at `path` whose message contains `needle`.
#[track_caller]
pub(crate) fn assert_issue(errors: &ValidationErrors, path: &str, needle: &str) {
    assert!(
        errors
            .iter()
            .any(|i| i.path == path && i.message.contains(needle)),
        "no issue at {path:?} containing {needle:?}; got:\n{errors}"
    );
}

pub(crate) fn field_error(result: Result<Layout, LayoutError>) -> (String, String) {
    match result {
        Err(LayoutError::Field { path, message }) => (path, message),
        other => panic!("expected a field error, got {other:?}"),
    }
}
