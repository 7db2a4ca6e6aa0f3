//! Editing beyond text boxes: pictures (image boxes, the style image, the picture to inpaint) and
//! people (17 COCO keypoints; their geometry is in [`crate::layout::keypoints`]), and what the
//! loaded model allows. Every change is one undo step ([`Document::edit`]); geometry stays in
//! normalised layout coordinates. Files are checked off the UI thread (see [`read_dropped`] and
//! [`StudioApp::pick_picture_dialog`]).
//!
//! [`Document::edit`]: super::document::Document::edit

use super::dialogs::{run_dialog, DialogKind};
use super::file_actions::FileOutcome;
use super::{NoticeLevel, StudioApp, Tool};
use crate::layout::keypoints::{default_person, estimate_joint, joint_label, points_bbox};
use crate::layout::png::MAX_PNG_BYTES;
use crate::layout::{encode_data_uri, Entity, EntityKind, Inpaint, Layout};
use std::path::{Path, PathBuf};

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
    /// The layout's spatial map.
    Map,
    /// A photo to make Canny edges from.
    CannySource,
    /// A picture to make the map from (a photo, a depth picture, a coloured segmentation).
    MakeMap(crate::maps::make::MapRecipe),
}

impl PicturePurpose {
    fn dialog_title(&self) -> &'static str {
        match self {
            PicturePurpose::NewBox { .. } => "Choose a picture for a new image box",
            PicturePurpose::Fill { .. } => "Choose the image box's picture",
            PicturePurpose::Style => "Choose the style image",
            PicturePurpose::Inpaint => "Open a picture for inpainting",
            PicturePurpose::Map => "Choose the spatial map",
            PicturePurpose::CannySource => "Choose a photo to make Canny edges from",
            PicturePurpose::MakeMap(recipe) => {
                use crate::maps::make::MapRecipe;
                match recipe {
                    MapRecipe::NormalsFromDepth => {
                        "Choose a depth map (near = bright) to make normals from"
                    }
                    MapRecipe::ClassesFromColours => "Choose an ADE20K-coloured segmentation",
                    MapRecipe::DepthFromPhoto => "Choose a photo to estimate depth from",
                    MapRecipe::NormalsFromPhoto => "Choose a photo to estimate normals from",
                    MapRecipe::HedFromPhoto => "Choose a photo to detect HED edges in",
                    MapRecipe::Canny { .. } => "Choose a photo to make Canny edges from",
                }
            }
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
    crate::layout::picture_header(bytes)
        .map(|(_, size)| size)
        .map_err(|e| {
            // Anything dropped lands here last: say what else a drop could have been.
            if image::guess_format(bytes).is_err() {
                format!("{e}, nor a layout JSON or a Glichen PNG")
            } else {
                e
            }
        })
}

/// Checks a picture file (blocking: off the UI thread). The layout stores its absolute path.
pub fn check_picture_file(path: &Path) -> Result<PickedPicture, String> {
    let bytes = crate::fsio::read_limited(path, crate::layout::MAX_PICTURE_BYTES)
        .map_err(|e| format!("{}: {e}", path.display()))?;
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
        // A drop may be a Glichen PNG, the largest thing the studio opens.
        DropSource::Path(path) => match crate::fsio::read_limited(&path, MAX_PNG_BYTES) {
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
            Tool::Brush | Tool::Fill => self.sem_blocker(),
            Tool::Select | Tool::Pan => None,
        }
    }

