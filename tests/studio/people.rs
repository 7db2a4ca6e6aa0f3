//! People (keypoints): placing, posing, moving and hiding joints, the people limit, and a keypoint
//! checkpoint generating from two posed people.

use crate::harness::*;

#[test]
fn person_tool_places_poses_moves_and_hides_joints() {
    let dir = temp_dir("people");
    let (mut h, _) = studio(&dir.join("data"), false, false);
    h.run();
    h.get_by_label("Person (P)").click();
    h.run();
    assert_eq!(h.state().tool(), Tool::Person);

    // A click places a standing 17-joint person there.
    let tf = transform(&h);
    click(&mut h, tf.screen_from_layout(pos2(0.3, 0.5)));
    assert_eq!(h.state().layout().entities.len(), 1);
    assert_eq!(h.state().selection(), Some(0));
    let placed = points_of(h.state(), 0);
    assert_eq!(placed.len(), KEYPOINTS_PER_PERSON);
    assert!(placed.iter().all(Option::is_some));
    let mean_x: f64 = placed.iter().flatten().map(|p| p[0]).sum::<f64>() / 17.0;
    assert!((mean_x - 0.3).abs() < 0.01, "placed around x {mean_x}");
    // The nose is above the ankles.
    assert!(placed[0].unwrap()[1] < placed[15].unwrap()[1]);
    h.get_by_label_contains("person 1 (17 of 17 joints)");

    // Dragging a joint moves only that joint.
    let wrist = placed[9].unwrap();
    let tf = transform(&h);
    drag(
        &mut h,
        screen_of(&tf, wrist),
        screen_of(&tf, [wrist[0] + 0.1, wrist[1] + 0.05]),
    );
    let posed = points_of(h.state(), 0);
    let moved = posed[9].unwrap();
    assert!(
        (moved[0] - wrist[0] - 0.1).abs() < 0.01 && (moved[1] - wrist[1] - 0.05).abs() < 0.01,
        "wrist {wrist:?} -> {moved:?}"
    );
    for k in (0..17).filter(|&k| k != 9) {
        assert_eq!(posed[k], placed[k], "joint {k} moved too");
    }

    // Dragging the body (on the bone between the hips) moves every joint alike.
    let (lh, rh) = (posed[11].unwrap(), posed[12].unwrap());
    let mid = [(lh[0] + rh[0]) / 2.0, (lh[1] + rh[1]) / 2.0];
    drag(
        &mut h,
        screen_of(&tf, mid),
        screen_of(&tf, [mid[0] + 0.2, mid[1] - 0.1]),
    );
    let shifted = points_of(h.state(), 0);
    for k in 0..17 {
        let (a, b) = (posed[k].unwrap(), shifted[k].unwrap());
        assert!(
            (b[0] - a[0] - 0.2).abs() < 0.01 && (b[1] - a[1] + 0.1).abs() < 0.01,
            "joint {k}: {a:?} -> {b:?}"
        );
    }

    // Hiding a joint in the inspector writes null; showing it puts it back near its place.
    h.get_by_label("left wrist").click();
    h.run();
    assert_eq!(points_of(h.state(), 0)[9], None);
    let json = h.state().layout().to_json_pretty().unwrap();
    assert!(json.contains("null"), "{json}");
    h.get_by_label_contains("(16 of 17 joints)");
    h.get_by_label("left wrist").click();
    h.run();
    let back = points_of(h.state(), 0)[9].expect("shown again");
    let was = shifted[9].unwrap();
    assert!((back[0] - was[0]).abs() < 0.1 && (back[1] - was[1]).abs() < 0.1);

    // A right-click on a joint hides it too.
    let nose = points_of(h.state(), 0)[0].unwrap();
    right_click(&mut h, screen_of(&tf, nose));
    assert_eq!(points_of(h.state(), 0)[0], None);

    // Each edit is one undo step: nose, wrist shown, wrist hidden, body move, joint move, place.
    for _ in 0..3 {
        h.state_mut().undo();
    }
    assert_eq!(points_of(h.state(), 0), shifted);
    h.state_mut().undo();
    assert_eq!(points_of(h.state(), 0), posed);
    h.state_mut().undo();
    h.state_mut().undo();
    assert!(h.state().layout().entities.is_empty());
}

#[test]
fn a_ninth_person_is_refused_with_a_notice() {
    let dir = temp_dir("people-limit");
    let (mut h, _) = studio(&dir.join("data"), false, false);
    let mut layout = Layout::default();
    for k in 0..8 {
        let mut points = vec![None; KEYPOINTS_PER_PERSON];
        points[0] = Some([0.05 + 0.02 * k as f64, 0.05]);
        layout.entities.push(Entity::Keypoints { points });
    }
    h.state_mut().set_layout(layout);
    h.run();
    h.key_press(egui::Key::P);
    h.run();
    assert_eq!(h.state().tool(), Tool::Person);
    h.get_by_label("8 of 8 people");
    let tf = transform(&h);
    click(&mut h, tf.screen_from_layout(pos2(0.7, 0.7)));
    assert_eq!(h.state().layout().people_count(), 8);
    h.get_by_label_contains("No person added: the model takes at most 8 people");
}

#[test]
fn keypoint_checkpoint_poses_two_people_and_generates() {
    let dir = temp_dir("keypoints");
    let model = format!("{ROOT}/tests/fixtures/original/gligen-tiny-keypoint.pth");
    let (mut h, _) = studio_with(&dir.join("data"), Some(model), false);
    wait_model(&mut h);
    let mut layout = fixture_layout("a_one_box");
    layout.prompt = "two dancers on a stage".into();
    layout.entities.clear();
    h.state_mut().set_layout(layout);
    h.run();
    // A keypoint model takes people, not boxes.
    assert!(is_disabled(&h, "Draw box (B)"));
    assert!(!is_disabled(&h, "Person (P)"));
    h.get_by_label("Person (P)").click();
    h.run();
    let tf = transform(&h);
    click(&mut h, tf.screen_from_layout(pos2(0.3, 0.5)));
    click(&mut h, tf.screen_from_layout(pos2(0.72, 0.5)));
    assert_eq!(h.state().layout().people_count(), 2);
    // Raise the second person's right wrist.
    let wrist = points_of(h.state(), 1)[10].unwrap();
    drag(
        &mut h,
        screen_of(&tf, wrist),
        screen_of(&tf, [wrist[0], wrist[1] - 0.3]),
    );
    assert!(points_of(h.state(), 1)[10].unwrap()[1] < wrist[1] - 0.25);
    assert_eq!(h.state().generate_blocker(), None);
    h.get_by_label("Generate").click();
    wait_for(&mut h, "the result", Duration::from_secs(120), |a| {
        !a.history_items().is_empty()
    });
    let request = h.state().last_request().unwrap();
    assert_eq!(request.layout.people_count(), 2);
    assert_eq!(h.state().history_items()[0].image.width(), 32);
}
