//! Conversions to and from the formats GLIGEN users already have:
//! diffusers call arguments, the reference implementation's inference
//! `meta` dicts, and COCO annotations.
//!
//! Conversions never drop content silently: whatever the target cannot
//! express is reported (all of it at once) as
//! [`LayoutError::Unsupported`]. Within what both sides can express, a
//! round trip gives back what went in; the few exceptions are documented
//! on each function.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

use super::parse::{self, json_kind, optional, required};
use super::COCO_KEYPOINT_NAMES;
use super::{
    Entity, EntityKind, Inpaint, Layout, LayoutError, Sampling, SchedulerKind, ValidationErrors,
    KEYPOINTS_PER_PERSON, STYLE_IMAGE_BOX,
};

// ---------------------------------------------------------------------------
// diffusers
// ---------------------------------------------------------------------------

/// Keyword arguments of diffusers' `StableDiffusionGLIGENPipeline.__call__`,
/// so that a layout can be run in Python (`pipe(**args)`) or a Python call
/// reproduced here from a JSON dump of its kwargs.
///
/// Two fields are not pipeline kwargs and must be taken out before the
/// call: `seed` (build a `torch.Generator` from it) and, when set,
/// `gligen_inpaint_image` is a path/data URI that has to be loaded with
/// `diffusers.utils.load_image` first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffusersArgs {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Pixels; diffusers' `None` (the UNet's native size) reads as 512.
    #[serde(default = "default_side", deserialize_with = "side_or_default")]
    pub height: usize,
    #[serde(default = "default_side", deserialize_with = "side_or_default")]
    pub width: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_inference_steps: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gligen_scheduled_sampling_beta: Option<f64>,
    #[serde(default)]
    pub gligen_phrases: Vec<String>,
    /// Normalised `[x0, y0, x1, y1]`, like the layout's boxes.
    #[serde(default)]
    pub gligen_boxes: Vec<[f64; 4]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gligen_inpaint_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

fn default_side() -> usize {
    512
}

fn side_or_default<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Ok(Option::<usize>::deserialize(d)?.unwrap_or_else(default_side))
}

const DIFFUSERS: &str = "diffusers arguments";

impl Layout {
    /// The call arguments for diffusers' text-box GLIGEN pipeline. Image
    /// boxes, style images and keypoints have no place there, nor does a
    /// decaying grounding stage or a non-default scheduler (diffusers sets
    /// the scheduler on the pipeline, and its GLIGEN checkpoints ship with
    /// PNDM, so `pndm` is accepted and left implicit).
    pub fn to_diffusers_args(&self) -> Result<DiffusersArgs, LayoutError> {
        let mut issues = ValidationErrors::default();
        let mut phrases = Vec::new();
        let mut boxes = Vec::new();
        for (i, e) in self.entities.iter().enumerate() {
            match e {
                Entity::TextBox { phrase, bbox } => {
                    phrases.push(phrase.clone());
                    boxes.push(*bbox);
                }
                Entity::ImageBox { .. } | Entity::StyleImage { .. } => issues.push(
                    format!("entities[{i}]"),
                    format!(
                        "diffusers' StableDiffusionGLIGENPipeline takes text boxes only, not {} \
                         (those need StableDiffusionGLIGENTextImagePipeline)",
                        e.kind().plural()
                    ),
                ),
                Entity::Keypoints { .. } => issues.push(
                    format!("entities[{i}]"),
                    "diffusers has no keypoint GLIGEN pipeline",
                ),
            }
        }
        let s = &self.sampling;
        if matches!(s.alpha_decay, Some(d) if d != 0.0) {
            issues.push(
                "sampling.alpha_decay",
                "diffusers has no decaying grounding stage \
                 (gligen_scheduled_sampling_beta switches grounding off at once)",
            );
        }
        if s.scheduler == Some(SchedulerKind::Ddim) {
            issues.push(
                "sampling.scheduler",
                "diffusers takes the scheduler when the pipeline is built, not per call: \
                 set pipe.scheduler to a DDIMScheduler and leave it out here",
            );
        }
        if !issues.is_empty() {
            return Err(LayoutError::Unsupported {
                target: DIFFUSERS,
                issues,
            });
        }
        Ok(DiffusersArgs {
            prompt: self.prompt.clone(),
            negative_prompt: (!self.negative_prompt.is_empty())
                .then(|| self.negative_prompt.clone()),
            height: self.height as usize,
            width: self.width as usize,
            num_inference_steps: s.steps,
            guidance_scale: s.guidance_scale,
            gligen_scheduled_sampling_beta: s.alpha0,
            gligen_phrases: phrases,
            gligen_boxes: boxes,
            gligen_inpaint_image: self.inpaint.as_ref().map(|i| i.image.clone()),
            seed: s.seed,
        })
    }

