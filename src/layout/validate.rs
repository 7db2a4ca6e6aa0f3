//! Checks that a layout makes sense, in general and for a given model.
//!
//! Reading only checks shape; whether a box is inside the canvas or a model
//! can take image boxes is decided here, so that the studio can keep an
//! invalid layout open (the user is mid-edit) and show every problem at
//! once instead of stopping at the first.

use std::fmt;

use super::images;
use super::{Entity, EntityKind, Layout, MapKind, COCO_KEYPOINT_NAMES, KEYPOINTS_PER_PERSON};

/// One problem, located by a path into the document (`entities[2].box[0]`,
/// `sampling.alpha0`) so the editor can highlight the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationIssue {
    pub path: String,
    pub message: String,
}

impl ValidationIssue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationIssue {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All problems found, in document order. Displays one per line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationErrors {
    pub issues: Vec<ValidationIssue>,
}

impl ValidationErrors {
    pub fn len(&self) -> usize {
        self.issues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.issues.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ValidationIssue> {
        self.issues.iter()
    }

    /// Issues at exactly `path`.
    pub fn at<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a ValidationIssue> + 'a {
        self.issues.iter().filter(move |i| i.path == path)
    }

    /// Issues at `path` or below it (`entities[2]` matches
    /// `entities[2].box[0]`), e.g. to mark an entity in the editor.
    pub fn under<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a ValidationIssue> + 'a {
        self.issues.iter().filter(move |i| {
            i.path == path
                || (i.path.starts_with(path)
                    && matches!(i.path.as_bytes().get(path.len()), Some(b'.' | b'[')))
        })
    }

    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ValidationIssue::new(path, message));
    }

    pub(crate) fn into_result(self) -> Result<(), ValidationErrors> {
        if self.issues.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl IntoIterator for ValidationErrors {
    type Item = ValidationIssue;
    type IntoIter = std::vec::IntoIter<ValidationIssue>;
    fn into_iter(self) -> Self::IntoIter {
        self.issues.into_iter()
    }
}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a ValidationIssue;
    type IntoIter = std::slice::Iter<'a, ValidationIssue>;
    fn into_iter(self) -> Self::IntoIter {
        self.issues.iter()
    }
}

/// What a loaded checkpoint can take. The pipeline fills this in from the
/// model it loaded; the layout itself stays model-agnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLimits {
    /// Pixels per latent cell (8 for Stable Diffusion's VAE; tiny test
    /// models use 2 or 4). Canvas sides must be multiples of it.
    pub vae_scale_factor: usize,
    /// Grounding tokens the position net was built for (30 in GLIGEN).
    pub max_grounding_slots: usize,
    /// People the keypoint tokenizer was built for (8 in GLIGEN).
    pub max_people: usize,
    pub supports_text_boxes: bool,
    pub supports_image_boxes: bool,
    pub supports_keypoints: bool,
    pub supports_inpainting: bool,
    /// Smallest latent side; below it the UNet's downsampling runs out of
    /// cells (SD goes 64 → 8 latent, so 8 is the floor).
    pub min_latent_cells: usize,
    /// Largest canvas side in pixels; beyond it memory, not the model, is
    /// the limit, and a typo (51200) should be caught before allocating.
    pub max_pixels_side: usize,
    /// Whether the model takes a spatial map (`map_kind` says which; `None`
    /// there with maps supported means any kind, for an unknown model).
    pub supports_maps: bool,
    pub map_kind: Option<MapKind>,
    /// A map checkpoint's fixed canvas side, in pixels, when its map network
    /// only fits one (the downsampled map must cover the latent grid).
    pub map_canvas_side: Option<usize>,
}

impl Default for ModelLimits {
    /// GLIGEN's Stable Diffusion 1.4 text-box checkpoint, the one diffusers
    /// ships: the common case.
    fn default() -> Self {
        ModelLimits {
            vae_scale_factor: 8,
            max_grounding_slots: 30,
            max_people: 8,
            supports_text_boxes: true,
            supports_image_boxes: false,
            supports_keypoints: false,
            supports_inpainting: false,
            min_latent_cells: 8,
            max_pixels_side: 2048,
            supports_maps: false,
            map_kind: None,
            map_canvas_side: None,
        }
    }
}

impl ModelLimits {
    /// What holds for every model: all kinds of entity allowed, any
    /// positive canvas side up to the pixel limit. Used when no model is
    /// known yet, so it must not reject a layout some model could run
    /// (tiny test models use 32 px canvases).
    pub fn permissive() -> Self {
        ModelLimits {
            vae_scale_factor: 1,
            supports_text_boxes: true,
            supports_image_boxes: true,
            supports_keypoints: true,
            supports_inpainting: true,
            supports_maps: true,
            min_latent_cells: 1,
            ..ModelLimits::default()
        }
    }

