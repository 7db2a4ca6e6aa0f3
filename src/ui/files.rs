//! Files for the studio: reading any supported document (layout JSON, Glichen PNG, diffusers
//! arguments, GLIGEN inference meta, COCO annotations), saving layouts (pictures relative to the
//! file, or embedded), atomic writes, the settings file and the autosave thread. Nothing here runs
//! on the UI thread except parsing of dropped bytes.
//!
//! Pictures: in memory the studio keeps picture paths absolute (a file's relative paths are
//! resolved against its folder when it is read), so the document keeps working wherever it is
//! saved next; a save writes them relative to the saved file's folder, or embeds them.

use crate::layout::{import, Layout};
use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A document read from a file or dropped bytes.
#[derive(Debug, Clone)]
pub struct LoadedDoc {
    pub layout: Layout,
    /// What the file was ("layout", "Glichen PNG", "diffusers arguments", …).
    pub format: &'static str,
    /// The picture of a Glichen PNG.
    pub image: Option<image::RgbImage>,
    /// Where Save writes: the file itself for a layout JSON; `None` for imports and PNGs.
    pub save_path: Option<PathBuf>,
    pub source: Option<PathBuf>,
}

/// The studio writes its own files (settings, autosave) into a data folder it may have to make.
pub use crate::fsio::write_atomic_creating_folder as write_atomic;

/// Reads a document from bytes (see [`crate::layout::import`]); relative picture paths are made
/// absolute against the folder of `path`, the file the bytes came from.
pub fn load_document_bytes(
    name: &str,
    bytes: &[u8],
    path: Option<&Path>,
) -> Result<LoadedDoc, String> {
    let imported = import::import_bytes(name, bytes).map_err(|e| e.to_string())?;
    Ok(loaded(imported, path))
}

fn loaded(imported: import::Imported, path: Option<&Path>) -> LoadedDoc {
    let import::Imported {
        mut layout,
        format,
        image,
    } = imported;
    absolutize_from(&mut layout, path);
    LoadedDoc {
        layout,
        format: format.name(),
        image,
        // Only a layout JSON is written back in place; imports and PNGs ask where to save.
        save_path: path
            .filter(|_| format == import::ImportFormat::Layout)
            .map(Path::to_path_buf),
        source: path.map(Path::to_path_buf),
    }
}

/// Resolves the layout's relative picture paths against the folder of the file it came from.
fn absolutize_from(layout: &mut Layout, path: Option<&Path>) {
    if let Some(dir) = path.and_then(Layout::base_dir) {
        layout.absolutize_image_paths(dir);
    }
}

/// What a save wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SaveReport {
    pub path: PathBuf,
    /// Pictures written into the file.
    pub embedded: usize,
    /// Pictures that were to be embedded but could not be read: each stays a path in the file,
    /// described for the user ("image box 2 (a corgi): cannot read …").
    pub not_embedded: Vec<String>,
}

/// "image box 2 (“a corgi”)" for `entities[1].image`: how a notice names a picture's entity.
pub fn describe_picture_owner(layout: &Layout, label: &str) -> String {
    if label.starts_with("inpaint") {
        return "the picture to inpaint".into();
    }
    let index = label
        .strip_prefix("entities[")
        .and_then(|r| r.split(']').next())
        .and_then(|i| i.parse::<usize>().ok());
    match index.and_then(|i| layout.entities.get(i).map(|e| (i, e))) {
        Some((i, crate::layout::Entity::ImageBox { phrase, .. })) => match phrase {
            Some(p) if !p.trim().is_empty() => format!("image box {} (\u{201c}{p}\u{201d})", i + 1),
            _ => format!("image box {}", i + 1),
        },
        Some((i, crate::layout::Entity::StyleImage { .. })) => {
            format!("the style image (entity {})", i + 1)
        }
        Some((i, _)) => format!("entity {}", i + 1),
        None => label.to_string(),
    }
}

/// Saves `layout` to `path` (blocking: off the UI thread; atomic). Relative picture paths of the
/// layout are taken as relative to `from_base` (the folder of the file it was read from); in the
/// file, pictures are written relative to its folder (absolute only where there is no relative
/// path, e.g. another drive), or embedded as data URIs when `embed` is set. A picture that cannot
/// be embedded keeps its path and is reported; the save goes on.
pub fn save_layout(
    layout: &Layout,
    from_base: Option<&Path>,
    path: &Path,
    embed: bool,
) -> Result<SaveReport, String> {
    let mut out = layout.clone();
    // Relative paths with no known folder are read from the working directory, as the worker
    // and the picture cache read them.
    out.absolutize_image_paths(from_base.unwrap_or(Path::new(".")));
    let mut not_embedded = Vec::new();
    let mut embedded = 0;
    if embed {
        let (n, errors) = out.embed_images_lenient(from_base);
        embedded = n;
        for e in errors {
            not_embedded.push(match &e {
                crate::layout::LayoutError::Image { path, message } => {
                    format!("{}: {message}", describe_picture_owner(layout, path))
                }
                other => other.to_string(),
            });
        }
    }
    if let Some(dir) = Layout::base_dir(path) {
        out.relativize_image_paths(dir);
    }
    out.save(path).map_err(|e| e.to_string())?;
    Ok(SaveReport {
        path: path.to_path_buf(),
        embedded,
        not_embedded,
    })
}

