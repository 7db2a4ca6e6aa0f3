//! The catalogue of known GLIGEN checkpoints (`models/catalogue.json`) and downloads through
//! `hf-hub` into the standard Hugging Face cache, shared with Python users.

use super::{weight_candidates, ModelSource, WeightsError};
use serde::Deserialize;
use std::collections::BTreeSet;

const CATALOGUE_JSON: &str = include_str!("../../models/catalogue.json");

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// diffusers folder layout.
    Diffusers,
    /// One original GLIGEN checkpoint file.
    Original,
    /// A component the pipelines use beside a model (the TAESD preview decoder): a folder with
    /// `config.json` and the weights its `files` name.
    Component,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CatalogueEntry {
    pub name: String,
    pub repo: String,
    pub revision: String,
    pub modality: String,
    pub format: ModelFormat,
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub description: String,
}

pub fn entries() -> Vec<CatalogueEntry> {
    // The catalogue is compiled in and checked by a unit test, so it always parses.
    serde_json::from_str(CATALOGUE_JSON).unwrap_or_default()
}

/// By catalogue name, or by hub repo id when the catalogue lists that repo.
pub fn find(name: &str) -> Option<CatalogueEntry> {
    let all = entries();
    all.iter()
        .find(|e| e.name == name)
        .or_else(|| all.iter().find(|e| e.repo == name))
        .cloned()
}

/// How a download reports itself.
#[derive(Clone, Default)]
pub enum Progress {
    #[default]
    Silent,
    /// hf-hub's progress bars on the terminal (the command line).
    Terminal,
    /// Calls back with every file's progress (the studio's worker), a few times a second at most.
    Report(std::sync::Arc<dyn Fn(&DownloadProgress) + Send + Sync>),
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Silent => "Silent",
            Self::Terminal => "Terminal",
            Self::Report(_) => "Report(..)",
        })
    }
}

impl From<bool> for Progress {
    fn from(terminal: bool) -> Self {
        if terminal {
            Self::Terminal
        } else {
            Self::Silent
        }
    }
}

/// Where one file of a download stands.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadProgress {
    pub repo: String,
    pub file: String,
    /// 0-based index of the file among `count` files to fetch (cached ones included).
    pub index: usize,
    pub count: usize,
    pub done: u64,
    pub total: u64,
}

impl DownloadProgress {
    /// The share of the whole download done, counting every file alike (sizes are not known in
    /// advance without a request per file).
    pub fn fraction(&self) -> f32 {
        let file = if self.total > 0 {
            (self.done as f64 / self.total as f64).min(1.0)
        } else {
            0.0
        };
        ((self.index as f64 + file) / self.count.max(1) as f64) as f32
    }

    pub fn describe(&self) -> String {
        const MB: f64 = 1024.0 * 1024.0;
        if self.total == 0 {
            return format!(
                "Downloading {} — {}, file {} of {}",
                self.repo,
                self.file,
                self.index + 1,
                self.count
            );
        }
        format!(
            "Downloading {} — {} ({:.0} of {:.0} MiB), file {} of {}",
            self.repo,
            self.file,
            self.done as f64 / MB,
            self.total as f64 / MB,
            self.index + 1,
            self.count
        )
    }
}

/// hf-hub's download progress, forwarded to a [`Progress::Report`] callback at most every 100 ms.
struct Reporter {
    state: DownloadProgress,
    report: std::sync::Arc<dyn Fn(&DownloadProgress) + Send + Sync>,
    last: Option<std::time::Instant>,
}

impl hf_hub::api::Progress for Reporter {
    fn init(&mut self, size: usize, _filename: &str) {
        self.state.total = size as u64;
        self.state.done = 0;
        (self.report)(&self.state);
        self.last = Some(std::time::Instant::now());
    }

    fn update(&mut self, size: usize) {
        self.state.done += size as u64;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(100))
        {
            (self.report)(&self.state);
            self.last = Some(std::time::Instant::now());
        }
    }

    fn finish(&mut self) {
        self.state.done = self.state.total;
        (self.report)(&self.state);
    }
}

