//! File dialogs: the native ones (rfd), or answers scripted in advance (tests). Dialogs block, so
//! they only ever run on a file task's thread.

use super::pictures;
#[cfg(feature = "testing")]
use std::collections::VecDeque;
use std::path::PathBuf;
#[cfg(feature = "testing")]
use std::sync::{Arc, Mutex};

/// Who answers file dialogs: the native ones (rfd), or a script (tests).
#[derive(Clone, Default)]
pub enum Dialogs {
    #[default]
    Native,
    /// Each dialog takes the next answer (`None` = the user cancelled).
    #[cfg(feature = "testing")]
    Scripted(Arc<Mutex<VecDeque<Option<PathBuf>>>>),
}

#[cfg(feature = "testing")]
impl Dialogs {
    pub fn scripted() -> (Self, Arc<Mutex<VecDeque<Option<PathBuf>>>>) {
        let q = Arc::new(Mutex::new(VecDeque::new()));
        (Dialogs::Scripted(q.clone()), q)
    }
}

/// What a dialog asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum DialogKind {
    OpenDocument,
    SaveLayout {
        suggested: String,
    },
    ExportPng {
        suggested: String,
    },
    ModelFolder,
    ModelFile,
    /// A PNG, JPEG or WebP picture (image box, style image, picture to inpaint).
    OpenPicture {
        title: String,
    },
}

pub(super) fn run_dialog(dialogs: &Dialogs, kind: &DialogKind) -> Option<PathBuf> {
    match dialogs {
        #[cfg(feature = "testing")]
        Dialogs::Scripted(q) => q
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
            .flatten(),
        Dialogs::Native => match kind {
            DialogKind::OpenDocument => rfd::FileDialog::new()
                .set_title("Open a layout")
                .add_filter("Layouts and Glichen PNGs", &["json", "png"])
                .add_filter("All files", &["*"])
                .pick_file(),
            DialogKind::SaveLayout { suggested } => rfd::FileDialog::new()
                .set_title("Save the layout")
                .add_filter("Layout JSON", &["json"])
                .set_file_name(suggested)
                .save_file(),
            DialogKind::ExportPng { suggested } => rfd::FileDialog::new()
                .set_title("Export the image")
                .add_filter("PNG", &["png"])
                .set_file_name(suggested)
                .save_file(),
            DialogKind::ModelFolder => rfd::FileDialog::new()
                .set_title("Choose a diffusers GLIGEN model folder")
                .pick_folder(),
            DialogKind::ModelFile => rfd::FileDialog::new()
                .set_title("Choose an original GLIGEN checkpoint")
                .add_filter("Checkpoints", &["bin", "pth", "ckpt", "safetensors"])
                .pick_file(),
            DialogKind::OpenPicture { title } => rfd::FileDialog::new()
                .set_title(title)
                .add_filter("Pictures (PNG, JPEG, WebP)", &pictures::PICTURE_EXTENSIONS)
                .pick_file(),
        },
    }
}
