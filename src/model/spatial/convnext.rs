//! ConvNeXt (Liu et al. 2022) as the original GLIGEN code runs it for its spatial-map position nets
//! (`convnext.py`, `forward_features`): the stem and the downsampling layers and stages, without the
//! final norm, pooling or head. The number of stages, the blocks per stage and the widths come from
//! the checkpoint's tensors: the released models are convnext_tiny, small test models are not.

use crate::model::blocks::{conv2d, Conv2d};
use crate::model::cpu_ops::fused_cpu;
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use rayon::prelude::*;

/// ConvNeXt's LayerNorms use eps 1e-6 in both data formats.
const LN_EPS: f64 = 1e-6;

/// LayerNorm over dimension `dim` with per-channel affine weights. Written with the two-pass
/// variance (`mean((x − mean)²)`, as `convnext.py`'s channels-first branch and torch's layer_norm
/// compute it) rather than candle's fused kernel, whose `E[x²] − E[x]²` loses digits when a feature
/// has a large mean.
#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
        })
    }

    fn forward(&self, xs: &Tensor, dim: usize) -> Result<Tensor> {
        let mut shape = vec![1; xs.rank()];
        shape[dim] = self.weight.dim(0)?;
        let mean = xs.mean_keepdim(dim)?;
        let centred = xs.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(dim)?;
        let normed = centred.broadcast_div(&(var + LN_EPS)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.weight.reshape(shape.as_slice())?)?
            .broadcast_add(&self.bias.reshape(shape.as_slice())?)
    }
}

/// A `[out, in]` linear layer applied to `[rows, in]`.
#[derive(Debug, Clone)]
pub(super) struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    pub(super) fn new(vb: VarBuilder) -> Result<Self> {
        let (out, inp) = vb.get_unchecked("weight")?.dims2()?;
        Ok(Self {
            weight_t: vb.get((out, inp), "weight")?.t()?,
            bias: vb.get(out, "bias")?,
        })
    }

    pub(super) fn in_dim(&self) -> Result<usize> {
        self.weight_t.dim(0)
    }

    pub(super) fn out_dim(&self) -> Result<usize> {
        self.weight_t.dim(1)
    }

    pub(super) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

/// A patchifying convolution (stride = kernel size, no padding) with its shapes taken from the
/// weight; returns it with its output width and kernel size.
fn patchify_conv(vb: VarBuilder) -> Result<(Conv2d, usize, usize)> {
    let (out, inp, kh, kw) = vb.get_unchecked("weight")?.dims4()?;
    if kh != kw {
        candle_core::bail!("{}: non-square {kh}×{kw} kernel", vb.prefix());
    }
    let cfg = Conv2dConfig {
        stride: kh,
        ..Default::default()
    };
    Ok((conv2d(inp, out, kh, cfg, vb)?, out, kh))
}

/// Depthwise convolution (one k×k filter per channel, stride 1, zero padding k/2) on CPU f32.
/// candle runs a grouped convolution as one convolution per group, hundreds of small im2col products
/// per block; here each plane is accumulated tap by tap over whole rows.
fn depthwise_cpu(xs: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = xs.dims4()?;
    let k = weight.dim(2)?;
    let p = k / 2;
    let src = xs.flatten_all()?.to_vec1::<f32>()?;
    let taps = weight.flatten_all()?.to_vec1::<f32>()?;
    let bias = bias.to_vec1::<f32>()?;
    let mut out = vec![0f32; b * c * h * w];
    out.par_chunks_mut(h * w)
        .zip(src.par_chunks(h * w))
        .enumerate()
        .for_each(|(plane, (out, src))| {
            let ch = plane % c;
            out.fill(bias[ch]);
            for ky in 0..k {
                // Output rows and columns whose input pixel `o + tap − p` lies inside the plane.
                let (y0, y1) = (p.saturating_sub(ky), (h + p).saturating_sub(ky).min(h));
                for kx in 0..k {
                    let (x0, x1) = (p.saturating_sub(kx), (w + p).saturating_sub(kx).min(w));
                    if y0 >= y1 || x0 >= x1 {
                        continue;
                    }
                    let tap = taps[(ch * k + ky) * k + kx];
                    for oy in y0..y1 {
                        let start = (oy + ky - p) * w + x0 + kx - p;
                        let (o, i) = (&mut out[oy * w..][x0..x1], &src[start..][..x1 - x0]);
                        for (o, i) in o.iter_mut().zip(i) {
                            *o += tap * i;
                        }
                    }
                }
            }
        });
    Tensor::from_vec(out, (b, c, h, w), xs.device())
}

/// One block: depthwise 7×7 conv, LayerNorm, pointwise MLP with exact GELU, layer scale, residual.
#[derive(Debug, Clone)]
struct Block {
    /// `[C, 1, k, k]`, `[C]`.
    dw_weight: Tensor,
    dw_bias: Tensor,
    norm: LayerNorm,
    pwconv1: Linear,
    pwconv2: Linear,
    /// Absent when the model was built with `layer_scale_init_value` 0.
    gamma: Option<Tensor>,
}

