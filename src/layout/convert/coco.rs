//! COCO annotation files (instances, person keypoints, captions).

use serde_json::{json, Value};

use crate::layout::parse::{self, json_kind, optional, required};
use crate::layout::{
    Entity, Layout, LayoutError, ValidationErrors, COCO_KEYPOINT_NAMES, KEYPOINTS_PER_PERSON,
};

/// Which image of a COCO annotation file to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CocoImageSelector {
    Id(u64),
    /// Matched against `file_name`; a path is matched by its last component.
    FileName(String),
}

impl From<u64> for CocoImageSelector {
    fn from(id: u64) -> Self {
        CocoImageSelector::Id(id)
    }
}

impl From<&str> for CocoImageSelector {
    fn from(name: &str) -> Self {
        CocoImageSelector::FileName(name.to_string())
    }
}

impl std::fmt::Display for CocoImageSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CocoImageSelector::Id(id) => write!(f, "id {id}"),
            CocoImageSelector::FileName(name) => write!(f, "file_name \"{name}\""),
        }
    }
}

struct CocoImage {
    id: u64,
    width: f64,
    height: f64,
}

fn clamp_unit(v: f64) -> f64 {
    v.clamp(0.0, 1.0)
}

/// Nearest multiple of 8, at least 8: what every Stable Diffusion VAE can
/// take, while keeping the picture's aspect ratio as closely as possible.
fn round_to_8(px: f64) -> u32 {
    let cells = (px / 8.0).round().max(1.0);
    (cells.min(f64::from(u32::MAX / 8))) as u32 * 8
}

fn array<'a>(path: &str, v: Option<&'a Value>) -> Result<&'a [Value], LayoutError> {
    match v {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(LayoutError::field(
            path,
            format!("expected an array, found {}", json_kind(other)),
        )),
    }
}

fn find_image(images: &[Value], selector: &CocoImageSelector) -> Result<CocoImage, LayoutError> {
    for (i, v) in images.iter().enumerate() {
        let path = format!("images[{i}]");
        let obj = parse::object(&path, v)?;
        let id: u64 = required(obj, &path, "id")?;
        let matches = match selector {
            CocoImageSelector::Id(want) => id == *want,
            CocoImageSelector::FileName(want) => {
                let name: Option<String> = optional(obj, &path, "file_name")?;
                let want_base = std::path::Path::new(want)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned());
                name.is_some_and(|n| n == *want || Some(&n) == want_base.as_ref())
            }
        };
        if !matches {
            continue;
        }
        let width: f64 = required(obj, &path, "width")?;
        let height: f64 = required(obj, &path, "height")?;
        for (name, v) in [("width", width), ("height", height)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(LayoutError::field(
                    format!("{path}.{name}"),
                    format!("must be positive, found {v}"),
                ));
            }
        }
        return Ok(CocoImage { id, width, height });
    }
    Err(LayoutError::field(
        "images",
        format!("no image with {selector}"),
    ))
}

