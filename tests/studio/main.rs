//! The studio, driven through egui_kittest like a user would: drawing and editing boxes, undo/redo,
//! α₀, files, and generation through the background worker with the tiny fixture model; image
//! boxes, the style image, people (keypoints) and inpainting, gated by the loaded model's
//! capabilities and generated end to end with the tiny text-image, inpainting and keypoint models.
//!
//! Also here: the WGSL preview against the CPU projection, the headless screenshot
//! (`GLICHEN_UPDATE_SCREENSHOT=1` rewrites `assets/screenshot.png`) and an ignored frame-time
//! harness: `cargo test --release --features testing --test studio frame_times -- --ignored
//! --nocapture`. The worker on its own is tested in `tests/worker.rs`.

mod draft;
mod editing;
mod files;
mod generation;
mod gpu;
mod harness;
mod maps;
mod models;
mod people;
mod pictures;
#[path = "../common/rss.rs"]
mod rss;
mod soak;