    /// The layout a diffusers call describes. Lossless except that an empty
    /// `negative_prompt` comes back as `None` (the layout does not
    /// distinguish "empty" from "not given"; neither does the pipeline).
    pub fn from_diffusers_args(args: &DiffusersArgs) -> Result<Layout, LayoutError> {
        if args.gligen_phrases.len() != args.gligen_boxes.len() {
            return Err(LayoutError::field(
                "gligen_boxes",
                format!(
                    "{} boxes but {} phrases (diffusers needs one phrase per box)",
                    args.gligen_boxes.len(),
                    args.gligen_phrases.len()
                ),
            ));
        }
        let side = |name: &str, v: usize| {
            u32::try_from(v).map_err(|_| LayoutError::field(name, format!("{v} is too large")))
        };
        Ok(Layout {
            width: side("width", args.width)?,
            height: side("height", args.height)?,
            prompt: args.prompt.clone(),
            negative_prompt: args.negative_prompt.clone().unwrap_or_default(),
            entities: args
                .gligen_phrases
                .iter()
                .zip(&args.gligen_boxes)
                .map(|(phrase, bbox)| Entity::TextBox {
                    phrase: phrase.clone(),
                    bbox: *bbox,
                })
                .collect(),
            inpaint: args.gligen_inpaint_image.as_ref().map(|image| Inpaint {
                image: image.clone(),
            }),
            sampling: Sampling {
                steps: args.num_inference_steps,
                guidance_scale: args.guidance_scale,
                alpha0: args.gligen_scheduled_sampling_beta,
                alpha_decay: None,
                seed: args.seed,
                scheduler: None,
            },
        })
    }
}

// ---------------------------------------------------------------------------
// GLIGEN reference implementation (gligen_inference.py)
// ---------------------------------------------------------------------------

/// `locations` of a meta dict: boxes for the box checkpoints, or one list of
/// 17 `[x, y]` per person for the keypoint checkpoint (`[0, 0]` = absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GligenLocations {
    Boxes(Vec<[f64; 4]>),
    Keypoints(Vec<Vec<[f64; 2]>>),
}

impl Default for GligenLocations {
    fn default() -> Self {
        GligenLocations::Boxes(Vec::new())
    }
}

/// `text_mask` / `image_mask`: one number for all entries or one each;
/// 0 switches that entry's text (or image) feature off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GligenMask {
    All(f64),
    Each(Vec<f64>),
}

impl GligenMask {
    fn enabled(&self, i: usize) -> bool {
        match self {
            GligenMask::All(v) => *v != 0.0,
            GligenMask::Each(vs) => vs.get(i).is_none_or(|v| *v != 0.0),
        }
    }
}

/// Settings `gligen_inference.py` takes from its command line rather than
/// from the meta dict; kept under a `"glichen"` key (which the script
/// ignores) so that a round trip through a meta loses nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GligenMetaExtras {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub negative_prompt: String,
    #[serde(default, skip_serializing_if = "Sampling::is_unset")]
    pub sampling: Sampling,
}

impl GligenMetaExtras {
    fn is_empty(&self) -> bool {
        *self == GligenMetaExtras::default()
    }
}

/// One entry of `meta_list` in GLIGEN's `gligen_inference.py`, as JSON.
/// Python's `None` is JSON `null`: `phrases`/`images` use it for entries
/// without text or without an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GligenMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ckpt: Option<String>,
    pub prompt: String,
    /// Inpainting: the picture whose boxed regions are regenerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phrases: Option<Vec<Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<Option<String>>>,
    #[serde(default)]
    pub locations: GligenLocations,
    /// `[full, decay, off]` fractions of the steps, summing to 1. Missing
    /// means `[1, 0, 0]` in the reference code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha_type: Option<[f64; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_mask: Option<GligenMask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_mask: Option<GligenMask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_folder_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glichen: Option<GligenMetaExtras>,
    /// Keys this struct does not know, kept so they survive a round trip.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

const GLIGEN_META: &str = "GLIGEN inference meta";

/// The reference script always samples at 512×512 (64×64 latents).
const GLIGEN_SIDE: u32 = 512;

