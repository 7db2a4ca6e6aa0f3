//! Editing beyond text boxes: pictures (image boxes, the style image, the picture to inpaint) and
//! people (17 COCO keypoints). Every change is one undo step; geometry stays in normalised layout
//! coordinates. Files are checked off the UI thread (see [`read_dropped`] and
//! [`StudioApp::pick_picture_dialog`]).

use super::pictures::full_path;
use super::{run_dialog, DialogKind, FileOutcome, NoticeLevel, StudioApp, Tool};
use crate::layout::{
    encode_data_uri, Entity, EntityKind, Inpaint, COCO_KEYPOINT_NAMES, KEYPOINTS_PER_PERSON,
};
use std::path::{Path, PathBuf};

/// The COCO person skeleton: pairs of joint indices joined by a bone (as in the COCO keypoint
/// annotations' `skeleton`, 0-based).
pub const COCO_SKELETON: [(usize, usize); 19] = [
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
];

/// A person standing and facing the viewer, in units of the person's height, centred on the
/// middle of the body (x to the right, y down). The person's left is on the picture's right.
const STANDING: [[f64; 2]; KEYPOINTS_PER_PERSON] = [
    [0.0, -0.40],    // nose
    [0.025, -0.42],  // left eye
    [-0.025, -0.42], // right eye
    [0.05, -0.41],   // left ear
    [-0.05, -0.41],  // right ear
    [0.11, -0.29],   // left shoulder
    [-0.11, -0.29],  // right shoulder
    [0.14, -0.13],   // left elbow
    [-0.14, -0.13],  // right elbow
    [0.15, 0.01],    // left wrist
    [-0.15, 0.01],   // right wrist
    [0.07, 0.02],    // left hip
    [-0.07, 0.02],   // right hip
    [0.075, 0.24],   // left knee
    [-0.075, 0.24],  // right knee
    [0.08, 0.45],    // left ankle
    [-0.08, 0.45],   // right ankle
];

/// How tall a new person is, as a fraction of the canvas height.
const PERSON_HEIGHT: f64 = 0.6;

/// Whether joint `k` is on the person's left side (drawn lighter than the right).
pub fn is_left_joint(k: usize) -> bool {
    COCO_KEYPOINT_NAMES
        .get(k)
        .is_some_and(|n| n.starts_with("left"))
}

/// "left wrist" for `left_wrist`.
pub fn joint_label(k: usize) -> String {
    COCO_KEYPOINT_NAMES
        .get(k)
        .map(|n| n.replace('_', " "))
        .unwrap_or_else(|| format!("point {k}"))
}

/// A standing person centred at `center` (normalised) on a `width × height` canvas, moved inside
/// the canvas where it would stick out.
pub fn default_person(center: [f64; 2], width: u32, height: u32) -> Vec<Option<[f64; 2]>> {
    let aspect = height.max(1) as f64 / width.max(1) as f64;
    let points: Vec<[f64; 2]> = STANDING
        .iter()
        .map(|d| {
            [
                center[0] + d[0] * PERSON_HEIGHT * aspect,
                center[1] + d[1] * PERSON_HEIGHT,
            ]
        })
        .collect();
    let mut points: Vec<Option<[f64; 2]>> = points.into_iter().map(Some).collect();
    let (dx, dy) = inside_offset(&points, 0.0, 0.0);
    offset_points(&mut points, dx, dy);
    points
}

/// The bounding box `[x0, y0, x1, y1]` of the placed points.
pub fn points_bbox(points: &[Option<[f64; 2]>]) -> Option<[f64; 4]> {
    let mut it = points.iter().flatten();
    let first = it.next()?;
    let mut b = [first[0], first[1], first[0], first[1]];
    for p in it {
        b[0] = b[0].min(p[0]);
        b[1] = b[1].min(p[1]);
        b[2] = b[2].max(p[0]);
        b[3] = b[3].max(p[1]);
    }
    Some(b)
}

