//! Spatial-map grounding of the original GLIGEN checkpoints (`gligen/gligen-generation-{hed,canny,
//! depth,normal,sem}`): the map picture prepared as `gligen_inference.prepare_batch_{kind}` does,
//! its grounding tokens and downsampled channels, and Stable Diffusion's own first conv, which the
//! original sampler switches to for good at the first step whose grounding gate is 0
//! (`restore_first_conv_from_SD`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::{DynamicImage, RgbImage};

use super::resample::{pil_crop, pil_resize, PilFilter};
use super::{Context, PipelineError};
use crate::layout::{Entity, Layout, MapKind};
use crate::model::blocks::Conv2d;
use crate::model::spatial::{GroundingDownsampler, SpatialPositionNet};

/// ADE20K's 150 classes plus "other" and the background the checkpoints were trained with.
pub const SEM_CLASSES: usize = 152;

/// A spatial-map checkpoint's networks beside its UNet.
pub struct SpatialGrounding {
    pub kind: MapKind,
    pub position_net: SpatialPositionNet,
    pub downsampler: GroundingDownsampler,
    /// Stable Diffusion's 4-channel first conv and where it came from; `None` when none was
    /// found, which only a run whose grounding never ends can do without.
    pub sd_conv_in: Option<(PathBuf, Conv2d)>,
}

/// What one generation takes from its map, computed once.
pub(super) struct PreparedMap {
    /// Grounding tokens, `[unconditional (null input), conditional]` when guided.
    pub tokens: Tensor,
    /// The downsampled map for every batch row (the unconditional pass sees the real map too),
    /// appended to the latents' channels until the switch to SD's first conv.
    pub channels: Tensor,
}

impl SpatialGrounding {
    /// The canvas side the map network fits, when it fits one only: the downsampled map must cover
    /// the latent grid, and every downsampler but HED's works at `resize_input / 4`.
    pub fn canvas_side(&self, vae_scale_factor: usize) -> Option<usize> {
        (self.kind != MapKind::Hed).then(|| self.position_net.resize_input() / 4 * vae_scale_factor)
    }

    /// The map of `layout` (validated: exactly one, of this kind), as both networks see it.
    pub(super) fn prepare(
        &self,
        layout: &Layout,
        guided: bool,
        base_dir: Option<&Path>,
        grid: (usize, usize),
        device: &Device,
        dtype: DType,
    ) -> Result<PreparedMap, PipelineError> {
        let (i, image) = layout
            .entities
            .iter()
            .enumerate()
            .find_map(|(i, e)| match e {
                Entity::Map { image, .. } => Some((i, image.as_str())),
                _ => None,
            })
            .ok_or_else(|| {
                PipelineError::Invalid(format!(
                    "GLIGEN's {} checkpoint needs a {} in the layout",
                    self.kind,
                    self.kind.label()
                ))
            })?;
        let path = format!("entities[{i}].image");
        let picture = crate::layout::read_picture(image, base_dir)
            .and_then(|bytes| crate::layout::decode_picture(&bytes))
            .map_err(|e| PipelineError::Invalid(format!("{path}: {e}")))?;
        let size = (layout.width, layout.height);
        let map = map_tensor(self.kind, &picture, size, device)
            .map_err(|e| match e {
                PipelineError::Invalid(m) => PipelineError::Invalid(format!("{path}: {m}")),
                e => e,
            })?
            .to_dtype(dtype)
            .ctx("map")?;
        let ctx = format!("{} network", self.kind.label());
        let one = Tensor::ones(1, dtype, device).ctx(&ctx)?;
        let cond = self.position_net.forward(&map, &one).ctx(&ctx)?;
        let tokens = if guided {
            let uncond = self.position_net.null_tokens(1).ctx(&ctx)?;
            Tensor::cat(&[&uncond.to_dtype(cond.dtype()).ctx(&ctx)?, &cond], 0).ctx(&ctx)?
        } else {
            cond
        };
        let channels = self.downsampler.forward(&map, grid).ctx(&ctx)?;
        let channels = if guided {
            Tensor::cat(&[&channels, &channels], 0).ctx(&ctx)?
        } else {
            channels
        };
        Ok(PreparedMap { tokens, channels })
    }
}

