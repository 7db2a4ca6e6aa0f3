//! CLIP tokenization against transformers' `CLIPTokenizer` (`tests/fixtures/tokenizer_cases.json`:
//! 95 strings with the ids padded and truncated to 77 and the untruncated length, start and end
//! tokens included). Every tokenizer source Glichen reads must agree exactly: a folder with
//! `tokenizer.json` (tiny-a), a folder with only `vocab.json` + `merges.txt` (tiny-b, like the hub
//! repos), the fixture vocabulary files, and the vocabulary compiled into the binary.

mod common;

use common::{fixtures, model_dir};
use glichen::weights::{ClipTokenizer, DiffusersFolder};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    /// Tokens before truncation, start and end tokens included.
    untruncated_len: usize,
}

fn cases() -> Vec<Case> {
    let path = fixtures().join("tokenizer_cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 90, "{} tokenizer cases", cases.len());
    cases
}

fn check_all(what: &str, tok: &ClipTokenizer) {
    assert_eq!(tok.max_length, 77, "{what}: window");
    assert_eq!(tok.bos_id, 49406, "{what}: start token");
    assert_eq!(tok.eos_id, 49407, "{what}: end token");
    assert_eq!(tok.pad_id, 49407, "{what}: padding token");
    let mut failures = Vec::new();
    let mut truncated_cases = 0;
    let all = cases();
    for (i, case) in all.iter().enumerate() {
        let padded = tok.encode(&case.text, true).unwrap();
        if padded.ids != case.ids {
            failures.push(format!(
                "case {i} {:?}:\n  ours {:?}\n  ref  {:?}",
                case.text, padded.ids, case.ids
            ));
            continue;
        }
        // Counts reported for truncation warnings.
        let content = case.untruncated_len - 2;
        let over = case.untruncated_len.saturating_sub(77);
        if padded.content_tokens != content || padded.truncated_tokens != over {
            failures.push(format!(
                "case {i} {:?}: content {} truncated {}, expected {content} and {over}",
                case.text, padded.content_tokens, padded.truncated_tokens
            ));
        }
        truncated_cases += usize::from(over > 0);
        // Unpadded (phrases): the same ids up to and including the end token.
        let unpadded = tok.encode(&case.text, false).unwrap();
        let n = case.untruncated_len.min(77);
        if unpadded.ids != case.ids[..n] {
            failures.push(format!(
                "case {i} {:?}: unpadded ids {:?}",
                case.text, unpadded.ids
            ));
        }
    }
    println!(
        "{what}: {} cases, {} truncated, {} failures",
        all.len(),
        truncated_cases,
        failures.len()
    );
    assert!(truncated_cases > 0, "the cases include no over-long string");
    assert!(
        failures.is_empty(),
        "{what}: {} of {} cases differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn tokenizer_json_folder_matches_transformers() {
    let dir = model_dir("tiny-a").join("tokenizer");
    assert!(
        dir.join("tokenizer.json").is_file(),
        "tiny-a is the tokenizer.json case"
    );
    let tok = DiffusersFolder::open(&model_dir("tiny-a"))
        .unwrap()
        .tokenizer()
        .unwrap();
    check_all("tiny-a (tokenizer.json)", &tok);
}

#[test]
fn vocab_and_merges_folder_matches_transformers() {
    let dir = model_dir("tiny-b").join("tokenizer");
    assert!(
        !dir.join("tokenizer.json").exists(),
        "tiny-b is the vocab.json + merges.txt case"
    );
    assert!(dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file());
    let tok = DiffusersFolder::open(&model_dir("tiny-b"))
        .unwrap()
        .tokenizer()
        .unwrap();
    check_all("tiny-b (vocab.json + merges.txt)", &tok);
}

#[test]
fn vocab_files_match_transformers() {
    let v = fixtures().join("vocab");
    let tok =
        ClipTokenizer::from_vocab_files(&v.join("vocab.json"), &v.join("merges.txt")).unwrap();
    check_all("fixtures/vocab", &tok);
}

#[test]
fn builtin_vocabulary_matches_transformers() {
    let tok = ClipTokenizer::builtin().unwrap();
    check_all("builtin", &tok);
}

#[test]
fn truncation_is_reported() {
    let tok = ClipTokenizer::builtin().unwrap();
    let long = "dog ".repeat(100);
    let t = tok.encode(&long, true).unwrap();
    assert_eq!(t.ids.len(), 77);
    assert_eq!(t.content_tokens, 100);
    assert_eq!(t.truncated_tokens, 25);
    assert_eq!(t.ids[76], tok.eos_id, "the end token survives truncation");
    let exact = tok.encode(&"dog ".repeat(75), true).unwrap();
    assert_eq!(exact.truncated_tokens, 0);
    assert_eq!(exact.ids[76], tok.eos_id);
}

#[test]
fn missing_tokenizer_files_are_named() {
    let tmp = common::TempDir::new("tok-missing");
    std::fs::write(tmp.join("vocab.json"), "{}").unwrap();
    let err = ClipTokenizer::from_folder(tmp.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("merges.txt"), "{err}");
}

#[test]
fn a_multi_megabyte_prompt_is_cut_early_to_the_same_tokens() {
    let tok = ClipTokenizer::builtin().unwrap();
    let short = "a red umbrella, ".repeat(40);
    let huge = "a red umbrella, ".repeat(20 * 1024 * 1024 / 16);
    let t = tok.encode(&huge, true).unwrap();
    let expected = tok.encode(&short, true).unwrap();
    assert_eq!(t.ids, expected.ids);
    assert!(!t.counted_whole);
    assert!(expected.counted_whole);
    assert!(t.truncated_tokens > 0);
}

#[test]
fn a_giant_word_is_refused_with_its_size() {
    let tok = ClipTokenizer::builtin().unwrap();
    let word = "a".repeat(2 * 1024 * 1024);
    let err = tok.encode(&word, true).unwrap_err().to_string();
    assert!(err.contains("a text of 2097152 bytes"), "{err}");
}

#[test]
fn a_window_too_small_for_one_token_is_refused() {
    let tmp = common::TempDir::new("tok-window");
    let dir = tmp.join("tokenizer");
    common::copy_dir(&model_dir("tiny-b").join("tokenizer"), &dir);
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"model_max_length": 0}"#,
    )
    .unwrap();
    let err = ClipTokenizer::from_folder(&dir).unwrap_err().to_string();
    assert!(err.contains("model_max_length 0 leaves no room"), "{err}");
}
