//! Finding, downloading and loading model weights: diffusers folders (safetensors memory-mapped,
//! else torch pickles, `.fp16` variants), the hub catalogue, and a tensor backend whose errors name
//! the file, the tensor and both shapes.

pub mod catalogue;
pub mod original;
pub mod pickle_guard;
pub mod stamp;
pub mod tokenizer;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use catalogue::{CatalogueEntry, DownloadProgress, ModelFormat, Progress};
pub use stamp::{FileChange, FileStamp, LoadRecord, ModelFileChanged};
pub use tokenizer::{ClipTokenizer, TokenizedPrompt};

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a model folder: {message}")]
    NotAModel { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("{path}: cannot read weights: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("{folder}: no weights for {component} (looked for {looked_for})")]
    MissingWeights {
        folder: PathBuf,
        component: String,
        looked_for: String,
    },
    #[error("download of {repo}: {message}")]
    Download { repo: String, message: String },
    #[error("unknown model {0:?}: not a folder, a file, a catalogue name (see `glichen models`) or a hub repo id (owner/name)")]
    UnknownModel(String),
    #[error(transparent)]
    Changed(#[from] ModelFileChanged),
}

/// One weights file (or one key of a torch checkpoint), served to `VarBuilder` by name.
pub struct TensorFile {
    path: PathBuf,
    store: Store,
}

enum Store {
    Mmap(MmapedSafetensors),
    Loaded(HashMap<String, Tensor>),
}

thread_local! {
    /// How many of [`read_pickle`]'s catches are open on this thread.
    static CATCHING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether a panic raised on this thread now would be caught by Glichen and turned into an
/// error (inside candle's pickle reader). The fuzzers' panic hook asks, so that a caught panic
/// is not counted as a crash while any other still is.
pub fn panic_is_caught_here() -> bool {
    CATCHING.with(|c| c.get() > 0)
}

/// candle's torch-pickle reader behind [`pickle_guard`] (which refuses what would abort the
/// process: deep nesting, memo bombs, huge strings), with its panics on malformed files (e.g. a
/// `_rebuild_tensor_v2` call with too few arguments indexes past them) turned into errors: a
/// checkpoint from the hub is outside data and must never take the process down.
fn read_pickle(path: &Path, key: Option<&str>) -> candle_core::Result<Vec<(String, Tensor)>> {
    pickle_guard::check_checkpoint(path).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    CATCHING.with(|c| c.set(c.get() + 1));
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        candle_core::pickle::read_all_with_key(path, key)
    }));
    CATCHING.with(|c| c.set(c.get() - 1));
    read.unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        Err(candle_core::Error::Msg(format!(
            "malformed torch pickle (the reader failed: {what})"
        )))
    })
}

