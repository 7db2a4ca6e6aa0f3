//! Pictures: image boxes from the dialog and from drops, the one style image, and the picture to
//! inpaint under the boxes.

use crate::harness::*;

#[test]
fn picking_and_dropping_pictures_makes_image_boxes() {
    let dir = temp_dir("image-box");
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.run();
    let wide = write_picture(&dir, "wide.png", 64, 32, [200, 20, 20]);

    // The button asks for a picture and adds a box with its aspect ratio in the middle.
    answers.lock().unwrap().push_back(Some(wide.clone()));
    h.get_by_label("Add image box…").click();
    wait_files(&mut h, "the picked picture");
    let layout = h.state().layout().clone();
    assert_eq!(layout.entities.len(), 1);
    let Entity::ImageBox {
        image,
        bbox,
        phrase,
    } = &layout.entities[0]
    else {
        panic!("not an image box: {:?}", layout.entities[0]);
    };
    assert_eq!(Path::new(image), wide.as_path());
    assert_eq!(phrase, &None);
    let (bw, bh) = ((bbox[2] - bbox[0]) * 512.0, (bbox[3] - bbox[1]) * 512.0);
    assert!((bw / bh - 2.0).abs() < 1e-6, "{bw} × {bh}");
    assert!(((bbox[0] + bbox[2]) / 2.0 - 0.5).abs() < 1e-9);
    wait_pictures(&mut h);
    assert!(h.state().layout().entities[0].image().is_some());

    // The optional phrase.
    h.get_by_label("Phrase (optional)").focus();
    h.run();
    h.get_by_label("Phrase (optional)").type_text("a red car");
    h.run();
    assert_eq!(h.state().layout().entities[0].phrase(), Some("a red car"));
    h.key_press(egui::Key::Escape);
    h.run();

    // Dropped on the canvas: a new box where it was dropped.
    let tall = write_picture(&dir, "tall.png", 20, 40, [20, 200, 20]);
    let tf = transform(&h);
    h.hover_at(tf.screen_from_layout(pos2(0.8, 0.25)));
    h.run();
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(tall.clone())));
    wait_for(
        &mut h,
        "the dropped picture",
        Duration::from_secs(20),
        |a| a.layout().entities.len() == 2,
    );
    let dropped = h.state().layout().entities[1].clone();
    assert_eq!(dropped.image(), Some(tall.to_str().unwrap()));
    let b = dropped.bbox().unwrap();
    assert!(((b[0] + b[2]) / 2.0 - 0.8).abs() < 0.01 && ((b[1] + b[3]) / 2.0 - 0.25).abs() < 0.01);
    assert_eq!(h.state().selection(), Some(1));

    // Dropped on an image box: it replaces that box's picture.
    let other = write_picture(&dir, "other.jpg", 30, 30, [20, 20, 200]);
    let inside = tf.screen_from_layout(pos2(0.5, 0.5));
    h.hover_at(inside);
    h.run();
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(other.clone())));
    wait_for(
        &mut h,
        "the replaced picture",
        Duration::from_secs(20),
        |a| a.layout().entities[0].image() == Some(other.to_str().unwrap()),
    );
    assert_eq!(h.state().layout().entities.len(), 2);
    assert_eq!(h.state().layout().entities[0].phrase(), Some("a red car"));
    wait_pictures(&mut h);

    // Undo takes the replacement back; the autosave has the boxes.
    h.state_mut().undo();
    assert_eq!(
        h.state().layout().entities[0].image(),
        Some(wide.to_str().unwrap())
    );
    h.run();
    h.state().flush_autosave();
    let saved = Layout::load(dir.join("data").join("autosave.json")).unwrap();
    assert_eq!(&saved, h.state().layout());

    // With no pointer position over the canvas (some platforms report none while dragging
    // files), the selected image box takes the picture.
    let tf = transform(&h);
    click(&mut h, tf.screen_from_layout(pos2(0.8, 0.25)));
    assert_eq!(h.state().selection(), Some(1));
    h.remove_cursor();
    h.run();
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(other.clone())));
    wait_for(
        &mut h,
        "the selected box's picture",
        Duration::from_secs(20),
        |a| a.layout().entities[1].image() == Some(other.to_str().unwrap()),
    );
    assert_eq!(h.state().layout().entities.len(), 2);

    // Something that is no picture is refused with a message.
    let junk = dir.join("junk.png");
    std::fs::write(&junk, b"not a picture at all").unwrap();
    h.input_mut().dropped_files.push(Arc::new(Dropped(junk)));
    wait_files(&mut h, "the junk");
    h.get_by_label_contains("Could not use the picture");
    assert_eq!(h.state().layout().entities.len(), 2);
}

