//! Soft edge maps for GLIGEN's HED checkpoint (`gligen-generation-hed`) from a photo, with
//! ControlNet's Apache-2.0 HED network (`model::hed`) and the post-processing of `controlnet_aux`'s
//! `HEDdetector.__call__` (0.0.10): each block's projection resized to the picture's size with
//! OpenCV's `cv2.resize(.., INTER_LINEAR)` ([`opencv_resize_linear`]), the float32 mean over the
//! blocks, `1 / (1 + exp(-mean))` in float64, and `(edge * 255).clip(0, 255).astype(uint8)`.
//!
//! What is left out of `HEDdetector.__call__`: its `resize_image` before the network (the short side
//! to `detect_resolution`, both sides rounded to multiples of 64, Lanczos or area) and the resize of
//! the map to `image_resolution` after it. The studio hands [`HedDetector::detect`] the photo
//! already centre-cropped and resized to the canvas side, the size the map is used at; rounding it to
//! a multiple of 64 and back would only blur it. That side is a multiple of the VAE factor (8 for
//! Stable Diffusion, `layout::validate`), not of 64 (520 is a valid canvas), so sides that are not
//! multiples of 16 occur: the network's max-pools then floor, as torch's do. For a square picture
//! whose side is a multiple of 64, with both resolutions set to that side, both resizes are copies
//! and the map equals `HEDdetector`'s.

use candle_core::{DType, Device, Tensor};
use image::{GrayImage, RgbImage};
use std::path::{Path, PathBuf};

use super::{check_grid, check_size, MapError};
use crate::model::hed::{Hed, HedConfig};
use crate::model::interrupt;
use crate::weights::{catalogue, Progress, TensorFile, WeightsError};

/// The hub repository and file of the real weights.
pub const HUB_REPO: &str = "lllyasviel/Annotators";
pub const WEIGHTS_FILE: &str = "ControlNetHED.pth";
/// The catalogue name that `glichen fetch` downloads the weights under.
pub const CATALOGUE_NAME: &str = "hed";

/// Why HED edges could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HedError {
    /// A folder given for the weights without the weights file in it.
    #[error("{}: no {file} in this folder (the HED weights of the hub repo {HUB_REPO})", folder.display())]
    MissingFile { folder: PathBuf, file: String },
    /// A weights spec that is neither a file, a folder nor a catalogue name.
    #[error("{spec:?}: no such file or folder, nor a catalogue name (the HED weights are a {WEIGHTS_FILE} or .safetensors file, or a folder holding {WEIGHTS_FILE})")]
    NotFound { spec: String },
    /// The weights are neither given nor in the Hugging Face cache, and could not be downloaded.
    #[error("the HED weights are not available: {file} of the hub repo {repo} (revision {revision}) is not in the Hugging Face cache and could not be downloaded ({message}); run `glichen fetch {CATALOGUE_NAME}` while online, or give the path of a {WEIGHTS_FILE}")]
    Unavailable {
        repo: String,
        revision: String,
        file: String,
        message: String,
    },
    /// The file cannot be read (missing, not a checkpoint, a refused pickle).
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The tensors do not make a HED network (a missing tensor, a wrong shape), naming the file.
    #[error("{message}")]
    Build { path: PathBuf, message: String },
    /// The picture cannot go through the network.
    #[error(transparent)]
    Picture(#[from] MapError),
    /// Fewer pixels than the max-pools need.
    #[error("the picture is {width}×{height}: HED needs at least {min}×{min} pixels (its 2×2 max-pools)")]
    TooSmall { width: u32, height: u32, min: usize },
    /// The network failed on this input, or returned NaN.
    #[error("HED network: {0}")]
    Network(#[source] candle_core::Error),
    /// The thread's interrupt flag was set (`model::interrupt::with_flag`).
    #[error("HED edge detection cancelled")]
    Cancelled,
}

impl From<candle_core::Error> for HedError {
    fn from(e: candle_core::Error) -> Self {
        if interrupt::is_interrupted(&e) {
            Self::Cancelled
        } else {
            Self::Network(e)
        }
    }
}

/// A build error naming the file once (the tensor reader's messages already start with it).
fn build_error(path: &Path, e: &candle_core::Error) -> HedError {
    let (text, shown) = (e.to_string(), path.display().to_string());
    let message = if text.contains(&shown) {
        text
    } else {
        format!("{shown}: {text}")
    };
    HedError::Build {
        path: path.to_path_buf(),
        message,
    }
}

/// `path` itself, or the weights file in the folder `path`.
fn weights_file(path: &Path) -> Result<PathBuf, HedError> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let file = path.join(WEIGHTS_FILE);
    if file.is_file() {
        Ok(file)
    } else {
        Err(HedError::MissingFile {
            folder: path.to_path_buf(),
            file: WEIGHTS_FILE.into(),
        })
    }
}

