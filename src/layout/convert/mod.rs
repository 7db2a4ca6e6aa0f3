//! Conversions to and from the formats GLIGEN users already have:
//! diffusers call arguments, the reference implementation's inference
//! `meta` dicts, and COCO annotations.
//!
//! Conversions never drop content silently: whatever the target cannot
//! express is reported (all of it at once) as
//! [`LayoutError::Unsupported`](super::LayoutError::Unsupported). Within
//! what both sides can express, a round trip gives back what went in; the
//! few exceptions are documented on each function.
//!
//! One submodule per format: `diffusers`, `meta` (GLIGEN's
//! `gligen_inference.py`) and `coco`.

mod coco;
mod diffusers;
mod meta;

pub use coco::CocoImageSelector;
pub use diffusers::DiffusersArgs;
pub use meta::{GligenLocations, GligenMask, GligenMeta, GligenMetaExtras};