impl TensorFile {
    /// Safetensors are memory-mapped (nothing is read until a tensor is asked for); torch pickles
    /// (`.bin`, `.pth`, `.ckpt`) are read whole.
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        let unreadable = |e: candle_core::Error| WeightsError::Unreadable {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if !path.is_file() {
            return Err(WeightsError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        stamp::note_file(path);
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let store = if is_safetensors {
            // SAFETY: the file is mapped read-only; as with every mmap, modifying it while Glichen
            // runs is undefined behaviour, which is the documented contract of model files.
            Store::Mmap(unsafe { MmapedSafetensors::new(path) }.map_err(unreadable)?)
        } else {
            let tensors = read_pickle(path, None).map_err(unreadable)?;
            Store::Loaded(tensors.into_iter().collect())
        };
        Ok(Self {
            path: path.to_path_buf(),
            store,
        })
    }

    /// A sub-dictionary of a torch checkpoint such as the original GLIGEN files' `model`.
    pub fn open_pickle_key(path: &Path, key: &str) -> Result<Self, WeightsError> {
        stamp::note_file(path);
        let tensors = read_pickle(path, Some(key)).map_err(|e| WeightsError::Unreadable {
            path: path.to_path_buf(),
            message: format!("key {key:?}: {e}"),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            store: Store::Loaded(tensors.into_iter().collect()),
        })
    }

    /// From tensors already in memory (renamed checkpoints); `path` names their origin in errors.
    pub fn from_tensors(path: &Path, tensors: HashMap<String, Tensor>) -> Self {
        Self {
            path: path.to_path_buf(),
            store: Store::Loaded(tensors),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn names(&self) -> Vec<String> {
        match &self.store {
            Store::Mmap(m) => m.tensors().into_iter().map(|(n, _)| n).collect(),
            Store::Loaded(h) => h.keys().cloned().collect(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.store {
            Store::Mmap(m) => m.get(name).is_ok(),
            Store::Loaded(h) => h.contains_key(name),
        }
    }

    pub fn load(&self, name: &str, dev: &Device) -> candle_core::Result<Tensor> {
        match &self.store {
            Store::Mmap(m) => match m.get(name) {
                Ok(_) => m.load(name, dev),
                Err(_) => candle_core::bail!("{}: missing tensor `{name}`", self.path.display()),
            },
            Store::Loaded(h) => match h.get(name) {
                Some(t) => t.to_device(dev),
                None => candle_core::bail!("{}: missing tensor `{name}`", self.path.display()),
            },
        }
    }

    /// Takes the loaded tensors out (pickles only; memory-mapped files are loaded first).
    pub fn into_tensors(self, dev: &Device) -> Result<HashMap<String, Tensor>, WeightsError> {
        match self.store {
            Store::Loaded(h) => Ok(h),
            Store::Mmap(m) => {
                let mut out = HashMap::new();
                for (name, _) in m.tensors() {
                    let t = m.load(&name, dev).map_err(|e| WeightsError::Unreadable {
                        path: self.path.clone(),
                        message: e.to_string(),
                    })?;
                    out.insert(name, t);
                }
                Ok(out)
            }
        }
    }

    pub fn into_var_builder(self, dtype: DType, dev: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, dev.clone())
    }
}

impl SimpleBackend for TensorFile {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.load(name, &Device::Cpu).map_err(|_| {
            candle_core::Error::Msg(format!(
                "{}: missing tensor `{name}` (expected shape {s:?})",
                self.path.display()
            ))
        })?;
        // A 0-d parameter saved as [1] (or the reverse) is the same value.
        let t = if t.shape() != &s && t.elem_count() == s.elem_count() && s.elem_count() == 1 {
            t.reshape(s.clone())?
        } else {
            t
        };
        if t.shape() != &s {
            candle_core::bail!(
                "{}: tensor `{name}` has shape {:?}, expected {:?}",
                self.path.display(),
                t.dims(),
                s.dims()
            );
        }
        stamp::note_tensor(&self.path, name, s.elem_count() * dtype.size_in_bytes());
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.load(name, &Device::Cpu)?;
        stamp::note_tensor(&self.path, name, t.elem_count() * dtype.size_in_bytes());
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.contains(name)
    }
}

/// Reads a JSON config file into `T`, naming the file in errors.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, WeightsError> {
    let text = std::fs::read_to_string(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| WeightsError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A model in diffusers' folder layout (`model_index.json`, `unet/`, `text_encoder/`, `tokenizer/`,
/// `vae/`, `scheduler/`).
#[derive(Debug, Clone)]
pub struct DiffusersFolder {
    pub root: PathBuf,
}

/// Weight file names in the order they are preferred: safetensors first (memory-mapped), then
/// torch pickles; the `.fp16` variants when the full-precision file is absent.
fn weight_candidates(component: &str) -> Vec<String> {
    let stems: &[&str] = if component == "text_encoder" || component == "image_encoder" {
        &["model", "pytorch_model", "diffusion_pytorch_model"]
    } else {
        &["diffusion_pytorch_model", "model", "pytorch_model"]
    };
    let mut out = Vec::new();
    for variant in ["", ".fp16"] {
        for ext in ["safetensors", "bin"] {
            for stem in stems {
                out.push(format!("{stem}{variant}.{ext}"));
            }
        }
    }
    out
}

/// The first of `candidates` that is a file in `dir`, else an error naming the folder, the
/// component and every name looked for.
pub(crate) fn first_weights_file<S: AsRef<str>>(
    dir: &Path,
    component: &str,
    candidates: &[S],
) -> Result<PathBuf, WeightsError> {
    candidates
        .iter()
        .map(|c| dir.join(c.as_ref()))
        .find(|p| p.is_file())
        .ok_or_else(|| WeightsError::MissingWeights {
            folder: dir.to_path_buf(),
            component: component.to_string(),
            looked_for: candidates
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

impl DiffusersFolder {
    pub fn open(root: &Path) -> Result<Self, WeightsError> {
        if !root.is_dir() {
            return Err(WeightsError::NotAModel {
                path: root.to_path_buf(),
                message: "no such folder".into(),
            });
        }
        if !root.join("unet").join("config.json").is_file() {
            return Err(WeightsError::NotAModel {
                path: root.to_path_buf(),
                message: "it has no unet/config.json (expected a diffusers layout: model_index.json, unet/, text_encoder/, tokenizer/, vae/, scheduler/)".into(),
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn config<T: DeserializeOwned>(&self, component: &str) -> Result<T, WeightsError> {
        let name = if component == "scheduler" {
            "scheduler_config.json"
        } else {
            "config.json"
        };
        read_json(&self.root.join(component).join(name))
    }

    pub fn weights_path(&self, component: &str) -> Result<PathBuf, WeightsError> {
        first_weights_file(
            &self.root.join(component),
            component,
            &weight_candidates(component),
        )
    }

    pub fn weights(&self, component: &str) -> Result<TensorFile, WeightsError> {
        TensorFile::open(&self.weights_path(component)?)
    }

    pub fn tokenizer(&self) -> Result<ClipTokenizer, WeightsError> {
        ClipTokenizer::from_folder(&self.root.join("tokenizer"))
    }
}

/// Where a model comes from, as given on the command line or in the studio.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A diffusers-layout folder.
    Folder(PathBuf),
    /// An original GLIGEN checkpoint file (`model`, `autoencoder`, `text_encoder`, `diffusion`).
    OriginalCheckpoint(PathBuf),
}

/// `owner/name`: what a hub repository id looks like, as opposed to a relative path.
pub fn looks_like_repo_id(spec: &str) -> bool {
    spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.starts_with('/')
}

/// Resolves `--model`: an existing folder or file, else a catalogue name or hub repo id, downloaded
/// into the Hugging Face cache when not already there.
pub fn resolve_model(
    spec: &str,
    progress: impl Into<Progress>,
) -> Result<ModelSource, WeightsError> {
    let progress = progress.into();
    let path = Path::new(spec);
    if path.is_dir() {
        DiffusersFolder::open(path)?;
        return Ok(ModelSource::Folder(path.to_path_buf()));
    }
    if path.is_file() {
        return Ok(ModelSource::OriginalCheckpoint(path.to_path_buf()));
    }
    if let Some(entry) = catalogue::find(spec) {
        return catalogue::fetch(&entry, progress);
    }
    if looks_like_repo_id(spec) {
        return catalogue::fetch_repo(spec, "main", progress);
    }
    Err(WeightsError::UnknownModel(spec.to_string()))
}
