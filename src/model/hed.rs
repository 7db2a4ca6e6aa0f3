//! ControlNet's HED edge network, the Apache-2.0 `ControlNetHED_Apache2` of the ControlNet
//! annotators (PyPI `controlnet_aux`, `hed/__init__.py`; weights `ControlNetHED.pth` of the hub
//! repo `lllyasviel/Annotators`), which makes the soft edge maps GLIGEN's HED checkpoint reads.
//!
//! `h = x − norm` on RGB in 0..=255 (no scaling), then blocks of 3×3 convolutions (padding 1, each
//! followed by ReLU), a 2×2 max-pool before every block but the first, and a 1×1 `projection` to one
//! channel after each block. [`Hed::forward`] returns those projections; turning them into a map
//! (resize, mean, sigmoid) is `maps::hed::HedDetector`'s job.
//!
//! Every size comes from the weights ([`HedConfig::from_weights`]): the real file has five blocks of
//! 2, 2, 3, 3, 3 convolutions, 64 to 512 wide, and the test fixtures a tiny variant with the same keys.

use super::blocks::{conv2d, Conv2d};
use super::interrupt;
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

/// One `DoubleConvBlock`: how many 3×3 convolutions and how wide they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HedBlockConfig {
    pub convs: usize,
    pub channels: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HedConfig {
    /// Colour channels of the input (`norm` is `[1, C, 1, 1]`).
    pub in_channels: usize,
    /// `block1`, `block2`, ... in order.
    pub blocks: Vec<HedBlockConfig>,
}

/// An error without the backtrace `bail!` attaches under `RUST_BACKTRACE`: these messages are shown
/// to the user, who gave the file.
fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(candle_core::Error::Msg(message.into()))
}

fn conv_key(block: usize, conv: usize) -> String {
    format!("block{block}.convs.{conv}")
}

/// Whether `prefix.weight` or `prefix.bias` is there: a layer with one of them missing is still
/// counted, so that building it names the missing tensor instead of dropping the layer.
fn has_layer(vb: &VarBuilder, prefix: &str) -> bool {
    vb.contains_tensor(&format!("{prefix}.weight")) || vb.contains_tensor(&format!("{prefix}.bias"))
}

impl HedConfig {
    /// Blocks `block1`, `block2`, ... as long as they are present (a block is present when any of
    /// its first convolution or projection tensors is), their convolutions `convs.0`, `convs.1`, ...
    /// likewise, widths from each block's first convolution weight `[out, in, 3, 3]`, input channels
    /// from `norm`.
    pub fn from_weights(vb: &VarBuilder) -> Result<Self> {
        if !vb.contains_tensor("norm") {
            return fail("missing tensor `norm` (the input offset, [1, 3, 1, 1])");
        }
        let norm = vb.get_unchecked("norm")?;
        let in_channels = match norm.dims() {
            [1, c, 1, 1] => *c,
            other => {
                return fail(format!(
                    "tensor `norm` has shape {other:?}, expected [1, C, 1, 1]"
                ))
            }
        };
        let mut blocks = Vec::new();
        loop {
            let b = blocks.len() + 1;
            let present =
                has_layer(vb, &conv_key(b, 0)) || has_layer(vb, &format!("block{b}.projection"));
            if !present {
                break;
            }
            let mut convs = 0;
            while has_layer(vb, &conv_key(b, convs)) {
                convs += 1;
            }
            let first = format!("{}.weight", conv_key(b, 0));
            if convs == 0 || !vb.contains_tensor(&first) {
                return fail(format!(
                    "missing tensor `{first}` (block {b}'s first convolution)"
                ));
            }
            let channels = match vb.get_unchecked(&first)?.dims() {
                [out, _, 3, 3] => *out,
                other => return fail(format!(
                    "tensor `{first}` has shape {other:?}, expected a 3×3 convolution [out, in, 3, 3]"
                )),
            };
            blocks.push(HedBlockConfig { convs, channels });
        }
        if blocks.is_empty() {
            return fail("missing tensor `block1.convs.0.weight`: no HED blocks in the weights");
        }
        Ok(Self {
            in_channels,
            blocks,
        })
    }

    /// Max-pools before the last block: each halves a side, flooring.
    pub fn pools(&self) -> usize {
        self.blocks.len().saturating_sub(1)
    }

    /// The smallest side the network takes: with fewer pixels a 2×2 max-pool would have no whole
    /// window, which torch refuses too.
    pub fn min_side(&self) -> usize {
        1usize << self.pools().min(usize::BITS as usize - 1)
    }
}

/// `DoubleConvBlock`: (max-pool), 3×3 conv + ReLU per layer, 1×1 projection to one channel.
#[derive(Debug, Clone)]
struct DoubleConvBlock {
    convs: Vec<Conv2d>,
    projection: Conv2d,
}

impl DoubleConvBlock {
    fn new(vb: VarBuilder, in_channels: usize, cfg: &HedBlockConfig) -> Result<Self> {
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let mut convs = Vec::with_capacity(cfg.convs);
        let mut channels = in_channels;
        for i in 0..cfg.convs {
            convs.push(conv2d(
                channels,
                cfg.channels,
                3,
                same,
                vb.pp("convs").pp(i.to_string()),
            )?);
            channels = cfg.channels;
        }
        let projection = conv2d(cfg.channels, 1, 1, Default::default(), vb.pp("projection"))?;
        Ok(Self { convs, projection })
    }

    /// The block's features and its projection.
    fn forward(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut h = xs.clone();
        for conv in &self.convs {
            h = conv.forward(&h)?.relu()?;
            interrupt::check()?;
        }
        let projection = self.projection.forward(&h)?;
        Ok((h, projection))
    }
}

/// `ControlNetHED_Apache2` (inference).
#[derive(Debug, Clone)]
pub struct Hed {
    pub config: HedConfig,
    norm: Tensor,
    blocks: Vec<DoubleConvBlock>,
}

impl Hed {
    pub fn new(vb: VarBuilder, cfg: &HedConfig) -> Result<Self> {
        let norm = vb.get((1, cfg.in_channels, 1, 1), "norm")?;
        let mut blocks = Vec::with_capacity(cfg.blocks.len());
        let mut channels = cfg.in_channels;
        for (i, block) in cfg.blocks.iter().enumerate() {
            blocks.push(DoubleConvBlock::new(
                vb.pp(format!("block{}", i + 1)),
                channels,
                block,
            )?);
            channels = block.channels;
        }
        Ok(Self {
            config: cfg.clone(),
            norm,
            blocks,
        })
    }

    /// `x` `[B, C, H, W]`, RGB in 0..=255, to one projection `[B, 1, h_i, w_i]` per block, block i
    /// at `H` and `W` halved (flooring, as torch's `max_pool2d` does) i − 1 times. Refuses an
    /// input smaller than [`HedConfig::min_side`]. Checks the thread's interrupt flag between layers.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let (_, c, h, w) = x.dims4()?;
        if c != self.config.in_channels {
            return fail(format!(
                "HED input has {c} channels, the network takes {}",
                self.config.in_channels
            ));
        }
        let min = self.config.min_side();
        if h < min || w < min {
            return fail(format!(
                "HED input of {w}×{h} is too small: its {} 2×2 max-pools need at least {min}×{min}",
                self.config.pools()
            ));
        }
        let mut h = x.broadcast_sub(&self.norm.to_dtype(x.dtype())?)?;
        let mut projections = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter().enumerate() {
            if i > 0 {
                h = h.max_pool2d(2)?;
            }
            let (features, projection) = block.forward(&h)?;
            h = features;
            projections.push(projection);
        }
        Ok(projections)
    }
}
