//! `GroundingDownsampler` of `{kind}_grounding_downsampler.py`: the map brought to the latent grid,
//! concatenated after the 4 latent channels at the UNet's input.

use super::{interpolate_bicubic, interpolate_nearest};
use crate::layout::MapKind;
use crate::model::blocks::{conv2d, Conv2d};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

/// The maps the position net reads as RGB: the downsampler's input has the same three channels.
const RGB: usize = 3;

/// HED: channel 0 bicubic-resized to the latent grid, no weights (the original hard-codes 64×64,
/// the grid of a 512-pixel canvas). Canny and depth: channel 0, normal: all three channels, bicubic
/// to `resize_input`²; semantic maps: all classes, legacy nearest; then `layers`: Conv2d(k4, s2, p1)
/// → SiLU → Conv2d(k4, s2, p1), a quarter of `resize_input` on each side.
#[derive(Debug, Clone)]
pub struct GroundingDownsampler {
    kind: MapKind,
    /// `layers.0` and `layers.2`; none for HED.
    layers: Option<(Conv2d, Conv2d)>,
    kernels: (usize, usize),
    map_channels: usize,
    out_channels: usize,
    resize_input: usize,
    dtype: DType,
    device: Device,
}

/// A stride-2, padding-1 convolution (k4 in the released models) with its kernel, in and out widths.
fn stride2_conv(vb: VarBuilder) -> Result<(Conv2d, usize, usize, usize)> {
    let (out, inp, k, _) = vb.get_unchecked("weight")?.dims4()?;
    let cfg = Conv2dConfig {
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    Ok((conv2d(inp, out, k, cfg, vb)?, k, inp, out))
}

fn conv_out(side: usize, kernel: usize) -> usize {
    (side + 2).saturating_sub(kernel) / 2 + 1
}

impl GroundingDownsampler {
    /// `vb` at `downsample_net`; `resize_input` is the position net's.
    pub fn new(vb: VarBuilder, kind: MapKind, resize_input: usize) -> Result<Self> {
        let (layers, kernels, map_channels, out_channels) = match kind {
            MapKind::Hed => (None, (0, 0), RGB, 1),
            _ => {
                let (first, k1, inp, mid) = stride2_conv(vb.pp("layers").pp("0"))?;
                let (second, k2, mid2, out) = stride2_conv(vb.pp("layers").pp("2"))?;
                if mid2 != mid {
                    candle_core::bail!(
                        "downsample_net.layers.2 takes {mid2} channels, layers.0 gives {mid}"
                    );
                }
                // Canny and depth read channel 0 of the RGB map, normal maps all three.
                let expected = match kind {
                    MapKind::Canny | MapKind::Depth => Some(1),
                    MapKind::Normal => Some(RGB),
                    _ => None,
                };
                if expected.is_some_and(|e| e != inp) {
                    candle_core::bail!(
                        "downsample_net.layers.0 takes {inp} channels, which is not a {} network",
                        kind.label()
                    );
                }
                let map_channels = if kind == MapKind::Sem { inp } else { RGB };
                (Some((first, second)), (k1, k2), map_channels, out)
            }
        };
        Ok(Self {
            kind,
            layers,
            kernels,
            map_channels,
            out_channels,
            resize_input,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// Channels added to the UNet's input (8; 1 for HED).
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The input size before the convolutions (the map as the first convolution reads it); HED
    /// resizes straight to the latent grid.
    pub fn resized(&self, map: &Tensor, latent_hw: (usize, usize)) -> Result<Tensor> {
        let (_, c, _, _) = map.dims4()?;
        if c != self.map_channels {
            candle_core::bail!(
                "the {} downsampler takes {} channels, the map has {c}",
                self.kind.label(),
                self.map_channels
            );
        }
        let map = map.to_dtype(self.dtype)?.to_device(&self.device)?;
        let r = (self.resize_input, self.resize_input);
        match self.kind {
            MapKind::Hed => interpolate_bicubic(&map.narrow(1, 0, 1)?, latent_hw),
            MapKind::Canny | MapKind::Depth => interpolate_bicubic(&map.narrow(1, 0, 1)?, r),
            MapKind::Normal => interpolate_bicubic(&map, r),
            MapKind::Sem => interpolate_nearest(&map, r),
        }
    }

    /// `[B, out_channels, h, w]` for `latent_hw` = (h, w); an error when this network's features
    /// do not have that size.
    pub fn forward(&self, map: &Tensor, latent_hw: (usize, usize)) -> Result<Tensor> {
        if self.layers.is_some() {
            let side = conv_out(conv_out(self.resize_input, self.kernels.0), self.kernels.1);
            if (side, side) != latent_hw {
                let (h, w) = latent_hw;
                candle_core::bail!(
                    "the {} network produces {side}×{side} features (its maps are resized to {r}×{r}), but the latent grid is {w}×{h}: this checkpoint needs a canvas with a {side}×{side} latent grid ({px}×{px} pixels with Stable Diffusion's VAE)",
                    self.kind.label(),
                    r = self.resize_input,
                    px = side * 8,
                );
            }
        }
        let xs = self.resized(map, latent_hw)?;
        match &self.layers {
            None => Ok(xs),
            Some((first, second)) => second.forward(&candle_nn::ops::silu(&first.forward(&xs)?)?),
        }
    }
}
