//! Image references: file paths relative to the layout, or data URIs.
//!
//! Paths keep layout files small and editable; data URIs make a layout
//! self-contained (to send, to paste into a bug report, to keep in undo
//! history without depending on files that may move). Base64 is implemented
//! here because it is a few dozen lines and not worth a dependency.

use std::path::{Component, Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat};

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
        "image/webp" => "image/webp",
        other => {
            return Err(format!(
                "unsupported data URI media type \"{other}\" (expected image/png, image/jpeg or image/webp)"
            ))
        }
    };
    Ok((media_type.to_string(), payload))
}

/// Media type of a data URI, checking only its header.
pub(crate) fn data_uri_media_type(uri: &str) -> Result<String, String> {
    split_data_uri(uri).map(|(m, _)| m)
}

/// Decodes a PNG, JPEG or WebP data URI into `(media_type, bytes)`.
pub fn decode_data_uri(uri: &str) -> Result<(String, Vec<u8>), String> {
    let (media_type, payload) = split_data_uri(uri)?;
    let bytes = base64_decode(payload)?;
    Ok((media_type, bytes))
}

/// The picture formats a layout may hold, and their media types: the one list the layout, the
/// pipeline and the studio go by.
pub fn media_type_of(format: ImageFormat) -> Option<&'static str> {
    match format {
        ImageFormat::Png => Some("image/png"),
        ImageFormat::Jpeg => Some("image/jpeg"),
        ImageFormat::WebP => Some("image/webp"),
        _ => None,
    }
}

/// What users are told when a picture is of another format.
pub const SUPPORTED_PICTURES: &str = "PNG, JPEG or WebP";

/// The largest picture file read (a reference picture is rarely a tenth of it).
pub const MAX_PICTURE_BYTES: u64 = 256 << 20;
/// The widest and tallest picture decoded, in pixels: four times a 4K frame's width, far past
/// anything the model looks at, and a bound on what a hostile header can make us allocate.
pub const MAX_PICTURE_SIDE: u32 = 16_384;
/// The most memory one decoded picture may take (the `image` crate's own default limit).
pub const MAX_PICTURE_DECODED_BYTES: u64 = 512 << 20;

/// The format and size a picture's header declares, refused when the format is not one Glichen
/// reads or the size is past [`MAX_PICTURE_SIDE`]. Reads only the header.
pub fn picture_header(bytes: &[u8]) -> Result<(ImageFormat, [u32; 2]), String> {
    let format = image::guess_format(bytes)
        .map_err(|_| format!("not a picture Glichen reads ({SUPPORTED_PICTURES})"))?;
    if media_type_of(format).is_none() {
        return Err(format!(
            "{format:?} images are not supported (use {SUPPORTED_PICTURES})"
        ));
    }
    let decoder = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_decoder()
        .map_err(|e| format!("cannot decode: {e}"))?;
    let (w, h) = decoder.dimensions();
    if w > MAX_PICTURE_SIDE || h > MAX_PICTURE_SIDE {
        return Err(format!(
            "the picture declares {w} × {h} pixels; Glichen reads pictures up to \
             {MAX_PICTURE_SIDE} × {MAX_PICTURE_SIDE}"
        ));
    }
    let decoded = decoder.total_bytes();
    if decoded > MAX_PICTURE_DECODED_BYTES {
        return Err(format!(
            "the picture declares {w} × {h} pixels ({} MiB decoded); Glichen decodes pictures of \
             up to {} MiB",
            decoded >> 20,
            MAX_PICTURE_DECODED_BYTES >> 20
        ));
    }
    Ok((format, [w, h]))
}

/// Decodes a picture of a supported format; the size its header declares is checked before any
/// pixel is decoded (see [`picture_header`]), and the decoder itself runs under the same limits.
pub fn decode_picture(bytes: &[u8]) -> Result<DynamicImage, String> {
    let (format, _) = picture_header(bytes)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_PICTURE_SIDE);
    limits.max_image_height = Some(MAX_PICTURE_SIDE);
    limits.max_alloc = Some(MAX_PICTURE_DECODED_BYTES);
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    reader.limits(limits);
    reader.decode().map_err(|e| format!("cannot decode: {e}"))
}

