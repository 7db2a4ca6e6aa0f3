//! The DPT neck and depth head of transformers' `DepthAnythingForDepthEstimation`: each selected
//! backbone state reassembled into a feature map at its own scale (1×1 projection, then a
//! transposed convolution up, nothing, or a strided convolution down), projected to the fusion
//! width, fused coarsest first (pre-activation residual units, bilinear upsampling with
//! `align_corners=True`), and a three-convolution head whose middle step resizes to the patch
//! grid times the patch size.

use super::config::{DepthAnythingConfig, DepthEstimationType};
use crate::model::blocks::{conv2d, Conv2d};
use crate::model::interrupt;
use candle_core::{Module, Result, Tensor};
use candle_nn::{
    conv_transpose2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, VarBuilder,
};

fn conv(
    vb: VarBuilder,
    (c_in, c_out): (usize, usize),
    kernel: usize,
    stride: usize,
) -> Result<Conv2d> {
    conv2d(
        c_in,
        c_out,
        kernel,
        Conv2dConfig {
            padding: kernel / 2,
            stride,
            ..Default::default()
        },
        vb,
    )
}

/// `DepthAnythingReassembleLayer.resize`.
#[derive(Debug, Clone)]
enum Resize {
    Up(ConvTranspose2d),
    Same,
    Down(Conv2d),
}

/// `DepthAnythingReassembleLayer`.
#[derive(Debug, Clone)]
struct Reassemble {
    projection: Conv2d,
    resize: Resize,
}

impl Reassemble {
    fn new(vb: VarBuilder, c_in: usize, channels: usize, factor: f64) -> Result<Self> {
        let projection = conv(vb.pp("projection"), (c_in, channels), 1, 1)?;
        let resize = if factor > 1.0 {
            let k = factor as usize;
            let cfg = ConvTranspose2dConfig {
                stride: k,
                ..Default::default()
            };
            Resize::Up(conv_transpose2d(
                channels,
                channels,
                k,
                cfg,
                vb.pp("resize"),
            )?)
        } else if factor == 1.0 {
            Resize::Same
        } else {
            // `int(1 / factor)`, Python's truncation
            let stride = ((1.0 / factor) as usize).max(1);
            Resize::Down(conv(vb.pp("resize"), (channels, channels), 3, stride)?)
        };
        Ok(Self { projection, resize })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.projection.forward(xs)?;
        match &self.resize {
            Resize::Up(m) => m.forward(&xs),
            Resize::Same => Ok(xs),
            Resize::Down(m) => m.forward(&xs),
        }
    }
}

/// `DepthAnythingPreActResidualLayer`: `x + conv2(relu(conv1(relu(x))))`.
#[derive(Debug, Clone)]
struct PreActResidual {
    convolution1: Conv2d,
    convolution2: Conv2d,
}

impl PreActResidual {
    fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            convolution1: conv(vb.pp("convolution1"), (c, c), 3, 1)?,
            convolution2: conv(vb.pp("convolution2"), (c, c), 3, 1)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.convolution1.forward(&xs.relu()?)?;
        let h = self.convolution2.forward(&h.relu()?)?;
        h + xs
    }
}

/// `DepthAnythingFeatureFusionLayer`.
#[derive(Debug, Clone)]
struct Fusion {
    projection: Conv2d,
    residual_layer1: PreActResidual,
    residual_layer2: PreActResidual,
}

impl Fusion {
    fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            projection: conv(vb.pp("projection"), (c, c), 1, 1)?,
            residual_layer1: PreActResidual::new(vb.pp("residual_layer1"), c)?,
            residual_layer2: PreActResidual::new(vb.pp("residual_layer2"), c)?,
        })
    }

    /// `size`: the next (finer) map's size; `None` for the last layer, which doubles instead.
    fn forward(
        &self,
        xs: &Tensor,
        residual: Option<&Tensor>,
        size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let mut xs = xs.clone();
        if let Some(residual) = residual {
            let residual = if residual.dims() != xs.dims() {
                residual.upsample_bilinear2d(h, w, false)?
            } else {
                residual.clone()
            };
            xs = (xs + self.residual_layer1.forward(&residual)?)?;
        }
        let xs = self.residual_layer2.forward(&xs)?;
        // `scale_factor=2` with align_corners: torch's output size floor(2·h), and its source
        // positions depend on the sizes alone, as in the size form
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        let xs = xs.upsample_bilinear2d(th, tw, true)?;
        self.projection.forward(&xs)
    }
}

/// `DepthAnythingNeck`: reassemble, project to the fusion width, fuse.
#[derive(Debug, Clone)]
pub struct Neck {
    reassemble: Vec<Reassemble>,
    convs: Vec<Conv2d>,
    fusion: Vec<Fusion>,
}

