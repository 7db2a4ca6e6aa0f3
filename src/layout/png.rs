//! PNGs that carry their layout: an iTXt chunk `glichen-layout` with the layout JSON, written by the
//! CLI and the studio, so that an image reproduces its layout (`glichen layout-from-png`, drag-and-drop).

use std::path::Path;

/// Keyword of the text chunk holding the layout JSON.
pub const LAYOUT_KEY: &str = "glichen-layout";

/// Encodes `img` as an 8-bit RGB PNG with `layout_json` in an iTXt chunk.
pub fn encode_png_with_layout(img: &image::RgbImage, layout_json: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width(), img.height());
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.add_itxt_chunk(LAYOUT_KEY.to_string(), layout_json.to_string())
            .map_err(|e| e.to_string())?;
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer
            .write_image_data(img.as_raw())
            .map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Largest PNG file read for its layout (a 4096² RGB picture is about 50 MB uncompressed).
pub const MAX_PNG_BYTES: u64 = 1024 * 1024 * 1024;

/// The text of a compressed chunk, inflated to at most a layout's size: a megabyte of deflate
/// can inflate to a gigabyte.
fn inflate_bounded(
    text: Result<String, png::DecodingError>,
    limit: usize,
) -> Result<String, String> {
    text.map_err(|e| {
        format!("the {LAYOUT_KEY} chunk does not inflate to a layout of at most {limit} bytes: {e}")
    })
}

/// The layout JSON of a Glichen PNG, from its bytes.
pub fn layout_json_from_png(bytes: &[u8]) -> Result<String, String> {
    layout_json_within(bytes, super::MAX_LAYOUT_BYTES as usize)
}

/// [`layout_json_from_png`] with compressed chunks inflated to at most `limit` bytes.
fn layout_json_within(bytes: &[u8], limit: usize) -> Result<String, String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder
        .read_info()
        .map_err(|e| format!("not a readable PNG: {e}"))?;
    let info = reader.info();
    for chunk in &info.utf8_text {
        if chunk.keyword == LAYOUT_KEY {
            let mut chunk = chunk.clone();
            return inflate_bounded(
                chunk
                    .decompress_text_with_limit(limit)
                    .and_then(|()| chunk.get_text()),
                limit,
            );
        }
    }
    for chunk in &info.uncompressed_latin1_text {
        if chunk.keyword == LAYOUT_KEY {
            return Ok(chunk.text.clone());
        }
    }
    for chunk in &info.compressed_latin1_text {
        if chunk.keyword == LAYOUT_KEY {
            let mut chunk = chunk.clone();
            return inflate_bounded(
                chunk
                    .decompress_text_with_limit(limit)
                    .and_then(|()| chunk.get_text()),
                limit,
            );
        }
    }
    Err(format!(
        "the PNG has no {LAYOUT_KEY} text chunk (it was not written by Glichen)"
    ))
}

/// Same, from a file.
pub fn read_layout_chunk(path: &Path) -> Result<String, String> {
    let bytes = crate::fsio::read_limited(path, MAX_PNG_BYTES).map_err(|e| e.to_string())?;
    layout_json_from_png(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_chunk_round_trips() {
        let img = image::RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30]));
        let bytes = encode_png_with_layout(&img, "{\"version\": 1}").unwrap();
        assert_eq!(layout_json_from_png(&bytes).unwrap(), "{\"version\": 1}");
        let decoded = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(decoded, img);
    }

    #[test]
    fn a_chunk_that_inflates_past_any_layout_is_refused() {
        let img = image::RgbImage::new(1, 1);
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, 1, 1);
            enc.set_color(png::ColorType::Rgb);
            let text = " ".repeat(3 << 20);
            let chunk = png::text_metadata::ZTXtChunk::new(LAYOUT_KEY, text);
            let mut writer = enc.write_header().unwrap();
            writer.write_text_chunk(&chunk).unwrap();
            writer.write_image_data(img.as_raw()).unwrap();
            writer.finish().unwrap();
        }
        let err = layout_json_within(&out, 5 << 19).unwrap_err();
        assert!(
            err.contains("does not inflate to a layout of at most 2621440 bytes"),
            "{err}"
        );
        assert_eq!(layout_json_within(&out, 4 << 20).unwrap().len(), 3 << 20);
    }

    #[test]
    fn plain_png_is_refused() {
        let img = image::RgbImage::new(1, 1);
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
        assert!(layout_json_from_png(&bytes)
            .unwrap_err()
            .contains("no glichen-layout"));
        assert!(layout_json_from_png(b"nope").is_err());
    }
}
