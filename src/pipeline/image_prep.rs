//! Reference-image preprocessing for the CLIP image tower: transformers' `CLIPImageProcessor` (the
//! PIL backend that transformers 5 uses without torchvision, and transformers 4's only one), read
//! from a text-image GLIGEN model's `processor/` folder.
//!
//! Steps, as transformers runs them: convert to RGB (alpha composited onto white), resize the
//! shortest edge, center crop (zero padding when the crop is larger), rescale by 1/255,
//! normalise with the CLIP mean and std. Every step reproduces transformers + Pillow bit for bit,
//! the resampling included (a port of Pillow's `Resample.c`: the `image` crate's Catmull-Rom, the
//! same kernel, differs by up to 4 u8 steps, enough to move a whole-pipeline result by ~1e-4).

use crate::weights::{read_json, WeightsError};
use candle_core::{Device, Result, Tensor};
use image::{DynamicImage, RgbImage};
use serde::Deserialize;
use std::path::Path;

/// transformers' `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`.
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// `size` / `crop_size`: transformers-4 feature-extractor configs write a bare int, newer ones a dict.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SizeSpec {
    Int(usize),
    Dict {
        #[serde(default)]
        shortest_edge: Option<usize>,
        #[serde(default)]
        longest_edge: Option<usize>,
        #[serde(default)]
        height: Option<usize>,
        #[serde(default)]
        width: Option<usize>,
    },
}

/// `image_mean` / `image_std`: a list per channel or one number for all.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerChannel {
    One(f64),
    Each(Vec<f64>),
}

impl PerChannel {
    fn values(&self) -> std::result::Result<[f64; 3], String> {
        match self {
            Self::One(v) => Ok([*v; 3]),
            Self::Each(v) if v.len() == 3 => Ok([v[0], v[1], v[2]]),
            Self::Each(v) => Err(format!(
                "expected 3 values (one per RGB channel), got {}",
                v.len()
            )),
        }
    }
}

fn yes() -> bool {
    true
}
fn d_size() -> SizeSpec {
    SizeSpec::Dict {
        shortest_edge: Some(224),
        longest_edge: None,
        height: None,
        width: None,
    }
}
fn d_crop() -> SizeSpec {
    SizeSpec::Dict {
        shortest_edge: None,
        longest_edge: None,
        height: Some(224),
        width: Some(224),
    }
}
fn d_resample() -> u32 {
    3
}
fn d_rescale() -> f64 {
    1.0 / 255.0
}
fn d_mean() -> PerChannel {
    PerChannel::Each(OPENAI_CLIP_MEAN.to_vec())
}
fn d_std() -> PerChannel {
    PerChannel::Each(OPENAI_CLIP_STD.to_vec())
}

/// The image processor's settings; defaults are `CLIPImageProcessor`'s, so transformers-4 files that
/// leave out `do_rescale`, `rescale_factor` or `do_convert_rgb` read as transformers reads them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipImageProcessorConfig {
    #[serde(default = "yes")]
    pub do_resize: bool,
    /// An int means the shortest edge (CLIP's `default_to_square=False`).
    #[serde(default = "d_size")]
    pub size: SizeSpec,
    /// PIL's resampling filter: 3 = bicubic (CLIP's), 2 = bilinear, 1 = Lanczos, 0 = nearest.
    #[serde(default = "d_resample")]
    pub resample: u32,
    #[serde(default = "yes")]
    pub do_center_crop: bool,
    /// An int means a square crop.
    #[serde(default = "d_crop")]
    pub crop_size: SizeSpec,
    #[serde(default = "yes")]
    pub do_rescale: bool,
    #[serde(default = "d_rescale")]
    pub rescale_factor: f64,
    #[serde(default = "yes")]
    pub do_normalize: bool,
    #[serde(default = "d_mean")]
    pub image_mean: PerChannel,
    #[serde(default = "d_std")]
    pub image_std: PerChannel,
    #[serde(default = "yes")]
    pub do_convert_rgb: bool,
}

impl Default for ClipImageProcessorConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

/// How the image is resized before the crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTarget {
    ShortestEdge(usize),
    Exact { height: usize, width: usize },
}