impl super::GligenModel {
    /// SD's first conv when this run needs it (a spatial-map model whose grounding gate reaches 0
    /// at some step), refusing clearly when none was found rather than skipping the switch.
    pub(super) fn sd_conv_in_for(&self, gates: &[f32]) -> Result<Option<&Conv2d>, PipelineError> {
        let Some(spatial) = &self.spatial else {
            return Ok(None);
        };
        let Some(step) = gates.iter().position(|&g| g == 0.0) else {
            return Ok(None);
        };
        match &spatial.sd_conv_in {
            Some((_, conv)) => Ok(Some(conv)),
            None => Err(PipelineError::Invalid(format!(
                "GLIGEN's {} checkpoint hands over to Stable Diffusion's own first conv when its \
                 grounding ends (step {} of {} with these alpha settings), and none was found: put \
                 {} beside the checkpoint (github gligen/GLIGEN ships it), have {} in the \
                 Hugging Face cache, or pass --sd-conv-in FILE; or set alpha0 to 1 to ground \
                 every step",
                spatial.kind,
                step + 1,
                gates.len(),
                crate::weights::original::SD_CONV_IN_FILE,
                crate::weights::original::SD_CONV_IN_REPO,
            ))),
        }
    }
}

/// `prepare_batch_{kind}`'s picture: centre-cropped to a square as torchvision's `center_crop`
/// does (offsets rounded half to even), resized to the canvas with PIL's default filter
/// (bicubic) and scaled to [-1, 1], `[1, 3, H, W]`; semantic maps are read as class indices
/// (grey levels), resized with NEAREST and one-hot encoded, `[1, 152, H, W]`.
pub fn map_tensor(
    kind: MapKind,
    picture: &DynamicImage,
    (width, height): (u32, u32),
    device: &Device,
) -> Result<Tensor, PipelineError> {
    if kind == MapKind::Sem {
        return sem_tensor(picture, (width, height), device);
    }
    // PIL's convert("RGB") drops alpha without compositing, as `to_rgb8` does
    let rgb = center_crop(&picture.to_rgb8());
    let rgb = pil_resize(&rgb, width, height, PilFilter::Bicubic);
    let (w, h) = (width as usize, height as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (x, y, p) in rgb.enumerate_pixels() {
        for c in 0..3 {
            data[c * h * w + y as usize * w + x as usize] = (f32::from(p.0[c]) / 255.0 - 0.5) / 0.5;
        }
    }
    Tensor::from_vec(data, (1, 3, h, w), device).ctx("map")
}

/// torchvision's `center_crop` to the shorter side (offsets rounded half to even), as
/// `prepare_batch_*` crops a map picture.
pub fn center_crop(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let left = (f64::from(w - side) / 2.0).round_ties_even();
    let top = (f64::from(h - side) / 2.0).round_ties_even();
    pil_crop(
        img,
        left,
        top,
        left + f64::from(side),
        top + f64::from(side),
    )
}

fn sem_tensor(
    picture: &DynamicImage,
    (width, height): (u32, u32),
    device: &Device,
) -> Result<Tensor, PipelineError> {
    let rgb = picture.to_rgb8();
    // A colour-coded segmentation (the ADE20K palette) is not a class-index picture, and its
    // luma would be nonsense classes: say so instead.
    if let Some(p) = rgb.pixels().find(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2]) {
        return Err(PipelineError::Invalid(format!(
            "a semantic map holds ADE20K class indices as grey levels (0–{}), but this picture \
             has colour (e.g. RGB {:?}); convert a colour-coded segmentation to class indices \
             first",
            SEM_CLASSES - 1,
            p.0
        )));
    }
    let grey = center_crop(&rgb);
    let grey = pil_resize(&grey, width, height, PilFilter::Nearest);
    let (w, h) = (width as usize, height as usize);
    let mut data = vec![0f32; SEM_CLASSES * h * w];
    for (x, y, p) in grey.enumerate_pixels() {
        let class = usize::from(p.0[0]);
        if class >= SEM_CLASSES {
            return Err(PipelineError::Invalid(format!(
                "pixel ({x}, {y}) of the resized semantic map is class {class}; the checkpoint \
                 knows classes 0–{}",
                SEM_CLASSES - 1
            )));
        }
        data[class * h * w + y as usize * w + x as usize] = 1.0;
    }
    Tensor::from_vec(data, (1, SEM_CLASSES, h, w), device).ctx("map")
}
