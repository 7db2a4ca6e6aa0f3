//! `pipeline::resample` against Pillow 13 itself (`tests/fixtures/make_pil_resample_fixtures.py`):
//! every pixel of BICUBIC and LANCZOS resizes, down, up and mixed, must be identical.

use glichen::pipeline::resample::{pil_resize, PilFilter};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pil_resample")
}

#[test]
fn resizes_equal_pillow_bit_for_bit() {
    let src = image::open(dir().join("src.png")).unwrap().to_rgb8();
    let mut checked = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let Some((filter, size)) = name.split_once('_') else {
            continue;
        };
        let filter = match filter {
            "bicubic" => PilFilter::Bicubic,
            "lanczos" => PilFilter::Lanczos,
            _ => continue,
        };
        let (w, h) = size.split_once('x').unwrap();
        let expected = image::open(&path).unwrap().to_rgb8();
        let ours = pil_resize(&src, w.parse().unwrap(), h.parse().unwrap(), filter);
        assert_eq!(ours.dimensions(), expected.dimensions(), "{name}");
        let diff = ours
            .as_raw()
            .iter()
            .zip(expected.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(diff, 0, "{name}: {diff} channel values differ from Pillow");
        checked += 1;
    }
    assert_eq!(checked, 10);
}
