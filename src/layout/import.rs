//! "Open anything": the one reader for every document a user may hand Glichen, shared by the
//! studio's Open and drop and by `glichen generate --layout`. A file is a Glichen layout JSON, a
//! PNG Glichen wrote (its layout chunk), diffusers GLIGEN call arguments, the reference code's
//! inference `meta`, or COCO annotations (the first image's). The format is told by content
//! (the PNG signature, then the JSON's keys), the file name only breaks the tie for a PNG whose
//! signature is damaged, so a layout saved as `.txt` still opens.

use std::fmt;
use std::path::Path;

use serde_json::Value;

use super::convert::{CocoImageSelector, DiffusersArgs, GligenMeta};
use super::parse::{self, MAX_LAYOUT_BYTES};
use super::png::{layout_json_from_png, MAX_PNG_BYTES};
use super::{Layout, LayoutError};

/// What a document turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// A Glichen layout JSON: the one format Save writes back to.
    Layout,
    /// A PNG Glichen wrote, with the layout in its text chunk.
    GlichenPng,
    /// The arguments of diffusers' `StableDiffusionGLIGENPipeline` (`gligen_phrases`, …).
    DiffusersArgs,
    /// The reference code's `meta` dict (`locations`, `phrases`, …).
    GligenMeta,
    /// COCO annotations (`images` and `annotations`); the first image is read.
    Coco,
}

impl ImportFormat {
    /// The name users are shown ("diffusers arguments").
    pub fn name(self) -> &'static str {
        match self {
            ImportFormat::Layout => "layout",
            ImportFormat::GlichenPng => "Glichen PNG",
            ImportFormat::DiffusersArgs => "diffusers arguments",
            ImportFormat::GligenMeta => "GLIGEN inference meta",
            ImportFormat::Coco => "COCO annotations",
        }
    }
}

impl fmt::Display for ImportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A document read by [`import_bytes`] or [`import_file`].
#[derive(Debug, Clone)]
pub struct Imported {
    pub layout: Layout,
    pub format: ImportFormat,
    /// The picture of a Glichen PNG (`None` when it does not decode: the layout still opens).
    pub image: Option<image::RgbImage>,
}

const EXPECTED: &str =
    "a Glichen layout (\"version\" and \"entities\"), diffusers arguments, GLIGEN meta or COCO annotations";

fn has_key(value: &Value, key: &str) -> bool {
    value.as_object().is_some_and(|o| o.contains_key(key))
}

fn not_a_document(message: impl Into<String>) -> LayoutError {
    LayoutError::NotADocument(message.into())
}

/// Reads JSON in any of the imported formats; the layout's picture paths stay as written.
pub fn import_json(text: &str) -> Result<(Layout, ImportFormat), LayoutError> {
    // Counted before any parse, so that a huge document is refused before it is built.
    parse::check_value_count(text)?;
    // Parsed once, exactly as a layout is, and the value serves whichever format it turns out to be.
    let value = parse::exact_json(text).map_err(LayoutError::Json)?;
    if !value.is_object() {
        return Err(not_a_document(format!(
            "expected a JSON object ({EXPECTED}), found {}",
            parse::json_kind(&value)
        )));
    }
    if has_key(&value, "entities") || has_key(&value, "version") {
        return Ok((Layout::from_value(value)?, ImportFormat::Layout));
    }
    if has_key(&value, "gligen_phrases") || has_key(&value, "gligen_boxes") {
        let args: DiffusersArgs = serde_json::from_value(value)
            .map_err(|e| not_a_document(format!("diffusers arguments: {e}")))?;
        return Ok((
            Layout::from_diffusers_args(&args)?,
            ImportFormat::DiffusersArgs,
        ));
    }
    if has_key(&value, "locations") {
        let meta: GligenMeta = serde_json::from_value(value)
            .map_err(|e| not_a_document(format!("GLIGEN meta: {e}")))?;
        return Ok((Layout::from_gligen_meta(&meta)?, ImportFormat::GligenMeta));
    }
    if has_key(&value, "images") && has_key(&value, "annotations") {
        let first = value["images"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|i| i.get("id"))
            .and_then(Value::as_u64)
            .ok_or_else(|| not_a_document("COCO annotations: no image with an id"))?;
        return Ok((
            Layout::from_coco(text, CocoImageSelector::Id(first), None)?,
            ImportFormat::Coco,
        ));
    }
    Err(not_a_document(format!(
        "not a document Glichen opens: expected {EXPECTED}"
    )))
}