/// `(dx, dy)` changed as little as possible so that the placed points moved by it stay in [0, 1]².
pub fn inside_offset(points: &[Option<[f64; 2]>], dx: f64, dy: f64) -> (f64, f64) {
    let Some(b) = points_bbox(points) else {
        return (dx, dy);
    };
    let fit = |d: f64, lo: f64, hi: f64| {
        if hi - lo > 1.0 {
            // Wider than the canvas: keep the middle in the middle.
            0.5 - (lo + hi) / 2.0
        } else {
            d.clamp(-lo, 1.0 - hi)
        }
    };
    (fit(dx, b[0], b[2]), fit(dy, b[1], b[3]))
}

pub fn offset_points(points: &mut [Option<[f64; 2]>], dx: f64, dy: f64) {
    for p in points.iter_mut().flatten() {
        p[0] += dx;
        p[1] += dy;
    }
}

/// Moves an entity by `(dx, dy)` (normalised), staying on the canvas. Style images do not move.
pub fn offset_entity(entity: &mut Entity, dx: f64, dy: f64) {
    match entity {
        Entity::Keypoints { points } => {
            let (dx, dy) = inside_offset(points, dx, dy);
            offset_points(points, dx, dy);
        }
        other => {
            if let Some(b) = other.bbox_mut() {
                let (w, h) = (b[2] - b[0], b[3] - b[1]);
                let x0 = (b[0] + dx).clamp(0.0, (1.0 - w).max(0.0));
                let y0 = (b[1] + dy).clamp(0.0, (1.0 - h).max(0.0));
                *b = [x0, y0, x0 + w, y0 + h];
            }
        }
    }
}

/// Where a hidden joint goes when it is shown again: the standing pose fitted (shift and scale,
/// in pixels) to the joints that are placed.
pub fn estimate_joint(
    points: &[Option<[f64; 2]>],
    joint: usize,
    width: u32,
    height: u32,
) -> [f64; 2] {
    let (w, h) = (width.max(1) as f64, height.max(1) as f64);
    let placed: Vec<(usize, [f64; 2])> = points
        .iter()
        .enumerate()
        .take(KEYPOINTS_PER_PERSON)
        .filter_map(|(k, p)| p.map(|p| (k, [p[0] * w, p[1] * h])))
        .collect();
    let Some(target) = STANDING.get(joint) else {
        return [0.5, 0.5];
    };
    if placed.is_empty() {
        return default_person([0.5, 0.5], width, height)[joint].unwrap_or([0.5, 0.5]);
    }
    let n = placed.len() as f64;
    let cp = placed
        .iter()
        .fold([0.0, 0.0], |a, (_, p)| [a[0] + p[0] / n, a[1] + p[1] / n]);
    let cd = placed.iter().fold([0.0, 0.0], |a, (k, _)| {
        [a[0] + STANDING[*k][0] / n, a[1] + STANDING[*k][1] / n]
    });
    let spread = |pts: &mut dyn Iterator<Item = [f64; 2]>, c: [f64; 2]| {
        pts.map(|p| (p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2))
            .sum::<f64>()
    };
    let sp = spread(&mut placed.iter().map(|(_, p)| *p), cp);
    let sd = spread(&mut placed.iter().map(|(k, _)| STANDING[*k]), cd);
    let scale = if placed.len() >= 2 && sd > 1e-12 && sp > 1e-12 {
        (sp / sd).sqrt()
    } else {
        PERSON_HEIGHT * h
    };
    let x = (cp[0] + scale * (target[0] - cd[0])) / w;
    let y = (cp[1] + scale * (target[1] - cd[1])) / h;
    [x.clamp(0.0, 1.0), y.clamp(0.0, 1.0)]
}

/// What a chosen or dropped picture is for.
#[derive(Debug, Clone, PartialEq)]
pub enum PicturePurpose {
    /// A new image box centred at `at` (normalised; the canvas centre when `None`).
    NewBox { at: Option<[f64; 2]> },
    /// The new picture of image box `index` (which held `previous` when it was asked for).
    Fill { index: usize, previous: String },
    /// The style image.
    Style,
    /// The picture to inpaint.
    Inpaint,
}

impl PicturePurpose {
    fn dialog_title(&self) -> &'static str {
        match self {
            PicturePurpose::NewBox { .. } => "Choose a picture for a new image box",
            PicturePurpose::Fill { .. } => "Choose the image box's picture",
            PicturePurpose::Style => "Choose the style image",
            PicturePurpose::Inpaint => "Open a picture for inpainting",
        }
    }
}

