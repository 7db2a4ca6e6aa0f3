//! Depth Anything (V1 and V2) in the format of transformers' `DepthAnythingForDepthEstimation`,
//! the layout of the hub repo `depth-anything/Depth-Anything-V2-Small-hf`: `config.json` (every
//! size read from it, [`DepthAnythingConfig`]) and `model.safetensors` with transformers' key
//! names (`backbone.*`, `neck.*`, `head.*`). Written against transformers 5.24's modeling code
//! rather than candle-transformers' `depth_anything_v2`, which fixes the sizes and reads the
//! original repository's keys.
//!
//! [`DepthAnythingForDepthEstimation::forward`] takes the processor's `pixel_values` and returns
//! `predicted_depth`: relative models give disparity (near = large), metric ones metres. Turning a
//! photo into a map (the processor's resize and normalisation, the resize back) is
//! `maps::depth::DepthEstimator`'s job.

mod config;
mod fields;
pub(crate) use fields::Fields;
mod dinov2;
mod dpt;

pub use config::{DepthAnythingConfig, DepthEstimationType, Dinov2Config, HiddenAct};
pub use dinov2::Dinov2Backbone;

use crate::model::interrupt;
use crate::weights::{TensorFile, WeightsError};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

#[derive(Debug, thiserror::Error)]
pub enum DepthAnythingError {
    #[error("{path}: not a folder (a Depth Anything folder holds config.json, model.safetensors and preprocessor_config.json)")]
    NotAFolder { path: PathBuf },
    /// A file missing or unreadable, named by its path.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// A field of `config.json` (or `preprocessor_config.json`) that is malformed or inconsistent.
    #[error("{path}: {field}: {message}")]
    Config {
        path: PathBuf,
        field: String,
        message: String,
    },
    /// A field whose value transformers accepts (or fails on) but this crate does not run.
    #[error("{path}: {field} = {value} is not supported: {reason}")]
    Unsupported {
        path: PathBuf,
        field: String,
        value: String,
        reason: String,
    },
    /// The weights do not fit the config (a missing tensor, a wrong shape).
    #[error("building Depth Anything from {path}: {source}")]
    Build {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
}

/// transformers' `DepthAnythingForDepthEstimation` (inference).
#[derive(Debug, Clone)]
pub struct DepthAnythingForDepthEstimation {
    pub config: DepthAnythingConfig,
    backbone: Dinov2Backbone,
    neck: dpt::Neck,
    head: dpt::Head,
}

impl DepthAnythingForDepthEstimation {
    pub fn new(vb: VarBuilder, cfg: &DepthAnythingConfig) -> Result<Self> {
        Ok(Self {
            config: cfg.clone(),
            backbone: Dinov2Backbone::new(vb.pp("backbone"), &cfg.backbone)?,
            neck: dpt::Neck::new(vb.pp("neck"), cfg)?,
            head: dpt::Head::new(vb.pp("head"), cfg)?,
        })
    }

    /// `pixel_values` `[B, C, H, W]` (as the image processor makes them) to `predicted_depth`
    /// `[B, (H / p)·p, (W / p)·p]` for the patch size p: sides that are not multiples of p lose
    /// their remainder in the patch grid. Checks the thread's interrupt flag between layers.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = pixel_values.dims4()?;
        let p = self.config.patch_size;
        if c != self.config.backbone.num_channels {
            candle_core::bail!(
                "pixel_values have {c} channels, the model takes {}",
                self.config.backbone.num_channels
            );
        }
        if h < p || w < p {
            candle_core::bail!("pixel_values of {w}×{h} hold no {p}×{p} patch");
        }
        let grid = (h / p, w / p);
        let states = self.backbone.forward(pixel_values)?;
        let fused = self.neck.forward(&states, grid)?;
        interrupt::check()?;
        self.head.forward(&fused, grid)
    }

    /// The backbone's selected hidden states (`feature_maps`), for tests and diagnostics.
    pub fn backbone_features(&self, pixel_values: &Tensor) -> Result<Vec<Tensor>> {
        self.backbone.forward(pixel_values)
    }
}

/// A hub-layout folder's network: `config.json` and the memory-mapped `model.safetensors`.
pub fn load_folder(
    dir: &Path,
    device: &Device,
    dtype: DType,
) -> std::result::Result<DepthAnythingForDepthEstimation, DepthAnythingError> {
    if !dir.is_dir() {
        return Err(DepthAnythingError::NotAFolder {
            path: dir.to_path_buf(),
        });
    }
    let cfg = DepthAnythingConfig::from_file(&dir.join(CONFIG_FILE))?;
    load_weights(dir, &cfg, device, dtype)
}

/// The network of `cfg` with the weights of `dir`'s `model.safetensors`.
pub fn load_weights(
    dir: &Path,
    cfg: &DepthAnythingConfig,
    device: &Device,
    dtype: DType,
) -> std::result::Result<DepthAnythingForDepthEstimation, DepthAnythingError> {
    let weights = dir.join(WEIGHTS_FILE);
    let vb = TensorFile::open(&weights)?.into_var_builder(dtype, device);
    DepthAnythingForDepthEstimation::new(vb, cfg).map_err(|source| DepthAnythingError::Build {
        path: weights,
        source,
    })
}
