//! Painting class indices into a semantic map (the studio's brush and fill): the map is the
//! grey class-index picture the sem checkpoint reads, so every operation writes one class value
//! into whole pixels, never blends.
//!
//! Coordinates are in map pixels with pixel `(x, y)` covering `[x, x + 1) × [y, y + 1)`; a pixel
//! is painted when its centre lies inside the shape, so that a stroke looks the same at any
//! zoom and two strokes that meet leave no gap.

use image::GrayImage;

use super::ade20k::CHECKPOINT_CHANNELS;
use super::{check_finite, MapError};

/// The largest class a sem map may hold: the checkpoint's one-hot has
/// [`CHECKPOINT_CHANNELS`] channels (0 = other, 1..=150 ADE20K, 151 never trained).
const MAX_CLASS: u8 = (CHECKPOINT_CHANNELS - 1) as u8;

fn check_class(class: u8) -> Result<(), MapError> {
    if class > MAX_CLASS {
        return Err(MapError::Parameter {
            name: "class",
            rule: "an ADE20K class index 0..=151",
            value: f64::from(class),
        });
    }
    Ok(())
}

/// Paints `class` into every pixel whose centre lies within `radius` of the segment from `from`
/// to `to` (a capsule; `from == to` paints a disc). Returns the number of pixels that changed.
/// Parts outside the map are clipped. A radius below half a pixel still paints the pixel under
/// each end, so a click always leaves a mark.
pub fn paint_stroke(
    classes: &mut GrayImage,
    from: (f32, f32),
    to: (f32, f32),
    radius: f32,
    class: u8,
) -> Result<usize, MapError> {
    check_class(class)?;
    for (name, v) in [
        ("stroke start x", from.0),
        ("stroke start y", from.1),
        ("stroke end x", to.0),
        ("stroke end y", to.1),
        ("brush radius", radius),
    ] {
        check_finite(name, f64::from(v))?;
    }
    if radius < 0.0 {
        return Err(MapError::Parameter {
            name: "brush radius",
            rule: "not negative",
            value: f64::from(radius),
        });
    }
    let (w, h) = classes.dimensions();
    if w == 0 || h == 0 {
        return Ok(0);
    }
    let mut changed = 0;
    let mut set = |classes: &mut GrayImage, x: u32, y: u32| {
        let p = classes.get_pixel_mut(x, y);
        if p.0[0] != class {
            p.0[0] = class;
            changed += 1;
        }
    };
    // The pixel under each end, whatever the radius.
    for (px, py) in [from, to] {
        if px >= 0.0 && py >= 0.0 && px < w as f32 && py < h as f32 {
            set(classes, px as u32, py as u32);
        }
    }
    let r = radius.max(0.5);
    let r2 = r * r;
    let clip = |v: f32, hi: u32| v.floor().clamp(0.0, hi as f32) as u32;
    let (x0, x1) = (
        clip(from.0.min(to.0) - r, w),
        clip(from.0.max(to.0) + r + 1.0, w),
    );
    let (y0, y1) = (
        clip(from.1.min(to.1) - r, h),
        clip(from.1.max(to.1) + r + 1.0, h),
    );
    let (dx, dy) = (to.0 - from.0, to.1 - from.1);
    let len2 = dx * dx + dy * dy;
    for y in y0..y1 {
        for x in x0..x1 {
            let (cx, cy) = (x as f32 + 0.5, y as f32 + 0.5);
            // The nearest point of the segment to the pixel centre.
            let t = if len2 > 0.0 {
                (((cx - from.0) * dx + (cy - from.1) * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (ex, ey) = (cx - (from.0 + t * dx), cy - (from.1 + t * dy));
            if ex * ex + ey * ey <= r2 {
                set(classes, x, y);
            }
        }
    }
    Ok(changed)
}

/// Replaces the 4-connected region of equal class around pixel `(x, y)` with `class` (a paint
/// bucket). Returns the number of pixels that changed (0 when the region already has `class`).
pub fn flood_fill(classes: &mut GrayImage, x: u32, y: u32, class: u8) -> Result<usize, MapError> {
    check_class(class)?;
    let (w, h) = classes.dimensions();
    if x >= w || y >= h {
        return Err(MapError::Parameter {
            name: "fill start",
            rule: "inside the map",
            value: f64::from(x.max(y)),
        });
    }
    let target = classes.get_pixel(x, y).0[0];
    if target == class {
        return Ok(0);
    }
    // Scanline fill: each run is painted once and seeds the rows above and below, so memory
    // stays small even for a map-sized region.
    let mut stack = vec![(x, y)];
    let mut changed = 0;
    while let Some((sx, sy)) = stack.pop() {
        if classes.get_pixel(sx, sy).0[0] != target {
            continue;
        }
        let mut left = sx;
        while left > 0 && classes.get_pixel(left - 1, sy).0[0] == target {
            left -= 1;
        }
        let mut right = sx;
        while right + 1 < w && classes.get_pixel(right + 1, sy).0[0] == target {
            right += 1;
        }
        for px in left..=right {
            classes.get_pixel_mut(px, sy).0[0] = class;
        }
        changed += (right - left + 1) as usize;
        for ny in [sy.checked_sub(1), (sy + 1 < h).then_some(sy + 1)]
            .into_iter()
            .flatten()
        {
            let mut in_run = false;
            for px in left..=right {
                let matches = classes.get_pixel(px, ny).0[0] == target;
                if matches && !in_run {
                    stack.push((px, ny));
                }
                in_run = matches;
            }
        }
    }
    Ok(changed)
}

/// The classes a sem map holds, with their pixel counts, most common first (the studio's
/// legend). Values above the checkpoint's classes are listed too, so that a bad map shows.
pub fn class_histogram(classes: &GrayImage) -> Vec<(u8, usize)> {
    let mut counts = [0usize; 256];
    for p in classes.pixels() {
        counts[usize::from(p.0[0])] += 1;
    }
    let mut out: Vec<(u8, usize)> = (0..=255u8).zip(counts).filter(|&(_, n)| n > 0).collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}
