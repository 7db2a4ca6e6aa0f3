//! `glichen::maps`: Canny equal to OpenCV pixel for pixel (fixtures from
//! `tests/fixtures/make_map_fixtures.py`), the ADE20K table and conversions, normals from depth
//! in the DIODE convention, depth normalisation, the sem brush and fill, and refusals instead of panics.

use glichen::maps::{
    ade20k, canny, canny_rgb, class_by_name, class_colour, class_name, classes_to_colour,
    colour_to_classes, normal::NormalOptions, normalize_depth, normals_from_depth,
    normals_from_depth_values, paint, to_gray, MapError,
};
use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage, RgbaImage};
use std::path::{Path, PathBuf};

const PICTURES: [&str; 4] = ["shapes", "noise", "star", "odd"];
const THRESHOLDS: [(u32, u32); 3] = [(100, 200), (50, 150), (10, 30)];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/maps")
        .join(name)
}

fn open(name: &str) -> DynamicImage {
    image::open(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Pixels where two grey pictures of the same size differ.
fn differing(a: &GrayImage, b: &GrayImage) -> usize {
    assert_eq!(a.dimensions(), b.dimensions());
    a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count()
}

#[test]
fn gray_conversion_equals_opencv() {
    for name in PICTURES {
        let rgb = open(&format!("{name}.png"));
        let expected = open(&format!("{name}_gray.png")).to_luma8();
        assert_eq!(differing(&to_gray(&rgb), &expected), 0, "{name}");
        // Alpha is ignored, as COLOR_RGBA2GRAY does.
        let mut rgba = rgb.to_rgba8();
        rgba.pixels_mut().for_each(|p| p.0[3] = 17);
        assert_eq!(
            differing(&to_gray(&DynamicImage::ImageRgba8(rgba)), &expected),
            0
        );
    }
    // Grey stays grey; the weights sum to 2^15.
    let g = GrayImage::from_fn(16, 16, |x, y| Luma([(x * 16 + y) as u8]));
    let as_rgb = DynamicImage::ImageLuma8(g.clone()).to_rgb8();
    assert_eq!(to_gray(&DynamicImage::ImageRgb8(as_rgb)), g);
}

#[test]
fn canny_equals_opencv_pixel_for_pixel() {
    let mut total = 0;
    for name in PICTURES {
        let gray = open(&format!("{name}_gray.png")).to_luma8();
        for (lo, hi) in THRESHOLDS {
            let expected = open(&format!("{name}_canny_{lo}_{hi}.png")).to_luma8();
            let edges = canny(&gray, lo as f32, hi as f32).unwrap();
            let diff = differing(&edges, &expected);
            assert_eq!(
                diff, 0,
                "{name} ({lo}, {hi}): {diff} pixels differ from OpenCV"
            );
            assert!(edges.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
            // OpenCV swaps reversed thresholds and floors fractional ones.
            assert_eq!(canny(&gray, hi as f32, lo as f32).unwrap(), expected);
            let frac = canny(&gray, lo as f32 + 0.75, hi as f32 + 0.5).unwrap();
            assert_eq!(frac, expected, "{name} ({lo}.75, {hi}.5)");
            total += expected.pixels().filter(|p| p.0[0] == 255).count();
        }
    }
    assert!(
        total > 5000,
        "the fixtures should hold many edges, got {total}"
    );
}

#[test]
fn canny_rgb_is_gray_edges_in_three_channels() {
    for name in PICTURES {
        let rgb = open(&format!("{name}.png"));
        let expected = open(&format!("{name}_canny_100_200.png")).to_luma8();
        let out = canny_rgb(&rgb, 100.0, 200.0);
        assert_eq!(out.dimensions(), expected.dimensions());
        for (p, e) in out.pixels().zip(expected.pixels()) {
            assert_eq!(p.0, [e.0[0]; 3], "{name}");
        }
    }
}

#[test]
fn canny_odd_shapes_and_thresholds() {
    // Tiny pictures work (OpenCV accepts them too) and a flat picture has no edges.
    for (w, h) in [(1, 1), (1, 7), (9, 1), (2, 2)] {
        let flat = GrayImage::from_pixel(w, h, Luma([90]));
        let edges = canny(&flat, 0.0, 0.0).unwrap();
        assert!(edges.pixels().all(|p| p.0[0] == 0), "{w}x{h}");
    }
    // A vertical step: the edge is the column with the largest (first) magnitude, on every row.
    let step = GrayImage::from_fn(8, 5, |x, _| Luma([if x < 4 { 0 } else { 255 }]));
    let edges = canny(&step, 100.0, 200.0).unwrap();
    for y in 0..5 {
        let row: Vec<u8> = (0..8).map(|x| edges.get_pixel(x, y).0[0]).collect();
        assert_eq!(row, [0, 0, 0, 255, 0, 0, 0, 0], "row {y}");
    }
    // Negative and huge thresholds neither panic nor overflow.
    assert!(canny(&step, -5.0, 1e30)
        .unwrap()
        .pixels()
        .all(|p| p.0[0] == 0));
    assert!(canny(&step, -1e30, -1e29).is_ok());
}

#[test]
fn canny_refuses_bad_input() {
    let empty = GrayImage::new(0, 5);
    assert!(matches!(
        canny(&empty, 1.0, 2.0),
        Err(MapError::Empty {
            width: 0,
            height: 5,
            ..
        })
    ));
    let g = GrayImage::new(3, 3);
    assert!(matches!(
        canny(&g, f32::NAN, 2.0),
        Err(MapError::Parameter { .. })
    ));
    assert!(matches!(
        canny(&g, 1.0, f32::INFINITY),
        Err(MapError::Parameter { .. })
    ));
    // The studio's infallible version: an empty picture gives an empty map, NaN no edges,
    // infinities the same edges as the largest finite thresholds.
    assert_eq!(
        canny_rgb(&DynamicImage::ImageRgba8(RgbaImage::new(0, 4)), 1.0, 2.0).dimensions(),
        (0, 4)
    );
    let shapes = open("shapes.png");
    let none = canny_rgb(&shapes, f32::NAN, 200.0);
    assert_eq!(none.dimensions(), (64, 48));
    assert!(none.pixels().all(|p| p.0 == [0, 0, 0]));
    assert!(canny_rgb(&shapes, 10.0, f32::INFINITY)
        .pixels()
        .all(|p| p.0 == [0, 0, 0]));
    let gray = to_gray(&shapes);
    let all_low = canny(&gray, -1.0, 30.0).unwrap();
    let rgb = canny_rgb(&shapes, f32::NEG_INFINITY, 30.0);
    assert!(rgb
        .pixels()
        .zip(all_low.pixels())
        .all(|(p, q)| p.0 == [q.0[0]; 3]));
}

#[test]
fn ade20k_table() {
    assert_eq!(ade20k::CLASS_COUNT, 150);
    assert_eq!(ade20k::CHECKPOINT_CHANNELS, 152);
    assert_eq!(class_name(0), Some("other"));
    assert_eq!(class_name(1), Some("wall"));
    assert_eq!(class_name(2), Some("building"));
    assert_eq!(class_name(3), Some("sky"));
    assert_eq!(class_name(5), Some("tree"));
    assert_eq!(class_name(13), Some("person"));
    assert_eq!(class_name(150), Some("flag"));
    assert_eq!(class_name(151), None);
    assert_eq!(class_name(255), None);
    assert_eq!(class_colour(1), [120, 120, 120]);
    assert_eq!(class_colour(2), [180, 120, 120]);
    assert_eq!(class_colour(3), [6, 230, 230]);
    assert_eq!(class_colour(4), [80, 50, 50]);
    assert_eq!(class_colour(5), [4, 200, 3]);
    assert_eq!(class_colour(150), [92, 0, 255]);
    assert_eq!(class_colour(0), [0, 0, 0]);
    assert_eq!(class_colour(151), [0, 0, 0]);
    // Every class has a name, a colour that is not black, and one shared grey (road, skyscraper).
    let mut colours = std::collections::HashMap::new();
    for i in 1..=150u8 {
        let name = class_name(i).unwrap();
        assert!(!name.is_empty() && name == name.trim(), "{i}: {name:?}");
        assert_eq!(class_by_name(name), Some(i), "{name}");
        assert_ne!(class_colour(i), [0, 0, 0]);
        colours
            .entry(class_colour(i))
            .or_insert_with(Vec::new)
            .push(i);
    }
    let shared: Vec<_> = colours.values().filter(|v| v.len() > 1).collect();
    assert_eq!(shared, [&vec![7, 49]]);
    assert_eq!(ade20k::class_of_colour([140, 140, 140]), Some(7));
    // Names: any case, synonyms, class names before synonyms.
    assert_eq!(class_by_name(" Sky "), Some(3));
    assert_eq!(class_by_name("window"), Some(9));
    assert_eq!(class_by_name("tv"), Some(90));
    assert_eq!(class_by_name("screen"), Some(131));
    assert_eq!(class_by_name("ground"), Some(14));
    assert_eq!(class_by_name("other"), Some(0));
    assert_eq!(class_by_name("unicorn"), None);
    assert_eq!(ade20k::class_synonyms(15), ["door", "double door"]);
}

#[test]
fn ade20k_round_trips() {
    // Every class index, as a picture, to colour and back (skyscraper comes back as road).
    let gray = GrayImage::from_fn(151, 2, |x, y| {
        Luma([if y == 0 { x as u8 } else { 150 - x as u8 }])
    });
    let rgb = classes_to_colour(&gray);
    assert_eq!(rgb.get_pixel(1, 0).0, [120, 120, 120]);
    let back = colour_to_classes(&rgb).unwrap();
    for (x, y, p) in gray.enumerate_pixels() {
        let expected = if p.0[0] == 49 { 7 } else { p.0[0] };
        assert_eq!(back.get_pixel(x, y).0[0], expected, "({x}, {y})");
    }
    // The palette picture of every colour back to classes.
    let all = RgbImage::from_fn(150, 1, |x, _| Rgb(class_colour(x as u8 + 1)));
    let classes = colour_to_classes(&all).unwrap();
    assert_eq!(classes.get_pixel(2, 0).0[0], 3);
    // Display of unused indices is black, like other.
    let odd = GrayImage::from_fn(3, 1, |x, _| Luma([[0, 151, 255][x as usize]]));
    assert!(classes_to_colour(&odd).pixels().all(|p| p.0 == [0, 0, 0]));
}

#[test]
fn ade20k_names_the_first_colour_outside_the_palette() {
    let mut rgb = RgbImage::from_pixel(5, 4, Rgb([6, 230, 230]));
    rgb.put_pixel(3, 2, Rgb([7, 230, 230]));
    rgb.put_pixel(1, 3, Rgb([1, 2, 3]));
    let err = colour_to_classes(&rgb).unwrap_err();
    assert_eq!(
        err,
        MapError::NotInPalette {
            x: 3,
            y: 2,
            rgb: [7, 230, 230]
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("(3, 2)") && text.contains("RGB(7, 230, 230)"),
        "{text}"
    );
    assert!(matches!(
        colour_to_classes(&RgbImage::new(0, 3)),
        Err(MapError::Empty { .. })
    ));
}

/// The pixel's normal vector back from its encoding (to within one step of truncation).
fn decode(p: [u8; 3]) -> [f32; 3] {
    p.map(|c| (f32::from(c) + 0.5) / 255.0 * 2.0 - 1.0)
}

#[test]
fn flat_depth_faces_the_viewer() {
    for value in [0u8, 77, 255] {
        let out = normals_from_depth(&GrayImage::from_pixel(9, 6, Luma([value])), 3.0).unwrap();
        assert!(out.pixels().all(|p| p.0 == [127, 127, 255]), "{value}");
    }
    // Strength 0 flattens anything.
    let ramp = GrayImage::from_fn(9, 6, |x, y| Luma([(x * 20 + y * 7) as u8]));
    assert!(normals_from_depth(&ramp, 0.0)
        .unwrap()
        .pixels()
        .all(|p| p.0 == [127, 127, 255]));
    // One pixel is a (flat) picture too.
    assert_eq!(
        normals_from_depth(&GrayImage::new(1, 1), 1.0)
            .unwrap()
            .get_pixel(0, 0)
            .0,
        [127, 127, 255]
    );
}

#[test]
fn tilted_planes_give_one_normal_up_to_the_border() {
    // Nearer (brighter) to the right: the surface faces left, red below 127, everywhere.
    let right_near = GrayImage::from_fn(12, 7, |x, _| Luma([(40 + 2 * x) as u8]));
    let out = normals_from_depth(&right_near, 1.0).unwrap();
    // n = normalize(-2, 0, 1) = (-0.894, 0, 0.447): ((n / 2 + 1/2) · 255) truncated.
    assert!(
        out.pixels().all(|p| p.0 == [13, 127, 184]),
        "{:?}",
        out.get_pixel(0, 0)
    );
    // Nearer at the bottom (a floor): it faces up, green above 127.
    let floor = GrayImage::from_fn(7, 12, |_, y| Luma([(10 + 3 * y) as u8]));
    let out = normals_from_depth(&floor, 0.5).unwrap();
    let n = decode(out.get_pixel(3, 0).0);
    assert!(out.pixels().all(|p| p == out.get_pixel(3, 0)));
    assert!(
        n[0].abs() < 0.01 && (n[1] - 0.832).abs() < 0.01 && (n[2] - 0.555).abs() < 0.01,
        "{n:?}"
    );
    // A diagonal plane: both components, the same everywhere.
    let diag = GrayImage::from_fn(10, 10, |x, y| Luma([(100 + 3 * x - 2 * y) as u8]));
    let out = normals_from_depth(&diag, 1.0).unwrap();
    assert!(out.pixels().all(|p| p == out.get_pixel(0, 0)));
    let n = decode(out.get_pixel(0, 0).0);
    assert!(n[0] < -0.5 && n[1] < -0.3 && n[2] > 0.2, "{n:?}");
}

#[test]
fn sphere_normals_point_outward() {
    // A bump nearest at its centre: its left side faces left, its top faces up.
    let (w, h, r) = (41u32, 41u32, 18.0f32);
    let values: Vec<f32> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x as f32 - 20.0, y as f32 - 20.0)))
        .map(|(dx, dy)| (r * r - dx * dx - dy * dy).max(0.0).sqrt())
        .collect();
    let options = NormalOptions {
        strength: 1.0,
        background: Some(0.0),
    };
    let out = normals_from_depth_values(&values, w, h, &options).unwrap();
    assert_eq!(out.get_pixel(20, 20).0, [127, 127, 255]);
    let left = decode(out.get_pixel(8, 20).0);
    let right = decode(out.get_pixel(32, 20).0);
    let top = decode(out.get_pixel(20, 8).0);
    let bottom = decode(out.get_pixel(20, 32).0);
    assert!(left[0] < -0.4 && right[0] > 0.4, "{left:?} {right:?}");
    assert!(top[1] > 0.4 && bottom[1] < -0.4, "{top:?} {bottom:?}");
    assert!(left[1].abs() < 0.02 && top[0].abs() < 0.02);
    // Outside the sphere (depth 0, the background): DIODE's zero vector.
    assert_eq!(out.get_pixel(0, 0).0, [127, 127, 127]);
    // Near the rim the true sphere normal is about (x, -y, z)/r in image coordinates.
    let p = decode(out.get_pixel(8, 20).0);
    let truth = [-12.0 / r, 0.0, (r * r - 144.0).sqrt() / r];
    assert!(
        p.iter().zip(truth).all(|(a, b)| (a - b).abs() < 0.1),
        "{p:?} vs {truth:?}"
    );
}

#[test]
fn normals_refuse_bad_input() {
    let g = GrayImage::new(4, 4);
    for s in [f32::NAN, f32::INFINITY, -1.0] {
        assert!(
            matches!(normals_from_depth(&g, s), Err(MapError::Parameter { .. })),
            "{s}"
        );
    }
    assert!(matches!(
        normals_from_depth(&GrayImage::new(0, 0), 1.0),
        Err(MapError::Empty { .. })
    ));
    let opts = NormalOptions::default();
    assert!(matches!(
        normals_from_depth_values(&[1.0; 5], 2, 3, &opts),
        Err(MapError::SizeMismatch {
            expected: 6,
            got: 5,
            ..
        })
    ));
    assert!(normals_from_depth_values(&[1.0, f32::NAN], 2, 1, &opts).is_err());
    let bad_bg = NormalOptions {
        background: Some(f32::NAN),
        ..opts
    };
    assert!(normals_from_depth_values(&[1.0; 4], 2, 2, &bad_bg).is_err());
}

#[test]
fn depth_normalisation_is_midas_write_depth() {
    // 255 · (d − min) / (max − min) in float32, truncated.
    let values = [2.0f32, 3.0, 4.5, 7.0, 2.4, 6.99];
    let out = normalize_depth(&values, 3, 2, false).unwrap();
    let expected: Vec<u8> = values
        .iter()
        .map(|v| (255.0f32 * (v - 2.0) / 5.0) as u8)
        .collect();
    assert_eq!(out.as_raw(), &expected);
    assert_eq!(out.as_raw()[..4], [0, 51, 127, 255]);
    // Distances: far is dark.
    let inv = normalize_depth(&values, 3, 2, true).unwrap();
    assert_eq!(inv.as_raw()[..4], [255, 204, 127, 0]);
    // Constant input: zeros, as MiDaS writes it.
    assert!(normalize_depth(&[5.0; 6], 2, 3, false)
        .unwrap()
        .pixels()
        .all(|p| p.0[0] == 0));
    // Refusals.
    assert!(matches!(
        normalize_depth(&[], 0, 0, false),
        Err(MapError::Empty { .. })
    ));
    assert!(matches!(
        normalize_depth(&[1.0; 3], 2, 2, false),
        Err(MapError::SizeMismatch { .. })
    ));
    assert!(normalize_depth(&[1.0, f32::INFINITY], 2, 1, false).is_err());
    // Extreme but finite values do not panic.
    assert!(normalize_depth(&[-3e38, 3e38], 2, 1, false).is_ok());
}

/// The brush paints pixels whose centres lie within the radius of the stroke: a thin horizontal
/// stroke covers its row (and the pixels whose centres touch its ends), never the rows beside.
#[test]
fn brush_strokes_cover_pixel_centres_within_the_radius() {
    let mut map = GrayImage::new(12, 12);
    let changed = paint::paint_stroke(&mut map, (2.0, 5.5), (9.0, 5.5), 0.5, 7).unwrap();
    let painted: Vec<(u32, u32)> = map
        .enumerate_pixels()
        .filter(|(_, _, p)| p.0[0] == 7)
        .map(|(x, y, _)| (x, y))
        .collect();
    assert_eq!(painted, (1..=9).map(|x| (x, 5)).collect::<Vec<_>>());
    assert_eq!(changed, 9);
    // painting again changes nothing
    assert_eq!(
        paint::paint_stroke(&mut map, (2.0, 5.5), (9.0, 5.5), 0.5, 7).unwrap(),
        0
    );
    // a click with no radius still marks the pixel under it
    let mut dot = GrayImage::new(4, 4);
    assert_eq!(
        paint::paint_stroke(&mut dot, (2.2, 1.7), (2.2, 1.7), 0.0, 3).unwrap(),
        1
    );
    assert_eq!(dot.get_pixel(2, 1).0, [3]);
    // a disc of radius 3 around a pixel centre: 29 pixels (the lattice points of the disc)
    let mut disc = GrayImage::new(16, 16);
    assert_eq!(
        paint::paint_stroke(&mut disc, (8.5, 8.5), (8.5, 8.5), 3.0, 1).unwrap(),
        29
    );
    // strokes off the map are clipped, not a panic
    let mut edge = GrayImage::new(8, 8);
    assert_eq!(
        paint::paint_stroke(&mut edge, (-20.0, -20.0), (-10.0, -3.0), 2.0, 1).unwrap(),
        0
    );
    assert_eq!(
        paint::paint_stroke(&mut edge, (-5.0, 0.5), (100.0, 0.5), 0.5, 1).unwrap(),
        8
    );
}

/// The fill replaces the 4-connected region of the clicked class and stops at other classes
/// (a diagonal gap does not leak).
#[test]
fn fill_replaces_the_connected_region_only() {
    // a ring of class 4 around a 3×3 hole, on a field of 0
    let mut map = GrayImage::new(9, 9);
    for y in 2..=6 {
        for x in 2..=6 {
            if x == 2 || x == 6 || y == 2 || y == 6 {
                map.put_pixel(x, y, Luma([4]));
            }
        }
    }
    let mut inside = map.clone();
    assert_eq!(paint::flood_fill(&mut inside, 4, 4, 9).unwrap(), 9);
    assert_eq!(inside.get_pixel(1, 1).0, [0], "outside untouched");
    assert_eq!(inside.get_pixel(3, 3).0, [9]);
    let mut outside = map.clone();
    assert_eq!(paint::flood_fill(&mut outside, 0, 0, 9).unwrap(), 81 - 25);
    assert_eq!(outside.get_pixel(4, 4).0, [0], "the hole is not reached");
    // a ring corner replaced by a diagonal-only gap still holds
    let mut diagonal = map.clone();
    diagonal.put_pixel(2, 2, Luma([0]));
    assert_eq!(paint::flood_fill(&mut diagonal, 4, 4, 9).unwrap(), 9);
    // the ring itself, and a fill with its own class
    let mut ring = map.clone();
    assert_eq!(paint::flood_fill(&mut ring, 2, 4, 1).unwrap(), 16);
    assert_eq!(paint::flood_fill(&mut ring, 2, 4, 1).unwrap(), 0);
    // a whole large map, without deep recursion
    let mut big = GrayImage::new(1024, 1024);
    assert_eq!(
        paint::flood_fill(&mut big, 500, 500, 2).unwrap(),
        1024 * 1024
    );
    assert_eq!(
        paint::class_histogram(&map),
        vec![(0, 81 - 16), (4, 16)],
        "most common first"
    );
}

#[test]
fn painting_refuses_bad_input() {
    let mut map = GrayImage::new(4, 4);
    let err = paint::paint_stroke(&mut map, (1.0, 1.0), (2.0, 2.0), 1.0, 152).unwrap_err();
    assert!(err.to_string().contains("class"), "{err}");
    let err = paint::paint_stroke(&mut map, (f32::NAN, 1.0), (2.0, 2.0), 1.0, 1).unwrap_err();
    assert!(err.to_string().contains("stroke start x"), "{err}");
    let err = paint::paint_stroke(&mut map, (1.0, 1.0), (2.0, 2.0), -1.0, 1).unwrap_err();
    assert!(err.to_string().contains("brush radius"), "{err}");
    let err = paint::flood_fill(&mut map, 4, 0, 1).unwrap_err();
    assert!(err.to_string().contains("fill start"), "{err}");
    let mut empty = GrayImage::new(0, 0);
    assert_eq!(
        paint::paint_stroke(&mut empty, (0.0, 0.0), (1.0, 1.0), 2.0, 1).unwrap(),
        0
    );
    assert_eq!(
        map,
        GrayImage::new(4, 4),
        "nothing painted by refused calls"
    );
}
