//! Grounded inpainting: the picture's latents `z0` are kept outside the boxes, re-noised to each
//! timestep before the UNet runs, and the UNet also sees `[z0 · mask, mask]` as extra channels.

use super::noise::{NoiseSource, RenoiseDraw};
use super::scheduler::Scheduler;
use super::{resample, Context, GligenModel, PipelineError};
use crate::layout::Layout;
use candle_core::{DType, Device, Tensor};

/// A generation's inpainting state, in f32 on the model's device.
pub struct Inpaint {
    /// The picture's latents (a posterior sample, scaled by the VAE's scaling factor).
    pub z0: Tensor,
    /// `[1, 1, h, w]`: 1 keeps, 0 (inside a box) regenerates.
    pub mask: Tensor,
    /// `[z0 · mask, mask]`, doubled along the batch when guided: appended to every UNet input.
    pub extra_channels: Tensor,
}

impl Inpaint {
    /// The layout's inpainting picture encoded for a latent grid of `h × w`, or `None` when the
    /// layout has none.
    pub fn prepare(
        model: &GligenModel,
        layout: &Layout,
        base_dir: Option<&std::path::Path>,
        noise: &NoiseSource,
        guided: bool,
        grid: (usize, usize),
    ) -> Result<Option<Self>, PipelineError> {
        let Some(pixels) = inpaint_pixels(model, layout, base_dir)? else {
            return Ok(None);
        };
        let posterior = model
            .vae
            .encode(&pixels.to_dtype(model.dtype).ctx("VAE encode")?)
            .ctx("VAE encode")?;
        let mean = posterior.mean.to_dtype(DType::F32).ctx("VAE encode")?;
        let draw = noise.vae(mean.dims(), &model.device)?;
        let z0 = crate::model::vae::LatentPosterior {
            mean,
            std: posterior.std.to_dtype(DType::F32).ctx("VAE encode")?,
        }
        .sample_with(&draw)
        .ctx("VAE encode")?;
        let z0 = (z0 * model.vae.config.scaling_factor).ctx("VAE encode")?;
        let mask = inpaint_mask(layout, grid, &model.device)?;
        let masked = z0.broadcast_mul(&mask).ctx("inpaint mask")?;
        let extra_channels = Tensor::cat(&[&masked, &mask], 1).ctx("inpaint mask")?;
        let extra_channels = if guided {
            Tensor::cat(&[&extra_channels, &extra_channels], 0).ctx("inpaint mask")?
        } else {
            extra_channels
        };
        Ok(Some(Self {
            z0,
            mask,
            extra_channels,
        }))
    }

    /// `latents` with the kept region replaced by `z0` noised to timestep `t`.
    pub fn renoise(
        &self,
        latents: &Tensor,
        scheduler: &dyn Scheduler,
        noise: &mut NoiseSource,
        draw: RenoiseDraw,
        t: f64,
        ctx: &str,
    ) -> Result<Tensor, PipelineError> {
        let (z0, mask) = (&self.z0, &self.mask);
        let draw = noise.renoise(draw, z0, latents.device())?;
        let noised = scheduler
            .add_noise(z0, &draw.reshape(z0.shape()).ctx(ctx)?, t)
            .ctx(ctx)?;
        let keep = noised.broadcast_mul(mask).ctx(ctx)?;
        let generate = latents
            .broadcast_mul(&mask.affine(-1.0, 1.0).ctx(ctx)?)
            .ctx(ctx)?;
        (keep + generate).ctx(ctx)
    }
}

/// The picture to inpaint, cropped to the canvas's aspect ratio and resized to it, as
/// `[1, 3, H, W]` in [-1, 1]. The original code does not crop: it squashes a picture of another
/// aspect ratio onto its square canvas, which Glichen does not do to anyone's photo.
fn inpaint_pixels(
    model: &GligenModel,
    layout: &Layout,
    base_dir: Option<&std::path::Path>,
) -> Result<Option<Tensor>, PipelineError> {
    let Some(img) = layout.inpaint_image(base_dir)? else {
        return Ok(None);
    };
    let (w, h) = (layout.width, layout.height);
    let rgb = img.to_rgb8();
    let rgb = if rgb.dimensions() == (w, h) {
        rgb
    } else {
        // centre crop (PIL's float box, as diffusers), then PIL's resize with the model's filter
        let (iw, ih) = rgb.dimensions();
        let (cw, ch) = if (iw as u64) * (h as u64) > (ih as u64) * (w as u64) {
            (((ih as u64 * w as u64) / h as u64) as u32, ih)
        } else {
            (iw, ((iw as u64 * h as u64) / w as u64) as u32)
        };
        let (iw, ih, cw, ch) = (iw as f64, ih as f64, cw as f64, ch as f64);
        let cropped = resample::pil_crop(
            &rgb,
            (iw - cw) / 2.0,
            (ih - ch) / 2.0,
            (iw + cw) / 2.0,
            (ih + ch) / 2.0,
        );
        resample::pil_resize(&cropped, w, h, model.origin.inpaint_resize_filter())
    };
    let data: Vec<f32> = rgb
        .as_raw()
        .iter()
        .map(|&v| 2.0 * (v as f32 / 255.0) - 1.0)
        .collect();
    let t = Tensor::from_vec(data, (1, h as usize, w as usize, 3), &model.device)
        .and_then(|t| t.permute((0, 3, 1, 2)))
        .and_then(|t| t.contiguous())
        .ctx("inpaint image")?;
    Ok(Some(t))
}

/// diffusers' `draw_inpaint_mask_from_boxes` on the latent grid: 1 keeps, 0 (inside a box)
/// regenerates; cells cut with `int()` of the scaled coordinates.
fn inpaint_mask(
    layout: &Layout,
    (h, w): (usize, usize),
    device: &Device,
) -> Result<Tensor, PipelineError> {
    let mut mask = vec![1f32; h * w];
    for b in layout
        .entities
        .iter()
        .filter_map(super::super::layout::Entity::bbox)
    {
        let (x0, x1) = ((b[0] * w as f64) as usize, (b[2] * w as f64) as usize);
        let (y0, y1) = ((b[1] * h as f64) as usize, (b[3] * h as f64) as usize);
        for y in y0.min(h)..y1.min(h) {
            for x in x0.min(w)..x1.min(w) {
                mask[y * w + x] = 0.0;
            }
        }
    }
    Tensor::from_vec(mask, (1, 1, h, w), device).ctx("inpaint mask")
}
