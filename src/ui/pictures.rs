//! Pictures the layout refers to (image boxes, the style image, the picture to inpaint), decoded
//! off the UI thread and kept as egui textures.
//!
//! A reference is what the layout stores: a path (relative to the layout's folder) or a data URI.
//! The first time the canvas or a panel asks for one, a thread reads and decodes it and scales it
//! down for display; until then the caller gets [`PictureState::Loading`] and draws a placeholder.
//! Nothing here blocks the UI thread on a file or a decoder.

use crate::layout::is_data_uri;
use poll_promise::Promise;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Longest side of the texture kept for display (the canvas rarely shows more).
pub const DISPLAY_SIDE: u32 = 1024;

/// Image files the studio takes as pictures (what the layout and the pipeline can read).
pub const PICTURE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// A decoded picture ready for the screen.
#[derive(Clone)]
pub struct Picture {
    pub texture: egui::TextureHandle,
    /// The picture's own size in pixels (before scaling down for display).
    pub size: [u32; 2],
}

impl Picture {
    /// The part of the picture the pipeline keeps for a `width × height` canvas (a centre crop to
    /// the canvas's aspect ratio, as diffusers and `GligenModel` do), as a UV rectangle.
    pub fn centre_crop_uv(&self, width: u32, height: u32) -> egui::Rect {
        centre_crop_uv(self.size, width, height)
    }

    /// The picture's aspect ratio (width / height).
    pub fn aspect(&self) -> f32 {
        self.size[0].max(1) as f32 / self.size[1].max(1) as f32
    }
}

/// See [`Picture::centre_crop_uv`].
pub fn centre_crop_uv(size: [u32; 2], width: u32, height: u32) -> egui::Rect {
    let (iw, ih) = (size[0].max(1) as f64, size[1].max(1) as f64);
    let (w, h) = (width.max(1) as f64, height.max(1) as f64);
    let (cw, ch) = if iw * h > ih * w {
        ((ih * w / h).floor(), ih)
    } else {
        (iw, (iw * h / w).floor())
    };
    let u0 = ((iw - cw) / 2.0 / iw) as f32;
    let v0 = ((ih - ch) / 2.0 / ih) as f32;
    egui::Rect::from_min_max(egui::pos2(u0, v0), egui::pos2(1.0 - u0, 1.0 - v0))
}

/// What the cache has for a reference.
pub enum PictureState<'a> {
    Loading,
    Ready(&'a Picture),
    Failed(&'a str),
}

type Decoded = Result<(egui::ColorImage, [u32; 2]), String>;

enum Entry {
    Loading(Promise<Decoded>),
    Ready(Picture),
    /// Tried again when asked for after [`RETRY_FAILED`] (the file may be back).
    Failed(String, std::time::Instant),
}

const RETRY_FAILED: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    reference: String,
    base: Option<PathBuf>,
}

/// The cache: one entry per (reference, layout folder), dropped when unused for a while.
#[derive(Default)]
pub struct PictureCache {
    entries: HashMap<Key, (Entry, u64)>,
    frame: u64,
}

/// Entries unused for this many frames are dropped once the cache holds more than `KEEP`.
const KEEP: usize = 48;
const STALE_FRAMES: u64 = 600;

/// Reads the bytes of a reference (blocking: off the UI thread).
pub fn read_reference(reference: &str, base: Option<&Path>) -> Result<Vec<u8>, String> {
    if reference.trim().is_empty() {
        return Err("no picture given".into());
    }
    crate::layout::read_picture(reference, base)
}

/// Decodes picture bytes and scales them down for display (blocking: off the UI thread).
pub fn decode_for_display(bytes: &[u8]) -> Decoded {
    let img = crate::layout::decode_picture(bytes)?;
    let size = [img.width(), img.height()];
    let img = if img.width() > DISPLAY_SIDE || img.height() > DISPLAY_SIDE {
        img.resize(
            DISPLAY_SIDE,
            DISPLAY_SIDE,
            image::imageops::FilterType::Triangle,
        )
    } else {
        img
    };
    let rgba = img.to_rgba8();
    let color = egui::ColorImage::from_rgba_unmultiplied(
        [rgba.width() as usize, rgba.height() as usize],
        rgba.as_raw(),
    );
    Ok((color, size))
}

