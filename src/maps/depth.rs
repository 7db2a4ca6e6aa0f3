//! Raw depth values (what a depth network returns) to the 8-bit depth map GLIGEN's depth
//! checkpoint reads: near = bright, min-max stretched to 0..=255.
//!
//! The checkpoint was trained on MiDaS depth maps of CC3M (the original repo's DATA/README.MD).
//! MiDaS writes them with `utils.write_depth`: `255 * (d - min) / (max - min)` in float32,
//! truncated by `astype("uint8")`, and all zeros when `max - min` is not above float64's
//! epsilon. MiDaS returns inverse depth (near = large), which that formula keeps bright;
//! [`normalize_depth`] does the same, and `invert` serves networks that return distance.

use image::GrayImage;

use super::{check_grid, MapError};

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
