//! What the loaded model allows: tools off for a text-only model, and generation end to end with
//! the tiny text-image, inpainting and original text-image inpainting checkpoints.

use crate::harness::*;

#[test]
fn a_text_only_model_turns_off_the_tools_it_cannot_use() {
    let dir = temp_dir("gating");
    let (mut h, _) = studio(&dir.join("data"), false, false);
    h.run();
    // Before a model is loaded every tool is on.
    for label in [
        "Draw box (B)",
        "Person (P)",
        "Add image box…",
        "Choose style image…",
        "Open picture for inpainting…",
    ] {
        assert!(!is_disabled(&h, label), "{label} is off without a model");
    }
    h.state_mut().load_model(LoadRequest::cpu(tiny_model()));
    wait_model(&mut h);
    h.run();
    assert!(!is_disabled(&h, "Draw box (B)"));
    for label in [
        "Person (P)",
        "Add image box…",
        "Choose style image…",
        "Open picture for inpainting…",
    ] {
        assert!(
            is_disabled(&h, label),
            "{label} is on with a text-box model"
        );
    }
    // The keyboard cannot pick the person tool either.
    h.key_press(egui::Key::P);
    h.run();
    assert_ne!(h.state().tool(), Tool::Person);
    h.get_by_label_contains("That tool is off: this model does not take people");

    // An image box from a file is kept, marked unusable with the reason, and blocks Generate.
    let pic = write_picture(&dir, "ref.png", 16, 16, [1, 2, 3]);
    let mut layout = fixture_layout("a_one_box");
    layout.entities.push(Entity::ImageBox {
        image: pic.display().to_string(),
        bbox: [0.5, 0.5, 0.9, 0.9],
        phrase: None,
    });
    h.state_mut().set_layout(layout.clone());
    h.run();
    h.get_by_label_contains("(!) not used by this model: this model does not take image boxes");
    assert_eq!(h.state().layout(), &layout);
    assert!(h
        .state()
        .generate_blocker()
        .is_some_and(|b| b.contains("problem")));
    assert!(is_disabled(&h, "Generate"));
}

#[test]
fn text_image_model_generates_with_an_image_box_and_a_style_image() {
    let dir = temp_dir("text-image");
    let model = format!("{ROOT}/tests/fixtures/models/tiny-text-image");
    let (mut h, answers) = studio_with(&dir.join("data"), Some(model), false);
    wait_model(&mut h);
    let case = PathBuf::from(ROOT).join("tests/fixtures/cases/ti_image_and_text");
    let mut layout = fixture_layout("ti_image_and_text");
    layout.entities.clear();
    layout.entities.push(Entity::TextBox {
        phrase: "a dog".into(),
        bbox: [0.2, 0.5, 0.6, 0.98],
    });
    h.state_mut().set_layout(layout);
    h.run();
    assert!(!is_disabled(&h, "Add image box…"));
    assert!(is_disabled(&h, "Person (P)"));

    answers
        .lock()
        .unwrap()
        .push_back(Some(case.join("case_a.png")));
    h.get_by_label("Add image box…").click();
    wait_files(&mut h, "the image box");
    answers
        .lock()
        .unwrap()
        .push_back(Some(case.join("case_c.png")));
    h.get_by_label("Choose style image…").click();
    wait_files(&mut h, "the style image");
    assert_eq!(h.state().generate_blocker(), None);

    h.get_by_label("Generate").click();
    wait_for(&mut h, "the result", Duration::from_secs(120), |a| {
        !a.history_items().is_empty()
    });
    let request = h.state().last_request().unwrap();
    let kinds: Vec<&str> = request
        .layout
        .entities
        .iter()
        .map(|e| e.kind().as_str())
        .collect();
    assert_eq!(kinds, ["text_box", "image_box", "style_image"]);
    assert_eq!(
        request.layout.entities[1].image(),
        Some(case.join("case_a.png").to_str().unwrap())
    );
    let item = &h.state().history_items()[0];
    assert_eq!((item.image.width(), item.image.height()), (32, 32));
    assert!(h
        .state()
        .notices()
        .iter()
        .all(|n| !n.text.contains("failed")));
}

