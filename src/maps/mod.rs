//! Turning pictures into the grounding maps of the original GLIGEN spatial checkpoints
//! (`gligen-generation-{canny,depth,normal,sem}`), so that the studio can make them in the app.
//!
//! - [`canny`]: edges equal, pixel for pixel, to OpenCV's `cv2.Canny(gray, low, high)`, which made
//!   the canny checkpoint's training maps (`cv.Canny(img, 100, 200)`), and OpenCV's RGB→grey.
//! - [`ade20k`]: the sem checkpoint's classes (ADE20K SceneParsing, 0 = other, 1..=150), their
//!   standard palette and names, and conversions between colour-coded and class-index maps.
//! - [`normal`]: a normal map from a depth map, in the DIODE convention the normal checkpoint
//!   was trained on.
//! - [`paint`]: the studio's brush and fill on a class-index map.
//! - [`depth`]: raw depth values to an 8-bit depth map, and those values estimated from a photo
//!   with Depth Anything ([`DepthEstimator`]).
//! - [`make`]: a picture to the map a checkpoint reads (crop, resize, recipe), for the studio and the CLI.
//! - [`hed`]: soft edge maps from a photo with ControlNet's HED network, as `controlnet_aux`'s
//!   `HEDdetector` makes them, with OpenCV's bilinear resize ([`hed::HedDetector`]).
//!
//! Every function checks its input and returns a [`MapError`]; none panics on an empty picture,
//! mismatched sizes or non-finite parameters.

pub mod ade20k;
pub mod canny;
pub mod depth;
pub mod hed;
pub mod make;
pub mod normal;
pub mod paint;

pub use ade20k::{class_by_name, class_colour, class_name, classes_to_colour, colour_to_classes};
pub use canny::{canny, canny_rgb, to_gray};
pub use depth::{normalize_depth, DepthError, DepthEstimator};
pub use normal::{normals_from_depth, normals_from_depth_values};

/// Why a map could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    /// The picture (or value grid) has no pixels.
    #[error("the {what} is empty ({width}×{height})")]
    Empty {
        what: &'static str,
        width: u32,
        height: u32,
    },
    /// A value buffer does not hold `width × height` values.
    #[error("{what}: {got} values for a {width}×{height} grid (expected {expected})")]
    SizeMismatch {
        what: &'static str,
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },
    /// A parameter out of its range (NaN, infinite, negative where it must not be).
    #[error("{name} must be {rule}, got {value}")]
    Parameter {
        name: &'static str,
        rule: &'static str,
        value: f64,
    },
    /// A colour-coded segmentation has a colour outside the ADE20K palette.
    #[error(
        "pixel ({x}, {y}) has colour RGB({r}, {g}, {b}), which is not in the ADE20K palette \
         (nor black, for \"other\")",
        r = rgb[0],
        g = rgb[1],
        b = rgb[2]
    )]
    NotInPalette { x: u32, y: u32, rgb: [u8; 3] },
}

/// Refuses a zero-sized picture.
fn check_size(what: &'static str, width: u32, height: u32) -> Result<(), MapError> {
    if width == 0 || height == 0 {
        return Err(MapError::Empty {
            what,
            width,
            height,
        });
    }
    Ok(())
}

/// Refuses NaN and infinities (a slider's division by zero must not become a silent map).
fn check_finite(name: &'static str, value: f64) -> Result<(), MapError> {
    if !value.is_finite() {
        return Err(MapError::Parameter {
            name,
            rule: "finite",
            value,
        });
    }
    Ok(())
}

/// Checks that `len` values fill a `width × height` grid.
fn check_grid(what: &'static str, width: u32, height: u32, len: usize) -> Result<(), MapError> {
    check_size(what, width, height)?;
    // u32 × u32 fits u64; on a 32-bit target a grid that does not fit usize cannot match `len`.
    let expected = u64::from(width) * u64::from(height);
    if u64::try_from(len).ok() != Some(expected) {
        return Err(MapError::SizeMismatch {
            what,
            width,
            height,
            expected: usize::try_from(expected).unwrap_or(usize::MAX),
            got: len,
        });
    }
    Ok(())
}