impl ClipImageProcessorConfig {
    /// Either layout of a processor JSON: the image processor's fields at the top level
    /// (`preprocessor_config.json`, transformers 4 and the released text-image model) or nested under
    /// `image_processor` (`processor_config.json`, transformers 5's `CLIPProcessor.save_pretrained`).
    pub fn from_value(value: serde_json::Value) -> std::result::Result<Self, String> {
        let inner = match value {
            serde_json::Value::Object(mut map) => match map.remove("image_processor") {
                Some(nested @ serde_json::Value::Object(_)) => nested,
                Some(_) => return Err("`image_processor` is not an object".into()),
                None => serde_json::Value::Object(map),
            },
            _ => return Err("not a JSON object".into()),
        };
        let cfg: Self = serde_json::from_value(inner).map_err(|e| e.to_string())?;
        cfg.check()?;
        Ok(cfg)
    }

    pub fn from_json_str(text: &str) -> std::result::Result<Self, String> {
        Self::from_value(serde_json::from_str(text).map_err(|e| e.to_string())?)
    }

    /// A `processor/` (or `feature_extractor/`) folder: `processor_config.json` when it holds an
    /// `image_processor` section, else `preprocessor_config.json`.
    pub fn from_folder(dir: &Path) -> std::result::Result<Self, WeightsError> {
        let new_style = dir.join("processor_config.json");
        let old_style = dir.join("preprocessor_config.json");
        let mut path = old_style.clone();
        if new_style.is_file() {
            let value: serde_json::Value = read_json(&new_style)?;
            if value.get("image_processor").is_some() || !old_style.is_file() {
                path = new_style;
            }
        }
        if !path.is_file() {
            return Err(WeightsError::Config {
                path: dir.to_path_buf(),
                message: "no processor_config.json or preprocessor_config.json".into(),
            });
        }
        let value: serde_json::Value = read_json(&path)?;
        Self::from_value(value).map_err(|message| WeightsError::Config { path, message })
    }

    fn check(&self) -> std::result::Result<(), String> {
        self.image_mean
            .values()
            .map_err(|e| format!("image_mean: {e}"))?;
        let std = self
            .image_std
            .values()
            .map_err(|e| format!("image_std: {e}"))?;
        if self.do_normalize && std.contains(&0.0) {
            return Err("image_std has a zero".into());
        }
        if self.do_resize {
            self.resize_target()?;
        }
        if self.do_center_crop {
            self.crop_target()?;
        }
        self.filter()?;
        Ok(())
    }

    pub fn resize_target(&self) -> std::result::Result<ResizeTarget, String> {
        match self.size {
            SizeSpec::Int(n)
            | SizeSpec::Dict {
                shortest_edge: Some(n),
                longest_edge: None,
                ..
            } if n > 0 => Ok(ResizeTarget::ShortestEdge(n)),
            SizeSpec::Dict {
                shortest_edge: None,
                longest_edge: None,
                height: Some(height),
                width: Some(width),
            } if height > 0 && width > 0 => Ok(ResizeTarget::Exact { height, width }),
            ref other => Err(format!(
                "size {other:?} is not supported (expected shortest_edge, or height and width)"
            )),
        }
    }

    /// `(height, width)` of the center crop.
    pub fn crop_target(&self) -> std::result::Result<(usize, usize), String> {
        match self.crop_size {
            SizeSpec::Int(n) if n > 0 => Ok((n, n)),
            SizeSpec::Dict {
                height: Some(h),
                width: Some(w),
                ..
            } if h > 0 && w > 0 => Ok((h, w)),
            ref other => Err(format!(
                "crop_size {other:?} is not supported (expected height and width)"
            )),
        }
    }

    /// PIL's filter number.
    fn filter(&self) -> std::result::Result<PilFilter, String> {
        PilFilter::from_pil_number(self.resample)
            .ok_or_else(|| format!("resample {} is not a PIL filter (0-5)", self.resample))
    }

    /// transformers' `get_resize_output_image_size(default_to_square=False)`: `(height, width)`
    /// with the shortest edge set to `size` and the other `int(size * long / short)` (truncated).
    pub fn resize_output_size(
        &self,
        height: usize,
        width: usize,
    ) -> std::result::Result<(usize, usize), String> {
        Ok(match self.resize_target()? {
            ResizeTarget::Exact { height, width } => (height, width),
            ResizeTarget::ShortestEdge(size) => {
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                // Python: `int(size * long / short)`: an exact integer product, one float division.
                let new_long = ((size * long) as f64 / short as f64) as usize;
                if width <= height {
                    (new_long, size)
                } else {
                    (size, new_long)
                }
            }
        })
    }

