//! Layout documents: what the user asks the model to draw, and where.
//!
//! A layout is the one file format shared by the studio, the CLI and the
//! pipeline, so it is deliberately model-agnostic: it says *what* goes
//! *where* (boxes in normalised coordinates, keypoints, reference images) and
//! leaves it to [`Layout::validate_for`] to say whether a given checkpoint can
//! honour it. Reading is strict about the things that would otherwise be
//! silently misread (versions, entity types, coordinates) and lenient about
//! additions (unknown fields are ignored, with a warning) so that older builds can open files
//! written by newer ones whenever that is safe.
//!
//! Submodules:
//! - `parse`: JSON → [`Layout`] with error paths such as `entities[2].box`.
//! - `validate`: [`ValidationErrors`] / [`ModelLimits`].
//! - `convert`: diffusers call arguments, GLIGEN inference meta, COCO.
//! - `images`: data URIs and image resolution.
//! - `import`: "open anything": layouts, Glichen PNGs and the converted formats, by content.
//! - `history`: undo/redo snapshots for the editor.
//! - `keypoints`: the COCO person: keypoint names, skeleton and pose geometry.

mod convert;
mod history;
mod images;
pub mod import;
pub mod keypoints;
mod parse;
pub use parse::{MAX_LAYOUT_BYTES, MAX_LAYOUT_VALUES};
pub mod png;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

pub use convert::{
    CocoImageSelector, DiffusersArgs, GligenLocations, GligenMask, GligenMeta, GligenMetaExtras,
};
pub use history::{History, DEFAULT_HISTORY_LIMIT};
pub use images::{
    base64_decode, base64_encode, decode_data_uri, decode_picture, encode_data_uri, is_data_uri,
    media_type_of, picture_header, picture_path, png_data_uri, read_picture, MAX_PICTURE_BYTES,
    MAX_PICTURE_SIDE, SUPPORTED_PICTURES,
};
pub use keypoints::{COCO_KEYPOINT_NAMES, KEYPOINTS_PER_PERSON};
pub use validate::{ModelLimits, ValidationErrors, ValidationIssue};

/// The newest document version this build understands. Files carrying a
/// larger number are refused rather than half-read: a newer version may have
/// changed the meaning of fields we would otherwise accept.
pub const LAYOUT_VERSION: u64 = 1;

/// The box GLIGEN's reference code gives a style image (`[0, 1, 0, 1]`).
/// It is deliberately degenerate: the style token occupies a grounding slot
/// but covers no area, so it steers the whole picture instead of a region.
pub const STYLE_IMAGE_BOX: [f64; 4] = [0.0, 1.0, 0.0, 1.0];

/// Sampling defaults used when a layout leaves a field out. They are the
/// values diffusers' `StableDiffusionGLIGENPipeline` uses, so that a layout
/// without a `sampling` block behaves the same here and there.
pub const DEFAULT_STEPS: usize = 50;
/// See [`DEFAULT_STEPS`].
pub const DEFAULT_GUIDANCE_SCALE: f64 = 7.5;
/// See [`DEFAULT_STEPS`]; diffusers' `gligen_scheduled_sampling_beta`.
pub const DEFAULT_ALPHA0: f64 = 0.3;
/// See [`DEFAULT_STEPS`]; diffusers has no decay stage.
pub const DEFAULT_ALPHA_DECAY: f64 = 0.0;

/// Everything that can go wrong reading, writing or converting a layout.
/// Messages carry a path (`entities[2].box`, a file name) because the user
/// has to find the offending spot in a file they may not have written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another error, attributed to the file it came from.
    #[error("{}: {inner}", path.display())]
    InFile {
        path: PathBuf,
        inner: Box<LayoutError>,
    },
    /// The text is not JSON at all (line and column are in the message).
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A field is missing or has the wrong shape.
    #[error("{path}: {message}")]
    Field { path: String, message: String },
    /// The document was written by a newer Glichen.
    #[error("layout version {found} is newer than this Glichen supports ({supported})")]
    UnsupportedVersion { found: u64, supported: u64 },
    /// An entity `type` this build does not know.
    #[error(
        "{path}: unknown entity type \"{found}\" (expected text_box, image_box, style_image, keypoints)"
    )]
    UnknownEntityType { path: String, found: String },
    /// An image reference could not be read or decoded.
    #[error("{path}: {message}")]
    Image { path: String, message: String },
    /// The layout uses something the target format cannot express.
    #[error("cannot convert to {target}:\n{issues}")]
    Unsupported {
        target: &'static str,
        issues: ValidationErrors,
    },
    /// JSON has no NaN or infinity; writing them would produce a file that
    /// cannot be read back.
    #[error("cannot write non-finite numbers to JSON:\n{0}")]
    NonFinite(ValidationErrors),
    /// The document is none of the formats [`import`] reads (or its size is past their limit).
    #[error("{0}")]
    NotADocument(String),
    /// The layout failed validation.
    #[error("invalid layout:\n{0}")]
    Invalid(#[from] ValidationErrors),
}

