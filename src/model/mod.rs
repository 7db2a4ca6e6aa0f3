//! The candle networks of a GLIGEN pipeline: CLIP text tower, UNet with gated self-attention,
//! position nets and the VAE. Each has a `Config` read from the model folder and `new(vb, cfg)`.

pub mod attention;
pub mod blocks;
pub mod clip;
pub mod clip_vision;
pub mod cpu_ops;
pub mod depth_anything;
pub mod hed;
pub mod interrupt;
pub mod linear;
pub mod position_net;
pub mod spatial;
pub mod taesd;
pub mod transformer;
pub mod unet;
pub mod vae;

pub use clip::{ClipTextConfig, ClipTextModel, ClipTextOutput};
pub use position_net::{PositionNet, PositionNetInput};
pub use taesd::{AutoencoderTiny, TaesdConfig};
pub use transformer::Grounding;
pub use unet::{UNet2DConditionModel, UNetConfig};
pub use vae::{AutoencoderKL, VaeConfig};