/// A picture that was checked: the reference to store and its size in pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct PickedPicture {
    pub reference: String,
    pub size: [u32; 2],
    pub name: String,
}

/// A dropped file: a path, or only its bytes (some platforms).
pub enum DropSource {
    Path(PathBuf),
    Bytes(String, Vec<u8>),
}

fn picture_size(bytes: &[u8]) -> Result<[u32; 2], String> {
    use crate::layout::{media_type_of, SUPPORTED_PICTURES};
    let format = image::guess_format(bytes).map_err(|_| {
        format!("not a picture Glichen reads ({SUPPORTED_PICTURES}), nor a layout JSON or a Glichen PNG")
    })?;
    if media_type_of(format).is_none() {
        return Err(format!(
            "{format:?} pictures are not supported (use {SUPPORTED_PICTURES})"
        ));
    }
    let (w, h) = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| format!("cannot read the picture: {e}"))?;
    Ok([w, h])
}

/// Checks a picture file (blocking: off the UI thread). The layout stores its absolute path.
pub fn check_picture_file(path: &Path) -> Result<PickedPicture, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = picture_size(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(PickedPicture {
        reference: path.display().to_string(),
        size,
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    })
}

/// Checks picture bytes that have no file (blocking): stored as a data URI.
pub fn check_picture_bytes(name: &str, bytes: &[u8]) -> Result<PickedPicture, String> {
    let size = picture_size(bytes)?;
    let media = image::guess_format(bytes)
        .ok()
        .and_then(crate::layout::media_type_of)
        .unwrap_or("image/png");
    Ok(PickedPicture {
        reference: encode_data_uri(bytes, media),
        size,
        name: name.to_string(),
    })
}

/// What a dropped file becomes (blocking: off the UI thread): a Glichen PNG opens its layout,
/// unless it was dropped on an image box; other PNG and JPEG pictures serve `purpose`.
pub(super) fn read_dropped(source: DropSource, purpose: PicturePurpose) -> FileOutcome {
    let (name, bytes, path) = match source {
        DropSource::Path(path) => match std::fs::read(&path) {
            Ok(b) => (
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                b,
                Some(path),
            ),
            Err(e) => {
                return FileOutcome::Opened(Err(e.to_string()), Some(path));
            }
        },
        DropSource::Bytes(name, bytes) => (name, bytes, None),
    };
    let is_glichen_png = crate::layout::png::layout_json_from_png(&bytes).is_ok();
    let fill = matches!(purpose, PicturePurpose::Fill { .. });
    if is_glichen_png && !fill {
        return FileOutcome::Opened(
            super::files::load_document_bytes(&name, &bytes, path.as_deref()).map(Box::new),
            path,
        );
    }
    if image::guess_format(&bytes).is_err() && !is_glichen_png {
        // Not a picture: maybe a layout or an import in JSON under another extension.
        if let Ok(doc) = super::files::load_document_bytes(&name, &bytes, path.as_deref()) {
            return FileOutcome::Opened(Ok(Box::new(doc)), path);
        }
    }
    let picked = match &path {
        Some(p) => check_picture_file(p),
        None => check_picture_bytes(&name, &bytes),
    };
    FileOutcome::Picture(purpose, picked.map_err(|e| format!("{name}: {e}")))
}

impl StudioApp {
    /// Why `kind` cannot be used with the loaded model, if it cannot.
    pub fn unsupported_reason(&self, kind: EntityKind) -> Option<String> {
        let limits = self.model_limits();
        (!limits.supports(kind)).then(|| {
            let what = match kind {
                EntityKind::Keypoints => "people (keypoints)",
                k => k.plural(),
            };
            format!(
                "this model does not take {what} (it is {})",
                limits.describe()
            )
        })
    }

    /// Why inpainting is not possible with the loaded model, if it is not.
    pub fn inpaint_blocker(&self) -> Option<String> {
        let limits = self.model_limits();
        (!limits.supports_inpainting)
            .then(|| format!("this model does not inpaint (it is {})", limits.describe()))
    }

