//! A hub model downloaded before keeps working when the hub cannot be reached: `--model
//! owner/name` falls back to the cached snapshot when it is complete, and names the failure
//! otherwise. Its own test binary, because it points `HF_HOME` at a temporary cache.

mod common;

use common::fixtures;
use glichen::weights::{resolve_model, ModelSource};
use std::path::Path;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn cached_snapshot_serves_when_the_hub_is_unreachable() {
    let home = std::env::temp_dir().join(format!("glichen-hf-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let repo = home.join("hub").join("models--someone--tiny-gligen");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(commit);
    copy_dir(&fixtures().join("models").join("tiny-a"), &snapshot);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), commit).unwrap();
    // an endpoint that cannot answer, whatever the machine's network
    std::env::set_var("HF_HOME", &home);
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");

    match resolve_model("someone/tiny-gligen", false) {
        Ok(ModelSource::Folder(root)) => assert_eq!(root, snapshot),
        other => panic!("expected the cached snapshot, got {other:?}"),
    }

    // an incomplete snapshot is not used: the download error is reported
    std::fs::remove_dir_all(snapshot.join("vae")).unwrap();
    let err = resolve_model("someone/tiny-gligen", false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("someone/tiny-gligen"), "{err}");
    let _ = std::fs::remove_dir_all(&home);
}
