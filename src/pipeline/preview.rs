//! Cheap RGB previews of SD 1.x latents: the linear latent→RGB projection ComfyUI uses, with no VAE.
//! The studio runs the same projection in `shaders/latent_preview.wgsl`; this CPU version serves the
//! CLI's `--previews` and tests.

use candle_core::{DType, Result, Tensor};
use image::RgbImage;

/// Rows: latent channels 0..3; columns: R, G, B.
pub const LATENT_RGB_FACTORS: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// `[1, 4, h, w]` (or `[4, h, w]`) latents → an `h × w` picture, one pixel per latent cell, mapped from
/// [-1, 1] to [0, 255].
pub fn latents_to_rgb(latents: &Tensor) -> Result<RgbImage> {
    let lat = match latents.rank() {
        4 => latents.get(0)?,
        _ => latents.clone(),
    };
    let (c, h, w) = lat.dims3()?;
    if c < 4 {
        candle_core::bail!("latent preview needs 4 channels, got {c}");
    }
    let data = lat
        .narrow(0, 0, 4)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = h * w;
    let mut img = RgbImage::new(w as u32, h as u32);
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let mut rgb = [0f32; 3];
            for (ch, factors) in LATENT_RGB_FACTORS.iter().enumerate() {
                let v = data[ch * plane + i];
                for k in 0..3 {
                    rgb[k] += v * factors[k];
                }
            }
            let px = rgb.map(|v| (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8);
            img.put_pixel(x as u32, y as u32, image::Rgb(px));
        }
    }
    Ok(img)
}

/// Decoded image `[1, 3, H, W]` in [-1, 1] → 8-bit RGB, rounded as diffusers rounds
/// (`(x / 2 + 0.5).clamp(0, 1)`, then numpy's half-to-even `round(x * 255)`).
pub fn image_to_rgb8(image: &Tensor) -> Result<RgbImage> {
    let img = match image.rank() {
        4 => image.get(0)?,
        _ => image.clone(),
    };
    let (c, h, w) = img.dims3()?;
    if c != 3 {
        candle_core::bail!("expected a 3-channel image, got {c} channels");
    }
    let data = img.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let plane = h * w;
    let mut out = RgbImage::new(w as u32, h as u32);
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let px = [0, 1, 2].map(|ch| {
                let v = (data[ch * plane + i] / 2.0 + 0.5).clamp(0.0, 1.0);
                (v * 255.0).round_ties_even() as u8
            });
            out.put_pixel(x as u32, y as u32, image::Rgb(px));
        }
    }
    Ok(out)
}
