//! Files: save and reopen, refused files, dropped Glichen PNGs, autosave across a restart, broken
//! settings and autosave kept aside, imports,
//! and pictures travelling with the layout (relative paths or embedded).

use crate::harness::*;

#[test]
fn save_and_reopen_a_layout() {
    let dir = temp_dir("files");
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.run();
    let layout = fixture_layout("a_three_boxes");
    h.state_mut().set_layout(layout.clone());
    h.run();

    let path = dir.join("saved.json");
    answers.lock().unwrap().push_back(Some(path.clone()));
    h.get_by_label("Save as…").click();
    wait_for(&mut h, "the save", Duration::from_secs(10), |a| {
        !a.is_busy_with_files()
    });
    assert_eq!(Layout::load(&path).unwrap(), layout);
    assert_eq!(h.state().document_path(), Some(path.as_path()));
    assert_eq!(h.state().settings().recent.first(), Some(&path));

    h.get_by_label("New").click();
    h.run();
    assert!(h.state().layout().entities.is_empty());

    answers.lock().unwrap().push_back(Some(path.clone()));
    h.get_by_label("Open…").click();
    wait_for(&mut h, "the open", Duration::from_secs(10), |a| {
        !a.is_busy_with_files()
    });
    assert_eq!(h.state().layout(), &layout);

    // A cancelled dialog changes nothing.
    answers.lock().unwrap().push_back(None);
    h.get_by_label("Open…").click();
    wait_for(
        &mut h,
        "the cancelled dialog",
        Duration::from_secs(10),
        |a| !a.is_busy_with_files(),
    );
    assert_eq!(h.state().layout(), &layout);
}

#[test]
fn a_bad_file_is_refused_with_a_visible_message() {
    let dir = temp_dir("bad");
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.run();
    let before = h.state().layout().clone();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "this is not a layout").unwrap();
    answers.lock().unwrap().push_back(Some(bad.clone()));
    h.get_by_label("Open…").click();
    wait_for(&mut h, "the open", Duration::from_secs(10), |a| {
        !a.is_busy_with_files()
    });
    h.run();
    h.get_by_label_contains("Could not open");
    h.get_by_label_contains("not valid JSON");
    assert_eq!(h.state().layout(), &before);

    // A newer version is refused too, with its reason.
    let newer = dir.join("newer.json");
    std::fs::write(
        &newer,
        r#"{"version": 99, "width": 512, "height": 512, "prompt": "", "entities": []}"#,
    )
    .unwrap();
    answers.lock().unwrap().push_back(Some(newer));
    h.get_by_label("Open…").click();
    wait_for(&mut h, "the open", Duration::from_secs(10), |a| {
        !a.is_busy_with_files()
    });
    h.run();
    h.get_by_label_contains("newer than this Glichen supports");
    assert_eq!(h.state().layout(), &before);
}

#[test]
fn dropping_a_glichen_png_opens_its_layout_and_image() {
    let dir = temp_dir("drop");
    let (mut h, _) = studio(&dir.join("data"), false, false);
    h.run();
    let layout = fixture_layout("b_three_boxes");
    let image = image::RgbImage::from_pixel(32, 32, image::Rgb([200, 30, 30]));
    let bytes =
        glichen::layout::png::encode_png_with_layout(&image, &layout.to_json_pretty().unwrap())
            .unwrap();
    let png = dir.join("result.png");
    std::fs::write(&png, bytes).unwrap();
    h.input_mut().dropped_files.push(Arc::new(Dropped(png)));
    wait_for(&mut h, "the drop", Duration::from_secs(10), |a| {
        a.layout() == &layout
    });
    h.run();
    assert!(matches!(
        h.state().canvas_image(),
        Some(CanvasImage::Result { .. })
    ));
    // The picture can be exported again, with its layout.
    assert!(h.query_by_label("Export PNG…").is_some());
}

#[test]
fn autosave_restores_the_work_after_a_restart() {
    let dir = temp_dir("autosave");
    let data = dir.join("data");
    {
        let (mut h, _) = studio(&data, false, false);
        h.run();
        let tf = transform(&h);
        drag(
            &mut h,
            tf.screen_from_layout(pos2(0.1, 0.1)),
            tf.screen_from_layout(pos2(0.6, 0.7)),
        );
        h.get_by_label("Phrase").type_text("a lighthouse");
        h.run();
        h.state().flush_autosave();
        // Simulated crash: no on_exit, the harness is just dropped.
    }
    assert!(data.join("autosave.json").is_file());
    let (mut h, _) = studio(&data, false, false);
    h.run();
    assert_eq!(h.state().layout().entities.len(), 1);
    assert_eq!(
        h.state().layout().entities[0].phrase(),
        Some("a lighthouse")
    );
}