/// [`get_file`] for each of `files`, in order.
fn get_files(
    repo: &hf_hub::api::sync::ApiRepo,
    names: (&hf_hub::Repo, &str),
    files: &[&str],
    progress: &Progress,
) -> Result<Vec<std::path::PathBuf>, WeightsError> {
    files
        .iter()
        .enumerate()
        .map(|(i, file)| get_file(repo, names, file, (i, files.len()), progress))
        .collect()
}

fn api(progress: &Progress) -> Result<hf_hub::api::sync::Api, WeightsError> {
    hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(matches!(progress, Progress::Terminal))
        .build()
        .map_err(|e| WeightsError::Download {
            repo: "(hub)".into(),
            message: e.to_string(),
        })
}

/// One file of `repo` (file `index` of `count`): from the cache, else downloaded, reporting as
/// `progress` asks.
fn get_file(
    repo: &hf_hub::api::sync::ApiRepo,
    (hub_repo, repo_id): (&hf_hub::Repo, &str),
    file: &str,
    (index, count): (usize, usize),
    progress: &Progress,
) -> Result<std::path::PathBuf, WeightsError> {
    let err = |e: hf_hub::api::sync::ApiError| WeightsError::Download {
        repo: repo_id.to_string(),
        message: format!("{file}: {e}"),
    };
    match progress {
        Progress::Report(report) => {
            if let Some(path) = hf_hub::Cache::from_env().repo(hub_repo.clone()).get(file) {
                return Ok(path);
            }
            let reporter = Reporter {
                state: DownloadProgress {
                    repo: repo_id.to_string(),
                    file: file.to_string(),
                    index,
                    count,
                    done: 0,
                    total: 0,
                },
                report: report.clone(),
                last: None,
            };
            repo.download_with_progress(file, reporter).map_err(err)
        }
        _ => repo.get(file).map_err(err),
    }
}

pub fn fetch(
    entry: &CatalogueEntry,
    progress: impl Into<Progress>,
) -> Result<ModelSource, WeightsError> {
    let progress = progress.into();
    match entry.format {
        ModelFormat::Diffusers => fetch_repo(&entry.repo, &entry.revision, progress),
        ModelFormat::Component => {
            let files: Vec<&str> = entry.files.iter().map(String::as_str).collect();
            fetch_files(&entry.repo, &entry.revision, &files, progress).map(ModelSource::Folder)
        }
        ModelFormat::Original => {
            let hub_repo = hf_hub::Repo::with_revision(
                entry.repo.clone(),
                hf_hub::RepoType::Model,
                entry.revision.clone(),
            );
            let repo = api(&progress)?.repo(hub_repo.clone());
            let file = entry
                .files
                .first()
                .cloned()
                .unwrap_or_else(|| "diffusion_pytorch_model.bin".into());
            let path = get_file(&repo, (&hub_repo, &entry.repo), &file, (0, 1), &progress)?;
            Ok(ModelSource::OriginalCheckpoint(path))
        }
    }
}

/// The files of a diffusers repo that a GLIGEN pipeline reads: configs, tokenizer and processor
/// files, and for each component the one weights file it would load.
pub fn files_to_fetch(siblings: &[String]) -> Vec<String> {
    let set: BTreeSet<&str> = siblings.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for s in siblings {
        let keep = s == "model_index.json"
            || s.ends_with("/config.json")
            || s.ends_with("scheduler_config.json")
            || s.starts_with("tokenizer/")
            || s.starts_with("processor/");
        let skipped = s.starts_with("safety_checker/") || s.starts_with("feature_extractor/");
        if keep && !skipped {
            out.push(s.clone());
        }
    }
    for component in [
        "unet",
        "text_encoder",
        "vae",
        "image_encoder",
        "image_project",
    ] {
        if let Some(file) = weight_candidates(component)
            .iter()
            .map(|c| format!("{component}/{c}"))
            .find(|p| set.contains(p.as_str()))
        {
            out.push(file);
        }
    }
    out
}