impl LayoutError {
    pub(crate) fn field(path: impl Into<String>, message: impl Into<String>) -> Self {
        LayoutError::Field {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Attributes the error to `path` (used by load/save so that the user
    /// knows which of several files is at fault).
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            e @ (LayoutError::Io { .. } | LayoutError::InFile { .. }) => e,
            e => LayoutError::InFile {
                path: path.to_path_buf(),
                inner: Box::new(e),
            },
        }
    }
}

/// Which noise scheduler to sample with: the layout's `sampling.scheduler`, the command line's
/// `--scheduler`, and the scheduler the pipeline builds. Each is the diffusers class of that name
/// built with `from_config(<the model's scheduler config>)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    Ddim,
    /// PNDM (PLMS): what GLIGEN's checkpoints ship with and diffusers uses.
    #[default]
    Pndm,
    /// DPM-Solver++ 2M (`DPMSolverMultistepScheduler`).
    #[serde(rename = "dpmpp_2m")]
    Dpmpp2m,
    /// DPM-Solver++ 2M with Karras sigmas (`use_karras_sigmas=True`).
    #[serde(rename = "dpmpp_2m_karras")]
    Dpmpp2mKarras,
    /// Euler, deterministic (`EulerDiscreteScheduler`).
    Euler,
    /// UniPC, bh2 (`UniPCMultistepScheduler`).
    #[serde(rename = "unipc")]
    UniPc,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 6] = [
        SchedulerKind::Ddim,
        SchedulerKind::Pndm,
        SchedulerKind::Dpmpp2m,
        SchedulerKind::Dpmpp2mKarras,
        SchedulerKind::Euler,
        SchedulerKind::UniPc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::Pndm => "pndm",
            SchedulerKind::Dpmpp2m => "dpmpp_2m",
            SchedulerKind::Dpmpp2mKarras => "dpmpp_2m_karras",
            SchedulerKind::Euler => "euler",
            SchedulerKind::UniPc => "unipc",
        }
    }

    /// The diffusers class name (`DDIMScheduler`, `DPMSolverMultistepScheduler`, ...).
    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::Pndm => "PNDMScheduler",
            SchedulerKind::Dpmpp2m | SchedulerKind::Dpmpp2mKarras => "DPMSolverMultistepScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::UniPc => "UniPCMultistepScheduler",
        }
    }

    /// Maps a diffusers `_class_name` to a scheduler (`None` for any other class). A
    /// `DPMSolverMultistepScheduler` config maps to `dpmpp_2m`; whether it uses Karras sigmas is
    /// the config's `use_karras_sigmas`, which the caller reads.
    pub fn from_class_name(name: &str) -> Option<Self> {
        match name {
            "DDIMScheduler" => Some(SchedulerKind::Ddim),
            "PNDMScheduler" => Some(SchedulerKind::Pndm),
            "DPMSolverMultistepScheduler" => Some(SchedulerKind::Dpmpp2m),
            "EulerDiscreteScheduler" => Some(SchedulerKind::Euler),
            "UniPCMultistepScheduler" => Some(SchedulerKind::UniPc),
            _ => None,
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`SchedulerKind::from_str`]; separate from [`LayoutError`] so that
/// clap can use it directly as a value parser error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown scheduler \"{0}\" (expected ddim, pndm, dpmpp_2m, dpmpp_2m_karras, euler or unipc)"
)]
pub struct ParseSchedulerError(pub String);

impl FromStr for SchedulerKind {
    type Err = ParseSchedulerError;