    /// A spatial-map checkpoint of the original GLIGEN code: one map of its
    /// kind, nothing else.
    pub fn spatial_map(kind: MapKind) -> Self {
        ModelLimits {
            supports_text_boxes: false,
            supports_maps: true,
            map_kind: Some(kind),
            ..ModelLimits::default()
        }
    }

    /// GLIGEN's text + image box checkpoint (also takes style images).
    pub fn text_image() -> Self {
        ModelLimits {
            supports_image_boxes: true,
            ..ModelLimits::default()
        }
    }

    /// GLIGEN's keypoint checkpoint: people only, no boxes.
    pub fn keypoints() -> Self {
        ModelLimits {
            supports_text_boxes: false,
            supports_keypoints: true,
            ..ModelLimits::default()
        }
    }

    pub fn with_vae_scale_factor(mut self, factor: usize) -> Self {
        self.vae_scale_factor = factor;
        self
    }

    pub fn with_inpainting(mut self, inpainting: bool) -> Self {
        self.supports_inpainting = inpainting;
        self
    }

    pub fn supports(&self, kind: EntityKind) -> bool {
        match kind {
            EntityKind::TextBox => self.supports_text_boxes,
            // GLIGEN feeds style images through the image-box tokens.
            EntityKind::ImageBox | EntityKind::StyleImage => self.supports_image_boxes,
            EntityKind::Keypoints => self.supports_keypoints,
            EntityKind::Map => self.supports_maps,
        }
    }

    /// "a text-box model", for messages that tell the user why an entity
    /// is refused.
    pub fn describe(&self) -> String {
        if let (Some(kind), false, false, false) = (
            self.map_kind,
            self.supports_text_boxes,
            self.supports_image_boxes,
            self.supports_keypoints,
        ) {
            return format!(
                "GLIGEN's {kind} checkpoint, which takes one {}",
                kind.label()
            );
        }
        let what = match (
            self.supports_text_boxes,
            self.supports_image_boxes,
            self.supports_keypoints,
        ) {
            (true, false, false) => "text-box model",
            (true, true, false) => "text-and-image-box model",
            (false, true, false) => "image-box model",
            (false, false, true) => "keypoint model",
            (true, false, true) => "text-box and keypoint model",
            (false, true, true) => "image-box and keypoint model",
            (true, true, true) => "model that takes every kind of entity",
            (false, false, false) => "model without grounding inputs",
        };
        let what = if self.supports_inpainting {
            format!("inpainting {what}")
        } else {
            what.to_string()
        };
        let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        format!("{article} {what}")
    }
}

/// The schedulers are trained on 1000 timesteps; asking for more steps
/// than that cannot be honoured.
const MAX_STEPS: usize = 1000;
/// Far above any useful guidance (SD 1.x is run at 5–15); larger scales only overflow the
/// latents into NaN.
pub const MAX_GUIDANCE_SCALE: f64 = 100.0;

/// Slack for `alpha0 + alpha_decay`: values such as 0.7 + 0.3 may sum to
/// 1.0000000000000002 in binary floating point.
const ALPHA_SUM_EPS: f64 = 1e-9;

const BOX_NAMES: [&str; 4] = ["x0", "y0", "x1", "y1"];

fn check_side(errors: &mut ValidationErrors, name: &str, value: u32, limits: &ModelLimits) {
    let value = value as usize;
    if value == 0 {
        errors.push(name, "must be positive");
        return;
    }
    if value > limits.max_pixels_side {
        errors.push(
            name,
            format!("{value} px exceeds the {} px limit", limits.max_pixels_side),
        );
    }
    let factor = limits.vae_scale_factor.max(1);
    if factor > 1 && !value.is_multiple_of(factor) {
        let lower = value / factor * factor;
        let upper = lower + factor;
        let suggestion = if lower == 0 {
            format!("use {upper}")
        } else {
            format!("use {lower} or {upper}")
        };
        errors.push(
            name,
            format!(
                "{value} is not a multiple of {factor} (the VAE's downscale factor); {suggestion}"
            ),
        );
    }
    let min = limits.min_latent_cells.saturating_mul(factor);
    if value < min {
        errors.push(
            name,
            format!(
                "{value} px is too small: this model needs at least {min} px ({} latent cells of {factor} px)",
                limits.min_latent_cells
            ),
        );
    }
}

fn check_unit(errors: &mut ValidationErrors, path: String, label: &str, v: f64) {
    if !v.is_finite() {
        errors.push(path, format!("{label} is not a finite number ({v})"));
    } else if !(0.0..=1.0).contains(&v) {
        errors.push(path, format!("{label} = {v} is outside [0, 1]"));
    }
}