#[test]
fn style_image_slot_sets_replaces_and_clears_the_one_style_image() {
    let dir = temp_dir("style");
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.run();
    let a = write_picture(&dir, "style-a.png", 16, 16, [10, 10, 10]);
    let b = write_picture(&dir, "style-b.png", 16, 16, [250, 250, 10]);
    let styles = |app: &StudioApp| -> Vec<String> {
        app.layout()
            .entities
            .iter()
            .filter_map(|e| match e {
                Entity::StyleImage { image } => Some(image.clone()),
                _ => None,
            })
            .collect()
    };
    assert!(is_disabled(&h, "Clear style image"));
    answers.lock().unwrap().push_back(Some(a.clone()));
    h.get_by_label("Choose style image…").click();
    wait_files(&mut h, "the style image");
    assert_eq!(styles(h.state()), vec![a.display().to_string()]);
    wait_pictures(&mut h);

    answers.lock().unwrap().push_back(Some(b.clone()));
    h.get_by_label("Replace style image…").click();
    wait_files(&mut h, "the new style image");
    assert_eq!(styles(h.state()), vec![b.display().to_string()]);

    // A cancelled dialog changes nothing.
    answers.lock().unwrap().push_back(None);
    h.get_by_label("Replace style image…").click();
    wait_files(&mut h, "the cancelled dialog");
    assert_eq!(styles(h.state()), vec![b.display().to_string()]);

    h.get_by_label("Clear style image").click();
    h.run();
    assert!(styles(h.state()).is_empty());
    h.state_mut().undo();
    assert_eq!(styles(h.state()), vec![b.display().to_string()]);
}

#[test]
fn a_picture_opened_for_inpainting_is_shown_under_the_boxes() {
    let dir = temp_dir("inpaint");
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.state_mut().set_layout(fixture_layout("a_one_box"));
    h.run();
    assert_eq!(h.state().canvas_background(), CanvasBackground::Blank);
    let photo = write_picture(&dir, "photo.png", 80, 40, [120, 90, 60]);
    answers.lock().unwrap().push_back(Some(photo.clone()));
    h.get_by_label("Open picture for inpainting…").click();
    wait_files(&mut h, "the picture");
    assert_eq!(
        h.state().layout().inpaint.as_ref().map(|i| i.image.clone()),
        Some(photo.display().to_string())
    );
    wait_for(
        &mut h,
        "the picture on the canvas",
        Duration::from_secs(20),
        |a| a.canvas_background() == CanvasBackground::Inpaint,
    );
    h.get_by_label_contains("the boxes mark what is regenerated");

    // Without boxes there is nothing to regenerate: said inline.
    let mut boxless = h.state().layout().clone();
    boxless.entities.clear();
    h.state_mut().set_layout(boxless);
    h.run();
    h.get_by_label_contains("the region to repaint comes from the boxes");
    h.state_mut().undo();
    h.run();

    h.get_by_label("Clear inpainting").click();
    h.run();
    assert!(h.state().layout().inpaint.is_none());
    h.run();
    assert_eq!(h.state().canvas_background(), CanvasBackground::Blank);
    h.state_mut().undo();
    assert!(h.state().layout().inpaint.is_some());
}

