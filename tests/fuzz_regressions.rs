//! Replays every input the fuzzers found (`fuzz/regressions/TARGET/`) through the same entry
//! points (`glichen::fuzzing`), under stable `cargo test`, so that CI guards each fixed bug
//! without nightly. A target's entry returning is a pass; a panic, abort or hang fails the run.

use std::path::Path;

#[test]
fn every_saved_fuzz_input_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&root).expect("fuzz/regressions") {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (_, target) = glichen::fuzzing::TARGETS
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("fuzz/regressions/{name}: no fuzz target of that name"));
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        for input in inputs {
            eprintln!("{}", input.display());
            target(&std::fs::read(&input).unwrap());
            replayed += 1;
        }
    }
    eprintln!("{replayed} inputs replayed");
}

#[test]
fn the_hostile_fixtures_pass_through_their_fuzz_entries() {
    let hostile = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    for entry in std::fs::read_dir(hostile).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let bytes = std::fs::read(&path).unwrap();
            glichen::fuzzing::torch_zip(&bytes);
            glichen::fuzzing::torch_load(&bytes);
        }
    }
}
