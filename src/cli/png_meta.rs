//! PNGs that carry their layout: an iTXt chunk `glichen-layout` holding the layout JSON, so an image
//! reproduces its layout (`glichen layout-from-png`, drag-and-drop in the studio).

use anyhow::{Context, Result};
use std::path::Path;

pub const LAYOUT_KEY: &str = "glichen-layout";

pub fn encode_png_with_layout(img: &image::RgbImage, layout_json: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width(), img.height());
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.add_itxt_chunk(LAYOUT_KEY.to_string(), layout_json.to_string())?;
        let mut writer = enc.write_header()?;
        writer.write_image_data(img.as_raw())?;
        writer.finish()?;
    }
    Ok(out)
}

pub fn read_layout_chunk(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let reader = decoder
        .read_info()
        .with_context(|| format!("{}: not a PNG", path.display()))?;
    let info = reader.info();
    for chunk in &info.utf8_text {
        if chunk.keyword == LAYOUT_KEY {
            return chunk
                .get_text()
                .with_context(|| format!("{}: unreadable {LAYOUT_KEY} chunk", path.display()));
        }
    }
    for chunk in &info.uncompressed_latin1_text {
        if chunk.keyword == LAYOUT_KEY {
            return Ok(chunk.text.clone());
        }
    }
    anyhow::bail!(
        "{}: no {LAYOUT_KEY} text chunk (not written by Glichen?)",
        path.display()
    )
}
