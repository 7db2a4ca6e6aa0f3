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

/// The layout JSON of a Glichen PNG, from its bytes.
pub fn layout_json_from_png(bytes: &[u8]) -> Result<String, String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder
        .read_info()
        .map_err(|e| format!("not a readable PNG: {e}"))?;
    let info = reader.info();
    for chunk in &info.utf8_text {
        if chunk.keyword == LAYOUT_KEY {
            return chunk
                .get_text()
                .map_err(|e| format!("unreadable {LAYOUT_KEY} chunk: {e}"));
        }
    }
    for chunk in &info.uncompressed_latin1_text {
        if chunk.keyword == LAYOUT_KEY {
            return Ok(chunk.text.clone());
        }
    }
    for chunk in &info.compressed_latin1_text {
        if chunk.keyword == LAYOUT_KEY {
            return chunk
                .get_text()
                .map_err(|e| format!("unreadable {LAYOUT_KEY} chunk: {e}"));
        }
    }
    Err(format!(
        "the PNG has no {LAYOUT_KEY} text chunk (it was not written by Glichen)"
    ))
}

/// Same, from a file.
pub fn read_layout_chunk(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
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
