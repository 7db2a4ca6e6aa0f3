//! Canny edges equal to OpenCV's `cv2.Canny(gray, low, high)` with its defaults (aperture 3,
//! `L2gradient=False`), which made the canny checkpoint's training maps, and OpenCV's 8-bit
//! `cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)`.
//!
//! The steps are OpenCV's (`modules/imgproc/src/canny.cpp`), in integers as there:
//! 1. 3×3 Sobel `dx`, `dy` with `BORDER_REPLICATE`;
//! 2. magnitude `|dx| + |dy|`, zero outside the picture;
//! 3. non-maximum suppression with OpenCV's fixed-point direction test (`TG22` =
//!    tan 22.5° · 2¹⁵), its asymmetric comparisons (`>` on one side, `>=` on the other) included;
//!    a pixel survives only if its magnitude is `> floor(low)`;
//! 4. hysteresis: survivors with magnitude `> floor(high)` seed the edges, which grow through
//!    8-connected survivors.
//!
//! OpenCV's bookkeeping while it scans (a seed next to a seed of the same row, or below one, is
//! left for the growing pass to mark) changes the order of the work, not the result: such a
//! pixel touches an edge pixel, so the growing pass reaches it. The reference fixtures
//! (`tests/fixtures/make_map_fixtures.py`) check this pixel for pixel.

use image::{DynamicImage, GrayImage, Luma, RgbImage};

use super::{check_finite, check_size, MapError};

/// OpenCV's fixed-point RGB→grey weights for 8-bit pictures: 0.299, 0.587, 0.114 times 2¹⁵,
/// rounded (`RY15`, `GY15`, `BY15`; they sum to 2¹⁵, so a grey pixel stays itself). Checked
/// against `cv2.cvtColor` for all 2²⁴ colours in OpenCV 4.10 and 5.1.
const RY15: u32 = 9798;
const GY15: u32 = 19235;
const BY15: u32 = 3735;

/// `(int)(tan(22.5°) · 2¹⁵ + 0.5)`, OpenCV's `TG22` with `CANNY_SHIFT` 15.
const TG22: i32 = 13573;
const CANNY_SHIFT: u32 = 15;
/// The largest L1 magnitude of a 3×3 Sobel on 8-bit values: 4·255 in each direction.
const MAX_MAGNITUDE: i32 = 2040;

/// One RGB pixel to grey as `cv2.cvtColor(…, COLOR_RGB2GRAY)` rounds it.
fn grey(r: u8, g: u8, b: u8) -> u8 {
    let sum = u32::from(r) * RY15 + u32::from(g) * GY15 + u32::from(b) * BY15;
    // At most 255 · 2¹⁵ + 2¹⁴, so the shift lands in 0..=255.
    ((sum + (1 << 14)) >> 15) as u8
}

/// The grey picture OpenCV would take: grey pictures as they are (their alpha dropped), colour
/// ones through `cv2.cvtColor(rgb, COLOR_RGB2GRAY)` (alpha ignored, as `COLOR_RGBA2GRAY` does).
/// Pictures with more than 8 bits per channel are first reduced to 8 bits by `image`'s own
/// conversion, since `cv2.Canny` takes 8-bit pictures only.
pub fn to_gray(img: &DynamicImage) -> GrayImage {
    match img {
        DynamicImage::ImageLuma8(g) => g.clone(),
        DynamicImage::ImageLumaA8(g) => {
            GrayImage::from_fn(g.width(), g.height(), |x, y| Luma([g.get_pixel(x, y).0[0]]))
        }
        DynamicImage::ImageRgb8(rgb) => map_rgb(rgb.width(), rgb.height(), rgb.as_raw(), 3),
        DynamicImage::ImageRgba8(rgba) => map_rgb(rgba.width(), rgba.height(), rgba.as_raw(), 4),
        other if !other.color().has_color() => other.to_luma8(),
        other => {
            let rgb = other.to_rgb8();
            map_rgb(rgb.width(), rgb.height(), rgb.as_raw(), 3)
        }
    }
}

fn map_rgb(width: u32, height: u32, raw: &[u8], channels: usize) -> GrayImage {
    let data = raw
        .chunks_exact(channels)
        .map(|p| grey(p[0], p[1], p[2]))
        .collect();
    // The buffer has exactly one byte per pixel of a picture that already existed.
    GrayImage::from_raw(width, height, data).unwrap_or_else(|| GrayImage::new(width, height))
}

