//! Normal maps from depth maps, in the convention of GLIGEN's normal checkpoint.
//!
//! That checkpoint was trained on DIODE's normals (`dataset/dataset_normal.py`: the `_normal.npy`
//! arrays in [-1, 1], written as `((normal * 0.5 + 0.5) * 255).astype("uint8")`, i.e. truncated,
//! so the zero vector of DIODE's invalid pixels, the sky, is (127, 127, 127) and a surface facing
//! the camera (0, 0, 1) is (127, 127, 255)). Read off the repository's own sample
//! (`inference_images/normal_tree_building.jpg`): the ground is green-high (≈ (128, 252, 104)),
//! fronto-parallel walls blue-high, sky 127 grey. So, as camera-space vectors:
//! red = +x, the surface faces right; green = +y, it faces up; blue = +z, it faces the viewer
//! (right-handed, the OpenGL / Blender normal-map convention). ControlNet 1.0's midas normal map
//! differs in red (it stores `+∂depth/∂x`, so red-high faces left) and should not be mixed in.
//!
//! The depth is treated as a height field: `z = strength · d(col, row)`, near = large. Its
//! gradient is Sobel's (central difference across, [1 2 1]/4 smoothing along, replicated
//! rows/columns), which is exact for planes; at the left and right (top and bottom) border the
//! central difference becomes one-sided so that a plane stays one normal up to the border. With
//! x right and y up, `n = normalize(-strength·∂d/∂col, strength·∂d/∂row, 1)`.

use image::{GrayImage, Rgb, RgbImage};

use super::{check_finite, check_grid, MapError};

/// How a depth map becomes normals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormalOptions {
    /// Height of one depth unit in pixels (grey levels for an 8-bit map): larger tilts more;
    /// 0 gives a flat (127, 127, 255) map. Must be finite and not negative.
    pub strength: f32,
    /// Pixels with depth at or below this value (the far background) get the zero vector,
    /// (127, 127, 127), as DIODE's invalid pixels and sky have in the training data. `None`
    /// keeps every pixel.
    pub background: Option<f32>,
}

impl Default for NormalOptions {
    fn default() -> Self {
        Self {
            strength: 1.0,
            background: None,
        }
    }
}

/// The normal map of an 8-bit depth map (near = bright), every pixel kept; see the module
/// documentation for the convention and [`normals_from_depth_values`] for the options.
pub fn normals_from_depth(depth: &GrayImage, strength: f32) -> Result<RgbImage, MapError> {
    let values: Vec<f32> = depth.as_raw().iter().map(|&v| f32::from(v)).collect();
    normals_from_depth_values(
        &values,
        depth.width(),
        depth.height(),
        &NormalOptions {
            strength,
            background: None,
        },
    )
}

/// The normal map of a row-major `width × height` grid of depth values (near = larger, in the
/// units `strength` scales; an 8-bit map's grey levels, or a network's raw output).
pub fn normals_from_depth_values(
    values: &[f32],
    width: u32,
    height: u32,
    options: &NormalOptions,
) -> Result<RgbImage, MapError> {
    check_grid("depth map", width, height, values.len())?;
    let strength = f64::from(options.strength);
    check_finite("normal strength", strength)?;
    if strength < 0.0 {
        return Err(MapError::Parameter {
            name: "normal strength",
            rule: "0 or more",
            value: strength,
        });
    }
    if let Some(bg) = options.background {
        check_finite("background depth", f64::from(bg))?;
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(MapError::Parameter {
            name: "every depth value",
            rule: "finite",
            value: f64::from(values[i]),
        });
    }

    let (w, h) = (width as usize, height as usize);
    let at = |x: usize, y: usize| f64::from(values[y * w + x]);
    Ok(RgbImage::from_fn(width, height, |x, y| {
        let (x, y) = (x as usize, y as usize);
        if options.background.is_some_and(|bg| values[y * w + x] <= bg) {
            return Rgb(encode([0.0, 0.0, 0.0]));
        }
        let d_col = derivative(|i| smoothed(|j| at(i, j), y, h), x, w);
        let d_row = derivative(|j| smoothed(|i| at(i, j), x, w), y, h);
        let n = [-strength * d_col, strength * d_row, 1.0];
        let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
        Rgb(encode(n.map(|c| c / len)))
    }))
}

/// `[1 2 1] / 4` across position `p` of a line of `len` values, the ends replicated.
fn smoothed(value: impl Fn(usize) -> f64, p: usize, len: usize) -> f64 {
    let (a, b) = (p.saturating_sub(1), (p + 1).min(len - 1));
    (value(a) + 2.0 * value(p) + value(b)) / 4.0
}

/// The derivative along a line at `p`: central inside, one-sided at the ends, 0 for a single
/// value.
fn derivative(value: impl Fn(usize) -> f64, p: usize, len: usize) -> f64 {
    if len < 2 {
        0.0
    } else if p == 0 {
        value(1) - value(0)
    } else if p == len - 1 {
        value(p) - value(p - 1)
    } else {
        (value(p + 1) - value(p - 1)) / 2.0
    }
}

/// A unit vector to RGB as GLIGEN wrote DIODE's normals: `((n · 0.5 + 0.5) · 255)` in float32,
/// truncated to `u8` (`astype("uint8")`), so 0 → 127 and 1 → 255.
fn encode(n: [f64; 3]) -> [u8; 3] {
    n.map(|c| {
        let v = ((c as f32) * 0.5 + 0.5) * 255.0;
        // `as` truncates toward zero and saturates, as numpy's cast does for this range.
        v.clamp(0.0, 255.0) as u8
    })
}
