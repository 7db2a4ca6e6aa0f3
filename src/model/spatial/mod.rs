//! The networks of the original GLIGEN spatial-map checkpoints (HED, Canny, depth, normal and
//! semantic maps; github gligen/GLIGEN, `*_grounding_net.py` and `*_grounding_downsampler.py`):
//! a position net that turns the map into grounding tokens through a ConvNeXt, and a downsampler
//! whose output is concatenated to the UNet's input latents. Sizes come from the tensor shapes.

mod convnext;
mod downsampler;
mod resize;

pub use convnext::ConvNeXt;
pub use downsampler::GroundingDownsampler;
pub use resize::{interpolate_bicubic, interpolate_nearest};

use crate::layout::MapKind;
use crate::model::blocks::{conv2d, Conv2d};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use convnext::Linear;

/// `Linear → SiLU → Linear → SiLU → Linear` over `[B, N, C]`.
#[derive(Debug, Clone)]
struct Mlp {
    layers: [Linear; 3],
}

impl Mlp {
    fn new(vb: VarBuilder) -> Result<Self> {
        let lin = |i: usize| Linear::new(vb.pp(i.to_string()));
        Ok(Self {
            layers: [lin(0)?, lin(2)?, lin(4)?],
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, c) = xs.dims3()?;
        let mut ys = xs.reshape((b * n, c))?;
        for (i, layer) in self.layers.iter().enumerate() {
            ys = layer.forward(&ys)?;
            if i < 2 {
                ys = candle_nn::ops::silu(&ys)?;
            }
        }
        ys.reshape((b, n, ()))
    }
}

/// The map's grounding tokens (`PositionNet` of `{kind}_grounding_net.py`): the map resized with
/// torch's legacy nearest mode to `resize_input`², for semantic maps `in_conv` from the one-hot
/// classes to 3 channels, a ConvNeXt, one token per feature pixel (row-major), the learnt null
/// feature where the mask is 0, the position embedding and an MLP.
#[derive(Debug, Clone)]
pub struct SpatialPositionNet {
    kind: MapKind,
    in_conv: Option<Conv2d>,
    map_channels: usize,
    backbone: ConvNeXt,
    /// `[1, N, C]`.
    pos_embedding: Tensor,
    /// `[C]`.
    null_feature: Tensor,
    linears: Mlp,
    out_dim: usize,
    resize_input: usize,
    dtype: DType,
    device: Device,
}

impl SpatialPositionNet {
    /// `vb` at `position_net`.
    pub fn new(vb: VarBuilder, kind: MapKind) -> Result<Self> {
        let backbone = ConvNeXt::new(vb.pp("convnext_tiny_backbone"))?;
        let (one, tokens, width) = vb.get_unchecked("pos_embedding")?.dims3()?;
        let feature = backbone.out_dim();
        if one != 1 || width != feature {
            candle_core::bail!(
                "position_net.pos_embedding is [{one}, {tokens}, {width}]; expected [1, N, {feature}] for a ConvNeXt of width {feature}"
            );
        }
        let side = (tokens as f64).sqrt().round() as usize;
        if tokens == 0 || side * side != tokens {
            candle_core::bail!(
                "position_net.pos_embedding has {tokens} tokens, not a square grid of feature pixels"
            );
        }
        let has_in_conv = vb.contains_tensor("in_conv.weight");
        let (in_conv, map_channels) = match (kind, has_in_conv) {
            (MapKind::Sem, true) => {
                let (out, inp, k, _) = vb.get_unchecked("in_conv.weight")?.dims4()?;
                let cfg = Conv2dConfig {
                    padding: k / 2,
                    ..Default::default()
                };
                (Some(conv2d(inp, out, k, cfg, vb.pp("in_conv"))?), inp)
            }
            (MapKind::Sem, false) => {
                candle_core::bail!("a semantic-map position net needs `position_net.in_conv`, which this checkpoint lacks")
            }
            (_, true) => candle_core::bail!(
                "this checkpoint's position net has `in_conv` (a semantic-map checkpoint), not a {} network",
                kind.label()
            ),
            (_, false) => (None, backbone.in_channels()),
        };
        let linears = Mlp::new(vb.pp("linears"))?;
        if linears.layers[0].in_dim()? != feature {
            candle_core::bail!(
                "position_net.linears.0 takes {} features, the ConvNeXt gives {feature}",
                linears.layers[0].in_dim()?
            );
        }
        Ok(Self {
            kind,
            in_conv,
            map_channels,
            out_dim: linears.layers[2].out_dim()?,
            resize_input: backbone.down_factor() * side,
            pos_embedding: vb.get((1, tokens, feature), "pos_embedding")?,
            null_feature: vb.get(feature, "null_feature")?,
            linears,
            backbone,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn kind(&self) -> MapKind {
        self.kind
    }

    /// Tokens per map (N, the position embedding's length).
    pub fn token_count(&self) -> usize {
        self.pos_embedding.dims()[1]
    }

    /// The side the map is resized to before the ConvNeXt: its down factor (32 for four stages) times
    /// √N, 256 in the released models.
    pub fn resize_input(&self) -> usize {
        self.resize_input
    }

    /// Width of a token (the UNet's context width).
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Channels of the map this net reads: 3 (RGB), or the classes of a one-hot semantic map.
    pub fn map_channels(&self) -> usize {
        self.map_channels
    }

    pub fn backbone(&self) -> &ConvNeXt {
        &self.backbone
    }

    /// What the ConvNeXt sees: the map resized to `resize_input`², through `in_conv` for semantic maps.
    pub fn backbone_input(&self, map: &Tensor) -> Result<Tensor> {
        let (_, c, _, _) = map.dims4()?;
        if c != self.map_channels {
            candle_core::bail!(
                "the {} position net takes {} channels, the map has {c}",
                self.kind.label(),
                self.map_channels
            );
        }
        let map = map.to_dtype(self.dtype)?.to_device(&self.device)?;
        let xs = interpolate_nearest(&map, (self.resize_input, self.resize_input))?;
        match &self.in_conv {
            Some(conv) => conv.forward(&xs),
            None => Ok(xs),
        }
    }

    /// `[B, N, out]` tokens for `map` `[B, C, H, W]` (any size) and `mask` `[B]` (or `[1]`, shared).
    pub fn forward(&self, map: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let b = map.dim(0)?;
        let features = self.backbone.forward(&self.backbone_input(map)?)?;
        let (_, c, h, w) = features.dims4()?;
        let n = self.token_count();
        if h * w != n {
            candle_core::bail!("the ConvNeXt gives {w}×{h} features for {n} position embeddings");
        }
        let objs = features.reshape((b, c, n))?.transpose(1, 2)?;
        let mask = mask.to_dtype(self.dtype)?.to_device(&self.device)?;
        let m = mask.elem_count();
        if m != b && m != 1 {
            candle_core::bail!("{m} mask values for a batch of {b} maps");
        }
        // objs·mask + null·(1 − mask), broadcast as the original's `mask.view(-1, 1, 1)`.
        let mask = mask.reshape((m, 1, 1))?;
        let null = self.null_feature.reshape((1, 1, c))?;
        let objs = objs
            .broadcast_mul(&mask)?
            .broadcast_add(&null.broadcast_mul(&mask.affine(-1.0, 1.0)?)?)?;
        self.linears
            .forward(&objs.broadcast_add(&self.pos_embedding)?)
    }

    /// The tokens of the original's null input (an all-zero map, mask 0) for `batch` maps, which
    /// the unconditional half of classifier-free guidance uses: with mask 0 the map's features are
    /// multiplied by 0, so every token is `linears(null_feature + pos_embedding[n])` exactly, and
    /// the ConvNeXt need not run.
    pub fn null_tokens(&self, batch: usize) -> Result<Tensor> {
        let c = self.null_feature.dim(0)?;
        let xs = self
            .pos_embedding
            .broadcast_add(&self.null_feature.reshape((1, 1, c))?)?;
        let tokens = self.linears.forward(&xs)?;
        tokens
            .broadcast_as((batch, self.token_count(), self.out_dim))?
            .contiguous()
    }
}
