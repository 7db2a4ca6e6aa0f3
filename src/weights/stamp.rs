//! What a model load read: every weights file as it was when opened (path, length, modification
//! time, and on Unix the device and inode), and the bytes of the tensors built from them.
//!
//! The worker keeps a model loaded for hours while the files stay on disk, where a download, a
//! conversion script or the user may replace them; the loaded networks (copied out of the files at
//! load) then no longer match the files, and a picture would be credited to weights that are not
//! those on disk. [`LoadRecord::check`] tells, before each job, which file changed and how.
//!
//! The loaders record through a per-thread recorder rather than a parameter threaded through every
//! reader: a load runs on one thread, and the readers (diffusers folders, original checkpoints,
//! CLIP towers, Stable Diffusion's first conv, TAESD) are many and nested.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A file's identity when a load opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    pub path: PathBuf,
    pub len: u64,
    pub modified: Option<SystemTime>,
    /// `(device, inode)` on Unix: a file replaced by a rename keeps neither.
    pub file_id: Option<(u64, u64)>,
}

impl FileStamp {
    /// The file's identity now.
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        #[cfg(unix)]
        let file_id = {
            use std::os::unix::fs::MetadataExt;
            Some((meta.dev(), meta.ino()))
        };
        #[cfg(not(unix))]
        let file_id = None;
        Ok(Self {
            path: path.to_path_buf(),
            len: meta.len(),
            modified: meta.modified().ok(),
            file_id,
        })
    }

    /// How the file differs from this stamp now, if it does.
    pub fn change(&self) -> Option<FileChange> {
        let now = match Self::of(&self.path) {
            Ok(now) => now,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(FileChange::Deleted),
            Err(e) => return Some(FileChange::Unreadable(e.to_string())),
        };
        if now.file_id != self.file_id {
            Some(FileChange::Replaced)
        } else if now.len != self.len {
            Some(FileChange::Resized {
                was: self.len,
                now: now.len,
            })
        } else if now.modified != self.modified {
            Some(FileChange::Modified)
        } else {
            None
        }
    }
}

/// How a weights file changed after the model was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    Deleted,
    /// Another file now has its name (written elsewhere and renamed over it).
    Replaced,
    Resized {
        was: u64,
        now: u64,
    },
    /// Same size, newer modification time: rewritten in place.
    Modified,
    /// It is there but cannot be examined (permissions).
    Unreadable(String),
}

impl std::fmt::Display for FileChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileChange::Deleted => f.write_str("was deleted"),
            FileChange::Replaced => f.write_str("was replaced by another file"),
            FileChange::Resized { was, now } => {
                write!(f, "was modified (its size went from {was} to {now} bytes)")
            }
            FileChange::Modified => f.write_str("was modified (its modification time changed)"),
            FileChange::Unreadable(e) => write!(f, "can no longer be examined ({e})"),
        }
    }
}

/// A weights file of the loaded model changed on disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {change} after the model was loaded; load the model again", path.display())]
pub struct ModelFileChanged {
    pub path: PathBuf,
    pub change: FileChange,
}

/// What one model load read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadRecord {
    /// Every weights file opened, once each, in the order opened.
    pub files: Vec<FileStamp>,
    /// The bytes of every tensor the networks took, in the dtype they were built in.
    pub tensor_bytes: u64,
}

impl LoadRecord {
    /// The first recorded file that changed since it was opened.
    pub fn check(&self) -> Result<(), ModelFileChanged> {
        for stamp in &self.files {
            if let Some(change) = stamp.change() {
                return Err(ModelFileChanged {
                    path: stamp.path.clone(),
                    change,
                });
            }
        }
        Ok(())
    }
}

/// The record being made, and the tensors (file, name) already counted: networks read some
/// tensors twice (a shape probe, then the weight).
type Recorder = Option<(LoadRecord, HashSet<(PathBuf, String)>)>;

thread_local! {
    static RECORDER: RefCell<Recorder> = const { RefCell::new(None) };
}

/// Runs `f` recording every weights file opened and tensor built on this thread.
pub fn recording<T>(f: impl FnOnce() -> T) -> (T, LoadRecord) {
    /// Puts the outer recorder back even when `f` panics (a loader's panic is caught and
    /// reported by the worker, whose thread then loads again).
    struct Restore(Recorder);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            RECORDER.with(|r| *r.borrow_mut() = outer);
        }
    }
    let outer = RECORDER.with(|r| r.replace(Some(Default::default())));
    let restore = Restore(outer);
    let value = f();
    let record = RECORDER
        .with(|r| r.borrow_mut().take())
        .map(|(record, _)| record)
        .unwrap_or_default();
    drop(restore);
    (value, record)
}

/// Notes that a load opens `path`. A file that cannot be examined is not noted: opening it
/// fails next, with its own error.
pub(crate) fn note_file(path: &Path) {
    RECORDER.with(|r| {
        if let Some((record, _)) = r.borrow_mut().as_mut() {
            if record.files.iter().any(|s| s.path == path) {
                return;
            }
            if let Ok(stamp) = FileStamp::of(path) {
                record.files.push(stamp);
            }
        }
    });
}

/// Notes that a load built tensor `name` of `file`, `bytes` long.
pub(crate) fn note_tensor(file: &Path, name: &str, bytes: usize) {
    RECORDER.with(|r| {
        if let Some((record, seen)) = r.borrow_mut().as_mut() {
            if seen.insert((file.to_path_buf(), name.to_string())) {
                record.tensor_bytes += bytes as u64;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("glichen-stamp-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("w.safetensors")
    }

    #[test]
    fn records_only_inside_the_scope_and_once_per_file() {
        let path = scratch("scope");
        std::fs::write(&path, b"abc").unwrap();
        note_file(&path);
        let ((), record) = recording(|| {
            note_file(&path);
            note_file(&path);
            note_tensor(&path, "a", 12);
            note_tensor(&path, "a", 12);
        });
        assert_eq!(record.files.len(), 1);
        assert_eq!(record.files[0].len, 3);
        assert_eq!(record.tensor_bytes, 12);
        assert_eq!(record.check(), Ok(()));
        let ((), empty) = recording(|| {});
        assert_eq!(empty, LoadRecord::default());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn each_change_is_named() {
        let path = scratch("changes");
        std::fs::write(&path, b"abc").unwrap();
        let stamp = FileStamp::of(&path).unwrap();
        let at = |secs| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(at(1_000_000))
            .unwrap();
        assert_eq!(stamp.change(), Some(FileChange::Modified));
        std::fs::write(&path, b"abcd").unwrap();
        assert_eq!(stamp.change(), Some(FileChange::Resized { was: 3, now: 4 }));
        #[cfg(unix)]
        {
            let other = path.with_extension("new");
            std::fs::write(&other, b"abc").unwrap();
            std::fs::rename(&other, &path).unwrap();
            assert_eq!(stamp.change(), Some(FileChange::Replaced));
        }
        std::fs::remove_file(&path).unwrap();
        assert_eq!(stamp.change(), Some(FileChange::Deleted));
        let err = LoadRecord {
            files: vec![stamp],
            tensor_bytes: 0,
        }
        .check()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} was deleted after the model was loaded; load the model again",
                path.display()
            )
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_panic_inside_restores_the_outer_recorder() {
        let ((), outer) = recording(|| {
            let caught = std::panic::catch_unwind(|| recording(|| panic!("inner")));
            assert!(caught.is_err());
            note_tensor(Path::new("f"), "t", 5);
        });
        assert_eq!(outer.tensor_bytes, 5);
    }
}