/// Meta keys of GLIGEN modalities a layout cannot express.
const GLIGEN_UNSUPPORTED_KEYS: [(&str, &str); 5] = [
    ("hed_image", "HED edge"),
    ("canny_image", "Canny edge"),
    ("depth", "depth map"),
    ("normal", "normal map"),
    ("sem", "semantic map"),
];

/// Alpha stages in a meta are fractions that must sum to 1 exactly in
/// Python; we accept float noise when reading.
const ALPHA_TYPE_EPS: f64 = 1e-6;

impl Layout {
    /// A `meta` dict for GLIGEN's `gligen_inference.py`. `ckpt` and
    /// `save_folder_name` are filled with the conventional checkpoint for
    /// the layout's modality (the script picks its input preparation from
    /// the checkpoint name) and `"glichen"`. `alpha_type` is always written
    /// (the script's default differs from ours), so defaulted alphas come
    /// back explicit from [`Layout::from_gligen_meta`]. Missing keypoints
    /// are written as `[0, 0]`, which is how the script marks them.
    pub fn to_gligen_meta(&self) -> Result<GligenMeta, LayoutError> {
        let mut issues = ValidationErrors::default();
        for (name, side) in [("width", self.width), ("height", self.height)] {
            if side != GLIGEN_SIDE {
                issues.push(
                    name,
                    format!(
                        "gligen_inference.py always generates {GLIGEN_SIDE}×{GLIGEN_SIDE}; this layout is {}×{}",
                        self.width, self.height
                    ),
                );
            }
        }
        let has_people = self.has_kind(EntityKind::Keypoints);
        let has_images = self
            .entities
            .iter()
            .any(|e| matches!(e, Entity::ImageBox { .. } | Entity::StyleImage { .. }));
        let mut phrases = Vec::new();
        let mut images = Vec::new();
        let mut boxes = Vec::new();
        let mut people = Vec::new();
        for (i, e) in self.entities.iter().enumerate() {
            if has_people && !matches!(e, Entity::Keypoints { .. }) {
                issues.push(
                    format!("entities[{i}]"),
                    format!(
                        "GLIGEN's keypoint checkpoint takes no {}, and no other checkpoint takes keypoints",
                        e.kind().plural()
                    ),
                );
                continue;
            }
            match e {
                Entity::TextBox { phrase, bbox } => {
                    phrases.push(Some(phrase.clone()));
                    images.push(None);
                    boxes.push(*bbox);
                }
                Entity::ImageBox {
                    image,
                    bbox,
                    phrase,
                } => {
                    phrases.push(phrase.clone());
                    images.push(Some(image.clone()));
                    boxes.push(*bbox);
                }
                Entity::StyleImage { image } => {
                    phrases.push(None);
                    images.push(Some(image.clone()));
                    boxes.push(STYLE_IMAGE_BOX);
                }
                Entity::Keypoints { points } => {
                    if points.len() != KEYPOINTS_PER_PERSON {
                        issues.push(
                            format!("entities[{i}].points"),
                            format!(
                                "GLIGEN reads exactly {KEYPOINTS_PER_PERSON} points per person, found {}",
                                points.len()
                            ),
                        );
                    }
                    people.push(points.iter().map(|p| p.unwrap_or([0.0, 0.0])).collect());
                }
            }
        }
        if has_people && self.inpaint.is_some() {
            issues.push("inpaint", "GLIGEN has no keypoint inpainting checkpoint");
        }
        if !issues.is_empty() {
            return Err(LayoutError::Unsupported {
                target: GLIGEN_META,
                issues,
            });
        }

        let r = self.sampling.resolve();
        let rest = 1.0 - r.alpha0 - r.alpha_decay;
        let mode = if self.inpaint.is_some() {
            "inpainting"
        } else {
            "generation"
        };
        let modality = if has_people {
            "keypoint"
        } else if has_images {
            "text_image"
        } else {
            "text"
        };
        let extras = GligenMetaExtras {
            negative_prompt: self.negative_prompt.clone(),
            // Alphas travel in alpha_type; everything else is a CLI flag.
            sampling: Sampling {
                alpha0: None,
                alpha_decay: None,
                ..self.sampling.clone()
            },
        };
        Ok(GligenMeta {
            ckpt: Some(format!(
                "../gligen_checkpoints/checkpoint_{mode}_{modality}.pth"
            )),
            prompt: self.prompt.clone(),
            input_image: self.inpaint.as_ref().map(|i| i.image.clone()),
            phrases: (!has_people).then_some(phrases),
            // The script treats a missing `images` as "no image anywhere".
            images: (has_images && !has_people).then_some(images),
            locations: if has_people {
                GligenLocations::Keypoints(people)
            } else {
                GligenLocations::Boxes(boxes)
            },
            alpha_type: Some([r.alpha0, r.alpha_decay, rest.max(0.0)]),
            text_mask: None,
            image_mask: None,
            save_folder_name: Some("glichen".to_string()),
            glichen: (!extras.is_empty()).then_some(extras),
            extra: Map::new(),
        })
    }

