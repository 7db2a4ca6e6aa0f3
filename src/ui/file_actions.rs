//! The studio's file work: open (any supported document, by dialog, path or drop), save and save
//! as (pictures relative to the file or embedded), export of the result as a PNG, the model
//! dialogs, autosave and the window title. Reading, writing and dialogs run on background threads
//! (`poll_promise`); their outcomes are applied once a frame.

use super::dialogs::{run_dialog, DialogKind};
use super::edit::{self, PickedPicture, PicturePurpose};
use super::files::{self, LoadedDoc, SaveReport};
use super::{CanvasImage, NoticeLevel, StudioApp};
use crate::layout::Layout;
use poll_promise::Promise;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Results of background file work.
pub(crate) enum FileOutcome {
    Opened(Result<Box<LoadedDoc>, String>, Option<PathBuf>),
    Saved(Result<SaveReport, String>),
    Exported(Result<PathBuf, String>),
    ModelPicked(Option<PathBuf>),
    /// A picture chosen or dropped, checked (not yet decoded for display).
    Picture(PicturePurpose, Result<PickedPicture, String>),
    /// A photo for Canny edges, cropped and resized to the canvas.
    MapSource(Result<(String, image::RgbImage), String>),
    /// A map made from a picture (kind, PNG data URI, a name for the status line).
    MapMade(Result<(crate::layout::MapKind, String, String), String>),
    /// The layout's semantic map (its reference) decoded to class indices for painting.
    SemRaster(String, Result<image::GrayImage, String>),
    Cancelled,
}

impl StudioApp {
    pub(super) fn spawn_file_task(
        &mut self,
        name: &str,
        f: impl FnOnce() -> FileOutcome + Send + 'static,
    ) {
        self.files.tasks.push(Promise::spawn_thread(name, f));
    }

    /// Shows the open dialog and opens the chosen document (off the UI thread).
    pub fn open_dialog(&mut self) {
        let dialogs = self.files.dialogs.clone();
        self.spawn_file_task("glichen-open", move || {
            match run_dialog(&dialogs, &DialogKind::OpenDocument) {
                Some(path) => {
                    FileOutcome::Opened(files::load_document(&path).map(Box::new), Some(path))
                }
                None => FileOutcome::Cancelled,
            }
        });
    }

    /// Opens a file (read off the UI thread).
    pub fn open_path(&mut self, path: PathBuf) {
        self.spawn_file_task("glichen-open", move || {
            FileOutcome::Opened(files::load_document(&path).map(Box::new), Some(path))
        });
    }

    /// Where relative image paths of the layout are read from: the folder of the file it was
    /// opened from (a later Save As elsewhere does not move it), else of its document file.
    /// (Opening a file makes its picture paths absolute, so this matters only for layouts given
    /// with relative paths through the API or restored from an old autosave.)
    pub(super) fn base_dir(&self) -> Option<PathBuf> {
        self.doc
            .opened_from
            .as_deref()
            .or(self.files.settings.document_path.as_deref())
            .and_then(Layout::base_dir)
            .map(Path::to_path_buf)
    }

