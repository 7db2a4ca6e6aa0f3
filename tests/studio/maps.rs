//! The map slot's semantic-map painting: brush strokes and fills write ADE20K class indices into
//! the layout's map (a grey class-index PNG, as the sem checkpoint reads), one undo step each,
//! and the canvas shows the map in palette colours.

use super::harness::*;
use glichen::layout::{Entity, Layout, MapKind};
use glichen::ui::StudioApp;
use std::path::{Path, PathBuf};

/// A studio with the tiny original-format map checkpoint `checkpoint` loaded, in a fresh folder.
fn map_studio(tag: &str, checkpoint: &str) -> (PathBuf, Harness<'static, StudioApp>, Answers) {
    let dir = temp_dir(tag);
    let model = fixture(&format!("original/{checkpoint}"))
        .display()
        .to_string();
    let (mut h, answers) = studio_with(&dir.join("data"), Some(model), false);
    wait_model(&mut h);
    (dir, h, answers)
}

/// The layout's sem map decoded to class indices.
fn sem_map(app: &StudioApp) -> Option<image::GrayImage> {
    app.layout().entities.iter().find_map(|e| match e {
        Entity::Map { kind, image } => {
            assert_eq!(*kind, MapKind::Sem);
            let bytes = glichen::layout::read_picture(image, None).unwrap();
            let img = glichen::layout::decode_picture(&bytes).unwrap();
            assert!(
                matches!(img, image::DynamicImage::ImageLuma8(_)),
                "a grey PNG, not {:?}",
                img.color()
            );
            Some(img.to_luma8())
        }
        _ => None,
    })
}

#[test]
fn sem_brush_and_fill_paint_class_indices() {
    let (_dir, mut h, _answers) = map_studio("sem-paint", "gligen-tiny-sem.pth");
    h.state_mut().set_layout(Layout::studio_blank(64, 64));
    h.run();
    assert!(sem_map(h.state()).is_none());

    // a stroke across the whole canvas with "person" (13), 4 px wide on each side
    h.get_by_label("Paint classes (K)").click();
    h.run();
    let person = glichen::maps::class_by_name("person").unwrap();
    h.state_mut().set_sem_brush(person, 4.0);
    let tf = transform(&h);
    drag(
        &mut h,
        screen_of(&tf, [0.01, 0.5]),
        screen_of(&tf, [0.99, 0.5]),
    );
    let map = sem_map(h.state()).expect("the stroke made a map");
    assert_eq!(map.dimensions(), (64, 64));
    assert_eq!(map.get_pixel(32, 32).0, [person]);
    assert_eq!(
        map.get_pixel(0, 32).0,
        [person],
        "the stroke reaches the left edge"
    );
    assert_eq!(map.get_pixel(63, 31).0, [person], "and the right edge");
    assert_eq!(map.get_pixel(32, 5).0, [0], "above it: other");
    assert_eq!(map.get_pixel(32, 40).0, [0], "below it: other");
    assert!(h.state().sem_layer_shown(), "shown in palette colours");
    let steps = h.state().history().undo_len();

    // fill the part above the stroke with sky; the stroke keeps the part below apart
    h.get_by_label("Fill classes (G)").click();
    h.run();
    let sky = glichen::maps::class_by_name("sky").unwrap();
    h.state_mut().set_sem_brush(sky, 4.0);
    let tf = transform(&h);
    click(&mut h, screen_of(&tf, [0.5, 0.1]));
    let map = sem_map(h.state()).unwrap();
    assert_eq!(map.get_pixel(32, 5).0, [sky]);
    assert_eq!(map.get_pixel(0, 0).0, [sky]);
    assert_eq!(map.get_pixel(32, 32).0, [person]);
    assert_eq!(
        map.get_pixel(32, 60).0,
        [0],
        "the fill stopped at the stroke"
    );
    assert_eq!(h.state().history().undo_len(), steps + 1, "one undo step");

    // undo: the map without the sky, and the canvas follows it (decoded again off the UI thread)
    h.state_mut().undo();
    wait_files(&mut h, "the map to paint");
    h.run();
    let map = sem_map(h.state()).unwrap();
    assert_eq!(map.get_pixel(32, 5).0, [0]);
    assert!(h.state().sem_layer_shown());
    // painting continues on the undone map
    h.get_by_label("Paint classes (K)").click();
    let tree = glichen::maps::class_by_name("tree").unwrap();
    h.state_mut().set_sem_brush(tree, 2.0);
    let tf = transform(&h);
    click(&mut h, screen_of(&tf, [0.5, 0.9]));
    let map = sem_map(h.state()).unwrap();
    assert_eq!(map.get_pixel(32, 57).0, [tree]);
    assert_eq!(map.get_pixel(32, 5).0, [0], "the undone fill stays undone");
    assert_eq!(map.get_pixel(32, 32).0, [person]);

    // the painted map is what the pipeline reads: every class within the checkpoint's 152
    assert!(map.pixels().all(|p| p.0[0] <= 151));
}