    /// The layout a GLIGEN meta dict describes (512×512). Entries whose text
    /// and image are both masked or missing are errors (the script would
    /// give them a box with no content). An image entry without a phrase at
    /// the style box `[0, 1, 0, 1]` becomes a style image. `[0, 0]`
    /// keypoints become absent points.
    pub fn from_gligen_meta(meta: &GligenMeta) -> Result<Layout, LayoutError> {
        for (key, what) in GLIGEN_UNSUPPORTED_KEYS {
            if meta.extra.contains_key(key) {
                return Err(LayoutError::field(
                    key,
                    format!("GLIGEN's {what} grounding has no Glichen layout equivalent"),
                ));
            }
        }
        let (alpha0, alpha_decay) = match meta.alpha_type {
            None => (1.0, 0.0),
            Some([a, d, rest]) => {
                let sum = a + d + rest;
                if !sum.is_finite() || (sum - 1.0).abs() > ALPHA_TYPE_EPS {
                    return Err(LayoutError::field(
                        "alpha_type",
                        format!("the three stages must sum to 1, found {sum}"),
                    ));
                }
                (a, d)
            }
        };

        let mut entities = Vec::new();
        match &meta.locations {
            GligenLocations::Keypoints(people) => {
                for person in people {
                    entities.push(Entity::Keypoints {
                        points: person
                            .iter()
                            .map(|p| (*p != [0.0, 0.0]).then_some(*p))
                            .collect(),
                    });
                }
            }
            GligenLocations::Boxes(boxes) => {
                for (name, list) in [("phrases", &meta.phrases), ("images", &meta.images)] {
                    if let Some(list) = list {
                        if list.len() != boxes.len() {
                            return Err(LayoutError::field(
                                name,
                                format!(
                                    "{} entries for {} locations (the script would silently drop the extra ones)",
                                    list.len(),
                                    boxes.len()
                                ),
                            ));
                        }
                    }
                }
                for (i, bbox) in boxes.iter().enumerate() {
                    let text_on = meta.text_mask.as_ref().is_none_or(|m| m.enabled(i));
                    let image_on = meta.image_mask.as_ref().is_none_or(|m| m.enabled(i));
                    let phrase = meta
                        .phrases
                        .as_ref()
                        .and_then(|p| p.get(i).cloned().flatten())
                        .filter(|_| text_on);
                    let image = meta
                        .images
                        .as_ref()
                        .and_then(|p| p.get(i).cloned().flatten())
                        .filter(|_| image_on);
                    entities.push(match (phrase, image) {
                        (None, Some(image)) if *bbox == STYLE_IMAGE_BOX => {
                            Entity::StyleImage { image }
                        }
                        (phrase, Some(image)) => Entity::ImageBox {
                            image,
                            bbox: *bbox,
                            phrase,
                        },
                        (Some(phrase), None) => Entity::TextBox {
                            phrase,
                            bbox: *bbox,
                        },
                        (None, None) => {
                            return Err(LayoutError::field(
                                format!("locations[{i}]"),
                                "this box has neither a phrase nor an image (or both are masked)",
                            ))
                        }
                    });
                }
            }
        }

        let extras = meta.glichen.clone().unwrap_or_default();
        Ok(Layout {
            width: GLIGEN_SIDE,
            height: GLIGEN_SIDE,
            prompt: meta.prompt.clone(),
            negative_prompt: extras.negative_prompt,
            entities,
            inpaint: meta.input_image.as_ref().map(|image| Inpaint {
                image: image.clone(),
            }),
            sampling: Sampling {
                alpha0: Some(alpha0),
                alpha_decay: Some(alpha_decay),
                ..extras.sampling
            },
        })
    }
}

// ---------------------------------------------------------------------------
// COCO
// ---------------------------------------------------------------------------

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
