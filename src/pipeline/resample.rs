//! Pillow's `Image.resize` and `Image.crop` on RGB pictures, bit for bit (the convolution itself
//! lives in `image_prep`). The reference pipelines resize reference and inpainting pictures with
//! PIL, and the `image` crate's filters differ by ±1 in some pixels (PIL convolves in 22-bit fixed
//! point and rounds to 8 bits between its passes), which alone moves final latents by ~7e-5.

use image::RgbImage;

pub use super::image_prep::PilFilter;

/// `Image.resize((width, height), filter)` of an RGB picture, as Pillow computes it.
pub fn pil_resize(img: &RgbImage, width: u32, height: u32, filter: PilFilter) -> RgbImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data = super::image_prep::pil_resize_rgb(
        img.as_raw(),
        h,
        w,
        height as usize,
        width as usize,
        filter,
    );
    RgbImage::from_raw(width, height, data).unwrap_or_else(|| img.clone())
}

/// `Image.crop(box)` with a float box: Pillow rounds each coordinate with Python's `round`
/// (half to even).
pub fn pil_crop(img: &RgbImage, left: f64, top: f64, right: f64, bottom: f64) -> RgbImage {
    let r = |v: f64| v.round_ties_even().max(0.0) as u32;
    let (x0, y0, x1, y1) = (r(left), r(top), r(right), r(bottom));
    let x1 = x1.min(img.width()).max(x0);
    let y1 = y1.min(img.height()).max(y0);
    image::imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_a_copy() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 7]));
        assert_eq!(pil_resize(&img, 5, 4, PilFilter::Bicubic), img);
    }

    #[test]
    fn constant_picture_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 13, 99]));
        for f in [PilFilter::Bicubic, PilFilter::Lanczos] {
            let out = pil_resize(&img, 16, 11, f);
            assert!(out.pixels().all(|p| p.0 == [200, 13, 99]), "{f:?}");
            let up = pil_resize(&img, 64, 40, f);
            assert!(up.pixels().all(|p| p.0 == [200, 13, 99]), "{f:?}");
        }
    }

    #[test]
    fn crop_rounds_half_to_even() {
        let img = RgbImage::from_fn(9, 9, |x, y| image::Rgb([x as u8, y as u8, 0]));
        // (9 - 4) / 2 = 2.5 → 2, (9 + 4) / 2 = 6.5 → 6
        let c = pil_crop(&img, 2.5, 2.5, 6.5, 6.5);
        assert_eq!(c.dimensions(), (4, 4));
        assert_eq!(c.get_pixel(0, 0).0, [2, 2, 0]);
    }
}