/// The HED weights file from `spec`: a file, a folder holding `ControlNetHED.pth`, or a catalogue
/// name; without a spec the catalogue's `hed` entry (or, before the catalogue lists it,
/// `lllyasviel/Annotators` at `main`). Hub files come from the Hugging Face cache, downloaded when
/// missing; offline, a cached file still serves and a missing one is an error that says what to fetch.
pub fn resolve_hed_weights(
    spec: Option<&str>,
    progress: impl Into<Progress>,
) -> Result<PathBuf, HedError> {
    let progress = progress.into();
    let entry = match spec {
        Some(spec) => {
            let path = Path::new(spec);
            if path.is_file() || path.is_dir() {
                return weights_file(path);
            }
            catalogue::find(spec).ok_or_else(|| HedError::NotFound { spec: spec.into() })?
        }
        None => match catalogue::find(CATALOGUE_NAME) {
            Some(entry) => entry,
            None => return fetch_weights(HUB_REPO, "main", WEIGHTS_FILE, progress),
        },
    };
    let file = entry
        .files
        .iter()
        .find(|f| f.ends_with(".pth") || f.ends_with(".safetensors"))
        .map_or(WEIGHTS_FILE, String::as_str);
    fetch_weights(&entry.repo, &entry.revision, file, progress)
}

fn fetch_weights(
    repo: &str,
    revision: &str,
    file: &str,
    progress: Progress,
) -> Result<PathBuf, HedError> {
    match catalogue::fetch_files(repo, revision, &[file], progress) {
        Ok(folder) => Ok(folder.join(file)),
        Err(e) => {
            // The download error names the repo and file again; keep only its cause.
            let message = match &e {
                WeightsError::Download { message, .. } => message
                    .strip_prefix(&format!("{file}: "))
                    .unwrap_or(message)
                    .to_string(),
                other => other.to_string(),
            };
            Err(HedError::Unavailable {
                repo: repo.into(),
                revision: revision.into(),
                file: file.into(),
                message,
            })
        }
    }
}

/// The network's input for `rgb`: `[1, 3, H, W]` f32 holding the 0..=255 values as they are
/// (`torch.from_numpy(img).float()`, channels first), on the CPU.
pub fn pixel_values(rgb: &RgbImage) -> Result<Tensor, HedError> {
    let (w, h) = rgb.dimensions();
    check_size("picture", w, h)?;
    let plane = w as usize * h as usize;
    let mut data = vec![0f32; 3 * plane];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            data[c * plane + i] = f32::from(px.0[c]);
        }
    }
    Ok(Tensor::from_vec(
        data,
        (1, 3, h as usize, w as usize),
        &Device::Cpu,
    )?)
}

/// ControlNet's HED network and `HEDdetector`'s post-processing: a photo to a soft edge map.
///
/// Cancellable as the other networks are: run it inside `model::interrupt::with_flag`, and a set
/// flag returns [`HedError::Cancelled`] at the next layer.
#[derive(Debug, Clone)]
pub struct HedDetector {
    model: Hed,
    device: Device,
}

