//! GLIGEN reference implementation (`gligen_inference.py`): its inference
//! `meta` dicts.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::layout::{
    Entity, EntityKind, Inpaint, Layout, LayoutError, Sampling, ValidationErrors,
    KEYPOINTS_PER_PERSON, STYLE_IMAGE_BOX,
};

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
                Entity::Map { kind, .. } => issues.push(
                    format!("entities[{i}]"),
                    format!(
                        "Glichen does not write {}s into GLIGEN meta dicts; run the layout \
                         with `glichen generate`",
                        kind.label()
                    ),
                ),
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