    /// The short names (`-` and `_` alike), case and surrounding spaces ignored, and diffusers'
    /// class names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "ddim" | "ddimscheduler" => Ok(SchedulerKind::Ddim),
            // "plms" is what GLIGEN's own code calls the same sampler.
            "pndm" | "plms" | "pndmscheduler" => Ok(SchedulerKind::Pndm),
            "dpmpp_2m" | "dpm++_2m" | "dpmsolvermultistepscheduler" => Ok(SchedulerKind::Dpmpp2m),
            "dpmpp_2m_karras" | "dpm++_2m_karras" => Ok(SchedulerKind::Dpmpp2mKarras),
            "euler" | "eulerdiscretescheduler" => Ok(SchedulerKind::Euler),
            "unipc" | "uni_pc" | "unipcmultistepscheduler" => Ok(SchedulerKind::UniPc),
            _ => Err(ParseSchedulerError(s.to_string())),
        }
    }
}

/// Sampling settings. Every field is optional so that a layout only pins
/// what the user actually chose; the rest follows the model/CLI defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sampling {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guidance_scale: Option<f64>,
    /// Fraction of the steps with full grounding (GLIGEN's first
    /// `alpha_type` stage, diffusers' `gligen_scheduled_sampling_beta`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha0: Option<f64>,
    /// Fraction of the steps over which grounding fades linearly to zero
    /// (GLIGEN's second `alpha_type` stage). The remainder runs ungrounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha_decay: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<SchedulerKind>,
}

/// [`Sampling`] with the defaults filled in; the seed stays optional because
/// "no seed" means "pick a random one", not a fixed default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResolvedSampling {
    pub steps: usize,
    pub guidance_scale: f64,
    pub alpha0: f64,
    pub alpha_decay: f64,
    pub seed: Option<u64>,
    pub scheduler: SchedulerKind,
}

impl Sampling {
    /// True when nothing is pinned, so the block can be left out of the file.
    pub fn is_unset(&self) -> bool {
        *self == Sampling::default()
    }

    pub fn resolve(&self) -> ResolvedSampling {
        ResolvedSampling {
            steps: self.steps.unwrap_or(DEFAULT_STEPS),
            guidance_scale: self.guidance_scale.unwrap_or(DEFAULT_GUIDANCE_SCALE),
            alpha0: self.alpha0.unwrap_or(DEFAULT_ALPHA0),
            alpha_decay: self.alpha_decay.unwrap_or(DEFAULT_ALPHA_DECAY),
            seed: self.seed,
            scheduler: self.scheduler.unwrap_or_default(),
        }
    }
}

impl ResolvedSampling {
    /// Per-step grounding strength (the gated attention's `scale`), in
    /// sampling order. It follows GLIGEN's `alpha_generator`: the stage
    /// lengths are truncated (`int(fraction * steps)`), the decay runs
    /// `(n-1)/n, …, 1/n, 0` and the rest of the steps are 0. Kept here so
    /// that every consumer agrees on what `alpha0`/`alpha_decay` mean.
    pub fn grounding_alphas(&self) -> Vec<f32> {
        grounding_alphas(self.alpha0, self.alpha_decay, self.steps)
    }
}

/// See [`ResolvedSampling::grounding_alphas`].
pub fn grounding_alphas(alpha0: f64, alpha_decay: f64, steps: usize) -> Vec<f32> {
    let frac = |f: f64| -> usize {
        if f.is_finite() && f > 0.0 {
            ((f * steps as f64).floor() as usize).min(steps)
        } else {
            0
        }
    };
    let full = frac(alpha0);
    let decay = frac(alpha_decay).min(steps - full);
    let mut alphas = Vec::with_capacity(steps);
    alphas.extend(std::iter::repeat_n(1.0f32, full));
    alphas.extend((0..decay).rev().map(|k| k as f32 / decay as f32));
    alphas.resize(steps, 0.0);
    alphas
}

/// Inpainting: regenerate the boxed regions of an existing picture.
/// GLIGEN derives the mask from the boxes, so only the image is stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inpaint {
    /// Path relative to the layout file, or a data URI.
    pub image: String,
}

/// What kind an [`Entity`] is, for messages and capability checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    TextBox,
    ImageBox,
    StyleImage,
    Keypoints,
    Map,
}