/// A canny checkpoint loaded: the map slot sets a map picture, makes Canny edges from a photo
/// (computed in the app, as OpenCV would) and keeps them in the layout; the canvas draws the map
/// under the boxes.
#[test]
fn map_slot_sets_a_map_and_makes_canny_edges_from_a_photo() {
    let dir = temp_dir("map-slot");
    let canny = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/original/gligen-tiny-canny.pth")
        .display()
        .to_string();
    let (mut h, answers) = studio_with(&dir.join("data"), Some(canny), false);
    wait_model(&mut h);
    let mut layout = Layout::studio_blank(64, 64);
    layout.prompt = "a robot".into();
    h.state_mut().set_layout(layout);
    h.run();
    let maps = |app: &StudioApp| -> Vec<(glichen::layout::MapKind, String)> {
        app.layout()
            .entities
            .iter()
            .filter_map(|e| match e {
                Entity::Map { kind, image } => Some((*kind, image.clone())),
                _ => None,
            })
            .collect()
    };
    // a map picture, chosen
    let map = write_picture(&dir, "edges.png", 40, 32, [255, 255, 255]);
    answers.lock().unwrap().push_back(Some(map.clone()));
    h.get_by_label("Choose Canny edge map…").click();
    wait_files(&mut h, "the map");
    assert_eq!(
        maps(h.state()),
        vec![(glichen::layout::MapKind::Canny, map.display().to_string())]
    );
    wait_pictures(&mut h);

    // edges from a photo: a bright square on black has edges along its border only
    let mut photo = image::RgbImage::new(96, 64);
    for (x, y, p) in photo.enumerate_pixels_mut() {
        if (32..64).contains(&x) && (16..48).contains(&y) {
            p.0 = [230, 200, 180];
        }
    }
    let photo_path = dir.join("photo.png");
    photo.save(&photo_path).unwrap();
    answers.lock().unwrap().push_back(Some(photo_path));
    h.get_by_label("Make edges from a photo…").click();
    wait_files(&mut h, "the photo");
    h.run();
    h.get_by_label("Use these edges").click();
    h.run();
    let (kind, image) = maps(h.state()).pop().unwrap();
    assert_eq!(kind, glichen::layout::MapKind::Canny);
    let edges =
        glichen::layout::decode_picture(&glichen::layout::read_picture(&image, None).unwrap())
            .unwrap()
            .to_rgb8();
    // the photo is cropped to its centred 64×64 square, resized to the canvas, then edged
    assert_eq!(edges.dimensions(), (64, 64));
    assert!(edges.pixels().any(|p| p.0 == [255, 255, 255]), "some edges");
    assert_eq!(
        edges.get_pixel(2, 2).0,
        [0, 0, 0],
        "none in the flat corner"
    );
    assert_eq!(maps(h.state()).len(), 1, "one map, replaced");
    // undo brings the chosen picture back
    h.state_mut().undo();
    assert_eq!(maps(h.state())[0].1, map.display().to_string());
}

/// A normal-map checkpoint loaded: a depth picture becomes a normal map in the layout (a flat
/// depth faces the viewer: (127, 127, 255), as GLIGEN's training maps encode it).
#[test]
fn map_slot_makes_normals_from_a_depth_picture() {
    let dir = temp_dir("map-normals");
    let normal = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/original/gligen-tiny-normal.pth")
        .display()
        .to_string();
    let (mut h, answers) = studio_with(&dir.join("data"), Some(normal), false);
    wait_model(&mut h);
    h.state_mut().set_layout(Layout::studio_blank(64, 64));
    h.run();
    let depth = dir.join("depth.png");
    image::RgbImage::from_pixel(80, 64, image::Rgb([90, 90, 90]))
        .save(&depth)
        .unwrap();
    answers.lock().unwrap().push_back(Some(depth));
    h.get_by_label("Make normals from a depth map…").click();
    wait_files(&mut h, "the normals");
    let image = h
        .state()
        .layout()
        .entities
        .iter()
        .find_map(|e| match e {
            Entity::Map { kind, image } => {
                assert_eq!(*kind, glichen::layout::MapKind::Normal);
                Some(image.clone())
            }
            _ => None,
        })
        .expect("a normal map in the layout");
    let map =
        glichen::layout::decode_picture(&glichen::layout::read_picture(&image, None).unwrap())
            .unwrap()
            .to_rgb8();
    assert_eq!(map.dimensions(), (64, 64));
    assert_eq!(map.get_pixel(30, 30).0, [127, 127, 255]);
}