#[test]
fn inpainting_model_generates_from_the_opened_picture() {
    let dir = temp_dir("inpaint-gen");
    let model = format!("{ROOT}/tests/fixtures/models/tiny-inpaint");
    let (mut h, answers) = studio_with(&dir.join("data"), Some(model), false);
    wait_model(&mut h);
    let mut layout = fixture_layout("inpaint_one_box");
    layout.inpaint = None;
    h.state_mut().set_layout(layout);
    h.run();
    assert!(h
        .state()
        .generate_blocker()
        .is_some_and(|b| b.contains("open a picture to inpaint")));
    assert!(is_disabled(&h, "Add image box…"));
    answers.lock().unwrap().push_back(Some(
        PathBuf::from(ROOT).join("tests/fixtures/cases/inpaint_one_box/inpaint.png"),
    ));
    h.get_by_label("Open picture for inpainting…").click();
    wait_files(&mut h, "the picture");
    wait_for(
        &mut h,
        "the picture on the canvas",
        Duration::from_secs(20),
        |a| a.canvas_background() == CanvasBackground::Inpaint,
    );
    assert_eq!(h.state().generate_blocker(), None);
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the result", Duration::from_secs(120), |a| {
        !a.history_items().is_empty()
    });
    assert!(h.state().last_request().unwrap().layout.inpaint.is_some());
    h.run();
    assert_eq!(h.state().canvas_background(), CanvasBackground::Result);
}

/// An original text-image inpainting checkpoint (its CLIP image tower in `image_encoder/` beside
/// it): image boxes and inpainting are on, people off; a picture opened for inpainting and a
/// reference picture in a box reach the generation.
#[test]
fn original_text_image_inpainting_checkpoint_in_the_studio() {
    let dir = temp_dir("original-ti-inpaint");
    let model = format!("{ROOT}/tests/fixtures/original/gligen-tiny-inpaint-text-image.pth");
    let (mut h, answers) = studio_with(&dir.join("data"), Some(model), false);
    wait_model(&mut h);
    let case = PathBuf::from(ROOT).join("tests/fixtures/original/ip_orig_image_box");
    let mut layout = fixture_layout("a_one_box");
    layout.prompt = "a clock and a lamp on a table".into();
    layout.entities.clear();
    layout.entities.push(Entity::TextBox {
        phrase: "a lamp".into(),
        bbox: [0.55, 0.1, 0.9, 0.7],
    });
    h.state_mut().set_layout(layout);
    h.run();
    assert!(!is_disabled(&h, "Add image box…"));
    assert!(is_disabled(&h, "Person (P)"));
    assert!(h
        .state()
        .generate_blocker()
        .is_some_and(|b| b.contains("open a picture to inpaint")));
    answers
        .lock()
        .unwrap()
        .push_back(Some(case.join("inpaint_a.png")));
    h.get_by_label("Open picture for inpainting…").click();
    wait_files(&mut h, "the picture");
    answers
        .lock()
        .unwrap()
        .push_back(Some(case.join("case_alt.png")));
    h.get_by_label("Add image box…").click();
    wait_files(&mut h, "the image box");
    assert_eq!(h.state().generate_blocker(), None);
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the result", Duration::from_secs(120), |a| {
        !a.history_items().is_empty()
    });
    let request = h.state().last_request().unwrap();
    assert!(request.layout.inpaint.is_some());
    let kinds: Vec<&str> = request
        .layout
        .entities
        .iter()
        .map(|e| e.kind().as_str())
        .collect();
    assert_eq!(kinds, ["text_box", "image_box"]);
    assert_eq!(h.state().history_items()[0].image.width(), 32);
    assert!(h
        .state()
        .notices()
        .iter()
        .all(|n| !n.text.contains("failed")));
}