/// A colour map cannot be painted (its colours are not class indices): the tools say why, and
/// the map is left as it was.
#[test]
fn sem_painting_refuses_a_colour_map() {
    let (dir, mut h, _answers) = map_studio("sem-colour", "gligen-tiny-sem.pth");
    let colour = write_picture(&dir, "colour.png", 64, 64, [200, 10, 10]);
    let mut layout = Layout::studio_blank(64, 64);
    layout.entities.push(Entity::Map {
        kind: MapKind::Sem,
        image: colour.display().to_string(),
    });
    h.state_mut().set_layout(layout);
    h.run();
    wait_files(&mut h, "the map to paint");
    h.run();
    let blocker = h.state().sem_blocker().expect("painting is off");
    assert!(blocker.contains("colour"), "{blocker}");
    assert!(!h.state().sem_layer_shown());
    assert!(h
        .state()
        .notices()
        .iter()
        .any(|n| n.text.contains("cannot be painted")));
}

/// The layout's map of `kind`, decoded.
fn map_of(app: &StudioApp, want: MapKind) -> Option<image::DynamicImage> {
    app.layout().entities.iter().find_map(|e| match e {
        Entity::Map { kind, image } if *kind == want => {
            let bytes = glichen::layout::read_picture(image, None).unwrap();
            Some(glichen::layout::decode_picture(&bytes).unwrap())
        }
        _ => None,
    })
}

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// A photo-like picture of another aspect ratio than the canvas.
fn photo(dir: &Path) -> PathBuf {
    let path = dir.join("photo.png");
    image::RgbImage::from_fn(96, 72, |x, y| {
        let d = ((x as i32 - 48).pow(2) + (y as i32 - 36).pow(2)) as f32;
        let v = (255.0 * (-d / 900.0).exp()) as u8;
        image::Rgb([v, (x * 2) as u8, 255 - v / 2])
    })
    .save(&path)
    .unwrap();
    path
}

/// A depth checkpoint loaded: "Estimate depth from a photo…" runs the depth network (here the
/// tiny fixture network, named in the settings) on the photo's centred square at the canvas
/// size and keeps the 8-bit map; a normal checkpoint gets normals from the same depth.
#[test]
fn depth_and_normals_are_estimated_from_a_photo() {
    let (dir, mut h, answers) = map_studio("depth-from-photo", "gligen-tiny-depth.pth");
    let network = fixture("depth/tiny-depth-anything");
    h.state_mut().settings_mut().depth_model = network.display().to_string();
    h.state_mut().set_layout(Layout::studio_blank(64, 64));
    h.run();
    let photo = photo(&dir);
    answers.lock().unwrap().push_back(Some(photo.clone()));
    h.get_by_label("Estimate depth from a photo…").click();
    wait_files(&mut h, "the depth");
    let map = map_of(h.state(), MapKind::Depth).expect("a depth map in the layout");
    let map = match map {
        image::DynamicImage::ImageLuma8(g) => g,
        other => panic!("a grey depth map, not {:?}", other.color()),
    };
    let picture = image::open(&photo).unwrap();
    let square = glichen::maps::make::square(
        &picture,
        64,
        glichen::pipeline::resample::PilFilter::Bicubic,
    )
    .unwrap();
    let estimator =
        glichen::maps::depth::DepthEstimator::load(&network, &candle_core::Device::Cpu).unwrap();
    assert_eq!(map, estimator.estimate(&square).unwrap());
    assert!(map.pixels().any(|p| p.0[0] == 255) && map.pixels().any(|p| p.0[0] == 0));
}

