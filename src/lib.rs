//! Glichen: grounded text-to-image generation (GLIGEN) with candle.
//!
//! The library holds everything but the window: `layout` (the document), `model` (networks),
//! `weights` (files, hub, key mapping), `pipeline` (sampling) and `cli` (the headless front end).

pub mod layout;
pub mod model;
pub mod pipeline;
pub mod weights;