    /// Why `tool` is off for the loaded model, if it is.
    pub fn tool_blocker(&self, tool: Tool) -> Option<String> {
        match tool {
            Tool::Draw => self.unsupported_reason(EntityKind::TextBox),
            Tool::Person => self.unsupported_reason(EntityKind::Keypoints),
            Tool::Select | Tool::Pan => None,
        }
    }

    /// Leaves a tool the loaded model cannot use.
    pub(super) fn sync_tool_with_model(&mut self) {
        if self.tool_blocker(self.tool).is_some() {
            self.tool = Tool::Select;
            self.drag = None;
        }
    }

    /// What a picture dropped with the pointer at `pointer` (screen) serves: the image box under
    /// it, else a new box there (file `k` of several a little further down and right).
    pub(super) fn drop_purpose(&self, pointer: Option<egui::Pos2>, k: usize) -> PicturePurpose {
        let tf = self.canvas_transform();
        let at = match (tf, pointer) {
            (Some(tf), Some(p)) if tf.rect.contains(p) => {
                let lp = tf.layout_from_screen(p);
                if let Some(i) = self
                    .layout
                    .entities
                    .iter()
                    .enumerate()
                    .rev()
                    .find_map(|(i, e)| match e {
                        Entity::ImageBox { bbox, .. }
                            if (bbox[0]..=bbox[2]).contains(&(lp.x as f64))
                                && (bbox[1]..=bbox[3]).contains(&(lp.y as f64)) =>
                        {
                            Some(i)
                        }
                        _ => None,
                    })
                {
                    if k == 0 {
                        return PicturePurpose::Fill {
                            index: i,
                            previous: self.layout.entities[i].image().unwrap_or("").to_string(),
                        };
                    }
                }
                Some([lp.x as f64, lp.y as f64])
            }
            _ => None,
        };
        if at.is_none() && k == 0 {
            // The pointer was not seen over the canvas (some platforms report no position while
            // dragging files): the selected image box takes the picture.
            if let Some(i) = self.selection {
                if let Some(Entity::ImageBox { image, .. }) = self.layout.entities.get(i) {
                    return PicturePurpose::Fill {
                        index: i,
                        previous: image.clone(),
                    };
                }
            }
        }
        let at = at.map(|p| [p[0] + 0.05 * k as f64, p[1] + 0.05 * k as f64]);
        PicturePurpose::NewBox { at }
    }

    /// Shows the picture dialog (off the UI thread) and uses the chosen picture for `purpose`.
    pub fn pick_picture_dialog(&mut self, purpose: PicturePurpose) {
        let dialogs = self.dialogs.clone();
        let kind = DialogKind::OpenPicture {
            title: purpose.dialog_title().to_string(),
        };
        self.spawn_file_task("glichen-picture-dialog", move || {
            match run_dialog(&dialogs, &kind) {
                Some(path) => FileOutcome::Picture(purpose, check_picture_file(&path)),
                None => FileOutcome::Cancelled,
            }
        });
    }

    /// Uses a picture file for `purpose` (checked off the UI thread).
    pub fn use_picture_file(&mut self, path: PathBuf, purpose: PicturePurpose) {
        self.spawn_file_task("glichen-picture", move || {
            FileOutcome::Picture(purpose, check_picture_file(&path))
        });
    }