#[test]
fn broken_settings_and_autosave_are_kept_aside_with_a_notice() {
    let dir = temp_dir("broken-start");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("settings.json"), b"{\"recent\": [").unwrap();
    std::fs::write(data.join("autosave.json"), b"{\"version\": 1, \"entit").unwrap();
    let (mut h, _) = studio(&data, false, false);
    h.run();
    h.get_by_label_contains("The settings could not be read");
    h.get_by_label_contains("The autosaved layout could not be read");
    assert!(h.state().layout().entities.is_empty());
    let kept: Vec<(String, Vec<u8>)> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".broken-"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    for (name, bytes) in &kept {
        let original: &[u8] = if name.starts_with("settings.json") {
            b"{\"recent\": ["
        } else {
            assert!(name.starts_with("autosave.json"), "{name}");
            b"{\"version\": 1, \"entit"
        };
        assert_eq!(bytes.as_slice(), original, "{name}");
    }
}

#[test]
fn imports_diffusers_arguments_through_open() {
    let dir = temp_dir("import");
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.run();
    let args = dir.join("call.json");
    std::fs::write(
        &args,
        r#"{"prompt": "a dog on a sofa", "gligen_phrases": ["a dog", "a sofa"], "gligen_boxes": [[0.1, 0.4, 0.5, 0.9], [0.0, 0.5, 1.0, 1.0]], "height": 512, "width": 768, "gligen_scheduled_sampling_beta": 0.4}"#,
    )
    .unwrap();
    answers.lock().unwrap().push_back(Some(args));
    h.get_by_label("Open…").click();
    wait_for(&mut h, "the import", Duration::from_secs(10), |a| {
        !a.is_busy_with_files()
    });
    let layout = h.state().layout();
    assert_eq!((layout.width, layout.height), (768, 512));
    assert_eq!(layout.entities.len(), 2);
    assert_eq!(layout.sampling.alpha0, Some(0.4));
    // An import has no file to save back to.
    assert_eq!(h.state().document_path(), None);
}

fn saved_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn saved_picture_paths_are_relative_to_the_layout_and_travel_with_its_folder() {
    let dir = temp_dir("relative");
    let project = dir.join("project");
    let shared = dir.join("shared");
    std::fs::create_dir_all(project.join("pictures")).unwrap();
    std::fs::create_dir_all(&shared).unwrap();
    let pic = write_picture(&project.join("pictures"), "red.png", 24, 16, [200, 20, 20]);
    let style = write_picture(&shared, "style.png", 16, 16, [20, 20, 200]);
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.run();
    answers.lock().unwrap().push_back(Some(pic.clone()));
    h.get_by_label("Add image box…").click();
    wait_files(&mut h, "the picture");
    answers.lock().unwrap().push_back(Some(style.clone()));
    h.get_by_label("Choose style image…").click();
    wait_files(&mut h, "the style image");
    assert_eq!(h.state().layout().entities.len(), 2);

    let path = project.join("layout.json");
    answers.lock().unwrap().push_back(Some(path.clone()));
    h.get_by_label("Save as…").click();
    wait_files(&mut h, "the save");
    let json = saved_json(&path);
    assert_eq!(json["entities"][0]["image"], "pictures/red.png");
    assert_eq!(json["entities"][1]["image"], "../shared/style.png");
    // The document in memory keeps working (absolute paths), and is not dirty.
    assert_eq!(h.state().layout().entities[0].image(), pic.to_str());
    h.get_by_label(&path.display().to_string()); // without the "• " of unsaved changes
    drop(h);

    // Both folders move elsewhere: the layout opens there with its pictures.
    let moved = temp_dir("relative-moved");
    std::fs::rename(&project, moved.join("project")).unwrap();
    std::fs::rename(&shared, moved.join("shared")).unwrap();
    let (mut h, answers) = studio(&dir.join("data2"), false, false);
    h.run();
    answers
        .lock()
        .unwrap()
        .push_back(Some(moved.join("project/layout.json")));
    h.get_by_label("Open…").click();
    wait_files(&mut h, "the open");
    let moved_pic = moved.join("project/pictures/red.png");
    let moved_style = moved.join("shared/style.png");
    let layout = h.state().layout().clone();
    assert_eq!(
        layout.entities[0].image().map(PathBuf::from),
        Some(moved_pic.clone())
    );
    assert_eq!(
        layout.entities[1].image().map(PathBuf::from),
        Some(moved_style.clone())
    );
    wait_pictures(&mut h);
    assert!(h.state().picture_ready(layout.entities[0].image().unwrap()));
    assert!(h.state().picture_ready(layout.entities[1].image().unwrap()));
    assert!(h.query_by_label_contains("cannot be shown").is_none());

    // Saved again into another folder: relative to that one.
    std::fs::create_dir_all(moved.join("copies")).unwrap();
    let copy = moved.join("copies/copy.json");
    answers.lock().unwrap().push_back(Some(copy.clone()));
    h.get_by_label("Save as…").click();
    wait_files(&mut h, "the second save");
    let json = saved_json(&copy);
    assert_eq!(json["entities"][0]["image"], "../project/pictures/red.png");
    assert_eq!(json["entities"][1]["image"], "../shared/style.png");
    assert_eq!(h.state().document_path(), Some(copy.as_path()));
    assert_eq!(h.state().layout(), &layout);
}

