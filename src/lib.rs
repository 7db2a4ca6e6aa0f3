//! Glichen: grounded text-to-image generation (GLIGEN) with candle.
//!
//! The library: `layout` (the document), `model` (networks),
//! `weights` (files, hub, key mapping), `pipeline` (sampling), `worker` (the background thread that
//! owns a model) and `ui` (the egui studio; nothing else depends on it). The CLI lives in the binary.

pub mod fsio;
pub mod fuzzing;
pub mod layout;
pub mod maps;
pub mod model;
pub mod pipeline;
#[cfg(feature = "studio")]
pub mod ui;
pub mod weights;
pub mod worker;
