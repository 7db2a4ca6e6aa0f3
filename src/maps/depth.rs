//! Raw depth values (what a depth network returns) to the 8-bit depth map GLIGEN's depth
//! checkpoint reads: near = bright, min-max stretched to 0..=255.
//!
//! The checkpoint was trained on MiDaS depth maps of CC3M (the original repo's DATA/README.MD).
//! MiDaS writes them with `utils.write_depth`: `255 * (d - min) / (max - min)` in float32,
//! truncated by `astype("uint8")`, and all zeros when `max - min` is not above float64's
//! epsilon. MiDaS returns inverse depth (near = large), which that formula keeps bright;
//! [`normalize_depth`] does the same, and `invert` serves networks that return distance.
//!
//! [`DepthEstimator`] makes the raw values from a photo with Depth Anything (V2) in the hub's
//! transformers layout, as `transformers.pipeline("depth-estimation")` does: the DPT image
//! processor ([`DptPreprocessor`], PIL's resize), the network (`model::depth_anything`) and the
//! bicubic resize back to the photo's size. Relative Depth Anything returns disparity like MiDaS,
//! so its map is not inverted; a metric model's distances are.

use candle_core::{DType, Device, Tensor};
use image::{GrayImage, RgbImage};
use std::path::Path;

use super::{check_grid, check_size, MapError};
use crate::model::depth_anything::{
    self, DepthAnythingConfig, DepthAnythingError, DepthAnythingForDepthEstimation,
    DepthEstimationType, Fields,
};
use crate::model::interrupt;
use crate::model::spatial::interpolate_bicubic;
use crate::pipeline::resample::{pil_resize, PilFilter};
use crate::weights::read_json;

pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// A row-major `width × height` grid of depth values to an 8-bit depth map as MiDaS's
/// `write_depth` makes it. `invert: false` for values that grow toward the viewer (MiDaS's
/// inverse depth, disparity); `true` for distances (metres, far = large), so that near is
/// bright either way. A non-finite value is an error (MiDaS would silently read it as 0).
pub fn normalize_depth(
    values: &[f32],
    width: u32,
    height: u32,
    invert: bool,
) -> Result<GrayImage, MapError> {
    check_grid("depth values", width, height, values.len())?;
    if let Some(&bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(MapError::Parameter {
            name: "every depth value",
            rule: "finite",
            value: f64::from(bad),
        });
    }
    let (min, max) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let range = max - min;
    // The eps comparison is MiDaS's (`> np.finfo("float").eps`, float64's epsilon).
    if f64::from(range) <= f64::EPSILON {
        return Ok(GrayImage::new(width, height));
    }
    let data = values
        .iter()
        .map(|&v| {
            let offset = if invert { max - v } else { v - min };
            // float32 in MiDaS's order (scale, then divide); `as` truncates like astype.
            (255.0 * offset / range).clamp(0.0, 255.0) as u8
        })
        .collect();
    // `check_grid` made sure the data fills the picture.
    Ok(GrayImage::from_raw(width, height, data).unwrap_or_else(|| GrayImage::new(width, height)))
}

/// transformers' DPT image processor (`DPTImageProcessor`, PIL backend) as
/// `preprocessor_config.json` describes it; a field the file leaves out takes the class default.
#[derive(Debug, Clone, PartialEq)]
pub struct DptPreprocessor {
    pub do_resize: bool,
    /// `size`: `(height, width)`.
    pub size: (u32, u32),
    pub keep_aspect_ratio: bool,
    pub ensure_multiple_of: u32,
    pub resample: PilFilter,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

impl DptPreprocessor {
    pub fn from_file(path: &Path) -> Result<Self, DepthError> {
        let json: serde_json::Value = read_json(path).map_err(DepthAnythingError::from)?;
        Ok(Self::from_value(&json, path)?)
    }