impl EntityKind {
    /// The `type` tag in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::TextBox => "text_box",
            EntityKind::ImageBox => "image_box",
            EntityKind::StyleImage => "style_image",
            EntityKind::Keypoints => "keypoints",
            EntityKind::Map => "map",
        }
    }

    /// Plural for user-facing messages ("this model does not take image boxes").
    pub fn plural(self) -> &'static str {
        match self {
            EntityKind::TextBox => "text boxes",
            EntityKind::ImageBox => "image boxes",
            EntityKind::StyleImage => "style images",
            EntityKind::Keypoints => "keypoints",
            EntityKind::Map => "spatial maps",
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a whole-image spatial map, one per original GLIGEN checkpoint
/// (`gligen/gligen-generation-{hed,canny,depth,normal,sem}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapKind {
    /// HED soft edges.
    Hed,
    /// Canny edges.
    Canny,
    /// Monocular depth, near = bright.
    Depth,
    /// Surface normals as RGB.
    Normal,
    /// ADE20K semantic classes as grey levels (class index = level).
    Sem,
}

impl MapKind {
    pub const ALL: [MapKind; 5] = [
        MapKind::Hed,
        MapKind::Canny,
        MapKind::Depth,
        MapKind::Normal,
        MapKind::Sem,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MapKind::Hed => "hed",
            MapKind::Canny => "canny",
            MapKind::Depth => "depth",
            MapKind::Normal => "normal",
            MapKind::Sem => "sem",
        }
    }

    /// What users call it ("a depth map").
    pub fn label(self) -> &'static str {
        match self {
            MapKind::Hed => "HED edge map",
            MapKind::Canny => "Canny edge map",
            MapKind::Depth => "depth map",
            MapKind::Normal => "normal map",
            MapKind::Sem => "semantic map",
        }
    }

    /// Parses the `kind` of a map entity.
    pub fn parse(s: &str) -> Option<Self> {
        MapKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for MapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing to ground. Order matters (it is the order of the grounding
/// tokens) and duplicates are meaningful (two dogs are two boxes).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entity {
    /// A phrase that must appear inside a box.
    TextBox {
        phrase: String,
        /// `[x0, y0, x1, y1]`, normalised to the canvas, origin top left.
        #[serde(rename = "box")]
        bbox: [f64; 4],
    },
    /// A reference picture whose content must appear inside a box.
    ImageBox {
        /// Path relative to the layout file, or a data URI.
        image: String,
        #[serde(rename = "box")]
        bbox: [f64; 4],
        #[serde(skip_serializing_if = "Option::is_none")]
        phrase: Option<String>,
    },
    /// A reference picture whose style steers the whole image.
    StyleImage { image: String },
    /// One person: 17 COCO keypoints, `None` where a point is not placed.
    Keypoints { points: Vec<Option<[f64; 2]>> },
    /// A whole-image spatial map the picture must follow (at most one per layout; its kind must
    /// be the loaded checkpoint's). `image` as for image boxes.
    Map { kind: MapKind, image: String },
}

impl Entity {
    pub fn kind(&self) -> EntityKind {
        match self {
            Entity::TextBox { .. } => EntityKind::TextBox,
            Entity::ImageBox { .. } => EntityKind::ImageBox,
            Entity::StyleImage { .. } => EntityKind::StyleImage,
            Entity::Keypoints { .. } => EntityKind::Keypoints,
            Entity::Map { .. } => EntityKind::Map,
        }
    }

    /// The user-drawn box, if this entity has one.
    pub fn bbox(&self) -> Option<[f64; 4]> {
        match self {
            Entity::TextBox { bbox, .. } | Entity::ImageBox { bbox, .. } => Some(*bbox),
            _ => None,
        }
    }

    pub fn bbox_mut(&mut self) -> Option<&mut [f64; 4]> {
        match self {
            Entity::TextBox { bbox, .. } | Entity::ImageBox { bbox, .. } => Some(bbox),
            _ => None,
        }
    }

    /// The box in the precision the model runs in. The document keeps f64 so
    /// that a file survives load/save byte for byte; tensors want f32.
    pub fn box_f32(&self) -> Option<[f32; 4]> {
        self.bbox().map(|b| b.map(|v| v as f32))
    }

    /// The box the grounding token carries: the drawn box, or
    /// [`STYLE_IMAGE_BOX`] for a style image. `None` for keypoints, which
    /// have their own tokenizer.
    pub fn grounding_box(&self) -> Option<[f64; 4]> {
        match self {
            Entity::StyleImage { .. } => Some(STYLE_IMAGE_BOX),
            other => other.bbox(),
        }
    }

    pub fn phrase(&self) -> Option<&str> {
        match self {
            Entity::TextBox { phrase, .. } => Some(phrase),
            Entity::ImageBox { phrase, .. } => phrase.as_deref(),
            _ => None,
        }
    }

    pub fn image(&self) -> Option<&str> {
        match self {
            Entity::ImageBox { image, .. }
            | Entity::StyleImage { image }
            | Entity::Map { image, .. } => Some(image),
            _ => None,
        }
    }

    /// Whether the entity takes one of the model's grounding slots (boxes
    /// and style images do; keypoint people and maps have their own tokens).
    pub fn uses_grounding_slot(&self) -> bool {
        !matches!(self, Entity::Keypoints { .. } | Entity::Map { .. })
    }

    /// Keypoints in f32, missing points as `None`.
    pub fn points_f32(&self) -> Option<Vec<Option<[f32; 2]>>> {
        match self {
            Entity::Keypoints { points } => Some(
                points
                    .iter()
                    .map(|p| p.map(|p| p.map(|v| v as f32)))
                    .collect(),
            ),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Entity {
    /// Goes through the same reader as whole documents so that a pasted
    /// entity gets the same messages as one read from a file.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        parse::entity_from_value("entity", &value).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Sampling {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        parse::sampling_from_value("sampling", &value).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Inpaint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        parse::inpaint_from_value("inpaint", &value).map_err(serde::de::Error::custom)
    }
}

/// A layout document (see the module docs). The version is not a field:
/// whatever was read has been understood as [`LAYOUT_VERSION`], and that is
/// what gets written back.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    pub prompt: String,
    pub negative_prompt: String,
    pub entities: Vec<Entity>,
    pub inpaint: Option<Inpaint>,
    pub sampling: Sampling,
}

impl Default for Layout {
    /// Stable Diffusion 1.x's native size with nothing on it: the blank
    /// canvas the studio opens with.
    fn default() -> Self {
        Layout {
            width: 512,
            height: 512,
            prompt: String::new(),
            negative_prompt: String::new(),
            entities: Vec::new(),
            inpaint: None,
            sampling: Sampling::default(),
        }
    }
}

/// The scheduler a new studio document samples with: DPM-Solver++ 2M with Karras sigmas, the
/// common Stable Diffusion 1.x choice, which gives a finished picture in half PNDM's steps.
pub const STUDIO_SCHEDULER: SchedulerKind = SchedulerKind::Dpmpp2mKarras;
/// See [`STUDIO_SCHEDULER`].
pub const STUDIO_STEPS: usize = 25;

impl Layout {
    /// A new studio document: the blank canvas with the studio's sampler pinned
    /// ([`STUDIO_SCHEDULER`], [`STUDIO_STEPS`]). Layouts read from files keep their own.
    pub fn studio_blank(width: u32, height: u32) -> Self {
        Layout {
            width,
            height,
            sampling: Sampling {
                scheduler: Some(STUDIO_SCHEDULER),
                steps: Some(STUDIO_STEPS),
                ..Sampling::default()
            },
            ..Layout::default()
        }
    }
}

/// Field order of the written document; the version comes first so that a
/// reader (human or program) sees it before anything it might misread.
#[derive(Serialize)]
struct LayoutOut<'a> {
    version: u64,
    width: u32,
    height: u32,
    prompt: &'a str,
    negative_prompt: &'a str,
    entities: &'a [Entity],
    #[serde(skip_serializing_if = "Option::is_none")]
    inpaint: Option<&'a Inpaint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sampling: Option<&'a Sampling>,
}

impl Serialize for Layout {
    /// Note: serde writes NaN as `null`, which [`Layout::to_json_pretty`]
    /// refuses; prefer that over serialising a `Layout` directly.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        LayoutOut {
            version: LAYOUT_VERSION,
            width: self.width,
            height: self.height,
            prompt: &self.prompt,
            negative_prompt: &self.negative_prompt,
            entities: &self.entities,
            inpaint: self.inpaint.as_ref(),
            sampling: (!self.sampling.is_unset()).then_some(&self.sampling),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Layout {
    /// Version checks and error paths apply here too, so embedding a layout
    /// in another serde document does not bypass them. Float exactness is
    /// up to the outer parser, though: prefer [`Layout::from_json_str`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Layout::from_value(value).map_err(serde::de::Error::custom)
    }
}

impl Layout {
    /// Parses a document. Unknown fields are ignored with a warning (each
    /// named with its path, and the known field it is probably a typo of);
    /// unknown entity types and newer versions are errors. Numbers read
    /// back exactly as [`Layout::to_json_pretty`] wrote them. A text of
    /// more than [`MAX_LAYOUT_VALUES`] JSON values is refused before
    /// it is parsed.
    pub fn from_json_str(json: &str) -> Result<Layout, LayoutError> {
        parse::check_value_count(json)?;
        let value = parse::exact_json(json).map_err(LayoutError::Json)?;
        Layout::from_value(value)
    }

    /// Parses an already-decoded JSON value.
    pub fn from_value(value: serde_json::Value) -> Result<Layout, LayoutError> {
        parse::layout_from_value(&value)
    }

    /// Reads a layout file. Errors name the file; image paths inside stay
    /// relative to it (pass [`Layout::base_dir`] to the image functions).
    pub fn load(path: impl AsRef<Path>) -> Result<Layout, LayoutError> {
        let path = path.as_ref();
        let text = crate::fsio::read_text_limited(path, MAX_LAYOUT_BYTES).map_err(|source| {
            LayoutError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Layout::from_json_str(&text).map_err(|e| e.in_file(path))
    }

    /// The folder relative image paths of a layout file are resolved from.
    pub fn base_dir(layout_path: &Path) -> Option<&Path> {
        match layout_path.parent() {
            Some(p) if p.as_os_str().is_empty() => Some(Path::new(".")),
            other => other,
        }
    }

    /// Pretty JSON, with short number arrays (boxes, points) kept on one
    /// line so that files stay readable and diff well. Fails on NaN or
    /// infinite numbers instead of writing `null`s that would not load.
    pub fn to_json_pretty(&self) -> Result<String, LayoutError> {
        let issues = validate::non_finite_issues(self);
        if !issues.is_empty() {
            return Err(LayoutError::NonFinite(ValidationErrors { issues }));
        }
        let pretty = serde_json::to_string_pretty(self).map_err(LayoutError::Json)?;
        Ok(compact_scalar_arrays(&pretty))
    }

    /// Writes the layout atomically: a temporary file in the same folder is
    /// written, flushed to disk and renamed over the target, so a crash or a
    /// full disk leaves either the old file or the new one, never half of
    /// one. If serialisation fails nothing is touched.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), LayoutError> {
        let path = path.as_ref();
        let mut json = self.to_json_pretty().map_err(|e| e.in_file(path))?;
        json.push('\n');
        crate::fsio::write_atomic(path, json.as_bytes()).map_err(|source| LayoutError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Entities that take a grounding slot (boxes and style images).
    pub fn grounded_count(&self) -> usize {
        self.entities
            .iter()
            .filter(|e| e.uses_grounding_slot())
            .count()
    }

    /// Keypoint people.
    pub fn people_count(&self) -> usize {
        self.entities.len() - self.grounded_count()
    }

    /// Whether any entity is of `kind`.
    pub fn has_kind(&self, kind: EntityKind) -> bool {
        self.entities.iter().any(|e| e.kind() == kind)
    }
}

/// Rewrites `[\n  1,\n  2\n]` as `[1, 2]` for arrays whose elements are all
/// scalars; arrays of arrays or objects keep one element per line.
fn compact_scalar_arrays(pretty: &str) -> String {
    let mut out = String::with_capacity(pretty.len());
    // For each open array: where it starts in `out`, and whether it holds
    // a container (then it stays multi-line).
    let mut stack: Vec<(usize, bool)> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in pretty.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '[' | '{' => {
                if let Some(top) = stack.last_mut() {
                    top.1 = true;
                }
                if c == '[' {
                    stack.push((out.len(), false));
                }
                out.push(c);
            }
            ']' => {
                out.push(c);
                if let Some((start, nested)) = stack.pop() {
                    if !nested {
                        let collapsed = collapse_whitespace(&out[start..]);
                        out.truncate(start);
                        out.push_str(&collapsed);
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Drops whitespace outside strings and puts a space after each comma.
fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in s.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            ',' => out.push_str(", "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}