impl Neck {
    pub fn new(vb: VarBuilder, cfg: &DepthAnythingConfig) -> Result<Self> {
        let fusion_c = cfg.fusion_hidden_size;
        let vr = vb.pp("reassemble_stage").pp("layers");
        let mut reassemble = Vec::new();
        let mut convs = Vec::new();
        let mut fusion = Vec::new();
        for (i, (&c, &factor)) in cfg
            .neck_hidden_sizes
            .iter()
            .zip(&cfg.reassemble_factors)
            .enumerate()
        {
            reassemble.push(Reassemble::new(
                vr.pp(i),
                cfg.reassemble_hidden_size,
                c,
                factor,
            )?);
            // no bias in transformers' `convs`
            let weight = vb.pp("convs").pp(i).get((fusion_c, c, 3, 3), "weight")?;
            let bias = Tensor::zeros(fusion_c, weight.dtype(), weight.device())?;
            let pad = Conv2dConfig {
                padding: 1,
                ..Default::default()
            };
            convs.push(Conv2d::new(weight, bias, pad));
            fusion.push(Fusion::new(
                vb.pp("fusion_stage").pp("layers").pp(i),
                fusion_c,
            )?);
        }
        Ok(Self {
            reassemble,
            convs,
            fusion,
        })
    }

    /// The backbone's states `[B, 1 + gh·gw, C]` to the fused maps, coarsest first (transformers'
    /// `fused_hidden_states` order).
    pub fn forward(&self, states: &[Tensor], (gh, gw): (usize, usize)) -> Result<Vec<Tensor>> {
        if states.len() != self.reassemble.len() {
            candle_core::bail!(
                "the neck takes {} hidden states, got {}",
                self.reassemble.len(),
                states.len()
            );
        }
        let mut features = Vec::with_capacity(states.len());
        for ((state, reassemble), conv) in states.iter().zip(&self.reassemble).zip(&self.convs) {
            let (b, n, c) = state.dims3()?;
            let map = state
                .narrow(1, 1, n.saturating_sub(1))?
                .reshape((b, gh, gw, c))?
                .permute((0, 3, 1, 2))?
                .contiguous()?;
            features.push(conv.forward(&reassemble.forward(&map)?)?);
        }
        features.reverse();
        let mut fused: Vec<Tensor> = Vec::with_capacity(features.len());
        for (i, (feature, layer)) in features.iter().zip(&self.fusion).enumerate() {
            interrupt::check()?;
            let size = match features.get(i + 1) {
                Some(next) => {
                    let (_, _, h, w) = next.dims4()?;
                    Some((h, w))
                }
                None => None,
            };
            let out = match fused.last() {
                None => layer.forward(feature, None, size)?,
                Some(previous) => layer.forward(previous, Some(feature), size)?,
            };
            fused.push(out);
        }
        Ok(fused)
    }
}

/// `DepthAnythingDepthEstimationHead`.
#[derive(Debug, Clone)]
pub struct Head {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    kind: DepthEstimationType,
    max_depth: f64,
    patch_size: usize,
    head_index: usize,
}

impl Head {
    pub fn new(vb: VarBuilder, cfg: &DepthAnythingConfig) -> Result<Self> {
        let f = cfg.fusion_hidden_size;
        let head_index = cfg.head_index().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "head_in_index {} is out of range",
                cfg.head_in_index
            ))
        })?;
        Ok(Self {
            conv1: conv(vb.pp("conv1"), (f, f / 2), 3, 1)?,
            conv2: conv(vb.pp("conv2"), (f / 2, cfg.head_hidden_size), 3, 1)?,
            conv3: conv(vb.pp("conv3"), (cfg.head_hidden_size, 1), 1, 1)?,
            kind: cfg.depth_estimation_type,
            max_depth: cfg.max_depth,
            patch_size: cfg.patch_size,
            head_index,
        })
    }

    /// The fused maps to `[B, gh·patch, gw·patch]`.
    pub fn forward(&self, fused: &[Tensor], (gh, gw): (usize, usize)) -> Result<Tensor> {
        let Some(xs) = fused.get(self.head_index) else {
            candle_core::bail!("no fused feature map {}", self.head_index);
        };
        let xs = self.conv1.forward(xs)?;
        let xs = xs.upsample_bilinear2d(gh * self.patch_size, gw * self.patch_size, true)?;
        let xs = self.conv2.forward(&xs)?.relu()?;
        let xs = self.conv3.forward(&xs)?;
        let xs = match self.kind {
            DepthEstimationType::Relative => xs.relu()?,
            DepthEstimationType::Metric => candle_nn::ops::sigmoid(&xs)?,
        };
        (xs * self.max_depth)?.squeeze(1)
    }
}