    /// Leaves a tool the loaded model cannot use.
    pub(super) fn sync_tool_with_model(&mut self) {
        if self.tool_blocker(self.canvas.tool).is_some() {
            self.canvas.tool = Tool::Select;
            self.canvas.drag = None;
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
                    .doc
                    .layout()
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
                            previous: self.doc.layout().entities[i]
                                .image()
                                .unwrap_or("")
                                .to_string(),
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
            if let Some(i) = self.doc.selection {
                if let Some(Entity::ImageBox { image, .. }) = self.doc.layout().entities.get(i) {
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
        let dialogs = self.files.dialogs.clone();
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
            PicturePurpose::Map | PicturePurpose::CannySource | PicturePurpose::MakeMap(_) => {
                self.apply_map_picture(&purpose, picked.reference, picked.name);
            }
            PicturePurpose::Fill { index, previous } => {
                let still_there = matches!(
                    self.doc.layout().entities.get(index),
                    Some(Entity::ImageBox { image, .. }) if *image == previous
                );
                if !still_there {
                    return self.apply_picture(PicturePurpose::NewBox { at: None }, picked);
                }
                self.doc.edit("replace a picture", |l| {
                    if let Some(Entity::ImageBox { image, .. }) = l.entities.get_mut(index) {
                        *image = picked.reference;
                    }
                });
                self.doc.selection = Some(index);
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
                let i = self.doc.edit("add an image box", |l| {
                    l.entities.push(Entity::ImageBox {
                        image: picked.reference,
                        bbox,
                        phrase: None,
                    });
                    l.entities.len() - 1
                });
                self.doc.selection = Some(i);
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
                self.doc.edit("set the style image", |l| {
                    match l
                        .entities
                        .iter_mut()
                        .find(|e| matches!(e, Entity::StyleImage { .. }))
                    {
                        Some(Entity::StyleImage { image }) => *image = picked.reference,
                        _ => l.entities.push(Entity::StyleImage {
                            image: picked.reference,
                        }),
                    }
                });
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
                self.doc.edit("open a picture to inpaint", |l| {
                    l.inpaint = Some(Inpaint {
                        image: picked.reference,
                    });
                });
                // The old result is not what the boxes are drawn over any more.
                self.generation.canvas_image = None;
                self.status = format!(
                    "Inpainting {}: draw boxes over what should change",
                    picked.name
                );
            }
        }
    }

    /// A box with the picture's aspect ratio, 40% of the canvas's shorter side, centred at `at`.
    fn new_picture_box(&self, at: [f64; 2], size: [u32; 2]) -> [f64; 4] {
        let (w, h) = (
            self.doc.layout().width.max(1) as f64,
            self.doc.layout().height.max(1) as f64,
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
        if !self.doc.layout().has_kind(EntityKind::StyleImage) {
            return;
        }
        let selected = self.doc.selection;
        let mut kept_index = 0;
        let mut new_selection = None;
        let mut k = 0;
        self.doc.edit("clear the style image", |l| {
            l.entities.retain(|e| {
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
        });
        self.doc.selection = new_selection;
        self.status = "Style image removed".into();
    }

    /// Stops inpainting (the picture is forgotten; undo brings it back).
    pub fn clear_inpaint(&mut self) {
        if self.doc.layout().inpaint.is_some() {
            self.doc.edit("clear inpainting", |l| l.inpaint = None);
            self.status = "Inpainting picture removed".into();
        }
    }

    /// Why another person cannot be added now, if not.
    pub fn person_blocker(&self) -> Option<String> {
        if let Some(reason) = self.unsupported_reason(EntityKind::Keypoints) {
            return Some(reason);
        }
        let max = self.model_limits().max_people;
        (self.doc.layout().people_count() >= max).then(|| {
            format!("the model takes at most {max} people, and this layout has {max} already")
        })
    }

    /// Adds a standing person centred at `at` (normalised) and selects it; `None` (with a notice)
    /// when the model takes no more people. `record`: make it an undo step of its own, else it is
    /// part of the drag in progress (which records it on release).
    pub fn place_person(&mut self, at: [f64; 2], record: bool) -> Option<usize> {
        if let Some(reason) = self.person_blocker() {
            self.notify(NoticeLevel::Warning, format!("No person added: {reason}."));
            return None;
        }
        let add = |l: &mut Layout| {
            let points = default_person(at, l.width, l.height);
            l.entities.push(Entity::Keypoints { points });
            l.entities.len() - 1
        };
        let i = if record {
            self.doc.edit("place a person", add)
        } else {
            add(self.doc.live())
        };
        self.doc.selection = Some(i);
        self.status = format!(
            "Person {} placed: drag a joint to pose it, the body to move it; right-click a joint to hide it",
            self.doc.layout().people_count()
        );
        Some(i)
    }

    /// Hides (null) or shows joint `joint` of person `index` (one undo step). A joint shown again
    /// goes where the standing pose fitted to the other joints puts it.
    pub fn set_joint_visible(&mut self, index: usize, joint: usize, visible: bool) {
        let (w, h) = (self.doc.layout().width, self.doc.layout().height);
        let Some(Entity::Keypoints { points }) = self.doc.layout().entities.get(index) else {
            return;
        };
        let Some(current) = points.get(joint) else {
            return;
        };
        if current.is_some() == visible {
            return;
        }
        let new = visible.then(|| estimate_joint(points, joint, w, h));
        self.doc.edit("show or hide a joint", |l| {
            if let Some(Entity::Keypoints { points }) = l.entities.get_mut(index) {
                points[joint] = new;
            }
        });
        self.status = format!(
            "{} of person {} {}",
            joint_label(joint),
            index + 1,
            if visible { "shown" } else { "hidden" }
        );
    }

    /// Puts person `i` back in the standing pose, centred where it is (undoable).
    pub fn reset_pose(&mut self, i: usize) {
        let (w, h) = (self.doc.layout().width, self.doc.layout().height);
        let Some(Entity::Keypoints { points }) = self.doc.layout().entities.get(i) else {
            return;
        };
        let centre = points_bbox(points)
            .map(|b| [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0])
            .unwrap_or([0.5, 0.5]);
        let fresh = default_person(centre, w, h);
        if *points == fresh {
            return;
        }
        self.doc.edit("reset a pose", |l| {
            l.entities[i] = Entity::Keypoints { points: fresh }
        });
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
            crate::layout::picture_path(reference, self.picture_base().as_deref())
                .display()
                .to_string()
        }
    }
}