impl HedDetector {
    /// A `.pth` (torch pickle, read through the project's guarded reader) or `.safetensors` file
    /// with `ControlNetHED_Apache2`'s keys, or a folder holding `ControlNetHED.pth`; the network in
    /// f32 on `device`, every size read from the tensors.
    pub fn load(path: &Path, device: &Device) -> Result<Self, HedError> {
        let file = weights_file(path)?;
        let tensors = TensorFile::open(&file)?;
        let names = tensors.names();
        let vb = tensors.into_var_builder(DType::F32, device);
        let config = HedConfig::from_weights(&vb).map_err(|e| build_error(&file, &e))?;
        // A block missing in the middle would otherwise end the network silently before it.
        let blocks = config.blocks.len();
        let beyond = names
            .iter()
            .filter(|n| {
                n.strip_prefix("block")
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i > blocks)
            })
            .min();
        if let Some(extra) = beyond {
            return Err(HedError::Build {
                path: file.clone(),
                message: format!(
                    "{}: tensor `{extra}` follows a missing block (the weights have blocks 1 to \
                     {blocks}, then a gap: block{} has no `convs.0` nor `projection`)",
                    file.display(),
                    blocks + 1
                ),
            });
        }
        let model = Hed::new(vb, &config).map_err(|e| build_error(&file, &e))?;
        Ok(Self {
            model,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &HedConfig {
        &self.model.config
    }

    pub fn network(&self) -> &Hed {
        &self.model
    }

    /// The edge strength in 0..=1 of every pixel of `rgb` (row-major, with width and height), the
    /// float64 `edge` of `HEDdetector.__call__` before it is scaled to 8 bits.
    pub fn detect_values(&self, rgb: &RgbImage) -> Result<(Vec<f64>, u32, u32), HedError> {
        let (w, h) = rgb.dimensions();
        check_size("picture", w, h)?;
        let min = self.model.config.min_side();
        if (w as usize) < min || (h as usize) < min {
            return Err(HedError::TooSmall {
                width: w,
                height: h,
                min,
            });
        }
        interrupt::check()?;
        let projections = self
            .model
            .forward(&pixel_values(rgb)?.to_device(&self.device)?)?;
        // numpy's float32 mean over the stacked maps: a float32 sum in block order, then divided.
        let mut sum: Vec<f32> = Vec::new();
        for projection in &projections {
            let (_, _, ph, pw) = projection.dims4()?;
            let values = projection
                .to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let resized =
                opencv_resize_linear(&values, (pw as u32, ph as u32), (w, h), OpenCvLinear::Ipp)?;
            if sum.is_empty() {
                sum = resized;
            } else {
                sum.iter_mut().zip(resized).for_each(|(s, r)| *s += r);
            }
        }
        let count = projections.len() as f64;
        let mut edges = Vec::with_capacity(sum.len());
        for s in sum {
            // true_divide by numpy's intp count runs in float64 and is stored back as float32.
            let mean = (f64::from(s) / count) as f32;
            if mean.is_nan() {
                return Err(HedError::Network(candle_core::Error::Msg(
                    "the network returned NaN (broken weights?)".into(),
                )));
            }
            edges.push(1.0 / (1.0 + (-f64::from(mean)).exp()));
        }
        Ok((edges, w, h))
    }

    /// The 8-bit HED map of `rgb`, at its size: [`Self::detect_values`] times 255, clipped and
    /// truncated as `astype(np.uint8)` does.
    pub fn detect(&self, rgb: &RgbImage) -> Result<GrayImage, HedError> {
        let (values, w, h) = self.detect_values(rgb)?;
        let data = values
            .iter()
            .map(|&v| (v * 255.0).clamp(0.0, 255.0) as u8)
            .collect();
        // detect_values returns one value per pixel.
        Ok(GrayImage::from_raw(w, h, data).unwrap_or_else(|| GrayImage::new(w, h)))
    }
}

/// Which of the two codes behind `cv2.resize(float32, INTER_LINEAR)` to reproduce. They differ by
/// about an ulp per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenCvLinear {
    /// What OpenCV's x86-64 builds (the pip wheels, `cv2.ipp.useIPP()` true) run by default: Intel
    /// IPP's linear resize (`hal/ipp/src/resize_ipp.cpp`), except for a source with a side of 1 or
    /// an exact halving, which stay with OpenCV's own code as they do there. Source coordinate
    /// `(d + 0.5) · (src / dst) − 0.5` in float64, indices clamped (border replicate), the fraction
    /// in float32, and each pass `fma(t, b − a, a)`. Established by experiment against
    /// opencv-python-headless 5.1 on an AVX-512 CPU (IPP's code path differs by CPU; one without
    /// FMA may round differently).
    Ipp,
    /// OpenCV's own code (`imgproc/src/resize.cpp`, `resizeGeneric_`), which ARM builds and
    /// `cv2.ipp.setUseIPP(False)` run: coordinate `float((d + 0.5) · (1 / (dst / src)) − 0.5)`,
    /// horizontally a coordinate outside the last pair copies the edge pixel, vertically only the
    /// row is clamped and the weights are kept; each pass `a · (1 − t) + b · t` in float32.
    OpenCv,
}

/// `cv2.resize(src, (new_width, new_height), interpolation=cv2.INTER_LINEAR)` of a row-major
/// float32 grid, bit for bit (half-pixel centres, no antialiasing, border replicate), for every
/// pair of sizes: same size is a copy; the exact halving of both sides is OpenCV's `INTER_AREA`
/// shortcut, which the linear formula reproduces exactly for float32.
pub fn opencv_resize_linear(
    src: &[f32],
    (width, height): (u32, u32),
    (new_width, new_height): (u32, u32),
    code: OpenCvLinear,
) -> Result<Vec<f32>, MapError> {
    check_grid("resize source", width, height, src.len())?;
    check_size("resize target", new_width, new_height)?;
    if (width, height) == (new_width, new_height) {
        return Ok(src.to_vec());
    }
    let halving = 2 * u64::from(new_width) == u64::from(width)
        && 2 * u64::from(new_height) == u64::from(height);
    let (sw, sh, dw, dh) = (
        width as usize,
        height as usize,
        new_width as usize,
        new_height as usize,
    );
    if code == OpenCvLinear::Ipp && sw >= 2 && sh >= 2 && !halving {
        Ok(resize_ipp(src, (sw, sh), (dw, dh)))
    } else {
        Ok(resize_opencv(src, (sw, sh), (dw, dh)))
    }
}

/// IPP's taps along one axis: (first index, second index, fraction) per target position.
fn ipp_taps(dst: usize, src: usize) -> Vec<(usize, usize, f32)> {
    let scale = src as f64 / dst as f64;
    let last = src as i64 - 1;
    (0..dst)
        .map(|d| {
            let f = (d as f64 + 0.5) * scale - 0.5;
            let floor = f.floor();
            let i = floor as i64;
            (
                i.clamp(0, last) as usize,
                (i + 1).clamp(0, last) as usize,
                (f - floor) as f32,
            )
        })
        .collect()
}

fn resize_ipp(src: &[f32], (sw, sh): (usize, usize), (dw, dh): (usize, usize)) -> Vec<f32> {
    let lerp = |a: f32, b: f32, t: f32| t.mul_add(b - a, a);
    let xs = ipp_taps(dw, sw);
    let mut rows = vec![0f32; sh * dw];
    for (row, line) in src.chunks_exact(sw).zip(rows.chunks_exact_mut(dw)) {
        for (out, &(x0, x1, t)) in line.iter_mut().zip(&xs) {
            *out = lerp(row[x0], row[x1], t);
        }
    }
    let mut out = vec![0f32; dh * dw];
    for (line, (y0, y1, t)) in out.chunks_exact_mut(dw).zip(ipp_taps(dh, sh)) {
        let (r0, r1) = (&rows[y0 * dw..][..dw], &rows[y1 * dw..][..dw]);
        for ((o, &a), &b) in line.iter_mut().zip(r0).zip(r1) {
            *o = lerp(a, b, t);
        }
    }
    out
}

/// OpenCV's taps along one axis: (index, fraction) before any clamping.
fn opencv_taps(dst: usize, src: usize) -> impl Iterator<Item = (i64, f32)> {
    let scale = 1.0 / (dst as f64 / src as f64);
    (0..dst).map(move |d| {
        let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let i = f.floor();
        (i as i64, f - i)
    })
}

fn resize_opencv(src: &[f32], (sw, sh): (usize, usize), (dw, dh): (usize, usize)) -> Vec<f32> {
    let last_x = sw as i64 - 1;
    // (index, weights); `None` weights copy the pixel.
    let xs: Vec<(usize, Option<(f32, f32)>)> = opencv_taps(dw, sw)
        .map(|(i, t)| {
            let (i, t) = if i < 0 { (0, 0.0) } else { (i, t) };
            if i >= last_x {
                (last_x as usize, None)
            } else {
                (i as usize, Some((1.0 - t, t)))
            }
        })
        .collect();
    let mut rows = vec![0f32; sh * dw];
    for (row, line) in src.chunks_exact(sw).zip(rows.chunks_exact_mut(dw)) {
        for (out, &(x, weights)) in line.iter_mut().zip(&xs) {
            *out = match weights {
                Some((a0, a1)) => row[x] * a0 + row[x + 1] * a1,
                None => row[x],
            };
        }
    }
    let last_y = sh as i64 - 1;
    let mut out = vec![0f32; dh * dw];
    for (line, (i, t)) in out.chunks_exact_mut(dw).zip(opencv_taps(dh, sh)) {
        let (y0, y1) = (
            i.clamp(0, last_y) as usize,
            (i + 1).clamp(0, last_y) as usize,
        );
        let (r0, r1) = (&rows[y0 * dw..][..dw], &rows[y1 * dw..][..dw]);
        let (b0, b1) = (1.0 - t, t);
        for ((o, &a), &b) in line.iter_mut().zip(r0).zip(r1) {
            *o = a * b0 + b * b1;
        }
    }
    out
}
