//! Hostile and broken inputs get a clear error naming what is wrong and where, never a panic, a
//! hang or unbounded memory (issue 14's findings, each with the input that found it).

mod common;

use glichen::layout::{Layout, MAX_LAYOUT_VALUES};

#[test]
fn a_layout_of_millions_of_entities_is_refused_before_it_is_parsed() {
    let entity = r#"{"type": "text_box", "phrase": "a", "box": [0.1, 0.1, 0.2, 0.2]},"#;
    let mut json = String::from(r#"{"version": 1, "width": 512, "height": 512, "entities": ["#);
    json.push_str(&entity.repeat(200_000));
    json.push_str(r#"{"type": "text_box", "phrase": "a", "box": [0.1, 0.1, 0.2, 0.2]}]}"#);
    let err = Layout::from_json_str(&json).unwrap_err().to_string();
    assert!(
        err.contains(&format!("more than {MAX_LAYOUT_VALUES} JSON values")),
        "{err}"
    );
}

#[test]
fn a_layout_with_a_few_hundred_values_still_reads() {
    let json = r#"{"version": 1, "width": 512, "height": 512, "prompt": "a \"quoted\" [x] {y}",
        "entities": [{"type": "text_box", "phrase": "tr{ue", "box": [0.1, 0.1, 0.2, 0.2]}],
        "sampling": {"steps": 4, "seed": -1e0}}"#;
    // (the seed is invalid; what matters is that counting never trips on strings and numbers)
    let err = Layout::from_json_str(json).unwrap_err().to_string();
    assert!(err.contains("sampling.seed"), "{err}");
}

#[cfg(unix)]
#[test]
fn layout_paths_that_are_devices_fifos_or_folders_are_refused_at_once() {
    let tmp = common::TempDir::new("layout-paths");
    let fifo = tmp.join("layout.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for path in [
        fifo.as_path(),
        std::path::Path::new("/dev/zero"),
        tmp.path(),
    ] {
        if !path.exists() {
            continue;
        }
        let err = Layout::load(path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(
            err.contains("not a regular file") || err.contains("is a folder"),
            "{err}"
        );
    }
}