impl PictureCache {
    /// Advances the frame counter and turns finished decodes into textures.
    pub fn poll(&mut self, ctx: &egui::Context) {
        self.frame += 1;
        let mut finished = Vec::new();
        for (key, (entry, _)) in &self.entries {
            if let Entry::Loading(p) = entry {
                if p.ready().is_some() {
                    finished.push(key.clone());
                }
            }
        }
        for key in finished {
            let Some((Entry::Loading(p), used)) = self.entries.remove(&key) else {
                continue;
            };
            let entry = match p.try_take() {
                Ok(Ok((color, size))) => {
                    let texture = ctx.load_texture(
                        format!("glichen-picture-{}", short_name(&key.reference)),
                        color,
                        egui::TextureOptions::LINEAR,
                    );
                    Entry::Ready(Picture { texture, size })
                }
                Ok(Err(e)) => Entry::Failed(e, std::time::Instant::now()),
                Err(p) => Entry::Loading(p),
            };
            self.entries.insert(key, (entry, used));
        }
        if self.entries.len() > KEEP {
            let frame = self.frame;
            self.entries.retain(|_, (e, used)| {
                matches!(e, Entry::Loading(_)) || frame.saturating_sub(*used) < STALE_FRAMES
            });
        }
    }

    /// The picture for `reference` (starting to load it when it is new).
    pub fn get(
        &mut self,
        ctx: &egui::Context,
        reference: &str,
        base: Option<&Path>,
    ) -> PictureState<'_> {
        let key = Key {
            reference: reference.to_string(),
            // A data URI or an absolute path does not depend on the layout's folder.
            base: if is_data_uri(reference) || Path::new(reference).is_absolute() {
                None
            } else {
                base.map(Path::to_path_buf)
            },
        };
        let frame = self.frame;
        if matches!(self.entries.get(&key), Some((Entry::Failed(_, at), _)) if at.elapsed() > RETRY_FAILED)
        {
            self.entries.remove(&key);
        }
        let (entry, used) = self.entries.entry(key.clone()).or_insert_with(|| {
            let ctx = ctx.clone();
            let Key { reference, base } = key;
            let promise = Promise::spawn_thread("glichen-picture", move || {
                let result = read_reference(&reference, base.as_deref())
                    .and_then(|b| decode_for_display(&b));
                ctx.request_repaint();
                result
            });
            (Entry::Loading(promise), frame)
        });
        *used = frame;
        match entry {
            Entry::Loading(_) => PictureState::Loading,
            Entry::Ready(p) => PictureState::Ready(p),
            Entry::Failed(e, _) => PictureState::Failed(e),
        }
    }

    /// The picture if it is decoded already (never starts a load).
    pub fn ready(&self, reference: &str, base: Option<&Path>) -> Option<&Picture> {
        self.entries
            .iter()
            .find(|(k, _)| {
                k.reference == reference && (k.base.is_none() || k.base.as_deref() == base)
            })
            .and_then(|(_, (e, _))| match e {
                Entry::Ready(p) => Some(p),
                _ => None,
            })
    }

    /// Pictures still being decoded.
    pub fn loading(&self) -> usize {
        self.entries
            .values()
            .filter(|(e, _)| matches!(e, Entry::Loading(_)))
            .count()
    }
}

fn short_name(reference: &str) -> String {
    if is_data_uri(reference) {
        "embedded".into()
    } else {
        Path::new(reference)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// How a reference is shown to the user: the file name, or "embedded picture".
pub fn describe_reference(reference: &str) -> String {
    if is_data_uri(reference) {
        "embedded picture".into()
    } else {
        short_name(reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_crop_keeps_the_middle_at_the_canvas_aspect() {
        // A 200×100 picture on a square canvas: the middle 100×100.
        let uv = centre_crop_uv([200, 100], 512, 512);
        assert!((uv.min.x - 0.25).abs() < 1e-6 && (uv.max.x - 0.75).abs() < 1e-6);
        assert_eq!((uv.min.y, uv.max.y), (0.0, 1.0));
        // A tall picture on a wide canvas: full width, the middle rows.
        let uv = centre_crop_uv([100, 300], 768, 512);
        assert_eq!((uv.min.x, uv.max.x), (0.0, 1.0));
        let rows = (uv.max.y - uv.min.y) * 300.0;
        assert!((rows - 66.0).abs() < 0.01, "{rows}");
    }
}
