//! The entry points of the fuzz targets (`fuzz/`, cargo-fuzz on nightly), one per reader of
//! outside data, shared with `tests/fuzz_regressions.rs`, which replays every saved input under
//! stable `cargo test` so that CI guards the fixed bugs without nightly.
//!
//! Each takes arbitrary bytes. Returning (with the reader's error or not) is correct; a panic, an
//! abort, a hang or an allocation out of proportion to the input is a bug. Where a reader's output
//! can be checked against itself (a layout written and read back), the entry asserts it.

use std::path::Path;
use std::sync::OnceLock;

use crate::layout::{self, Layout, ModelLimits};
use crate::weights::{pickle_guard, ClipTokenizer};

/// A target's entry: arbitrary bytes in, nothing out (see the module documentation).
pub type Entry = fn(&[u8]);

/// Every target: its name (the `fuzz/fuzz_targets/NAME.rs` file and the `fuzz/regressions/NAME/`
/// folder) and its entry.
pub const TARGETS: &[(&str, Entry)] = &[
    ("layout_json", layout_json),
    ("png_chunk", png_chunk),
    ("import", import),
    ("data_uri", data_uri),
    ("picture", picture),
    ("latents", latents),
    ("pickle", pickle),
    ("torch_zip", torch_zip),
    ("torch_load", torch_load),
    ("tokenizer", tokenizer),
];

/// Layout JSON: parse, validate (for every model and for the default limits), and, when it can be
/// written, write and read back to the same layout.
pub fn layout_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(layout) = Layout::from_json_str(text) else {
        return;
    };
    let _ = layout.validate();
    let _ = layout.validate_for(&ModelLimits::default());
    if let Ok(json) = layout.to_json_pretty() {
        let again = Layout::from_json_str(&json)
            .unwrap_or_else(|e| panic!("a written layout does not read back: {e}\n{json}"));
        assert!(
            again == layout,
            "the layout changed on a round trip:\n{json}"
        );
    }
}

/// The `glichen-layout` text chunk of a PNG.
pub fn png_chunk(data: &[u8]) {
    let _ = layout::png::layout_json_from_png(data);
}

/// "Open anything": layouts, Glichen PNGs, diffusers arguments, GLIGEN meta, COCO.
pub fn import(data: &[u8]) {
    let _ = layout::import::import_bytes("fuzz", data);
}

/// Data URIs (the picture references a layout may embed).
pub fn data_uri(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = layout::decode_data_uri(text);
    }
}

/// Pictures of every accepted format (PNG, JPEG, WebP), header check then decode.
pub fn picture(data: &[u8]) {
    let _ = layout::decode_picture(data);
}

/// `--noise` / `--init-latents` files (safetensors), read and checked finite.
pub fn latents(data: &[u8]) {
    if let Ok(tensors) = crate::pipeline::latents_from_bytes(data, Path::new("fuzz")) {
        for (name, t) in &tensors {
            let _ = crate::pipeline::ensure_finite(t, name);
        }
    }
}

/// One torch pickle stream, through the dry run that guards candle's reader.
pub fn pickle(data: &[u8]) {
    let _ = pickle_guard::check_pickle("data.pkl", data);
}

/// A torch zip checkpoint (`.bin`, `.pth`, original checkpoints), through the dry run.
pub fn torch_zip(data: &[u8]) {
    let _ = pickle_guard::check_checkpoint_reader(std::io::Cursor::new(data));
}

/// A torch checkpoint loaded as Glichen loads one: the dry run, then candle's own reader (whose
/// panics on malformed input Glichen catches and reports as errors), then every tensor.
pub fn torch_load(data: &[u8]) {
    install_caught_panic_hook();
    // candle's reader takes a path: the input goes through one file per process.
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("glichen-fuzz-{}.pth", std::process::id()))
    });
    if std::fs::write(path, data).is_err() {
        return;
    }
    if let Ok(file) = crate::weights::TensorFile::open(path) {
        for name in file.names() {
            let _ = file.load(&name, &candle_core::Device::Cpu);
        }
    }
}

/// libFuzzer's Rust hook aborts on every panic, even one that is caught; this one passes on only
/// the panics Glichen does not catch ([`crate::weights::panic_is_caught_here`]), so that a
/// caught one is the error it becomes and any other is still a crash.
fn install_caught_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !crate::weights::panic_is_caught_here() {
                previous(info);
            }
        }));
    });
}

/// CLIP's tokenizer (the compiled-in vocabulary) on arbitrary UTF-8, padded and not.
pub fn tokenizer(data: &[u8]) {
    static TOKENIZER: OnceLock<Option<ClipTokenizer>> = OnceLock::new();
    let Some(tok) = TOKENIZER.get_or_init(|| ClipTokenizer::builtin().ok()) else {
        return;
    };
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tok.encode(text, true);
        let _ = tok.encode(text, false);
    }
}