    /// Puts a checked picture where it was asked for (one undo step).
    pub(super) fn apply_picture(&mut self, purpose: PicturePurpose, picked: PickedPicture) {
        match purpose {
            PicturePurpose::Fill { index, previous } => {
                let still_there = matches!(
                    self.layout.entities.get(index),
                    Some(Entity::ImageBox { image, .. }) if *image == previous
                );
                if !still_there {
                    return self.apply_picture(PicturePurpose::NewBox { at: None }, picked);
                }
                self.history.push(&self.layout);
                if let Some(Entity::ImageBox { image, .. }) = self.layout.entities.get_mut(index) {
                    *image = picked.reference;
                }
                self.selection = Some(index);
                self.status = format!("Image box {} now shows {}", index + 1, picked.name);
            }
            PicturePurpose::NewBox { at } => {
                if let Some(reason) = self.unsupported_reason(EntityKind::ImageBox) {
                    self.notify(
                        NoticeLevel::Warning,
                        format!("{} was not added: {reason}.", picked.name),
                    );
                    return;
                }
                let bbox = self.new_picture_box(at.unwrap_or([0.5, 0.5]), picked.size);
                self.history.push(&self.layout);
                self.layout.entities.push(Entity::ImageBox {
                    image: picked.reference,
                    bbox,
                    phrase: None,
                });
                self.selection = Some(self.layout.entities.len() - 1);
                self.status = format!("Image box with {} added", picked.name);
            }
            PicturePurpose::Style => {
                if let Some(reason) = self.unsupported_reason(EntityKind::StyleImage) {
                    self.notify(
                        NoticeLevel::Warning,
                        format!("{} was not set as the style image: {reason}.", picked.name),
                    );
                    return;
                }
                self.history.push(&self.layout);
                match self
                    .layout
                    .entities
                    .iter_mut()
                    .find(|e| matches!(e, Entity::StyleImage { .. }))
                {
                    Some(Entity::StyleImage { image }) => *image = picked.reference,
                    _ => self.layout.entities.push(Entity::StyleImage {
                        image: picked.reference,
                    }),
                }
                self.status = format!("Style image: {}", picked.name);
            }
            PicturePurpose::Inpaint => {
                if let Some(reason) = self.inpaint_blocker() {
                    self.notify(
                        NoticeLevel::Warning,
                        format!("{} was not opened for inpainting: {reason}.", picked.name),
                    );
                    return;
                }
                self.history.push(&self.layout);
                self.layout.inpaint = Some(Inpaint {
                    image: picked.reference,
                });
                // The old result is not what the boxes are drawn over any more.
                self.canvas_image = None;
                self.status = format!(
                    "Inpainting {}: draw boxes over what should change",
                    picked.name
                );
            }
        }
        self.frame_start = self.layout.clone();
    }

    /// A box with the picture's aspect ratio, 40% of the canvas's shorter side, centred at `at`.
    fn new_picture_box(&self, at: [f64; 2], size: [u32; 2]) -> [f64; 4] {
        let (w, h) = (
            self.layout.width.max(1) as f64,
            self.layout.height.max(1) as f64,
        );
        let side = 0.4 * w.min(h);
        let aspect = size[0].max(1) as f64 / size[1].max(1) as f64;
        let (bw, bh) = if aspect >= 1.0 {
            (side, side / aspect)
        } else {
            (side * aspect, side)
        };
        let (bw, bh) = ((bw / w).min(1.0), (bh / h).min(1.0));
        let x0 = (at[0] - bw / 2.0).clamp(0.0, 1.0 - bw);
        let y0 = (at[1] - bh / 2.0).clamp(0.0, 1.0 - bh);
        [x0, y0, x0 + bw, y0 + bh]
    }

    /// Removes the style image (every one, if a file had several).
    pub fn clear_style_image(&mut self) {
        if !self.layout.has_kind(EntityKind::StyleImage) {
            return;
        }
        self.history.push(&self.layout);
        let selected = self.selection;
        let mut kept_index = 0;
        let mut new_selection = None;
        let mut k = 0;
        self.layout.entities.retain(|e| {
            let keep = !matches!(e, Entity::StyleImage { .. });
            if keep {
                if selected == Some(k) {
                    new_selection = Some(kept_index);
                }
                kept_index += 1;
            }
            k += 1;
            keep
        });
        self.selection = new_selection;
        self.frame_start = self.layout.clone();
        self.status = "Style image removed".into();
    }

    /// Stops inpainting (the picture is forgotten; undo brings it back).
    pub fn clear_inpaint(&mut self) {
        if self.layout.inpaint.is_some() {
            self.history.push(&self.layout);
            self.layout.inpaint = None;
            self.frame_start = self.layout.clone();
            self.status = "Inpainting picture removed".into();
        }
    }