impl Block {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let dw = vb.pp("dwconv");
        let (_, _, k, _) = dw.get_unchecked("weight")?.dims4()?;
        if k % 2 == 0 {
            candle_core::bail!("{}: even {k}×{k} depthwise kernel", dw.prefix());
        }
        Ok(Self {
            dw_weight: dw.get((dim, 1, k, k), "weight")?,
            dw_bias: dw.get(dim, "bias")?,
            norm: LayerNorm::new(dim, vb.pp("norm"))?,
            pwconv1: Linear::new(vb.pp("pwconv1"))?,
            pwconv2: Linear::new(vb.pp("pwconv2"))?,
            gamma: match vb.contains_tensor("gamma") {
                true => Some(vb.get(dim, "gamma")?),
                false => None,
            },
        })
    }

    fn dwconv(&self, xs: &Tensor) -> Result<Tensor> {
        if fused_cpu(xs) {
            return depthwise_cpu(xs, &self.dw_weight, &self.dw_bias);
        }
        let (c, k) = (self.dw_weight.dim(0)?, self.dw_weight.dim(2)?);
        xs.conv2d(&self.dw_weight, k / 2, 1, 1, c)?
            .broadcast_add(&self.dw_bias.reshape((1, c, 1, 1))?)
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let ys = self.dwconv(xs)?.permute((0, 2, 3, 1))?.contiguous()?;
        let ys = self.norm.forward(&ys.reshape((b * h * w, c))?, 1)?;
        let ys = self.pwconv1.forward(&ys)?.gelu_erf()?;
        let mut ys = self.pwconv2.forward(&ys)?;
        if let Some(gamma) = &self.gamma {
            ys = ys.broadcast_mul(gamma)?;
        }
        let ys = ys.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?;
        xs + ys
    }
}

#[derive(Debug, Clone)]
struct Stage {
    /// Stage 0: the stem (conv, then norm); later stages: norm, then a 2×2 stride-2 conv.
    norm: LayerNorm,
    conv: Conv2d,
    blocks: Vec<Block>,
}

/// ConvNeXt's `forward_features` for NCHW input.
#[derive(Debug, Clone)]
pub struct ConvNeXt {
    stages: Vec<Stage>,
    depths: Vec<usize>,
    dims: Vec<usize>,
    in_channels: usize,
    down_factor: usize,
}

impl ConvNeXt {
    /// `vb` at the backbone (`position_net.convnext_tiny_backbone` in GLIGEN checkpoints).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let layers = vb.pp("downsample_layers");
        let stem = layers.pp("0").pp("0");
        if !stem.contains_tensor("weight") {
            candle_core::bail!("{}: no ConvNeXt stem `0.0.weight`", layers.prefix());
        }
        let in_channels = stem.get_unchecked("weight")?.dim(1)?;
        let (mut stages, mut depths, mut dims) = (Vec::new(), Vec::new(), Vec::new());
        let mut down_factor = 1;
        let mut i = 0;
        while layers.contains_tensor(&format!("{i}.0.weight")) {
            let (ds, blocks_vb) = (layers.pp(i.to_string()), vb.pp("stages").pp(i.to_string()));
            let (norm_vb, conv_vb) = match i {
                0 => (ds.pp("1"), ds.pp("0")),
                _ => (ds.pp("0"), ds.pp("1")),
            };
            let (conv, dim, kernel) = patchify_conv(conv_vb)?;
            down_factor *= kernel;
            let mut blocks = Vec::new();
            while blocks_vb.contains_tensor(&format!("{}.dwconv.weight", blocks.len())) {
                blocks.push(Block::new(dim, blocks_vb.pp(blocks.len().to_string()))?);
            }
            depths.push(blocks.len());
            dims.push(dim);
            stages.push(Stage {
                norm: LayerNorm::new(if i == 0 { dim } else { dims[i - 1] }, norm_vb)?,
                conv,
                blocks,
            });
            i += 1;
        }
        Ok(Self {
            stages,
            depths,
            dims,
            in_channels,
            down_factor,
        })
    }

    /// Blocks per stage.
    pub fn depths(&self) -> &[usize] {
        &self.depths
    }

    /// Width of each stage.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Width of the output features.
    pub fn out_dim(&self) -> usize {
        self.dims.last().copied().unwrap_or(self.in_channels)
    }

    /// How many input pixels one output feature covers along each side (32 for four stages).
    pub fn down_factor(&self) -> usize {
        self.down_factor
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (i, stage) in self.stages.iter().enumerate() {
            xs = match i {
                0 => stage.norm.forward(&stage.conv.forward(&xs)?, 1)?,
                _ => stage.conv.forward(&stage.norm.forward(&xs, 1)?)?,
            };
            for block in &stage.blocks {
                xs = block.forward(&xs)?;
            }
        }
        Ok(xs)
    }
}
