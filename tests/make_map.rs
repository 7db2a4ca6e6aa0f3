//! `glichen make-map`: each recipe writes the map the library (and so the studio) makes from the
//! same picture, the networks come from a folder or file given by flag, and a missing network or
//! a bad size is an error that names it.

mod common;

use candle_core::Device;
use common::TempDir;
use glichen::maps::make::{self, Estimators, MapRecipe};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn glichen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glichen"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run glichen")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A photo-like picture, wider than tall.
fn photo(dir: &Path) -> PathBuf {
    let path = dir.join("photo.png");
    image::RgbImage::from_fn(90, 60, |x, y| {
        let d = ((x as i32 - 50).pow(2) + (y as i32 - 28).pow(2)) as f32;
        let v = (255.0 * (-d / 500.0).exp()) as u8;
        image::Rgb([v, (x * 2) as u8, 255 - (y * 3) as u8])
    })
    .save(&path)
    .unwrap();
    path
}

#[test]
fn each_recipe_writes_what_the_library_makes() {
    let dir = TempDir::new("make-map");
    let photo = photo(dir.path());
    let depth_net = fixtures().join("depth/tiny-depth-anything");
    let hed_net = fixtures().join("hed/tiny-hed.pth");
    let mut estimators = Estimators::new(
        Device::Cpu,
        &depth_net.display().to_string(),
        &hed_net.display().to_string(),
    );
    let picture = image::open(&photo).unwrap();
    for (name, recipe) in [
        (
            "canny",
            MapRecipe::Canny {
                low: 100.0,
                high: 200.0,
            },
        ),
        ("depth", MapRecipe::DepthFromPhoto),
        ("normal", MapRecipe::NormalsFromPhoto),
        ("normal-from-depth", MapRecipe::NormalsFromDepth),
        ("hed", MapRecipe::HedFromPhoto),
    ] {
        let out = dir.path().join(format!("{name}.png"));
        let run = glichen(&[
            "make-map",
            name,
            photo.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--size",
            "64",
            "--depth-model",
            depth_net.to_str().unwrap(),
            "--hed-model",
            hed_net.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{name}: {}", stderr(&run));
        let written = image::open(&out).unwrap();
        let expected = make::make_map(recipe, &picture, 64, &mut estimators).unwrap();
        assert_eq!((written.width(), written.height()), (64, 64), "{name}");
        assert_eq!(written.color(), expected.color(), "{name}");
        assert_eq!(written.as_bytes(), expected.as_bytes(), "{name}");
        assert_eq!(written.into_rgb8().pixels().count(), 64 * 64);
    }
}

#[test]
fn sem_from_a_coloured_segmentation_gives_class_indices() {
    let dir = TempDir::new("make-map-sem");
    let seg = dir.path().join("seg.png");
    let sky = glichen::maps::class_by_name("sky").unwrap();
    let grass = glichen::maps::class_by_name("grass").unwrap();
    let (top, bottom) = (
        glichen::maps::class_colour(sky),
        glichen::maps::class_colour(grass),
    );
    image::RgbImage::from_fn(80, 64, |_, y| image::Rgb(if y < 32 { top } else { bottom }))
        .save(&seg)
        .unwrap();
    let out = dir.path().join("sem.png");
    let run = glichen(&[
        "make-map",
        "sem",
        seg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--size",
        "32",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let map = image::open(&out).unwrap();
    let map = map.as_luma8().expect("a grey class-index PNG");
    assert_eq!(map.get_pixel(5, 2).0, [sky]);
    assert_eq!(map.get_pixel(5, 30).0, [grass]);
}

#[test]
fn missing_networks_and_bad_sizes_are_named() {
    let dir = TempDir::new("make-map-errors");
    let photo = photo(dir.path());
    let out = dir.path().join("x.png");
    let missing = dir.path().join("no-depth-net");
    let run = glichen(&[
        "make-map",
        "depth",
        photo.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--depth-model",
        missing.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let err = stderr(&run);
    assert!(err.contains("depth estimation needs its weights"), "{err}");
    assert!(err.contains("no-depth-net"), "{err}");
    assert!(!out.exists(), "nothing written");

    let run = glichen(&[
        "make-map",
        "canny",
        photo.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--size",
        "0",
    ]);
    assert!(!run.status.success());
    assert!(stderr(&run).contains("--size must be"), "{}", stderr(&run));

    let run = glichen(&[
        "make-map",
        "canny",
        "/nonexistent/photo.png",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(
        stderr(&run).contains("/nonexistent/photo.png"),
        "{}",
        stderr(&run)
    );
}