fn check_box(errors: &mut ValidationErrors, path: &str, b: &[f64; 4]) {
    for (k, (v, name)) in b.iter().zip(BOX_NAMES).enumerate() {
        check_unit(errors, format!("{path}.box[{k}]"), name, *v);
    }
    let [x0, y0, x1, y1] = *b;
    if x0.is_finite() && x1.is_finite() && x0 >= x1 {
        errors.push(
            format!("{path}.box"),
            format!("x0 ({x0}) must be less than x1 ({x1}): the box has no width"),
        );
    }
    if y0.is_finite() && y1.is_finite() && y0 >= y1 {
        errors.push(
            format!("{path}.box"),
            format!("y0 ({y0}) must be less than y1 ({y1}): the box has no height"),
        );
    }
}

fn check_image_ref(errors: &mut ValidationErrors, path: String, image: &str) {
    if image.trim().is_empty() {
        errors.push(path, "no image given");
    } else if images::is_data_uri(image) {
        // Only the header: decoding megabytes of base64 on every edit
        // would make validation slow, and the payload is checked on use.
        if let Err(message) = images::data_uri_media_type(image) {
            errors.push(path, message);
        }
    }
}

fn check_entity(errors: &mut ValidationErrors, i: usize, entity: &Entity, limits: &ModelLimits) {
    let path = format!("entities[{i}]");
    let kind = entity.kind();
    if !limits.supports(kind) {
        errors.push(
            path.clone(),
            format!(
                "this model does not take {} (it is {})",
                kind.plural(),
                limits.describe()
            ),
        );
    }
    match entity {
        Entity::TextBox { phrase, bbox } => {
            if phrase.trim().is_empty() {
                errors.push(
                    format!("{path}.phrase"),
                    "the phrase is empty: a text box needs a phrase to ground",
                );
            }
            check_box(errors, &path, bbox);
        }
        Entity::ImageBox {
            image,
            bbox,
            phrase,
        } => {
            check_image_ref(errors, format!("{path}.image"), image);
            if matches!(phrase, Some(p) if p.trim().is_empty()) {
                errors.push(
                    format!("{path}.phrase"),
                    "the phrase is empty (leave it out instead)",
                );
            }
            check_box(errors, &path, bbox);
        }
        Entity::StyleImage { image } => {
            check_image_ref(errors, format!("{path}.image"), image);
        }
        Entity::Map { kind, image } => {
            check_image_ref(errors, format!("{path}.image"), image);
            if let Some(model_kind) = limits.map_kind {
                if *kind != model_kind {
                    errors.push(
                        format!("{path}.kind"),
                        format!(
                            "this is a {} but the model is GLIGEN's {} checkpoint: give it a \
                             {} (\"kind\": \"{model_kind}\") or load the {kind} checkpoint",
                            kind.label(),
                            model_kind,
                            model_kind.label()
                        ),
                    );
                }
            }
        }
        Entity::Keypoints { points } => {
            if points.len() != KEYPOINTS_PER_PERSON {
                errors.push(
                    format!("{path}.points"),
                    format!(
                        "expected {KEYPOINTS_PER_PERSON} points in COCO order (null where absent), found {}",
                        points.len()
                    ),
                );
            }
            for (k, point) in points.iter().enumerate() {
                let Some([x, y]) = point else { continue };
                let name = COCO_KEYPOINT_NAMES.get(k).copied().unwrap_or("point");
                check_unit(
                    errors,
                    format!("{path}.points[{k}][0]"),
                    &format!("{name} x"),
                    *x,
                );
                check_unit(
                    errors,
                    format!("{path}.points[{k}][1]"),
                    &format!("{name} y"),
                    *y,
                );
            }
            if !points.is_empty() && points.iter().all(Option::is_none) {
                errors.push(
                    format!("{path}.points"),
                    "no point is placed, so this person would be ignored",
                );
            }
        }
    }
}