/// Reads a document file (blocking: call it off the UI thread).
pub fn load_document(path: &Path) -> Result<LoadedDoc, String> {
    let imported = import::import_file(path).map_err(|e| e.to_string())?;
    Ok(loaded(imported, Some(path)))
}

/// Studio preferences, kept in `settings.json` in the data folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The model chosen last (folder, checkpoint, catalogue name or repo id).
    pub model: Option<String>,
    pub device: String,
    pub dtype: String,
    pub recent: Vec<PathBuf>,
    /// The file the current document is saved to.
    pub document_path: Option<PathBuf>,
    pub snap: bool,
    pub show_boxes: bool,
    pub show_image: bool,
    /// Save writes the pictures into the layout file (data URIs) instead of paths.
    pub embed_pictures: bool,
    pub draft: super::draft::DraftSettings,
    /// The CLIP image tower for original text-image checkpoints (a folder or a hub repo id);
    /// empty: an `image_encoder/` folder beside the checkpoint, else openai/clip-vit-large-patch14.
    pub image_encoder: String,
    /// The TAESD preview decoder loaded beside models (`taesd`, a folder or a hub repo id); empty:
    /// previews are the latent projection.
    pub preview_decoder: String,
    /// The depth network for depth and normal maps made from photos (a folder, catalogue name
    /// or hub repo id); empty: `depth-anything-v2-small`.
    pub depth_model: String,
    /// The HED network for HED maps made from photos (a file, folder, catalogue name or hub
    /// repo id); empty: `hed`.
    pub hed_model: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: None,
            device: "auto".into(),
            dtype: "auto".into(),
            recent: Vec::new(),
            document_path: None,
            snap: false,
            show_boxes: true,
            show_image: true,
            embed_pictures: false,
            draft: Default::default(),
            image_encoder: String::new(),
            preview_decoder: String::new(),
            depth_model: String::new(),
            hed_model: String::new(),
        }
    }
}

pub const MAX_RECENT: usize = 10;

impl Settings {
    pub fn add_recent(&mut self, path: &Path) {
        self.recent.retain(|p| p != path);
        self.recent.insert(0, path.to_path_buf());
        self.recent.truncate(MAX_RECENT);
    }
}

/// File names in the data folder.
pub const AUTOSAVE_FILE: &str = "autosave.json";
pub const SETTINGS_FILE: &str = "settings.json";

/// The app's data folder (`~/.local/share/glichen` on Linux).
pub fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("glichen"))
}

enum SaveMsg {
    Write(PathBuf, Vec<u8>),
    Flush(Sender<()>),
}

/// Writes autosaves on a background thread: the UI sends the newest bytes and never waits on the
/// disk. Consecutive writes to one file are coalesced (only the newest is written).
pub struct Autosaver {
    tx: Option<Sender<SaveMsg>>,
    thread: Option<std::thread::JoinHandle<()>>,
    errors: Receiver<String>,
}

impl Default for Autosaver {
    fn default() -> Self {
        Self::spawn()
    }
}

impl Autosaver {
    pub fn spawn() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<SaveMsg>();
        let (err_tx, errors) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("glichen-autosave".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let mut latest: Vec<(PathBuf, Vec<u8>)> = Vec::new();
                    let mut flushes = Vec::new();
                    for msg in batch {
                        match msg {
                            SaveMsg::Write(path, bytes) => {
                                latest.retain(|(p, _)| *p != path);
                                latest.push((path, bytes));
                            }
                            SaveMsg::Flush(ack) => flushes.push(ack),
                        }
                    }
                    for (path, bytes) in latest {
                        if let Err(e) = write_atomic(&path, &bytes) {
                            let _ =
                                err_tx.send(format!("autosave to {} failed: {e}", path.display()));
                        }
                    }
                    for ack in flushes {
                        let _ = ack.send(());
                    }
                }
            })
            .ok();
        Self {
            tx: Some(tx),
            thread,
            errors,
        }
    }

    pub fn write(&self, path: PathBuf, bytes: Vec<u8>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(SaveMsg::Write(path, bytes));
        }
    }

    /// Waits until everything sent so far is on disk (tests, exit).
    pub fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
            if tx.send(SaveMsg::Flush(ack_tx)).is_ok() {
                let _ = ack_rx.recv_timeout(std::time::Duration::from_secs(10));
            }
        }
    }

    /// An error from a past write, if any.
    pub fn try_error(&self) -> Option<String> {
        self.errors.try_recv().ok()
    }
}