/// Without the network the map maker says what it needs, and the layout is left alone.
#[test]
fn a_missing_depth_network_is_named() {
    let (dir, mut h, answers) = map_studio("depth-missing", "gligen-tiny-normal.pth");
    let missing = dir.join("no-such-network");
    h.state_mut().settings_mut().depth_model = missing.display().to_string();
    h.state_mut().set_layout(Layout::studio_blank(64, 64));
    h.run();
    answers.lock().unwrap().push_back(Some(photo(&dir)));
    h.get_by_label("Estimate normals from a photo…").click();
    wait_files(&mut h, "the normals");
    assert!(map_of(h.state(), MapKind::Normal).is_none());
    let notice = h
        .state()
        .notices()
        .iter()
        .map(|n| n.text.clone())
        .find(|t| t.contains("depth estimation needs its weights"))
        .unwrap_or_else(|| panic!("no notice naming the network: {:?}", h.state().notices()));
    assert!(notice.contains("no-such-network"), "{notice}");
}

/// A HED checkpoint loaded: "Detect HED edges in a photo…" runs the HED network (the tiny
/// fixture, named in the settings) and keeps its 8-bit soft edges as the map.
#[test]
fn hed_edges_are_detected_in_a_photo() {
    let (dir, mut h, answers) = map_studio("hed-from-photo", "gligen-tiny-hed.pth");
    let network = fixture("hed/tiny-hed.pth");
    h.state_mut().settings_mut().hed_model = network.display().to_string();
    h.state_mut().set_layout(Layout::studio_blank(64, 64));
    h.run();
    let photo = photo(&dir);
    answers.lock().unwrap().push_back(Some(photo.clone()));
    h.get_by_label("Detect HED edges in a photo…").click();
    wait_files(&mut h, "the edges");
    let map = map_of(h.state(), MapKind::Hed).expect("a HED map in the layout");
    let square = glichen::maps::make::square(
        &image::open(&photo).unwrap(),
        64,
        glichen::pipeline::resample::PilFilter::Bicubic,
    )
    .unwrap();
    let detector =
        glichen::maps::hed::HedDetector::load(&network, &candle_core::Device::Cpu).unwrap();
    assert_eq!(map.to_luma8(), detector.detect(&square).unwrap());
}

/// A painted semantic map drives generation in the studio: the result arrives, and a different
/// map gives a different picture (the map reaches the model, through the worker).
#[test]
fn a_painted_sem_map_generates_and_matters() {
    let (_dir, mut h, _answers) = map_studio("sem-generate", "gligen-tiny-sem.pth");
    let mut layout = Layout::studio_blank(64, 64);
    layout.prompt = "a field under the sky".into();
    layout.sampling.steps = Some(6);
    layout.sampling.seed = Some(3);
    h.state_mut().set_layout(layout);
    h.run();
    h.get_by_label("Paint classes (K)").click();
    h.run();
    let sky = glichen::maps::class_by_name("sky").unwrap();
    h.state_mut().set_sem_brush(sky, 20.0);
    let tf = transform(&h);
    drag(
        &mut h,
        screen_of(&tf, [0.1, 0.2]),
        screen_of(&tf, [0.9, 0.2]),
    );
    assert!(sem_map(h.state()).is_some());
    let mut results = Vec::new();
    for round in 0..2 {
        if round == 1 {
            // the whole map becomes grass
            h.get_by_label("Fill classes (G)").click();
            h.run();
            let grass = glichen::maps::class_by_name("grass").unwrap();
            h.state_mut().set_sem_brush(grass, 1.0);
            let tf = transform(&h);
            click(&mut h, screen_of(&tf, [0.5, 0.9]));
            click(&mut h, screen_of(&tf, [0.5, 0.2]));
            let map = sem_map(h.state()).unwrap();
            assert!(map.pixels().all(|p| p.0[0] == grass), "all grass");
        }
        let before = h.state().history_items().len();
        h.get_by_label("Generate").click();
        wait_for(&mut h, "the result", Duration::from_secs(180), |a| {
            a.history_items().len() > before
        });
        results.push(h.state().history_items()[0].image.clone());
    }
    assert_eq!((results[0].width(), results[0].height()), (64, 64));
    assert_ne!(results[0], results[1], "the map changed the picture");
}