pub(crate) fn validate(layout: &Layout, limits: &ModelLimits) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    check_side(&mut errors, "width", layout.width, limits);
    check_side(&mut errors, "height", layout.height, limits);

    for (i, entity) in layout.entities.iter().enumerate() {
        check_entity(&mut errors, i, entity, limits);
    }

    // Never drop extra entities silently: the user would not know which
    // ones the model ignored.
    let grounded = layout.grounded_count();
    if grounded > limits.max_grounding_slots {
        errors.push(
            "entities",
            format!(
                "the model has {} grounding slots; this layout has {grounded} boxes: remove {}",
                limits.max_grounding_slots,
                grounded - limits.max_grounding_slots
            ),
        );
    }
    let maps: Vec<usize> = layout
        .entities
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Entity::Map { .. }))
        .map(|(i, _)| i)
        .collect();
    if maps.len() > 1 {
        errors.push(
            format!("entities[{}]", maps[1]),
            format!(
                "a layout holds at most one spatial map; this one has {} (entities {})",
                maps.len(),
                maps.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    if let Some(kind) = limits.map_kind {
        if maps.is_empty() {
            errors.push(
                "entities",
                format!(
                    "GLIGEN's {kind} checkpoint is grounded by a {}: add a map entity \
                     ({{\"type\": \"map\", \"kind\": \"{kind}\", \"image\": ...}})",
                    kind.label()
                ),
            );
        }
        if let Some(side) = limits.map_canvas_side {
            if layout.width as usize != side || layout.height as usize != side {
                errors.push(
                    "width",
                    format!(
                        "GLIGEN's {kind} checkpoint draws {side}×{side} pictures (its map \
                         network's features cover that latent grid); this layout is {}×{}",
                        layout.width, layout.height
                    ),
                );
            }
        }
    }
    let people = layout.people_count();
    if people > limits.max_people {
        errors.push(
            "entities",
            format!(
                "the model takes at most {} people; this layout has {people}: remove {}",
                limits.max_people,
                people - limits.max_people
            ),
        );
    }

    if let Some(inpaint) = &layout.inpaint {
        if !limits.supports_inpainting {
            errors.push(
                "inpaint",
                format!("this model does not inpaint (it is {})", limits.describe()),
            );
        }
        check_image_ref(&mut errors, "inpaint.image".to_string(), &inpaint.image);
        if !layout.entities.iter().any(|e| e.bbox().is_some()) {
            errors.push(
                "inpaint",
                "the region to repaint comes from the boxes, and this layout has none",
            );
        }
    }

    let s = &layout.sampling;
    if let Some(steps) = s.steps {
        if steps == 0 {
            errors.push("sampling.steps", "must be at least 1");
        } else if steps > MAX_STEPS {
            errors.push(
                "sampling.steps",
                format!("{steps} exceeds {MAX_STEPS} (the schedulers' training timesteps)"),
            );
        }
    }
    if let Some(g) = s.guidance_scale {
        if !g.is_finite() || !(0.0..=MAX_GUIDANCE_SCALE).contains(&g) {
            errors.push(
                "sampling.guidance_scale",
                format!("must be a finite number from 0 to {MAX_GUIDANCE_SCALE}, found {g}"),
            );
        }
    }
    let mut alphas_ok = true;
    for (name, value) in [("alpha0", s.alpha0), ("alpha_decay", s.alpha_decay)] {
        if let Some(v) = value {
            if !v.is_finite() || !(0.0..=1.0).contains(&v) {
                alphas_ok = false;
                errors.push(
                    format!("sampling.{name}"),
                    format!("{name} = {v} is outside [0, 1] (it is a fraction of the steps)"),
                );
            }
        }
    }
    if alphas_ok {
        // With the defaults filled in: that is what will run.
        let r = s.resolve();
        let sum = r.alpha0 + r.alpha_decay;
        if sum > 1.0 + ALPHA_SUM_EPS {
            errors.push(
                "sampling",
                format!("alpha0 + alpha_decay = {sum} exceeds 1 (they are fractions of the steps)"),
            );
        }
    }

    errors.into_result()
}

/// Numbers JSON cannot represent (see [`Layout::to_json_pretty`]).
pub(crate) fn non_finite_issues(layout: &Layout) -> Vec<ValidationIssue> {
    let mut out = Vec::new();
    let mut check = |path: String, v: f64| {
        if !v.is_finite() {
            out.push(ValidationIssue::new(
                path,
                format!("{v} is not a finite number"),
            ));
        }
    };
    for (i, e) in layout.entities.iter().enumerate() {
        if let Some(b) = e.bbox() {
            for (k, v) in b.iter().enumerate() {
                check(format!("entities[{i}].box[{k}]"), *v);
            }
        }
        if let Entity::Keypoints { points } = e {
            for (k, p) in points.iter().enumerate() {
                if let Some(p) = p {
                    for (c, v) in p.iter().enumerate() {
                        check(format!("entities[{i}].points[{k}][{c}]"), *v);
                    }
                }
            }
        }
    }
    let s = &layout.sampling;
    for (name, v) in [
        ("guidance_scale", s.guidance_scale),
        ("alpha0", s.alpha0),
        ("alpha_decay", s.alpha_decay),
    ] {
        if let Some(v) = v {
            check(format!("sampling.{name}"), v);
        }
    }
    out
}

impl Layout {
    /// Checks what holds for every model (see [`ModelLimits::permissive`]).
    /// Use [`Layout::validate_for`] once the model is known.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate(self, &ModelLimits::permissive())
    }

    /// Checks the layout against a specific model's limits and abilities.
    pub fn validate_for(&self, limits: &ModelLimits) -> Result<(), ValidationErrors> {
        validate(self, limits)
    }
}