/// Where a path reference points: relative paths are relative to the layout's folder
/// (`base_dir`), or to the working directory when there is none.
pub fn picture_path(reference: &str, base_dir: Option<&Path>) -> PathBuf {
    let p = Path::new(reference);
    match base_dir {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// The bytes a picture reference (a path or a data URI) holds. Files are read bounded by
/// [`MAX_PICTURE_BYTES`]; folders, devices and pipes are refused before anything is read.
pub fn read_picture(reference: &str, base_dir: Option<&Path>) -> Result<Vec<u8>, String> {
    if reference.trim().is_empty() {
        return Err("no image given".to_string());
    }
    if is_data_uri(reference) {
        return decode_data_uri(reference).map(|(_, bytes)| bytes);
    }
    let path = picture_path(reference, base_dir);
    crate::fsio::read_limited(&path, MAX_PICTURE_BYTES)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Reads the bytes an image reference points at.
fn read_bytes(label: &str, img: &str, base_dir: Option<&Path>) -> Result<Vec<u8>, LayoutError> {
    read_picture(img, base_dir).map_err(|message| LayoutError::Image {
        path: label.to_string(),
        message,
    })
}

fn resolve_labeled(
    label: &str,
    img: &str,
    base_dir: Option<&Path>,
) -> Result<DynamicImage, LayoutError> {
    let bytes = read_bytes(label, img, base_dir)?;
    decode_picture(&bytes).map_err(|message| LayoutError::Image {
        path: label.to_string(),
        message: if is_data_uri(img) {
            format!("data URI: {message}")
        } else {
            format!("{}: {message}", picture_path(img, base_dir).display())
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
            replacements.push((img.to_string(), embed_one(&label, img, base_dir)?));
        }
        Ok(self.replace_image_refs(&replacements))
    }

    /// [`Layout::embed_images`] for every picture that can be read: the ones
    /// that cannot keep their path (nothing is dropped). Returns how many
    /// references were embedded and the error of each picture left as a path.
    pub fn embed_images_lenient(&mut self, base_dir: Option<&Path>) -> (usize, Vec<LayoutError>) {
        let mut replacements: Vec<(String, String)> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        let mut errors = Vec::new();
        for (label, img) in self.image_refs() {
            if is_data_uri(img)
                || replacements.iter().any(|(from, _)| from == img)
                || failed.iter().any(|f| f == img)
            {
                continue;
            }
            match embed_one(&label, img, base_dir) {
                Ok(uri) => replacements.push((img.to_string(), uri)),
                Err(e) => {
                    failed.push(img.to_string());
                    errors.push(e);
                }
            }
        }
        (self.replace_image_refs(&replacements), errors)
    }

    /// Every image reference that is a path (not a data URI), mutably.
    fn path_refs_mut(&mut self) -> Vec<&mut String> {
        let mut refs: Vec<&mut String> = Vec::new();
        for entity in &mut self.entities {
            match entity {
                Entity::ImageBox { image, .. }
                | Entity::StyleImage { image }
                | Entity::Map { image, .. } => refs.push(image),
                _ => {}
            }
        }
        if let Some(inpaint) = &mut self.inpaint {
            refs.push(&mut inpaint.image);
        }
        refs.retain(|r| !is_data_uri(r) && !r.trim().is_empty());
        refs
    }

    /// Makes every relative picture path absolute by joining it to
    /// `base_dir` (the folder of the file the layout was read from), so that
    /// the layout keeps pointing at the same files wherever it is saved next.
    /// `.` and `..` are resolved where the file system agrees (it is asked
    /// only for paths with `..`). Returns how many paths changed.
    pub fn absolutize_image_paths(&mut self, base_dir: &Path) -> usize {
        let base = absolute_dir(base_dir);
        let mut changed = 0;
        for r in self.path_refs_mut() {
            let p = Path::new(r.as_str());
            if p.is_relative() {
                let joined = base.join(p);
                let normal: PathBuf = lexical_normal(&joined).into_iter().collect();
                // `a/../b` is written `b` unless a symbolic link makes them differ.
                let same = !joined.components().any(|c| c == Component::ParentDir)
                    || match (joined.canonicalize(), normal.canonicalize()) {
                        (Ok(x), Ok(y)) => x == y,
                        (Err(_), _) => true,
                        (Ok(_), Err(_)) => false,
                    };
                let chosen = if same { normal } else { joined };
                *r = chosen.to_string_lossy().into_owned();
                changed += 1;
            }
        }
        changed
    }

    /// Writes every absolute picture path relative to `base_dir` (the folder
    /// the layout is saved in), with `/` separators, as the format asks; a
    /// path with no relative form (another drive) stays absolute. Relative
    /// paths are left alone (call [`Layout::absolutize_image_paths`] first
    /// with the folder they are relative to). Returns how many changed.
    pub fn relativize_image_paths(&mut self, base_dir: &Path) -> usize {
        let base = absolute_dir(base_dir);
        let mut changed = 0;
        for r in self.path_refs_mut() {
            let target = PathBuf::from(r.as_str());
            if !target.is_absolute() {
                continue;
            }
            if let Some(rel) = checked_relative_path(&target, &base) {
                *r = rel;
                changed += 1;
            }
        }
        changed
    }

    fn replace_image_refs(&mut self, replacements: &[(String, String)]) -> usize {
        let count = replacements.len();
        let replace = |s: &mut String| {
            if let Some((_, uri)) = replacements.iter().find(|(from, _)| from == s) {
                *s = uri.clone();
            }
        };
        for entity in &mut self.entities {
            match entity {
                Entity::ImageBox { image, .. }
                | Entity::StyleImage { image }
                | Entity::Map { image, .. } => replace(image),
                _ => {}
            }
        }
        if let Some(inpaint) = &mut self.inpaint {
            replace(&mut inpaint.image);
        }
        count
    }
}

/// Reads, checks and encodes one picture as a data URI.
fn embed_one(label: &str, img: &str, base_dir: Option<&Path>) -> Result<String, LayoutError> {
    let bytes = read_bytes(label, img, base_dir)?;
    let described = |message: String| LayoutError::Image {
        path: label.to_string(),
        message: format!("{}: {message}", picture_path(img, base_dir).display()),
    };
    // Decode once so that a corrupt file is reported now, not when the
    // embedded copy is used on another machine.
    decode_picture(&bytes).map_err(described)?;
    let media_type = image::guess_format(&bytes)
        .ok()
        .and_then(media_type_of)
        .ok_or_else(|| {
            described(format!(
                "not a picture Glichen reads ({SUPPORTED_PICTURES})"
            ))
        })?;
    Ok(encode_data_uri(&bytes, media_type))
}

/// `dir` made absolute against the working directory (unchanged if it is
/// absolute already or the working directory is unknown).
fn absolute_dir(dir: &Path) -> PathBuf {
    if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(dir))
            .unwrap_or_else(|_| dir.to_path_buf())
    }
}

/// `.` dropped and `..` applied to the component before it, without
/// touching the file system.
fn lexical_normal(path: &Path) -> Vec<Component<'_>> {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    out
}

/// The path of `target` relative to the folder `base_dir` (both absolute),
/// `/`-separated, computed lexically; `None` when they share no root (other
/// drives on Windows) or either is relative.
pub fn relative_path(target: &Path, base_dir: &Path) -> Option<String> {
    if !target.is_absolute() || !base_dir.is_absolute() {
        return None;
    }
    let t = lexical_normal(target);
    let b = lexical_normal(base_dir);
    match (t.first(), b.first()) {
        (Some(Component::Prefix(x)), Some(Component::Prefix(y))) if x != y => return None,
        (Some(Component::Prefix(_)), Some(c)) | (Some(c), Some(Component::Prefix(_)))
            if !matches!(c, Component::Prefix(_)) =>
        {
            return None
        }
        _ => {}
    }
    let common = t.iter().zip(b.iter()).take_while(|(x, y)| x == y).count();
    if common == 0 || common == t.len() {
        return None;
    }
    let mut parts: Vec<String> = vec!["..".to_string(); b.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    Some(parts.join("/"))
}

/// [`relative_path`], checked against the file system where the picture
/// exists: when a symbolic link makes the lexical `..` land elsewhere, the
/// path is computed between the resolved folders instead (or not at all).
fn checked_relative_path(target: &Path, base_dir: &Path) -> Option<String> {
    let lexical = relative_path(target, base_dir)?;
    let Ok(real) = target.canonicalize() else {
        // The picture is missing: nothing to check against; keep the
        // lexical form, which is what the user's path says.
        return Some(lexical);
    };
    if base_dir.join(&lexical).canonicalize().ok().as_ref() == Some(&real) {
        return Some(lexical);
    }
    let real_base = base_dir.canonicalize().ok()?;
    let resolved = relative_path(&real, &real_base)?;
    (real_base.join(&resolved).canonicalize().ok().as_ref() == Some(&real)).then_some(resolved)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webp_pictures_read_from_files_and_data_uris() {
        let mut rgb = image::RgbImage::new(5, 3);
        for (x, y, p) in rgb.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 50) as u8, (y * 80) as u8, 200]);
        }
        let mut bytes = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut bytes)
            .encode(rgb.as_raw(), 5, 3, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert_eq!(image::guess_format(&bytes).unwrap(), ImageFormat::WebP);
        let dir = std::env::temp_dir().join(format!("glichen-webp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.webp"), &bytes).unwrap();
        let mut layout = Layout::default();
        layout.entities.push(Entity::StyleImage {
            image: "p.webp".into(),
        });
        layout.entities.push(Entity::StyleImage {
            image: encode_data_uri(&bytes, "image/webp"),
        });
        for i in 0..2 {
            let img = layout.entity_image(i, Some(&dir)).unwrap();
            assert_eq!(img.to_rgb8(), rgb, "entity {i}");
        }
        // embedding keeps the format
        assert_eq!(
            data_uri_media_type(layout.entities[1].image().unwrap()).unwrap(),
            "image/webp"
        );
        // a format outside the list is named, with the ones that work
        let err = decode_picture(b"GIF89a\x01\x00\x01\x00").unwrap_err();
        assert!(err.contains("Gif") && err.contains("WebP"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn relative_paths_between_folders() {
        let rel = |t: &str, b: &str| relative_path(Path::new(t), Path::new(b));
        assert_eq!(rel("/a/b/pic.png", "/a/b").as_deref(), Some("pic.png"));
        assert_eq!(rel("/a/b/p/pic.png", "/a/b").as_deref(), Some("p/pic.png"));
        assert_eq!(
            rel("/a/pic.png", "/a/b/c").as_deref(),
            Some("../../pic.png")
        );
        assert_eq!(
            rel("/a/./x/../pic.png", "/a/b").as_deref(),
            Some("../pic.png")
        );
        assert_eq!(rel("/pic.png", "/a").as_deref(), Some("../pic.png"));
        assert_eq!(rel("pic.png", "/a"), None);
        assert_eq!(rel("/a", "/a"), None);
    }

    #[cfg(unix)]
    #[test]
    fn absolutize_then_relativize_round_trips() {
        let mut layout = Layout::default();
        layout.entities.push(Entity::StyleImage {
            image: "pics/style.png".into(),
        });
        layout.entities.push(Entity::ImageBox {
            image: "data:image/png;base64,AAAA".into(),
            bbox: [0.0, 0.0, 0.5, 0.5],
            phrase: None,
        });
        assert_eq!(layout.absolutize_image_paths(Path::new("/docs/one")), 1);
        assert_eq!(layout.entities[0].image(), Some("/docs/one/pics/style.png"));
        // Saved next to the old folder: the path is relative to the new one.
        assert_eq!(layout.relativize_image_paths(Path::new("/docs/two")), 1);
        assert_eq!(layout.entities[0].image(), Some("../one/pics/style.png"));
        assert_eq!(
            layout.entities[1].image(),
            Some("data:image/png;base64,AAAA")
        );
    }
}
