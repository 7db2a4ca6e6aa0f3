//! Image references: file paths relative to the layout, or data URIs.
//!
//! Paths keep layout files small and editable; data URIs make a layout
//! self-contained (to send, to paste into a bug report, to keep in undo
//! history without depending on files that may move). Base64 is implemented
//! here because it is a few dozen lines and not worth a dependency.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat};

use super::{Entity, Layout, LayoutError};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = chunk.len() + 1;
        for k in 0..4 {
            if k < symbols {
                out.push(ALPHABET[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes base64, accepting what people actually paste: the standard or
/// URL-safe alphabet, with or without padding, with line breaks.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut padding = 0usize;
    for (pos, c) in text.bytes().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            c if c.is_ascii_whitespace() => continue,
            c => {
                return Err(format!(
                    "invalid base64 character {:?} at offset {pos}",
                    c as char
                ))
            }
        };
        if padding > 0 {
            return Err(format!(
                "base64 data continues after padding at offset {pos}"
            ));
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // 6 leftover bits cannot encode a byte: the input was cut short.
    if bits >= 6 {
        return Err("base64 data is truncated".to_string());
    }
    Ok(out)
}

/// Whether an image reference is inline data rather than a path.
pub fn is_data_uri(s: &str) -> bool {
    s.len() >= 5 && s.as_bytes()[..5].eq_ignore_ascii_case(b"data:")
}

/// `data:{media_type};base64,{...}`.
pub fn encode_data_uri(bytes: &[u8], media_type: &str) -> String {
    format!("data:{media_type};base64,{}", base64_encode(bytes))
}

/// Splits a data URI into its media type (lowercased, `image/jpg` taken as
/// `image/jpeg`) and payload, without decoding the payload.
fn split_data_uri(uri: &str) -> Result<(String, &str), String> {
    if !is_data_uri(uri) {
        return Err("not a data URI".to_string());
    }
    let rest = &uri[5..];
    let (header, payload) = rest
        .split_once(',')
        .ok_or_else(|| "data URI has no ',' before its data".to_string())?;
    let mut parts = header.split(';').map(str::trim);
    let media_type = parts.next().unwrap_or("").to_ascii_lowercase();
    let base64 = parts.any(|p| p.eq_ignore_ascii_case("base64"));
    if !base64 {
        return Err("data URI is not base64-encoded (expected \";base64,\")".to_string());
    }
    let media_type = match media_type.as_str() {
        "image/png" => "image/png",
        "image/jpeg" | "image/jpg" => "image/jpeg",
        other => {
            return Err(format!(
                "unsupported data URI media type \"{other}\" (expected image/png or image/jpeg)"
            ))
        }
    };
    Ok((media_type.to_string(), payload))
}

/// Media type of a data URI, checking only its header.
pub(crate) fn data_uri_media_type(uri: &str) -> Result<String, String> {
    split_data_uri(uri).map(|(m, _)| m)
}

/// Decodes a PNG or JPEG data URI into `(media_type, bytes)`.
pub fn decode_data_uri(uri: &str) -> Result<(String, Vec<u8>), String> {
    let (media_type, payload) = split_data_uri(uri)?;
    let bytes = base64_decode(payload)?;
    Ok((media_type, bytes))
}

fn media_type_of(format: ImageFormat) -> Option<&'static str> {
    match format {
        ImageFormat::Png => Some("image/png"),
        ImageFormat::Jpeg => Some("image/jpeg"),
        _ => None,
    }
}

fn decode_bytes(bytes: &[u8]) -> Result<DynamicImage, String> {
    let format = image::guess_format(bytes).map_err(|_| "not a PNG or JPEG image".to_string())?;
    if media_type_of(format).is_none() {
        return Err(format!(
            "{format:?} images are not supported (use PNG or JPEG)"
        ));
    }
    image::load_from_memory_with_format(bytes, format).map_err(|e| format!("cannot decode: {e}"))
}

fn full_path(img: &str, base_dir: Option<&Path>) -> PathBuf {
    let p = Path::new(img);
    match base_dir {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// Reads the bytes an image reference points at.
fn read_bytes(label: &str, img: &str, base_dir: Option<&Path>) -> Result<Vec<u8>, LayoutError> {
    if img.trim().is_empty() {
        return Err(LayoutError::Image {
            path: label.to_string(),
            message: "no image given".to_string(),
        });
    }
    if is_data_uri(img) {
        return decode_data_uri(img)
            .map(|(_, bytes)| bytes)
            .map_err(|message| LayoutError::Image {
                path: label.to_string(),
                message,
            });
    }
    let path = full_path(img, base_dir);
    std::fs::read(&path).map_err(|e| LayoutError::Image {
        path: label.to_string(),
        message: format!("cannot read {}: {e}", path.display()),
    })
}

fn resolve_labeled(
    label: &str,
    img: &str,
    base_dir: Option<&Path>,
) -> Result<DynamicImage, LayoutError> {
    let bytes = read_bytes(label, img, base_dir)?;
    decode_bytes(&bytes).map_err(|message| LayoutError::Image {
        path: label.to_string(),
        message: if is_data_uri(img) {
            format!("data URI: {message}")
        } else {
            format!("{}: {message}", full_path(img, base_dir).display())
        },
    })
}

impl Layout {
    /// The document paths of every image reference, in document order.
    pub fn image_refs(&self) -> Vec<(String, &str)> {
        let mut refs: Vec<(String, &str)> = self
            .entities
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.image().map(|img| (format!("entities[{i}].image"), img)))
            .collect();
        if let Some(inpaint) = &self.inpaint {
            refs.push(("inpaint.image".to_string(), inpaint.image.as_str()));
        }
        refs
    }

    /// Loads an image reference of this layout (a path relative to
    /// `base_dir`, or a data URI). Errors name the entity that uses it,
    /// because "ref.png: no such file" is little help in a layout with
    /// five references.
    pub fn resolve_image(
        &self,
        img: &str,
        base_dir: Option<&Path>,
    ) -> Result<DynamicImage, LayoutError> {
        let label = self
            .image_refs()
            .into_iter()
            .find(|(_, r)| *r == img)
            .map(|(path, _)| path)
            .unwrap_or_else(|| "image".to_string());
        resolve_labeled(&label, img, base_dir)
    }

    /// The image of entity `index` (image box or style image).
    pub fn entity_image(
        &self,
        index: usize,
        base_dir: Option<&Path>,
    ) -> Result<DynamicImage, LayoutError> {
        let label = format!("entities[{index}]");
        let entity = self.entities.get(index).ok_or_else(|| LayoutError::Image {
            path: label.clone(),
            message: format!("the layout has only {} entities", self.entities.len()),
        })?;
        let img = entity.image().ok_or_else(|| LayoutError::Image {
            path: label.clone(),
            message: format!("a {} has no image", entity.kind()),
        })?;
        resolve_labeled(&format!("{label}.image"), img, base_dir)
    }

    /// The picture to inpaint, if any.
    pub fn inpaint_image(
        &self,
        base_dir: Option<&Path>,
    ) -> Result<Option<DynamicImage>, LayoutError> {
        self.inpaint
            .as_ref()
            .map(|i| resolve_labeled("inpaint.image", &i.image, base_dir))
            .transpose()
    }

    /// Replaces every image path by a data URI, making the layout
    /// self-contained. PNG and JPEG files are embedded byte for byte (no
    /// re-encoding, so nothing is lost). All-or-nothing: if any image
    /// fails, the layout is left unchanged. Returns how many were embedded.
    pub fn embed_images(&mut self, base_dir: Option<&Path>) -> Result<usize, LayoutError> {
        let mut replacements: Vec<(String, String)> = Vec::new();
        for (label, img) in self.image_refs() {
            if is_data_uri(img) || replacements.iter().any(|(from, _)| from == img) {
                continue;
            }
            let bytes = read_bytes(&label, img, base_dir)?;
            let described = |message: String| LayoutError::Image {
                path: label.clone(),
                message: format!("{}: {message}", full_path(img, base_dir).display()),
            };
            // Decode once so that a corrupt file is reported now, not when
            // the embedded copy is used on another machine.
            decode_bytes(&bytes).map_err(described)?;
            let media_type = image::guess_format(&bytes)
                .ok()
                .and_then(media_type_of)
                .ok_or_else(|| described("not a PNG or JPEG image".to_string()))?;
            replacements.push((img.to_string(), encode_data_uri(&bytes, media_type)));
        }
        let count = replacements.len();
        let replace = |s: &mut String| {
            if let Some((_, uri)) = replacements.iter().find(|(from, _)| from == s) {
                *s = uri.clone();
            }
        };
        for entity in &mut self.entities {
            match entity {
                Entity::ImageBox { image, .. } | Entity::StyleImage { image } => replace(image),
                _ => {}
            }
        }
        if let Some(inpaint) = &mut self.inpaint {
            replace(&mut inpaint.image);
        }
        Ok(count)
    }
}

/// Encodes an image as a PNG data URI (for images that exist only in
/// memory, e.g. pasted into the studio).
pub fn png_data_uri(img: &DynamicImage) -> Result<String, LayoutError> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
        .map_err(|e| LayoutError::Image {
            path: "image".to_string(),
            message: format!("cannot encode PNG: {e}"),
        })?;
    Ok(encode_data_uri(&bytes, "image/png"))
}
