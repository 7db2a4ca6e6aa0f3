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

fn api(progress: bool) -> Result<hf_hub::api::sync::Api, WeightsError> {
    hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(progress)
        .build()
        .map_err(|e| WeightsError::Download {
            repo: "(hub)".into(),
            message: e.to_string(),
        })
}

pub fn fetch(entry: &CatalogueEntry, progress: bool) -> Result<ModelSource, WeightsError> {
    match entry.format {
        ModelFormat::Diffusers => fetch_repo(&entry.repo, &entry.revision, progress),
        ModelFormat::Original => {
            let repo = api(progress)?.repo(hf_hub::Repo::with_revision(
                entry.repo.clone(),
                hf_hub::RepoType::Model,
                entry.revision.clone(),
            ));
            let file = entry
                .files
                .first()
                .cloned()
                .unwrap_or_else(|| "diffusion_pytorch_model.bin".into());
            let path = repo.get(&file).map_err(|e| WeightsError::Download {
                repo: entry.repo.clone(),
                message: format!("{file}: {e}"),
            })?;
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
    progress: bool,
) -> Result<ModelSource, WeightsError> {
    let err = |message: String| WeightsError::Download {
        repo: repo_id.to_string(),
        message,
    };
    let repo = api(progress)?.repo(hf_hub::Repo::with_revision(
        repo_id.to_string(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    ));
    let info = repo.info().map_err(|e| err(e.to_string()))?;
    let siblings: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let files = files_to_fetch(&siblings);
    if !files.iter().any(|f| f == "unet/config.json") {
        return Err(err(
            "the repository has no unet/config.json: not a diffusers GLIGEN pipeline".into(),
        ));
    }
    let mut unet_config = None;
    for file in &files {
        let path = repo.get(file).map_err(|e| err(format!("{file}: {e}")))?;
        if file == "unet/config.json" {
            unet_config = Some(path);
        }
    }
    // The snapshot folder is two levels above unet/config.json.
    let root = unet_config
        .and_then(|p| p.parent().and_then(|p| p.parent()).map(|p| p.to_path_buf()))
        .ok_or_else(|| err("downloaded files have no common folder".into()))?;
    Ok(ModelSource::Folder(root))
}

/// Named files of a hub repository (from the cache, downloaded when missing); returns the snapshot
/// folder that holds them.
pub fn fetch_files(
    repo_id: &str,
    revision: &str,
    files: &[&str],
    progress: bool,
) -> Result<std::path::PathBuf, WeightsError> {
    let err = |message: String| WeightsError::Download {
        repo: repo_id.to_string(),
        message,
    };
    let repo = api(progress)?.repo(hf_hub::Repo::with_revision(
        repo_id.to_string(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    ));
    let mut folder = None;
    for file in files {
        let path = repo.get(file).map_err(|e| err(format!("{file}: {e}")))?;
        folder = folder.or_else(|| path.parent().map(|p| p.to_path_buf()));
    }
    folder.ok_or_else(|| err("no files asked for".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