#[test]
fn saving_with_pictures_embedded_writes_one_file_that_opens_without_them() {
    let dir = temp_dir("embed");
    let pic = write_picture(&dir, "pic.png", 20, 12, [10, 200, 10]);
    let (mut h, answers) = studio(&dir.join("data"), false, false);
    h.run();
    answers.lock().unwrap().push_back(Some(pic.clone()));
    h.get_by_label("Add image box…").click();
    wait_files(&mut h, "the picture");
    h.get_by_label("Embed pictures in the file").click();
    h.run();
    assert!(h.state().settings().embed_pictures);
    let path = dir.join("one.json");
    answers.lock().unwrap().push_back(Some(path.clone()));
    h.get_by_label("Save as…").click();
    wait_files(&mut h, "the save");
    let json = saved_json(&path);
    let uri = json["entities"][0]["image"].as_str().unwrap().to_string();
    assert!(uri.starts_with("data:image/png;base64,"), "{uri:.40}");
    let (_, bytes) = glichen::layout::decode_data_uri(&uri).unwrap();
    assert_eq!(
        bytes,
        std::fs::read(&pic).unwrap(),
        "embedded byte for byte"
    );
    assert_eq!(h.state().layout().entities[0].image(), pic.to_str());
    drop(h);

    // Without the picture file, the layout still opens with its picture.
    std::fs::remove_file(&pic).unwrap();
    let (mut h, answers) = studio(&dir.join("data2"), false, false);
    h.run();
    answers.lock().unwrap().push_back(Some(path.clone()));
    h.get_by_label("Open…").click();
    wait_files(&mut h, "the open");
    assert_eq!(h.state().layout().entities[0].image(), Some(uri.as_str()));
    wait_pictures(&mut h);
    assert!(h.state().picture_ready(&uri));
    assert!(
        h.state().settings().embed_pictures,
        "a file with embedded pictures is saved embedded again"
    );

    // A picture that cannot be read is named in a notice and kept as a path; the save happens.
    let mut layout = h.state().layout().clone();
    layout.entities.push(Entity::ImageBox {
        image: dir.join("missing.png").to_string_lossy().into_owned(),
        bbox: [0.5, 0.5, 0.9, 0.9],
        phrase: Some("a corgi".into()),
    });
    h.state_mut().set_layout(layout.clone());
    h.run();
    h.get_by_label("Save").click();
    wait_files(&mut h, "the save with a missing picture");
    h.get_by_label_contains("could not be embedded");
    h.get_by_label_contains("image box 2 (\u{201c}a corgi\u{201d})");
    let json = saved_json(&path);
    assert_eq!(json["entities"][0]["image"].as_str(), Some(uri.as_str()));
    assert_eq!(json["entities"][1]["image"], "missing.png");
    assert_eq!(json["entities"][1]["phrase"], "a corgi");
    assert_eq!(
        h.state().layout(),
        &layout,
        "nothing in the document changed"
    );
}

/// A data folder that cannot be made or written: the studio starts, says so once, keeps working
/// (edits, undo) without a failed write after every edit; a read-only folder's autosave is still
/// restored (checked when not running as root, which ignores permission bits).
#[test]
fn an_unwritable_data_folder_lets_the_studio_run_with_a_notice() {
    let dir = temp_dir("unwritable-data");
    // A plain file where a parent folder should be: the data folder cannot be created.
    std::fs::write(dir.join("not-a-folder"), b"x").unwrap();
    let data = dir.join("not-a-folder").join("glichen");
    let (mut h, _) = studio(&data, false, false);
    h.run();
    h.get_by_label_contains("cannot be written");
    let tf = transform(&h);
    for k in 0..3 {
        let y = 0.1 + 0.25 * k as f32;
        drag(
            &mut h,
            tf.screen_from_layout(pos2(0.1, y)),
            tf.screen_from_layout(pos2(0.5, y + 0.2)),
        );
    }
    h.state().flush_autosave();
    h.run();
    assert_eq!(h.state().layout().entities.len(), 3);
    let notices: Vec<&str> = h
        .state()
        .notices()
        .iter()
        .map(|n| n.text.as_str())
        .collect();
    assert_eq!(
        notices.len(),
        1,
        "one notice, no failed writes: {notices:?}"
    );
    h.state_mut().undo();
    assert_eq!(h.state().layout().entities.len(), 2);

    #[cfg(unix)]
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        let data = dir.join("read-only");
        std::fs::create_dir_all(&data).unwrap();
        let mut layout = Layout::studio_blank(64, 64);
        layout.prompt = "kept".into();
        std::fs::write(data.join("autosave.json"), layout.to_json_pretty().unwrap()).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).unwrap();
        let (mut h, _) = studio(&data, false, false);
        h.run();
        h.get_by_label_contains("cannot be written");
        assert_eq!(h.state().layout().prompt, "kept");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