/// Canny edges of an 8-bit grey picture, equal to `cv2.Canny(gray, low, high)` (aperture 3, L1
/// gradient): 255 on edges, 0 elsewhere. As in OpenCV the thresholds are swapped when
/// `low > high` and floored (a magnitude must exceed `floor(low)` to survive, `floor(high)` to
/// seed an edge). GLIGEN's canny checkpoint was trained with `(100, 200)`.
pub fn canny(gray: &GrayImage, low: f32, high: f32) -> Result<GrayImage, MapError> {
    let (width, height) = gray.dimensions();
    check_size("picture", width, height)?;
    check_finite("low threshold", f64::from(low))?;
    check_finite("high threshold", f64::from(high))?;
    let (low, high) = if low > high { (high, low) } else { (low, high) };
    // `as` saturates, so huge thresholds stay huge instead of wrapping.
    let low = f64::from(low).floor() as i32;
    let high = f64::from(high).floor() as i32;

    let (w, h) = (width as usize, height as usize);
    let (dx, dy) = sobel(gray.as_raw(), w, h);

    // Magnitudes with a zero frame, so that the neighbours of border pixels read 0 as OpenCV's
    // zeroed ring-buffer ends do.
    let stride = w + 2;
    let mut mag = vec![0i32; stride * (h + 2)];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            mag[(y + 1) * stride + x + 1] = i32::from(dx[i]).abs() + i32::from(dy[i]).abs();
        }
    }

    // State per framed pixel: 0 = may be an edge, 1 = cannot, 2 = edge.
    let mut state = vec![1u8; stride * (h + 2)];
    let mut stack = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let c = (y + 1) * stride + x + 1;
            let m = mag[c];
            if m > low && is_local_max(&mag, c, stride, m, dx[y * w + x], dy[y * w + x]) {
                if m > high {
                    state[c] = 2;
                    stack.push(c);
                } else {
                    state[c] = 0;
                }
            }
        }
    }

    // Hysteresis: grow every seed through 8-connected candidates. The frame is 1, so the
    // neighbour indices never leave the buffer.
    let neighbours = [
        -1isize,
        1,
        -(stride as isize) - 1,
        -(stride as isize),
        -(stride as isize) + 1,
        stride as isize - 1,
        stride as isize,
        stride as isize + 1,
    ];
    while let Some(c) = stack.pop() {
        for d in neighbours {
            let n = c.wrapping_add_signed(d);
            if state[n] == 0 {
                state[n] = 2;
                stack.push(n);
            }
        }
    }

    Ok(GrayImage::from_fn(width, height, |x, y| {
        let c = (y as usize + 1) * stride + x as usize + 1;
        Luma([if state[c] == 2 { 255 } else { 0 }])
    }))
}

/// OpenCV's direction test: the gradient falls in one of four sectors (horizontal, vertical,
/// two diagonals) by comparing `|dy|·2¹⁵` with `|dx|·TG22` and `|dx|·(TG22 + 2¹⁶)` (tan 67.5° =
/// tan 22.5° + 2), and `m` must beat its two neighbours across the edge. The first neighbour
/// (left, above, or above on the diagonal) must be strictly smaller, the second only not
/// larger, except on the diagonals where both are strict, as in OpenCV.
fn is_local_max(mag: &[i32], c: usize, stride: usize, m: i32, xs: i16, ys: i16) -> bool {
    let x = i32::from(xs).abs();
    let y = i32::from(ys).abs() << CANNY_SHIFT;
    // |dx| <= 1020, so these stay below 2^27.
    let tg22x = x * TG22;
    if y < tg22x {
        return m > mag[c - 1] && m >= mag[c + 1];
    }
    let tg67x = tg22x + (x << (CANNY_SHIFT + 1));
    if y > tg67x {
        return m > mag[c - stride] && m >= mag[c + stride];
    }
    // Signs differ: the gradient runs from top right to bottom left, and so does the test.
    if (xs ^ ys) < 0 {
        m > mag[c - stride + 1] && m > mag[c + stride - 1]
    } else {
        m > mag[c - stride - 1] && m > mag[c + stride + 1]
    }
}

/// 3×3 Sobel derivatives with OpenCV's `BORDER_REPLICATE` (`cv::Sobel(…, CV_16S, …, ksize 3)`):
/// `dx` = [-1 0 1; -2 0 2; -1 0 1], `dy` its transpose, rows top to bottom. |values| <= 1020.
fn sobel(src: &[u8], w: usize, h: usize) -> (Vec<i16>, Vec<i16>) {
    let mut dx = vec![0i16; w * h];
    let mut dy = vec![0i16; w * h];
    let at = |x: usize, y: usize| i16::from(src[y * w + x]);
    for y in 0..h {
        let (ya, yb) = (y.saturating_sub(1), (y + 1).min(h - 1));
        for x in 0..w {
            let (xl, xr) = (x.saturating_sub(1), (x + 1).min(w - 1));
            let col = |xx| at(xx, ya) + 2 * at(xx, y) + at(xx, yb);
            let row = |yy| at(xl, yy) + 2 * at(x, yy) + at(xr, yy);
            dx[y * w + x] = col(xr) - col(xl);
            dy[y * w + x] = row(yb) - row(ya);
        }
    }
    (dx, dy)
}

/// Canny edges of any picture, ready for the canny checkpoint: converted to grey as OpenCV's
/// `COLOR_RGB2GRAY` does ([`to_gray`]), edges found by [`canny`], and the 0/255 edges copied to
/// three channels, as `prepare_batch_canny`'s `Image.open(…).convert("RGB")` reads a saved
/// edge PNG.
///
/// Infallible for the studio's live preview, where every slider position must give a picture:
/// an empty picture gives an empty map, a NaN threshold gives no edges, and infinite thresholds
/// act as below or above every magnitude (|dx| + |dy| <= 2040), as they would in OpenCV.
/// [`canny`] is the strict version.
pub fn canny_rgb(img: &DynamicImage, low: f32, high: f32) -> RgbImage {
    let (width, height) = (img.width(), img.height());
    if low.is_nan() || high.is_nan() {
        return RgbImage::new(width, height);
    }
    // Past these bounds every magnitude passes (low) or none seeds (high): same edges.
    let clamp = |t: f32| t.clamp(-1.0, MAX_MAGNITUDE as f32 + 1.0);
    match canny(&to_gray(img), clamp(low), clamp(high)) {
        Ok(edges) => DynamicImage::ImageLuma8(edges).to_rgb8(),
        // Only an empty picture fails once the thresholds are finite.
        Err(_) => RgbImage::new(width, height),
    }
}
