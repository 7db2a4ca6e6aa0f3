//! One home for "a picture → the map a spatial checkpoint reads", shared by the studio's map slot
//! and `glichen make-map`: the picture is centre-cropped to a square and resized to the canvas
//! side exactly as the pipeline will treat the map (torchvision's centre crop, PIL's filter), then
//! turned into the map by the recipe. The networks (depth, HED) are optional: each is resolved
//! and loaded on first use, kept for the next, and its absence is an error that says what to get.

use std::path::PathBuf;

use candle_core::Device;
use image::{DynamicImage, RgbImage};

use super::depth::{DepthError, DepthEstimator};
use super::hed::{HedDetector, HedError};
use super::MapError;
use crate::layout::MapKind;
use crate::pipeline::resample::{pil_resize, PilFilter};
use crate::weights::catalogue::Progress;

/// The catalogue names of the default estimators.
pub const DEFAULT_DEPTH_MODEL: &str = "depth-anything-v2-small";
pub const DEFAULT_HED_MODEL: &str = "hed";

/// How a map is made from a picture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MapRecipe {
    /// Canny edges of a photo (OpenCV's thresholds).
    Canny { low: f32, high: f32 },
    /// Depth estimated from a photo by the depth network (near = bright).
    DepthFromPhoto,
    /// Normals from a depth picture (near = bright).
    NormalsFromDepth,
    /// Normals from depth estimated from a photo.
    NormalsFromPhoto,
    /// HED edges of a photo, detected by the HED network.
    HedFromPhoto,
    /// Class indices from a segmentation coloured in the ADE20K palette.
    ClassesFromColours,
}

impl MapRecipe {
    /// The map kind the recipe makes.
    pub fn kind(self) -> MapKind {
        match self {
            MapRecipe::Canny { .. } => MapKind::Canny,
            MapRecipe::DepthFromPhoto => MapKind::Depth,
            MapRecipe::NormalsFromDepth | MapRecipe::NormalsFromPhoto => MapKind::Normal,
            MapRecipe::HedFromPhoto => MapKind::Hed,
            MapRecipe::ClassesFromColours => MapKind::Sem,
        }
    }

    /// A short description for status lines and file names.
    pub fn describe(self) -> &'static str {
        match self {
            MapRecipe::Canny { .. } => "Canny edges",
            MapRecipe::DepthFromPhoto => "estimated depth",
            MapRecipe::NormalsFromDepth => "normals from depth",
            MapRecipe::NormalsFromPhoto => "normals from estimated depth",
            MapRecipe::HedFromPhoto => "HED edges",
            MapRecipe::ClassesFromColours => "class indices",
        }
    }

    /// The resampling of the square: NEAREST for segmentations (a smoothed border would hold
    /// colours outside the palette), PIL's bicubic, as the pipeline resizes maps, otherwise.
    fn filter(self) -> PilFilter {
        match self {
            MapRecipe::ClassesFromColours => PilFilter::Nearest,
            _ => PilFilter::Bicubic,
        }
    }
}

/// Why a map could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    #[error(transparent)]
    Map(#[from] MapError),
    #[error(transparent)]
    Depth(#[from] DepthError),
    #[error(transparent)]
    Hed(#[from] HedError),
    /// The estimator's weights could not be found or fetched.
    #[error(
        "{what} needs its weights ({spec}): {message}. Fetch them once with `glichen fetch {spec}` \
         (or the studio's catalogue), or give a folder or file"
    )]
    Missing {
        what: &'static str,
        spec: String,
        message: String,
    },
}

/// The depth and HED networks, each resolved (path, catalogue name or hub repo id) and loaded on
/// first use, and kept while its spec stays the same.
pub struct Estimators {
    device: Device,
    depth_spec: String,
    hed_spec: String,
    depth: Option<(String, DepthEstimator)>,
    hed: Option<(String, HedDetector)>,
}

impl Estimators {
    /// Estimators run on `device`; an empty spec means the catalogue default.
    pub fn new(device: Device, depth_spec: &str, hed_spec: &str) -> Self {
        let mut e = Self {
            device,
            depth_spec: String::new(),
            hed_spec: String::new(),
            depth: None,
            hed: None,
        };
        e.set_specs(depth_spec, hed_spec);
        e
    }