pub fn fetch_repo(
    repo_id: &str,
    revision: &str,
    progress: impl Into<Progress>,
) -> Result<ModelSource, WeightsError> {
    let progress = progress.into();
    let err = |message: String| WeightsError::Download {
        repo: repo_id.to_string(),
        message,
    };
    let hub_repo = hf_hub::Repo::with_revision(
        repo_id.to_string(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    );
    // The snapshot folder is two levels above unet/config.json.
    let root_of = |unet_config: std::path::PathBuf| {
        unet_config
            .parent()
            .and_then(|p| p.parent())
            .map(std::path::Path::to_path_buf)
            .ok_or_else(|| err("downloaded files have no common folder".into()))
    };
    let repo = api(&progress)?.repo(hub_repo.clone());
    let info = match repo.info() {
        Ok(info) => info,
        Err(e) => {
            // Offline (or the hub unreachable): a snapshot downloaded before still serves.
            let cache = hf_hub::Cache::from_env().repo(hub_repo.clone());
            if let Some(config) = cache.get("unet/config.json") {
                let root = root_of(config)?;
                if snapshot_is_complete(&root) {
                    tracing::warn!(
                        "{repo_id}: the hub is unreachable ({e}); using the cached snapshot {}",
                        root.display()
                    );
                    return Ok(ModelSource::Folder(root));
                }
            }
            return Err(err(e.to_string()));
        }
    };
    let siblings: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let files = files_to_fetch(&siblings);
    if !files.iter().any(|f| f == "unet/config.json") {
        return Err(err(
            "the repository has no unet/config.json: not a diffusers GLIGEN pipeline".into(),
        ));
    }
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let paths = get_files(&repo, (&hub_repo, repo_id), &files, &progress)?;
    let unet_config = files
        .iter()
        .position(|f| *f == "unet/config.json")
        .map(|i| paths[i].clone());
    root_of(unet_config.ok_or_else(|| err("unet/config.json was not fetched".into()))?)
        .map(ModelSource::Folder)
}

/// Whether a cached snapshot holds a whole pipeline: the scheduler config, the tokenizer, and for
/// every component folder with a `config.json` (the image tower and projection of text-image
/// models included) its weights.
fn snapshot_is_complete(root: &std::path::Path) -> bool {
    let folder = super::DiffusersFolder {
        root: root.to_path_buf(),
    };
    let Ok(entries) = std::fs::read_dir(root) else {
        return false;
    };
    let components_ok = entries.flatten().all(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let has_config = e.path().join("config.json").is_file();
        !has_config
            || matches!(
                name.as_str(),
                "tokenizer" | "processor" | "feature_extractor"
            )
            || folder.weights_path(&name).is_ok()
    });
    components_ok
        && ["unet", "vae", "text_encoder"]
            .iter()
            .all(|c| root.join(c).join("config.json").is_file())
        && root.join("scheduler/scheduler_config.json").is_file()
        && folder.tokenizer().is_ok()
}

/// The TAESD preview decoder's folder from `spec`: a folder, a catalogue name (`taesd`) or a hub
/// repo id in diffusers' `AutoencoderTiny` layout (fetched into the HF cache when missing).
pub fn resolve_component_folder(
    spec: &str,
    progress: impl Into<Progress>,
) -> Result<std::path::PathBuf, WeightsError> {
    resolve_folder(
        spec,
        &["config.json", "diffusion_pytorch_model.safetensors"],
        progress,
    )
}

/// The depth estimator's folder from `spec`: a folder, a catalogue name
/// (`depth-anything-v2-small`) or a hub repo id in transformers' `DepthAnythingForDepthEstimation`
/// layout (fetched into the HF cache when missing).
pub fn resolve_depth_folder(
    spec: &str,
    progress: impl Into<Progress>,
) -> Result<std::path::PathBuf, WeightsError> {
    resolve_folder(
        spec,
        &[
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
        ],
        progress,
    )
}