/// Reads a document from bytes; `name` (a file name) only matters for a PNG whose signature is
/// damaged. The layout's picture paths stay as written (relative ones are relative to the
/// document's folder: see [`Layout::absolutize_image_paths`]).
pub fn import_bytes(name: &str, bytes: &[u8]) -> Result<Imported, LayoutError> {
    let is_png =
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") || name.to_ascii_lowercase().ends_with(".png");
    if is_png {
        let json = layout_json_from_png(bytes).map_err(not_a_document)?;
        let layout = Layout::from_json_str(&json)
            .map_err(|e| not_a_document(format!("the embedded layout: {e}")))?;
        let image = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
            .map(|i| i.to_rgb8())
            .ok();
        return Ok(Imported {
            layout,
            format: ImportFormat::GlichenPng,
            image,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        not_a_document(format!(
            "not a text file (invalid UTF-8 at byte {}); expected {EXPECTED}, or a Glichen PNG",
            e.valid_up_to()
        ))
    })?;
    let (layout, format) = import_json(text)?;
    Ok(Imported {
        layout,
        format,
        image: None,
    })
}

/// Reads a document file, bounded by the format's size limit; errors name the file. Folders,
/// devices and pipes are refused before anything is read.
pub fn import_file(path: &Path) -> Result<Imported, LayoutError> {
    let is_png_name = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    // A PNG under another name past a layout's size is refused: pictures that big are not ours.
    let limit = if is_png_name {
        MAX_PNG_BYTES
    } else {
        MAX_LAYOUT_BYTES
    };
    let bytes = crate::fsio::read_limited(path, limit).map_err(|source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    import_bytes(&name, &bytes).map_err(|e| e.in_file(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_diffusers_arguments() {
        let json = r#"{"prompt": "a cat", "gligen_phrases": ["a cat"], "gligen_boxes": [[0.1, 0.1, 0.5, 0.5]], "height": 512, "width": 512}"#;
        let (layout, format) = import_json(json).unwrap();
        assert_eq!(format, ImportFormat::DiffusersArgs);
        assert_eq!(layout.entities.len(), 1);
    }

    #[test]
    fn refuses_garbage_with_a_message() {
        let msg = |t: &str| import_json(t).unwrap_err().to_string();
        assert!(
            msg("not json").contains("not valid JSON"),
            "{}",
            msg("not json")
        );
        assert!(msg("{\"foo\": 1}").contains("not a document Glichen opens"));
        assert!(
            msg("[1, 2]").contains("expected a JSON object"),
            "{}",
            msg("[1, 2]")
        );
        let bytes = import_bytes("x.json", b"\xff\xfe{}")
            .unwrap_err()
            .to_string();
        assert!(bytes.contains("not a text file"), "{bytes}");
    }

    #[test]
    fn a_glichen_png_opens_with_its_picture() {
        let layout = Layout::from_json_str(
            r#"{"version": 1, "width": 512, "height": 512, "prompt": "a cat", "entities": []}"#,
        )
        .unwrap();
        let img = image::RgbImage::from_pixel(4, 3, image::Rgb([1, 2, 3]));
        let bytes =
            super::super::png::encode_png_with_layout(&img, &layout.to_json_pretty().unwrap())
                .unwrap();
        let imported = import_bytes("anything", &bytes).unwrap();
        assert_eq!(imported.format, ImportFormat::GlichenPng);
        assert_eq!(imported.layout, layout);
        assert_eq!(imported.image.unwrap().dimensions(), (4, 3));
    }
}