/// The "Image tower" setting points an original text-image checkpoint that has no `image_encoder/`
/// beside it at a CLIP folder elsewhere; it is remembered in the settings.
#[test]
fn the_image_tower_setting_reaches_an_original_text_image_checkpoint() {
    let dir = temp_dir("image-tower");
    let lonely = dir.join("checkpoints");
    std::fs::create_dir_all(&lonely).unwrap();
    let original = PathBuf::from(ROOT).join("tests/fixtures/original");
    std::fs::copy(
        original.join("gligen-tiny-text-image.pth"),
        lonely.join("ck.pth"),
    )
    .unwrap();
    let tower = original.join("image_encoder");
    let (mut h, answers) = studio_with(&dir.join("data"), None, false);
    h.run();
    h.get_by_label("Image tower:").focus();
    h.run();
    h.get_by_label("Image tower:")
        .type_text(tower.to_str().unwrap());
    h.run();
    assert_eq!(h.state().settings().image_encoder, tower.to_str().unwrap());
    answers
        .lock()
        .unwrap()
        .push_back(Some(lonely.join("ck.pth")));
    h.get_by_label("Choose checkpoint file…").click();
    wait_for(&mut h, "the model", Duration::from_secs(120), |a| {
        matches!(
            a.model_state(),
            ModelState::Ready(_) | ModelState::Failed { .. }
        )
    });
    assert!(
        matches!(h.state().model_state(), ModelState::Ready(_)),
        "model: {:?}",
        h.state().model_state()
    );
    assert!(!is_disabled(&h, "Add image box…"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// A weights file deleted after the model was loaded: Generate fails naming it, the model panel
/// stops saying the model is ready (the worker unloaded it), and the layout is kept.
#[test]
fn a_model_file_deleted_while_loaded_unloads_it_in_the_studio() {
    let dir = temp_dir("unloaded");
    let model = dir.join("tiny-a");
    copy_dir(Path::new(&tiny_model()), &model);
    let (mut h, _) = studio_with(&dir.join("data"), Some(model.display().to_string()), false);
    wait_model(&mut h);
    let layout = fixture_layout("a_three_boxes");
    h.state_mut().set_layout(layout.clone());
    h.run();
    std::fs::remove_file(model.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the failure", Duration::from_secs(30), |a| {
        a.run_state().is_none() && !matches!(a.model_state(), ModelState::Ready(_))
    });
    match h.state().model_state() {
        ModelState::Failed { message, .. } => {
            assert!(
                message.contains("was deleted after the model was loaded"),
                "{message}"
            );
        }
        other => panic!("expected the model unloaded, got {other:?}"),
    }
    assert!(h
        .state()
        .notices()
        .iter()
        .any(|n| n.text.contains("was unloaded") && n.text.contains("diffusion_pytorch_model")));
    assert_eq!(h.state().layout(), &layout);
}

/// The "Precision" setting picks the dtype models load in: bf16 on this CPU is, with AMX, the f32
/// model with bf16 products (the model panel says so) and otherwise candle's bf16; the choice is
/// remembered in the settings.
#[test]
fn the_precision_setting_loads_the_model_in_bf16() {
    let dir = temp_dir("precision");
    let (mut h, answers) = studio_with(&dir.join("data"), None, false);
    h.run();
    h.get_by_label("Precision:").click();
    h.run();
    h.get_by_label("bf16: faster on AMX CPUs").click();
    h.run();
    assert_eq!(h.state().settings().dtype, "bf16");
    answers
        .lock()
        .unwrap()
        .push_back(Some(PathBuf::from(tiny_model())));
    h.get_by_label("Choose model folder…").click();
    wait_for(&mut h, "the model", Duration::from_secs(120), |a| {
        matches!(
            a.model_state(),
            ModelState::Ready(_) | ModelState::Failed { .. }
        )
    });
    let ModelState::Ready(info) = h.state().model_state() else {
        panic!("model: {:?}", h.state().model_state())
    };
    let device = info.device.to_lowercase();
    if glichen::model::linear::bf16_matmuls_supported() {
        assert!(device.contains("bf16 products on amx"), "{device}");
    } else {
        assert!(device.contains("bf16"), "{device}");
    }
}