    /// Why another person cannot be added now, if not.
    pub fn person_blocker(&self) -> Option<String> {
        if let Some(reason) = self.unsupported_reason(EntityKind::Keypoints) {
            return Some(reason);
        }
        let max = self.model_limits().max_people;
        (self.layout.people_count() >= max).then(|| {
            format!("the model takes at most {max} people, and this layout has {max} already")
        })
    }

    /// Adds a standing person centred at `at` (normalised) and selects it; `None` (with a notice)
    /// when the model takes no more people. `record`: make it an undo step of its own.
    pub fn place_person(&mut self, at: [f64; 2], record: bool) -> Option<usize> {
        if let Some(reason) = self.person_blocker() {
            self.notify(NoticeLevel::Warning, format!("No person added: {reason}."));
            return None;
        }
        if record {
            self.history.push(&self.layout);
        }
        let points = default_person(at, self.layout.width, self.layout.height);
        self.layout.entities.push(Entity::Keypoints { points });
        let i = self.layout.entities.len() - 1;
        self.selection = Some(i);
        self.status = format!(
            "Person {} placed: drag a joint to pose it, the body to move it; right-click a joint to hide it",
            self.layout.people_count()
        );
        if record {
            self.frame_start = self.layout.clone();
        }
        Some(i)
    }

    /// Hides (null) or shows joint `joint` of person `index` (one undo step). A joint shown again
    /// goes where the standing pose fitted to the other joints puts it.
    pub fn set_joint_visible(&mut self, index: usize, joint: usize, visible: bool) {
        let (w, h) = (self.layout.width, self.layout.height);
        let Some(Entity::Keypoints { points }) = self.layout.entities.get(index) else {
            return;
        };
        let Some(current) = points.get(joint) else {
            return;
        };
        if current.is_some() == visible {
            return;
        }
        let new = visible.then(|| estimate_joint(points, joint, w, h));
        self.history.push(&self.layout);
        if let Some(Entity::Keypoints { points }) = self.layout.entities.get_mut(index) {
            points[joint] = new;
        }
        self.frame_start = self.layout.clone();
        self.status = format!(
            "{} of person {} {}",
            joint_label(joint),
            index + 1,
            if visible { "shown" } else { "hidden" }
        );
    }

    /// The base folder for relative picture paths, as the pipeline will resolve them.
    pub(super) fn picture_base(&self) -> Option<PathBuf> {
        self.base_dir()
    }

    /// Where a picture reference points on disk (for hover texts).
    pub(super) fn picture_location(&self, reference: &str) -> String {
        if crate::layout::is_data_uri(reference) {
            "embedded in the layout".into()
        } else {
            full_path(reference, self.picture_base().as_deref())
                .display()
                .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_person_stands_inside_the_canvas() {
        let p = default_person([0.5, 0.5], 512, 512);
        assert_eq!(p.len(), KEYPOINTS_PER_PERSON);
        let b = points_bbox(&p).unwrap();
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 1.0 && b[3] <= 1.0);
        // Head above the ankles, the person's left on the right.
        assert!(p[0].unwrap()[1] < p[15].unwrap()[1]);
        assert!(p[5].unwrap()[0] > p[6].unwrap()[0]);
        // Near an edge it is moved in.
        let q = default_person([0.99, 0.01], 768, 512);
        let b = points_bbox(&q).unwrap();
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 1.0 + 1e-12 && b[3] <= 1.0 + 1e-12);
    }

    #[test]
    fn a_shown_joint_returns_near_where_it_was() {
        let p = default_person([0.4, 0.5], 512, 512);
        let mut hidden = p.clone();
        hidden[9] = None;
        let est = estimate_joint(&hidden, 9, 512, 512);
        let was = p[9].unwrap();
        assert!((est[0] - was[0]).abs() < 1e-6 && (est[1] - was[1]).abs() < 1e-6);
    }

    #[test]
    fn moving_a_person_keeps_it_on_the_canvas() {
        let mut e = Entity::Keypoints {
            points: default_person([0.5, 0.5], 512, 512),
        };
        offset_entity(&mut e, 2.0, -2.0);
        let Entity::Keypoints { points } = &e else {
            unreachable!()
        };
        let b = points_bbox(points).unwrap();
        assert!((b[2] - 1.0).abs() < 1e-9 && b[1].abs() < 1e-9);
    }
}