    fn suggested_name(&self, ext: &str) -> String {
        let stem = self
            .files
            .settings
            .document_path
            .as_ref()
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "layout".into());
        format!("{stem}.{ext}")
    }

    /// Save: to the document's file, or through the dialog when it has none.
    pub fn save(&mut self) {
        match self.files.settings.document_path.clone() {
            Some(path) => self.save_to(path),
            None => self.save_as_dialog(),
        }
    }

    /// Save as: asks where, then saves (pictures relative to the new file, or embedded).
    pub fn save_as_dialog(&mut self) {
        let dialogs = self.files.dialogs.clone();
        let layout = self.doc.layout().clone();
        let base = self.base_dir();
        let embed = self.files.settings.embed_pictures;
        let kind = DialogKind::SaveLayout {
            suggested: self.suggested_name("json"),
        };
        self.spawn_file_task("glichen-save", move || match run_dialog(&dialogs, &kind) {
            Some(path) => {
                FileOutcome::Saved(files::save_layout(&layout, base.as_deref(), &path, embed))
            }
            None => FileOutcome::Cancelled,
        });
    }

    /// Saves to `path` (off the UI thread, atomically): picture paths are written relative to its
    /// folder, or the pictures embedded when "Embed pictures in the file" is on.
    pub fn save_to(&mut self, path: PathBuf) {
        let layout = self.doc.layout().clone();
        let base = self.base_dir();
        let embed = self.files.settings.embed_pictures;
        self.spawn_file_task("glichen-save", move || {
            FileOutcome::Saved(files::save_layout(&layout, base.as_deref(), &path, embed))
        });
    }

    /// Whether Save embeds the pictures ("Embed pictures in the file").
    pub fn set_embed_pictures(&mut self, on: bool) {
        self.files.settings.embed_pictures = on;
    }

    /// Exports the shown result as a PNG carrying its layout.
    pub fn export_png_dialog(&mut self) {
        let Some(CanvasImage::Result { image, layout, .. }) = &self.generation.canvas_image else {
            self.notify(
                NoticeLevel::Warning,
                "There is no finished image to export yet.",
            );
            return;
        };
        let image = image.clone();
        let mut layout = layout.clone();
        if let Some(base) = self.base_dir() {
            layout.absolutize_image_paths(&base);
        }
        let json = match layout.to_json_pretty() {
            Ok(j) => j,
            Err(e) => {
                self.notify(NoticeLevel::Error, format!("Cannot export: {e}"));
                return;
            }
        };
        let dialogs = self.files.dialogs.clone();
        let kind = DialogKind::ExportPng {
            suggested: self.suggested_name("png"),
        };
        self.spawn_file_task("glichen-export", move || {
            match run_dialog(&dialogs, &kind) {
                Some(path) => FileOutcome::Exported(
                    // Pictures relative to the PNG's folder, like a saved layout's.
                    Layout::base_dir(&path)
                        .and_then(|dir| {
                            let mut relative = layout.clone();
                            (relative.relativize_image_paths(dir) > 0)
                                .then(|| relative.to_json_pretty().ok())
                                .flatten()
                        })
                        .map_or(Ok(json), Ok)
                        .and_then(|json| crate::layout::png::encode_png_with_layout(&image, &json))
                        .and_then(|bytes| {
                            files::write_atomic(&path, &bytes).map_err(|e| e.to_string())
                        })
                        .map(|_| path),
                ),
                None => FileOutcome::Cancelled,
            }
        });
    }

    pub fn pick_model_dialog(&mut self, folder: bool) {
        let dialogs = self.files.dialogs.clone();
        let kind = if folder {
            DialogKind::ModelFolder
        } else {
            DialogKind::ModelFile
        };
        self.spawn_file_task("glichen-model-dialog", move || {
            FileOutcome::ModelPicked(run_dialog(&dialogs, &kind))
        });
    }

    /// Starts a blank document (undoable).
    pub fn new_document(&mut self) {
        let blank = Layout::studio_blank(self.doc.layout().width, self.doc.layout().height);
        self.set_layout(blank);
        self.doc.selection = None;
        self.files.settings.document_path = None;
        self.doc.opened_from = None;
        self.doc.saved = None;
        self.generation.canvas_image = None;
    }

    fn apply_loaded(&mut self, loaded: LoadedDoc) {
        let LoadedDoc {
            layout,
            format,
            image,
            save_path,
            source,
        } = loaded;
        self.set_layout(layout);
        self.doc.selection = None;
        self.files.settings.document_path = save_path.clone();
        self.doc.saved = save_path.as_ref().map(|_| self.doc.layout().clone());
        // A layout file whose pictures are all embedded is saved the same way again.
        let refs = self.doc.layout().image_refs();
        if save_path.is_some() && !refs.is_empty() {
            self.files.settings.embed_pictures =
                refs.iter().all(|(_, r)| crate::layout::is_data_uri(r));
        }
        self.doc.saved_embed = self.files.settings.embed_pictures;
        if let Some(path) = &source {
            self.files.settings.add_recent(path);
        }
        self.doc.opened_from = source.clone();
        if let Some(image) = image {
            let color = egui::ColorImage::from_rgb(
                [image.width() as usize, image.height() as usize],
                image.as_raw(),
            );
            // The texture is created in `poll_files`, which has the context.
            self.files.pending_image = Some((Arc::new(image), color));
        }
        let name = source
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.status = if format == "layout" {
            format!("Opened {name}")
        } else {
            format!("Imported {name} ({format})")
        };
        if let Err(issues) = self.doc.layout().validate() {
            self.notify(
                NoticeLevel::Warning,
                format!("{name} opened with problems to fix:\n{issues}"),
            );
        }
    }

    pub(super) fn poll_files(&mut self, ctx: &egui::Context) {
        let mut still = Vec::new();
        for task in std::mem::take(&mut self.files.tasks) {
            match task.try_take() {
                Ok(outcome) => match outcome {
                    FileOutcome::Opened(Ok(doc), _) => self.apply_loaded(*doc),
                    FileOutcome::Opened(Err(e), path) => {
                        let name = path
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "the file".into());
                        self.notify(NoticeLevel::Error, format!("Could not open {name}: {e}"));
                    }
                    FileOutcome::Saved(Ok(report)) => {
                        let path = report.path;
                        self.status = if report.embedded > 0 {
                            format!(
                                "Saved {} with {} picture(s) embedded",
                                path.display(),
                                report.embedded
                            )
                        } else {
                            format!("Saved {}", path.display())
                        };
                        if !report.not_embedded.is_empty() {
                            self.notify(
                                NoticeLevel::Warning,
                                format!(
                                    "Saved {}, but {} picture(s) could not be embedded and are kept as paths in the file:\n{}",
                                    path.display(),
                                    report.not_embedded.len(),
                                    report.not_embedded.join("\n")
                                ),
                            );
                        }
                        self.files.settings.add_recent(&path);
                        self.files.settings.document_path = Some(path);
                        self.doc.saved = Some(self.doc.layout().clone());
                        self.doc.saved_embed = self.files.settings.embed_pictures;
                    }
                    FileOutcome::Saved(Err(e)) => {
                        self.notify(NoticeLevel::Error, format!("Could not save: {e}"));
                    }
                    FileOutcome::Exported(Ok(path)) => {
                        self.status = format!("Exported {}", path.display());
                    }
                    FileOutcome::Exported(Err(e)) => {
                        self.notify(NoticeLevel::Error, format!("Could not export: {e}"));
                    }
                    FileOutcome::ModelPicked(Some(path)) => {
                        let request = self.load_request(&path.display().to_string());
                        self.load_model(request);
                    }
                    FileOutcome::Picture(purpose, Ok(picked)) => {
                        self.apply_picture(purpose, picked);
                    }
                    FileOutcome::MapSource(source) => self.apply_map_source(source),
                    FileOutcome::SemRaster(reference, result) => {
                        self.apply_sem_raster(reference, result);
                    }
                    FileOutcome::MapMade(Ok((kind, uri, name))) => self.set_map(kind, uri, &name),
                    FileOutcome::MapMade(Err(e)) => {
                        self.notify(NoticeLevel::Error, format!("Could not make the map: {e}"));
                    }
                    FileOutcome::Picture(_, Err(e)) => self.notify(
                        NoticeLevel::Error,
                        format!("Could not use the picture: {e}"),
                    ),
                    FileOutcome::ModelPicked(None) | FileOutcome::Cancelled => {}
                },
                Err(task) => still.push(task),
            }
        }
        self.files.tasks.extend(still);
        if let Some((image, color)) = self.files.pending_image.take() {
            let texture =
                ctx.load_texture("glichen-opened-image", color, egui::TextureOptions::LINEAR);
            self.generation.canvas_image = Some(CanvasImage::Result {
                texture,
                image,
                layout: self.doc.layout().clone(),
            });
        }
        if !self.files.tasks.is_empty() {
            ctx.request_repaint_after(Duration::from_millis(30));
        }
    }

    pub(super) fn handle_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped = ctx.input(|i| i.raw.dropped_files.clone());
        if dropped.is_empty() {
            return;
        }
        // Where the pointer was when the files were dropped decides what a picture becomes.
        let pointer = ctx.input(|i| i.pointer.latest_pos());
        for (k, file) in dropped.into_iter().enumerate() {
            let path = file.path().to_path_buf();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let ext = path
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            if !path.as_os_str().is_empty() && ext == "json" {
                self.open_path(path);
                continue;
            }
            // Pictures (and Glichen PNGs, which open their layout unless dropped on an image box).
            let purpose = self.drop_purpose(pointer, k);
            let source = if path.as_os_str().is_empty() {
                match file.bytes() {
                    Ok(bytes) => edit::DropSource::Bytes(name, bytes),
                    Err(e) => {
                        self.notify(
                            NoticeLevel::Error,
                            format!("Could not read the dropped file: {e}"),
                        );
                        continue;
                    }
                }
            } else {
                edit::DropSource::Path(path)
            };
            self.spawn_file_task("glichen-drop", move || edit::read_dropped(source, purpose));
        }
    }

    pub(super) fn autosave(&mut self) {
        if !self.files.autosave_enabled {
            return;
        }
        let Some(dir) = self.files.data_dir.clone() else {
            return;
        };
        // Every change is written at once, except the stream of them while a box is dragged: those
        // at most every 250 ms (the end of the drag is written at once again).
        let dragging = self.canvas.drag.is_some();
        let throttled = dragging && self.files.last_autosave.elapsed() < Duration::from_millis(250);
        if self.doc.autosaved.as_ref() != Some(self.doc.layout()) && !throttled {
            self.files.last_autosave = Instant::now();
            match self.doc.layout().to_json_pretty() {
                Ok(mut json) => {
                    json.push('\n');
                    self.files
                        .autosaver
                        .write(dir.join(files::AUTOSAVE_FILE), json.into_bytes());
                    self.doc.autosaved = Some(self.doc.layout().clone());
                }
                Err(e) => tracing::warn!("autosave skipped: {e}"),
            }
        }
        if self.files.settings != self.files.saved_settings {
            if let Ok(json) = serde_json::to_string_pretty(&self.files.settings) {
                self.files
                    .autosaver
                    .write(dir.join(files::SETTINGS_FILE), json.into_bytes());
                self.files.saved_settings = self.files.settings.clone();
            }
        }
        if let Some(e) = self.files.autosaver.try_error() {
            if self.files.last_autosave_error.as_ref() != Some(&e) {
                self.files.last_autosave_error = Some(e.clone());
                self.notify(NoticeLevel::Error, e);
            }
        }
    }

    pub(super) fn is_dirty(&self) -> bool {
        self.doc.is_dirty(self.files.settings.embed_pictures)
    }

    pub(super) fn update_title(&mut self, ctx: &egui::Context) {
        let name = self
            .files
            .settings
            .document_path
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "untitled".into());
        let title = format!(
            "{}{name} — Glichen",
            if self.is_dirty() { "• " } else { "" }
        );
        if title != self.files.title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.files.title = title;
        }
    }
}