    /// `[1, 3, H, W]` f32 pixel values, as `CLIPProcessor(images=[img], return_tensors="pt")`.
    pub fn preprocess(&self, img: &DynamicImage, device: &Device) -> Result<Tensor> {
        let err = |m: String| candle_core::Error::Msg(format!("image preprocessing: {m}"));
        let mut rgb = if self.do_convert_rgb {
            convert_rgb(img)
        } else {
            // transformers would keep the alpha channel and then fail against the 3-value mean; the
            // colour channels are what it would have used.
            img.to_rgb8()
        };
        if self.do_resize {
            let (h, w) = self
                .resize_output_size(rgb.height() as usize, rgb.width() as usize)
                .map_err(err)?;
            // PIL returns a copy when the size is unchanged, so no resampling happens then.
            if (h, w) != (rgb.height() as usize, rgb.width() as usize) {
                let filter = self.filter().map_err(err)?;
                let (sw, sh) = (rgb.width() as usize, rgb.height() as usize);
                let data = pil_resize_rgb(rgb.as_raw(), sh, sw, h, w, filter);
                rgb = RgbImage::from_raw(w as u32, h as u32, data)
                    .expect("resized buffer has the new size");
            }
        }
        let (mut h, mut w) = (rgb.height() as usize, rgb.width() as usize);
        let mut data: Vec<u8> = rgb.into_raw();
        if self.do_center_crop {
            let (ch, cw) = self.crop_target().map_err(err)?;
            data = center_crop_hwc(&data, h, w, ch, cw);
            (h, w) = (ch, cw);
        }
        let mean = self.image_mean.values().map_err(err)?.map(|v| v as f32);
        let std = self.image_std.values().map_err(err)?.map(|v| v as f32);
        let mut out = vec![0f32; 3 * h * w];
        for (i, px) in data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                // transformers: `(u8 as f64 * rescale_factor) as f32`, then `(x - mean) / std` in f32
                // (mean and std cast to f32 first).
                let mut v = if self.do_rescale {
                    (px[c] as f64 * self.rescale_factor) as f32
                } else {
                    px[c] as f32
                };
                if self.do_normalize {
                    v = (v - mean[c]) / std[c];
                }
                out[c * h * w + i] = v;
            }
        }
        Tensor::from_vec(out, (1, 3, h, w), device)
    }
}

/// Pillow's resampling filters (`Image.Resampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilFilter {
    Nearest,
    Box,
    Bilinear,
    Hamming,
    Bicubic,
    Lanczos,
}

impl PilFilter {
    /// The filter of Pillow's number (`Image.Resampling`: 0 nearest … 5 hamming), as processor
    /// configs store it.
    pub fn from_pil_number(n: u32) -> Option<Self> {
        Some(match n {
            0 => PilFilter::Nearest,
            1 => PilFilter::Lanczos,
            2 => PilFilter::Bilinear,
            3 => PilFilter::Bicubic,
            4 => PilFilter::Box,
            5 => PilFilter::Hamming,
            _ => return None,
        })
    }

    /// Pillow's kernel and its support (Resample.c).
    fn kernel(self) -> (fn(f64) -> f64, f64) {
        fn box_f(x: f64) -> f64 {
            if x > -0.5 && x <= 0.5 {
                1.0
            } else {
                0.0
            }
        }
        fn bilinear(x: f64) -> f64 {
            let x = x.abs();
            if x < 1.0 {
                1.0 - x
            } else {
                0.0
            }
        }
        fn hamming(x: f64) -> f64 {
            let x = x.abs();
            if x == 0.0 {
                return 1.0;
            }
            if x >= 1.0 {
                return 0.0;
            }
            let x = x * std::f64::consts::PI;
            // Pillow writes the constants as C floats.
            x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
        }
        fn bicubic(x: f64) -> f64 {
            const A: f64 = -0.5;
            let x = x.abs();
            if x < 1.0 {
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                (((x - 5.0) * x + 8.0) * x - 4.0) * A
            } else {
                0.0
            }
        }
        fn sinc(x: f64) -> f64 {
            if x == 0.0 {
                return 1.0;
            }
            let x = x * std::f64::consts::PI;
            x.sin() / x
        }
        fn lanczos(x: f64) -> f64 {
            if (-3.0..3.0).contains(&x) {
                sinc(x) * sinc(x / 3.0)
            } else {
                0.0
            }
        }
        match self {
            Self::Nearest | Self::Box => (box_f, 0.5),
            Self::Bilinear => (bilinear, 1.0),
            Self::Hamming => (hamming, 1.0),
            Self::Bicubic => (bicubic, 2.0),
            Self::Lanczos => (lanczos, 3.0),
        }
    }
}