impl Layout {
    /// Imports one image's annotations from a COCO file (instances, person
    /// keypoints, or a merge with captions).
    ///
    /// - Each annotation with a `bbox` becomes a text box whose phrase is its
    ///   category name, in file order; pixel boxes are divided by the image
    ///   size and clamped to [0, 1] (COCO boxes may overhang by rounding).
    /// - An annotation with at least one labelled keypoint (`v > 0`) also
    ///   gives a keypoints entity, right after its box; `v = 0` is `null`.
    /// - The canvas is the image size rounded to the nearest multiple of 8
    ///   (so it runs on any Stable Diffusion model as is); the boxes are
    ///   normalised, so the rounding does not move them. Sizes beyond the
    ///   model's limit are left for validation to report.
    /// - The prompt is `prompt`, else the image's first caption, else the
    ///   distinct category names joined by ", ".
    pub fn from_coco(
        json: &str,
        image: CocoImageSelector,
        prompt: Option<String>,
    ) -> Result<Layout, LayoutError> {
        let root = parse::exact_json(json).map_err(LayoutError::Json)?;
        let root = parse::object("(document)", &root)?;
        let images = match root.get("images") {
            Some(Value::Array(a)) => a.as_slice(),
            Some(other) => {
                return Err(LayoutError::field(
                    "images",
                    format!("expected an array, found {}", json_kind(other)),
                ))
            }
            None => {
                return Err(LayoutError::field(
                    "images",
                    "missing: this is not a COCO annotation file",
                ))
            }
        };
        let img = find_image(images, &image)?;

        let mut categories = std::collections::HashMap::new();
        for (i, v) in array("categories", root.get("categories"))?
            .iter()
            .enumerate()
        {
            let path = format!("categories[{i}]");
            let obj = parse::object(&path, v)?;
            let id: u64 = required(obj, &path, "id")?;
            let name: String = required(obj, &path, "name")?;
            categories.insert(id, name);
        }

        let mut entities = Vec::new();
        let mut caption: Option<String> = None;
        for (i, v) in array("annotations", root.get("annotations"))?
            .iter()
            .enumerate()
        {
            let path = format!("annotations[{i}]");
            let obj = parse::object(&path, v)?;
            let image_id: u64 = required(obj, &path, "image_id")?;
            if image_id != img.id {
                continue;
            }
            let bbox: Option<[f64; 4]> = optional(obj, &path, "bbox")?;
            let Some([x, y, w, h]) = bbox else {
                if caption.is_none() {
                    caption = optional(obj, &path, "caption")?;
                }
                continue;
            };
            let category_id: u64 = required(obj, &path, "category_id")?;
            let phrase = categories.get(&category_id).cloned().ok_or_else(|| {
                LayoutError::field(
                    format!("{path}.category_id"),
                    format!("no category with id {category_id}"),
                )
            })?;
            entities.push(Entity::TextBox {
                phrase,
                bbox: [
                    clamp_unit(x / img.width),
                    clamp_unit(y / img.height),
                    clamp_unit((x + w) / img.width),
                    clamp_unit((y + h) / img.height),
                ],
            });
            let keypoints: Option<Vec<f64>> = optional(obj, &path, "keypoints")?;
            if let Some(kp) = keypoints {
                if kp.len() != KEYPOINTS_PER_PERSON * 3 {
                    return Err(LayoutError::field(
                        format!("{path}.keypoints"),
                        format!(
                            "expected {} numbers ({KEYPOINTS_PER_PERSON} × [x, y, v]), found {}",
                            KEYPOINTS_PER_PERSON * 3,
                            kp.len()
                        ),
                    ));
                }
                let points: Vec<Option<[f64; 2]>> = kp
                    .chunks_exact(3)
                    .map(|c| {
                        (c[2] > 0.0)
                            .then(|| [clamp_unit(c[0] / img.width), clamp_unit(c[1] / img.height)])
                    })
                    .collect();
                if points.iter().any(Option::is_some) {
                    entities.push(Entity::Keypoints { points });
                }
            }
        }

        let prompt = prompt.or(caption).unwrap_or_else(|| {
            let mut names: Vec<&str> = Vec::new();
            for e in &entities {
                if let Some(p) = e.phrase() {
                    if !names.contains(&p) {
                        names.push(p);
                    }
                }
            }
            names.join(", ")
        });

        Ok(Layout {
            width: round_to_8(img.width),
            height: round_to_8(img.height),
            prompt,
            entities,
            ..Layout::default()
        })
    }