impl Drop for Autosaver {
    fn drop(&mut self) {
        // Let pending writes finish: the last change must survive quitting.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Settings are a few hundred bytes; anything past this is not ours.
const MAX_SETTINGS_BYTES: u64 = 1 << 20;

/// Moves a file that could not be read aside (see [`crate::fsio::set_aside`]) and says where it
/// went, or that it could not be moved.
fn kept_aside(path: &Path) -> String {
    match crate::fsio::set_aside(path) {
        Ok(kept) => format!("The file was kept as {}.", kept.display()),
        Err(e) => format!(
            "It could not be moved aside ({e}) and will be replaced by the next save of {}.",
            path.display()
        ),
    }
}

/// The studio's files: its settings (as used and as last written), the autosave thread, the file
/// dialogs, background file tasks and the reference pictures decoded for display.
pub(crate) struct Files {
    pub(crate) settings: Settings,
    pub(crate) saved_settings: Settings,
    /// Where autosave and settings live (`None`: nowhere, nothing is kept).
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) autosave_enabled: bool,
    pub(crate) autosaver: Autosaver,
    pub(crate) last_autosave: std::time::Instant,
    /// The last autosave failure shown, so that a folder that keeps failing is said once.
    pub(crate) last_autosave_error: Option<String>,
    pub(crate) dialogs: super::Dialogs,
    pub(crate) tasks: Vec<poll_promise::Promise<super::file_actions::FileOutcome>>,
    /// The picture of an opened Glichen PNG, waiting for its texture.
    pub(crate) pending_image: Option<(std::sync::Arc<image::RgbImage>, egui::ColorImage)>,
    pub(crate) pictures: super::pictures::PictureCache,
    /// The window title as last sent.
    pub(crate) title: String,
}

impl Files {
    /// Reads what the last session left in `data_dir` when `autosave` is on: the settings and the
    /// autosaved layout. Returns the files, that layout, and warnings for what could not be read
    /// (a broken file is kept aside, named with the time: `autosave.json.broken-YYYYMMDD-HHMMSS`).
    pub(crate) fn start(
        data_dir: Option<PathBuf>,
        autosave: bool,
        dialogs: super::Dialogs,
    ) -> (Self, Option<Layout>, Vec<String>) {
        let mut warnings = Vec::new();
        let mut settings = Settings::default();
        let mut autosaved = None;
        let mut autosave = autosave;
        if autosave {
            if let Some(dir) = &data_dir {
                // A folder that cannot be written still lets the studio run: what is there is
                // read, nothing is autosaved this session, and the user is told once, up front,
                // instead of by a failed write after every edit.
                if let Err(e) = crate::fsio::check_writable_folder(dir) {
                    warnings.push(format!(
                        "The data folder {} cannot be written ({e}): autosave and settings are \
                         off for this session. Save your layout with Save as… to keep it.",
                        dir.display()
                    ));
                    autosave = false;
                }
                let settings_path = dir.join(SETTINGS_FILE);
                if settings_path.is_file() {
                    match crate::fsio::read_text_limited(&settings_path, MAX_SETTINGS_BYTES)
                        .map_err(|e| e.to_string())
                        .and_then(|t| {
                            serde_json::from_str::<Settings>(&t).map_err(|e| e.to_string())
                        }) {
                        Ok(s) => settings = s,
                        Err(e) => warnings.push(format!(
                            "The settings could not be read ({e}); using defaults. {}",
                            kept_aside(&settings_path)
                        )),
                    }
                }
                let autosave_path = dir.join(AUTOSAVE_FILE);
                if autosave_path.is_file() {
                    match Layout::load(&autosave_path) {
                        Ok(l) => autosaved = Some(l),
                        Err(e) => warnings.push(format!(
                            "The autosaved layout could not be read ({e}); starting blank. {}",
                            kept_aside(&autosave_path)
                        )),
                    }
                }
            }
        }
        let files = Self {
            saved_settings: settings.clone(),
            settings,
            data_dir,
            autosave_enabled: autosave,
            autosaver: Autosaver::spawn(),
            last_autosave: std::time::Instant::now(),
            last_autosave_error: None,
            dialogs,
            tasks: Vec::new(),
            pending_image: None,
            pictures: Default::default(),
            title: String::new(),
        };
        (files, autosaved, warnings)
    }
}