/// Pillow keeps 22 fractional bits in the 8-bit resampling accumulators.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis: per output pixel, the first
/// input pixel and the fixed-point weights.
fn pil_coeffs(in_size: usize, out_size: usize, filter: PilFilter) -> Vec<(usize, Vec<i32>)> {
    let (kernel, base_support) = filter.kernel();
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = base_support * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let mut w: Vec<f64> = (0..n)
                .map(|x| kernel((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = w.iter().sum();
            if ww != 0.0 {
                for v in &mut w {
                    *v /= ww;
                }
            }
            let scale_fp = (1u32 << PRECISION_BITS) as f64;
            let k = w
                .iter()
                .map(|&v| {
                    if v < 0.0 {
                        (-0.5 + v * scale_fp) as i32
                    } else {
                        (0.5 + v * scale_fp) as i32
                    }
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

/// Pillow's `clip8`: the accumulator's integer part, clamped to a byte.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `Image.resize((w, h), filter)` of an 8-bit RGB image (`[h, w, 3]` buffer), as Pillow computes
/// it: the horizontal pass first, rounded to u8, then the vertical pass; an axis whose size does
/// not change is not resampled. Nearest is Pillow's affine nearest-neighbour transform (pixel
/// centres mapped back and truncated).
pub fn pil_resize_rgb(
    src: &[u8],
    h: usize,
    w: usize,
    new_h: usize,
    new_w: usize,
    filter: PilFilter,
) -> Vec<u8> {
    if filter == PilFilter::Nearest {
        let (sx, sy) = (w as f64 / new_w as f64, h as f64 / new_h as f64);
        let mut out = Vec::with_capacity(new_h * new_w * 3);
        for y in 0..new_h {
            let iy = (((y as f64 + 0.5) * sy) as usize).min(h - 1);
            for x in 0..new_w {
                let ix = (((x as f64 + 0.5) * sx) as usize).min(w - 1);
                out.extend_from_slice(&src[(iy * w + ix) * 3..(iy * w + ix) * 3 + 3]);
            }
        }
        return out;
    }
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut cur = src.to_vec();
    let mut cur_w = w;
    if new_w != w {
        let coeffs = pil_coeffs(w, new_w, filter);
        let mut out = vec![0u8; h * new_w * 3];
        for y in 0..h {
            for (xx, (xmin, k)) in coeffs.iter().enumerate() {
                for c in 0..3 {
                    let mut acc = half;
                    for (x, &kx) in k.iter().enumerate() {
                        acc += cur[(y * w + xmin + x) * 3 + c] as i64 * kx as i64;
                    }
                    out[(y * new_w + xx) * 3 + c] = clip8(acc);
                }
            }
        }
        cur = out;
        cur_w = new_w;
    }
    if new_h != h {
        let coeffs = pil_coeffs(h, new_h, filter);
        let mut out = vec![0u8; new_h * cur_w * 3];
        for (yy, (ymin, k)) in coeffs.iter().enumerate() {
            for x in 0..cur_w {
                for c in 0..3 {
                    let mut acc = half;
                    for (y, &ky) in k.iter().enumerate() {
                        acc += cur[((ymin + y) * cur_w + x) * 3 + c] as i64 * ky as i64;
                    }
                    out[(yy * cur_w + x) * 3 + c] = clip8(acc);
                }
            }
        }
        cur = out;
    }
    cur
}

/// transformers' `convert_to_rgb` on a PIL image: images with alpha are composited onto opaque
/// white with PIL's integer `alpha_composite` (bit-exact), others converted (grey replicated).
/// 16-bit and float images go through the `image` crate's conversion to 8 bits, which PIL does
/// differently (it clips rather than scales 16-bit grey).
pub fn convert_rgb(img: &DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba = img.to_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let [r, g, b, a] = p.0;
        o.0 = composite_on_white([r, g, b], a);
    }
    out
}

/// PIL's `ImagingAlphaComposite` (AlphaComposite.c) for an opaque white destination.
fn composite_on_white(src: [u8; 3], alpha: u8) -> [u8; 3] {
    const PRECISION_BITS: u32 = 7;
    if alpha == 0 {
        return [255; 3];
    }
    let sa = alpha as u32;
    let blend = 255 * (255 - sa);
    let outa255 = sa * 255 + blend;
    let coef1 = sa * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let shift_div_255 = |a: u32| ((a >> 8) + a) >> 8;
    src.map(|c| {
        let tmp = c as u32 * coef1 + 255 * coef2;
        (shift_div_255(tmp + (0x80 << PRECISION_BITS)) >> PRECISION_BITS) as u8
    })
}

/// transformers' `center_crop` on an `[h, w, 3]` u8 buffer: offsets `(size − crop) // 2` (floor),
/// and when the crop is larger than the image, zero padding of `ceil((crop − size) / 2)` before.
fn center_crop_hwc(data: &[u8], h: usize, w: usize, ch: usize, cw: usize) -> Vec<u8> {
    // Python's floor division. With padding the image is placed at `ceil((crop − size) / 2)` and
    // the window shifted by as much, so output row `y` is still original row `top + y` (negative or
    // past the end: padding), which is all this needs.
    let top = (h as i64 - ch as i64).div_euclid(2);
    let left = (w as i64 - cw as i64).div_euclid(2);
    let mut out = vec![0u8; ch * cw * 3];
    for y in 0..ch {
        let sy = top + y as i64;
        if sy < 0 || sy >= h as i64 {
            continue;
        }
        for x in 0..cw {
            let sx = left + x as i64;
            if sx < 0 || sx >= w as i64 {
                continue;
            }
            let src = (sy as usize * w + sx as usize) * 3;
            let dst = (y * cw + x) * 3;
            out[dst..dst + 3].copy_from_slice(&data[src..src + 3]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_json_layouts() {
        let legacy = ClipImageProcessorConfig::from_json_str(
            r#"{"crop_size": 224, "do_center_crop": true, "do_normalize": true, "do_resize": true,
                "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}"#,
        )
        .unwrap();
        let nested = ClipImageProcessorConfig::from_json_str(
            r#"{"image_processor": {"crop_size": {"height": 224, "width": 224}, "do_convert_rgb": true,
                "size": {"shortest_edge": 224}, "rescale_factor": 0.00392156862745098, "do_rescale": true},
                "processor_class": "CLIPProcessor"}"#,
        )
        .unwrap();
        for c in [&legacy, &nested] {
            assert_eq!(c.resize_target().unwrap(), ResizeTarget::ShortestEdge(224));
            assert_eq!(c.crop_target().unwrap(), (224, 224));
            assert!(c.do_rescale && c.do_convert_rgb && c.do_normalize);
            assert_eq!(c.image_mean.values().unwrap(), OPENAI_CLIP_MEAN);
        }
        assert_eq!(legacy.rescale_factor, nested.rescale_factor);
    }

    #[test]
    fn resize_rounding_follows_transformers() {
        let c = ClipImageProcessorConfig::from_json_str(r#"{"size": 224}"#).unwrap();
        // int(224 * 640 / 480) = int(298.67) = 298, portrait and landscape
        assert_eq!(c.resize_output_size(480, 640).unwrap(), (224, 298));
        assert_eq!(c.resize_output_size(640, 480).unwrap(), (298, 224));
        assert_eq!(c.resize_output_size(100, 100).unwrap(), (224, 224));
    }

    #[test]
    fn composite_matches_pil_ends() {
        assert_eq!(composite_on_white([10, 20, 30], 255), [10, 20, 30]);
        assert_eq!(composite_on_white([10, 20, 30], 0), [255, 255, 255]);
        // PIL: Image.alpha_composite(white, (0, 100, 200, 128)) -> (127, 177, 227)
        assert_eq!(composite_on_white([0, 100, 200], 128), [127, 177, 227]);
    }

    #[test]
    fn crop_pads_like_transformers() {
        // 2x3 image, crop 4x2: rows padded 1 above and 1 below, columns from (3-2)//2 = 0
        let data: Vec<u8> = (1..=18).collect();
        let out = center_crop_hwc(&data, 2, 3, 4, 2);
        let px = |y: usize, x: usize| &out[(y * 2 + x) * 3..(y * 2 + x) * 3 + 3];
        assert_eq!(px(0, 0), &[0, 0, 0]);
        assert_eq!(px(1, 0), &[1, 2, 3]);
        assert_eq!(px(1, 1), &[4, 5, 6]);
        assert_eq!(px(2, 1), &[13, 14, 15]);
        assert_eq!(px(3, 1), &[0, 0, 0]);
    }
}