    /// From a parsed `preprocessor_config.json`; `path` names the file in errors.
    pub fn from_value(json: &serde_json::Value, path: &Path) -> Result<Self, DepthAnythingError> {
        let f = Fields::new(path, "", json)?;
        if let Some(kind) = f.opt_str("image_processor_type")? {
            if !kind.starts_with("DPTImageProcessor") {
                return Err(f.unsupported(
                    "image_processor_type",
                    &kind,
                    "Depth Anything's processor is a DPTImageProcessor",
                ));
            }
        }
        let size = match f.get("size") {
            None => (384, 384),
            Some(v) => side_pair(v).ok_or_else(|| {
                f.invalid(
                    "size",
                    "must be {\"height\": h, \"width\": w} or a whole number",
                    v,
                )
            })?,
        };
        let ensure_multiple_of = f.usize("ensure_multiple_of", 1)?;
        let ensure_multiple_of = u32::try_from(ensure_multiple_of)
            .ok()
            .filter(|&m| m > 0)
            .ok_or_else(|| f.error("ensure_multiple_of", "must be at least 1".into()))?;
        let number = f.usize("resample", 3)?;
        let resample = u32::try_from(number)
            .ok()
            .and_then(PilFilter::from_pil_number)
            .ok_or_else(|| {
                f.unsupported(
                    "resample",
                    &number.to_string(),
                    "not a PIL filter number (0-5)",
                )
            })?;
        if f.bool("do_pad", false)? && f.get("size_divisor").is_some() {
            return Err(f.unsupported(
                "do_pad",
                "true",
                "padding to size_divisor is not implemented (Depth Anything does not pad)",
            ));
        }
        let per_channel = |name: &str| -> Result<[f32; 3], DepthAnythingError> {
            let Some(v) = f.get(name) else {
                return Ok([0.5; 3]);
            };
            let values: Option<Vec<f64>> = match v.as_f64() {
                Some(x) => Some(vec![x; 3]),
                None => v
                    .as_array()
                    .and_then(|a| a.iter().map(serde_json::Value::as_f64).collect()),
            };
            match values.as_deref() {
                // numpy's float32 copy of the Python floats
                Some(&[r, g, b]) => Ok([r as f32, g as f32, b as f32]),
                _ => Err(f.invalid(name, "must be a number or three numbers", v)),
            }
        };
        let image_std = per_channel("image_std")?;
        if image_std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return Err(f.error("image_std", "must be finite and non-zero".into()));
        }
        Ok(Self {
            do_resize: f.bool("do_resize", true)?,
            size,
            keep_aspect_ratio: f.bool("keep_aspect_ratio", false)?,
            ensure_multiple_of,
            resample,
            do_rescale: f.bool("do_rescale", true)?,
            rescale_factor: f.f64("rescale_factor", 1.0 / 255.0)?,
            do_normalize: f.bool("do_normalize", true)?,
            image_mean: per_channel("image_mean")?,
            image_std,
        })
    }

    /// The network's input size `(width, height)` for a `width × height` picture:
    /// `get_resize_output_image_size` of transformers' DPT processor. With `keep_aspect_ratio`
    /// both sides take the scale closer to 1 (so a large photo's short side lands on `size`, a
    /// small picture's long side); each side is then rounded (half to even) to a multiple of
    /// `ensure_multiple_of`, in float64 as Python computes it. Where transformers would resize a
    /// side to 0 (an extreme aspect ratio, which PIL refuses) it gets one multiple.
    pub fn network_size(&self, width: u32, height: u32) -> (u32, u32) {
        if !self.do_resize {
            return (width, height);
        }
        let (in_w, in_h) = (f64::from(width), f64::from(height));
        let mut scale_w = f64::from(self.size.1) / in_w;
        let mut scale_h = f64::from(self.size.0) / in_h;
        if self.keep_aspect_ratio {
            if (1.0 - scale_w).abs() < (1.0 - scale_h).abs() {
                scale_h = scale_w;
            } else {
                scale_w = scale_h;
            }
        }
        let m = f64::from(self.ensure_multiple_of);
        let side = |v: f64| {
            ((v / m).round_ties_even() * m)
                .max(m)
                .min(f64::from(u32::MAX)) as u32
        };
        (side(scale_w * in_w), side(scale_h * in_h))
    }

    /// `pixel_values` `[1, 3, H, W]` (CPU, f32): PIL's resize, then `float32(float64(v) ·
    /// rescale_factor)` and `(x − mean) / std` in float32, numpy's order of operations.
    pub fn pixel_values(&self, rgb: &RgbImage) -> Result<Tensor, DepthError> {
        let (w, h) = rgb.dimensions();
        let (nw, nh) = self.network_size(w, h);
        let resized = pil_resize(rgb, nw, nh, self.resample);
        let plane = nw as usize * nh as usize;
        let mut data = vec![0f32; 3 * plane];
        for (i, px) in resized.pixels().enumerate() {
            for c in 0..3 {
                let v = px.0[c];
                let mut x = if self.do_rescale {
                    (f64::from(v) * self.rescale_factor) as f32
                } else {
                    f32::from(v)
                };
                if self.do_normalize {
                    x = (x - self.image_mean[c]) / self.image_std[c];
                }
                data[c * plane + i] = x;
            }
        }
        Tensor::from_vec(data, (1, 3, nh as usize, nw as usize), &Device::Cpu)
            .map_err(DepthError::Network)
    }
}