/// A component's folder: `spec` itself when it is a folder, else a catalogue entry's files (its
/// `files`, or `files` when it lists none) or, for a bare hub repo id, `files` at `main`.
fn resolve_folder(
    spec: &str,
    files: &[&str],
    progress: impl Into<Progress>,
) -> Result<std::path::PathBuf, WeightsError> {
    let path = std::path::Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if let Some(entry) = find(spec) {
        let named: Vec<&str> = entry.files.iter().map(String::as_str).collect();
        let files = if named.is_empty() { files } else { &named[..] };
        return fetch_files(&entry.repo, &entry.revision, files, progress);
    }
    if super::looks_like_repo_id(spec) {
        return fetch_files(spec, "main", files, progress);
    }
    Err(WeightsError::UnknownModel(spec.to_string()))
}

/// Named files of a hub repository (from the cache, downloaded when missing); returns the snapshot
/// folder that holds them.
pub fn fetch_files(
    repo_id: &str,
    revision: &str,
    files: &[&str],
    progress: impl Into<Progress>,
) -> Result<std::path::PathBuf, WeightsError> {
    let progress = progress.into();
    let hub_repo = hf_hub::Repo::with_revision(
        repo_id.to_string(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    );
    let repo = api(&progress)?.repo(hub_repo.clone());
    let paths = get_files(&repo, (&hub_repo, repo_id), files, &progress)?;
    paths
        .first()
        .and_then(|p| p.parent())
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| WeightsError::Download {
            repo: repo_id.to_string(),
            message: "no files asked for".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_progress_counts_files_alike_and_reports_a_few_times_a_second() {
        let mut p = DownloadProgress {
            repo: "o/n".into(),
            file: "unet/diffusion_pytorch_model.safetensors".into(),
            index: 2,
            count: 4,
            done: 512 * 1024 * 1024,
            total: 1024 * 1024 * 1024,
        };
        assert!((p.fraction() - 0.625).abs() < 1e-6);
        assert_eq!(
            p.describe(),
            "Downloading o/n — unet/diffusion_pytorch_model.safetensors (512 of 1024 MiB), file 3 of 4"
        );
        p.total = 0;
        assert!((p.fraction() - 0.5).abs() < 1e-6);

        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut r = Reporter {
            state: DownloadProgress {
                index: 0,
                count: 1,
                ..p
            },
            report: std::sync::Arc::new(move |p: &DownloadProgress| {
                sink.lock().unwrap().push(p.done);
            }),
            last: None,
        };
        use hf_hub::api::Progress as _;
        r.init(1000, "f");
        for _ in 0..100 {
            r.update(10);
        }
        r.finish();
        let seen = seen.lock().unwrap();
        // init, then nothing within 100 ms, then the end
        assert_eq!(seen.first(), Some(&0));
        assert_eq!(seen.last(), Some(&1000));
        assert!(seen.len() <= 4, "{seen:?}");
    }

    #[test]
    fn catalogue_parses_and_names_are_unique() {
        let parsed: Vec<CatalogueEntry> =
            serde_json::from_str(CATALOGUE_JSON).expect("catalogue parses");
        let names: BTreeSet<&str> = parsed.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names.len(), parsed.len());
        assert!(parsed
            .iter()
            .any(|e| e.repo == "masterful/gligen-1-4-generation-text-box"
                && e.revision == "refs/pr/2"));
        assert!(parsed.iter().any(|e| e.repo == "anhnct/Gligen_Text_Image"));
    }

    #[test]
    fn picks_one_weights_file_per_component() {
        let siblings: Vec<String> = [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/config.json",
            "text_encoder/pytorch_model.bin",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "safety_checker/config.json",
            "scheduler/scheduler_config.json",
        ]
        .map(String::from)
        .to_vec();
        let files = files_to_fetch(&siblings);
        assert!(files.contains(&"unet/diffusion_pytorch_model.safetensors".to_string()));
        assert!(!files.contains(&"unet/diffusion_pytorch_model.bin".to_string()));
        assert!(files.contains(&"text_encoder/pytorch_model.bin".to_string()));
        assert!(!files.iter().any(|f| f.starts_with("safety_checker")));
    }
}
