//! Faults: a save killed at any moment leaves the old document or the new one, never a torn file.

use glichen::layout::{Entity, Layout};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Set in the child process: the file the save loop writes.
const SAVE_LOOP_ENV: &str = "GLICHEN_FAULTS_SAVE_LOOP";

/// A layout big enough (about 100 kB) that a kill often lands in the middle of its write.
fn document(phrase: &str) -> Layout {
    let mut layout = Layout::from_json_str(r#"{"version": 1, "width": 512, "height": 512}"#)
        .expect("a minimal layout");
    layout.prompt = format!("{phrase} {}", "word ".repeat(20_000));
    for i in 0..30 {
        let x = i as f64 / 40.0;
        layout.entities.push(Entity::TextBox {
            phrase: format!("{phrase} {i}"),
            bbox: [x, x, x + 0.2, x + 0.2],
        });
    }
    layout
}

/// Not a test of its own: the child's body. It saves the two documents in turn until killed.
#[test]
fn save_loop_child() {
    let Some(path) = std::env::var_os(SAVE_LOOP_ENV) else {
        return;
    };
    let (a, b) = (document("old"), document("new"));
    loop {
        a.save(&path).expect("save");
        b.save(&path).expect("save");
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glichen-faults-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn check_whole(path: &Path, round: usize, old: &Layout, new: &Layout) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("round {round}: the file is gone or unreadable: {e}"));
    let read = Layout::from_json_str(&text)
        .unwrap_or_else(|e| panic!("round {round}: a torn file ({} bytes): {e}", text.len()));
    assert!(
        &read == old || &read == new,
        "round {round}: neither document"
    );
}

#[cfg(unix)]
#[test]
fn a_save_killed_at_random_moments_leaves_the_old_or_the_new_document() {
    let dir = temp_dir("sigkill");
    let path = dir.join("layout.json");
    let (old, new) = (document("old"), document("new"));
    old.save(&path).unwrap();
    let exe = std::env::current_exe().unwrap();
    // A fixed-seed generator: the moments differ from round to round, the run is repeatable.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let rounds = 300;
    let mut saw_new = false;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "save_loop_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SAVE_LOOP_ENV, &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // From before the first save to a few saves in.
        std::thread::sleep(Duration::from_micros(next() % 40_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        check_whole(&path, round, &old, &new);
        saw_new |= Layout::load(&path).unwrap() == new;
    }
    assert!(
        saw_new,
        "no round got as far as a save: the kills came too early"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Set in the child process: the file a save under a 64 KiB file-size limit writes.
const FULL_DISK_ENV: &str = "GLICHEN_FAULTS_FULL_DISK";

/// Not a test of its own: the child's body. Under `RLIMIT_FSIZE` (a disk that is full for this
/// process) it saves a 100 kB document and prints the error it gets.
#[cfg(unix)]
#[test]
fn full_disk_child() {
    let Some(path) = std::env::var_os(FULL_DISK_ENV) else {
        return;
    };
    // SAFETY: plain libc calls on this process before any file is written; SIGXFSZ ignored so
    // that the write fails with EFBIG instead of the process being killed.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 64 * 1024,
            rlim_max: 64 * 1024,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    match document("new").save(&path) {
        Ok(()) => println!("SAVED"),
        Err(e) => println!("SAVE FAILED: {e}"),
    }
}

/// A save onto a full disk fails with a clear error and leaves the old document whole, with no
/// temp file left behind.
#[cfg(unix)]
#[test]
fn a_save_onto_a_full_disk_fails_and_keeps_the_old_document() {
    let dir = temp_dir("full-disk");
    let path = dir.join("layout.json");
    let old = document("old");
    old.save(&path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "full_disk_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FULL_DISK_ENV, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the child: {stdout}");
    // (the test harness prints its "test full_disk_child ... " before it on the same line)
    let line = stdout
        .lines()
        .find_map(|l| l.find("SAVE").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no save result: {stdout}"));
    assert!(line.starts_with("SAVE FAILED"), "{line}");
    assert!(line.contains("large") || line.contains("space"), "{line}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the old document, byte for byte"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n != "layout.json")
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