    /// Changes where the networks come from (a loaded one is dropped when its spec changes).
    pub fn set_specs(&mut self, depth_spec: &str, hed_spec: &str) {
        let or_default = |s: &str, d: &str| {
            let s = s.trim();
            if s.is_empty() { d } else { s }.to_string()
        };
        self.depth_spec = or_default(depth_spec, DEFAULT_DEPTH_MODEL);
        self.hed_spec = or_default(hed_spec, DEFAULT_HED_MODEL);
    }

    fn depth(&mut self) -> Result<&DepthEstimator, MakeError> {
        let spec = self.depth_spec.clone();
        let loaded = match self.depth.take() {
            Some((s, d)) if s == spec => d,
            _ => {
                let folder =
                    crate::weights::catalogue::resolve_depth_folder(&spec, Progress::Silent)
                        .map_err(|e| MakeError::Missing {
                            what: "depth estimation",
                            spec: spec.clone(),
                            message: e.to_string(),
                        })?;
                DepthEstimator::load(&folder, &self.device)?
            }
        };
        Ok(&self.depth.insert((spec, loaded)).1)
    }

    fn hed(&mut self) -> Result<&HedDetector, MakeError> {
        let spec = self.hed_spec.clone();
        let loaded = match self.hed.take() {
            Some((s, h)) if s == spec => h,
            _ => HedDetector::load(&resolve_hed(&spec)?, &self.device)?,
        };
        Ok(&self.hed.insert((spec, loaded)).1)
    }
}

/// The HED weights for `spec`: a file or folder, a catalogue name or a hub repo id.
fn resolve_hed(spec: &str) -> Result<PathBuf, MakeError> {
    super::hed::resolve_hed_weights(Some(spec), Progress::Silent).map_err(|e| MakeError::Missing {
        what: "HED edge detection",
        spec: spec.to_string(),
        message: e.to_string(),
    })
}

/// The centred square of `picture` at `side` pixels, as the pipeline crops and resizes a map.
pub fn square(picture: &DynamicImage, side: u32, filter: PilFilter) -> Result<RgbImage, MapError> {
    let rgb = picture.to_rgb8();
    if rgb.width().min(rgb.height()) == 0 || side == 0 {
        return Err(MapError::Empty {
            what: "picture",
            width: rgb.width(),
            height: rgb.height(),
        });
    }
    let cropped = crate::pipeline::spatial::center_crop(&rgb);
    Ok(pil_resize(&cropped, side, side, filter))
}

/// The map `recipe` makes from `picture` for a canvas whose short side is `side`.
pub fn make_map(
    recipe: MapRecipe,
    picture: &DynamicImage,
    side: u32,
    estimators: &mut Estimators,
) -> Result<DynamicImage, MakeError> {
    let square = square(picture, side, recipe.filter())?;
    Ok(match recipe {
        MapRecipe::Canny { low, high } => DynamicImage::ImageRgb8(super::canny_rgb(
            &DynamicImage::ImageRgb8(square),
            low,
            high,
        )),
        MapRecipe::DepthFromPhoto => {
            DynamicImage::ImageLuma8(estimators.depth()?.estimate(&square)?)
        }
        MapRecipe::NormalsFromDepth => {
            let depth = DynamicImage::ImageRgb8(square).to_luma8();
            DynamicImage::ImageRgb8(super::normals_from_depth(&depth, 1.0)?)
        }
        MapRecipe::NormalsFromPhoto => {
            let depth = estimators.depth()?.estimate(&square)?;
            DynamicImage::ImageRgb8(super::normals_from_depth(&depth, 1.0)?)
        }
        MapRecipe::HedFromPhoto => DynamicImage::ImageLuma8(estimators.hed()?.detect(&square)?),
        MapRecipe::ClassesFromColours => {
            DynamicImage::ImageLuma8(super::colour_to_classes(&square)?)
        }
    })
}