/// `{"height": h, "width": w}` or `n` (a square, as the processor's `get_size_dict` makes it).
fn side_pair(v: &serde_json::Value) -> Option<(u32, u32)> {
    let side = |v: &serde_json::Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0)
    };
    if let Some(n) = side(v) {
        return Some((n, n));
    }
    Some((side(v.get("height")?)?, side(v.get("width")?)?))
}

/// Why depth could not be estimated.
#[derive(Debug, thiserror::Error)]
pub enum DepthError {
    /// The folder, a file in it, or a field of its configs (each named).
    #[error(transparent)]
    Model(#[from] DepthAnythingError),
    /// The picture cannot go through the network (empty, or no whole patch).
    #[error(transparent)]
    Picture(#[from] MapError),
    /// The network failed on this input.
    #[error("depth network: {0}")]
    Network(#[source] candle_core::Error),
    /// The thread's interrupt flag was set (`model::interrupt::with_flag`).
    #[error("depth estimation cancelled")]
    Cancelled,
}

impl From<candle_core::Error> for DepthError {
    fn from(e: candle_core::Error) -> Self {
        if interrupt::is_interrupted(&e) {
            Self::Cancelled
        } else {
            Self::Network(e)
        }
    }
}

/// A monocular depth network and its image processor: a photo to raw depth values as
/// `transformers.pipeline("depth-estimation")` returns them, and to GLIGEN's 8-bit depth map.
///
/// Cancellable as the other networks are: run it inside `model::interrupt::with_flag`, and a set
/// flag returns [`DepthError::Cancelled`] at the next layer.
#[derive(Debug, Clone)]
pub struct DepthEstimator {
    model: DepthAnythingForDepthEstimation,
    preprocessor: DptPreprocessor,
    device: Device,
}

impl DepthEstimator {
    /// A folder in the layout of `depth-anything/Depth-Anything-V2-Small-hf`: `config.json`,
    /// `preprocessor_config.json`, `model.safetensors` (memory-mapped), the network in f32.
    pub fn load(folder: &Path, device: &Device) -> Result<Self, DepthError> {
        if !folder.is_dir() {
            return Err(DepthAnythingError::NotAFolder {
                path: folder.to_path_buf(),
            }
            .into());
        }
        let config = DepthAnythingConfig::from_file(&folder.join(depth_anything::CONFIG_FILE))?;
        if config.backbone.num_channels != 3 {
            return Err(DepthAnythingError::Unsupported {
                path: folder.join(depth_anything::CONFIG_FILE),
                field: "backbone_config.num_channels".into(),
                value: config.backbone.num_channels.to_string(),
                reason: "the estimator feeds RGB pictures (3 channels)".into(),
            }
            .into());
        }
        let preprocessor = DptPreprocessor::from_file(&folder.join(PREPROCESSOR_FILE))?;
        let model = depth_anything::load_weights(folder, &config, device, DType::F32)?;
        Ok(Self {
            model,
            preprocessor,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &DepthAnythingConfig {
        &self.model.config
    }

    pub fn preprocessor(&self) -> &DptPreprocessor {
        &self.preprocessor
    }

    /// Whether the network's values grow toward the viewer: relative models return disparity,
    /// metric ones distance.
    pub fn near_is_large(&self) -> bool {
        self.model.config.depth_estimation_type == DepthEstimationType::Relative
    }

    /// The depth of every pixel of `rgb` as `post_process_depth_estimation` with the picture's
    /// own size as target returns it: the processor's input, the network, and torch's bicubic
    /// (`align_corners=False`) back to the picture's size. Row-major, with width and height.
    pub fn estimate_values(&self, rgb: &RgbImage) -> Result<(Vec<f32>, u32, u32), DepthError> {
        let (w, h) = rgb.dimensions();
        check_size("picture", w, h)?;
        let pixels = self.preprocessor.pixel_values(rgb)?;
        let (_, _, nh, nw) = pixels.dims4()?;
        let p = self.model.config.patch_size;
        if nh < p || nw < p {
            return Err(MapError::Empty {
                what: "network input (smaller than one patch)",
                width: nw as u32,
                height: nh as u32,
            }
            .into());
        }
        interrupt::check()?;
        let depth = self.model.forward(&pixels.to_device(&self.device)?)?;
        interrupt::check()?;
        let depth = depth.unsqueeze(1)?;
        let resized = interpolate_bicubic(&depth, (h as usize, w as usize))?;
        let values = resized
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok((values, w, h))
    }

    /// GLIGEN's depth map of `rgb`: [`Self::estimate_values`] through [`normalize_depth`], near
    /// bright (inverted for metric models).
    pub fn estimate(&self, rgb: &RgbImage) -> Result<GrayImage, DepthError> {
        let (values, w, h) = self.estimate_values(rgb)?;
        Ok(normalize_depth(&values, w, h, !self.near_is_large())?)
    }
}