    /// Exports the layout as a one-image COCO annotation file (pixel boxes
    /// at the canvas size), the inverse of [`Layout::from_coco`]: a text box
    /// directly followed by a keypoints entity becomes one annotation with
    /// keypoints. A keypoints entity without a preceding box gets a
    /// `person` box around its points (so re-importing adds that box).
    /// COCO has no place for reference images, so image boxes and style
    /// images are refused; prompt and sampling are not exported.
    pub fn to_coco(&self, image_id: u64, file_name: &str) -> Result<Value, LayoutError> {
        let mut issues = ValidationErrors::default();
        for (i, e) in self.entities.iter().enumerate() {
            if matches!(e, Entity::ImageBox { .. } | Entity::StyleImage { .. }) {
                issues.push(
                    format!("entities[{i}]"),
                    format!("COCO annotations cannot hold {}", e.kind().plural()),
                );
            }
        }
        if !issues.is_empty() {
            return Err(LayoutError::Unsupported {
                target: "COCO",
                issues,
            });
        }

        let (w, h) = (f64::from(self.width), f64::from(self.height));
        let mut categories: Vec<(String, bool)> = Vec::new();
        let mut category_id = |name: &str, with_keypoints: bool| -> usize {
            let idx = match categories.iter().position(|(n, _)| n == name) {
                Some(idx) => idx,
                None => {
                    categories.push((name.to_string(), false));
                    categories.len() - 1
                }
            };
            categories[idx].1 |= with_keypoints;
            idx + 1
        };
        let keypoints_json = |points: &[Option<[f64; 2]>]| -> (Vec<f64>, usize) {
            let mut out = Vec::with_capacity(points.len() * 3);
            let mut visible = 0;
            for p in points {
                match p {
                    Some([x, y]) => {
                        out.extend([x * w, y * h, 2.0]);
                        visible += 1;
                    }
                    None => out.extend([0.0, 0.0, 0.0]),
                }
            }
            (out, visible)
        };

        let mut annotations = Vec::new();
        let mut i = 0;
        while i < self.entities.len() {
            let (phrase, bbox, points) = match (&self.entities[i], self.entities.get(i + 1)) {
                (Entity::TextBox { phrase, bbox }, Some(Entity::Keypoints { points })) => {
                    i += 2;
                    (phrase.as_str(), *bbox, Some(points))
                }
                (Entity::TextBox { phrase, bbox }, _) => {
                    i += 1;
                    (phrase.as_str(), *bbox, None)
                }
                (Entity::Keypoints { points }, _) => {
                    i += 1;
                    let placed: Vec<[f64; 2]> = points.iter().flatten().copied().collect();
                    let fold = |f: fn(f64, f64) -> f64, k: usize, init: f64| {
                        placed.iter().map(|p| p[k]).fold(init, f)
                    };
                    let bbox = if placed.is_empty() {
                        [0.0; 4]
                    } else {
                        [
                            fold(f64::min, 0, f64::INFINITY),
                            fold(f64::min, 1, f64::INFINITY),
                            fold(f64::max, 0, f64::NEG_INFINITY),
                            fold(f64::max, 1, f64::NEG_INFINITY),
                        ]
                    };
                    ("person", bbox, Some(points))
                }
                // Refused above.
                _ => {
                    i += 1;
                    continue;
                }
            };
            let [x0, y0, x1, y1] = bbox;
            // Width computed in pixel space so that importing
            // (x + width) / W lands back on x1 as closely as f64 allows.
            let (px, py) = (x0 * w, y0 * h);
            let (pw, ph) = (x1 * w - px, y1 * h - py);
            let mut ann = json!({
                "id": annotations.len() + 1,
                "image_id": image_id,
                "category_id": category_id(phrase, points.is_some()),
                "bbox": [px, py, pw, ph],
                "area": pw * ph,
                "iscrowd": 0,
            });
            if let (Some(points), Some(obj)) = (points, ann.as_object_mut()) {
                let (kp, visible) = keypoints_json(points);
                obj.insert("keypoints".to_string(), json!(kp));
                obj.insert("num_keypoints".to_string(), json!(visible));
            }
            annotations.push(ann);
        }

        let categories: Vec<Value> = categories
            .iter()
            .enumerate()
            .map(|(k, (name, with_keypoints))| {
                let mut c = json!({ "id": k + 1, "name": name, "supercategory": name });
                if *with_keypoints {
                    if let Some(obj) = c.as_object_mut() {
                        obj.insert("keypoints".to_string(), json!(COCO_KEYPOINT_NAMES));
                        obj.insert("skeleton".to_string(), json!([]));
                    }
                }
                c
            })
            .collect();

        Ok(json!({
            "images": [{
                "id": image_id,
                "file_name": file_name,
                "width": self.width,
                "height": self.height,
            }],
            "annotations": annotations,
            "categories": categories,
        }))
    }
}
