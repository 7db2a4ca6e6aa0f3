//! GLIGEN's grounding tokenizer ("position net"): an MLP over [phrase or image embedding, Fourier
//! embedding of the box], with learnt null features standing in for empty slots.
//! Covers diffusers' `GLIGENTextBoundingboxProjection` (text-only and text-image) and its original
//! counterpart; widths come from the weights' shapes.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

/// The Fourier box embedding uses 8 frequencies `100^(k/8)` for each of x0, y0, x1, y1.
pub const FOURIER_FREQS: usize = 8;
pub const POSITION_DIM: usize = FOURIER_FREQS * 2 * 4;
/// COCO keypoints per person.
pub const KEYPOINTS_PER_PERSON: usize = 17;

/// `[B, N, 4]` boxes → `[B, N, 64]`, ordered `[f0 sin(x0..y1), f0 cos(x0..y1), f1 sin ..]` as
/// diffusers' `get_fourier_embeds_from_boundingbox`. Always computed in f32.
pub fn fourier_box_embedding(boxes: &Tensor) -> Result<Tensor> {
    fourier_embedding(boxes, 4)
}

/// GLIGEN's `FourierEmbedder` over the last axis of `[B, N, coords]` (4 for boxes, 2 for keypoints):
/// for each frequency `100^(k/8)`, the sines of every coordinate, then their cosines.
pub fn fourier_embedding(xs: &Tensor, coords: usize) -> Result<Tensor> {
    let (b, n, c) = xs.dims3()?;
    if c != coords {
        candle_core::bail!("expected [batch, slots, {coords}], got {:?}", xs.shape());
    }
    let values = xs.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let freqs: Vec<f32> = (0..FOURIER_FREQS)
        .map(|k| 100f32.powf(k as f32 / FOURIER_FREQS as f32))
        .collect();
    let width = FOURIER_FREQS * 2 * coords;
    let mut out = Vec::with_capacity(b * n * width);
    for slot in values.chunks_exact(coords) {
        for f in &freqs {
            for c in slot {
                out.push((f * c).sin());
            }
            for c in slot {
                out.push((f * c).cos());
            }
        }
    }
    Tensor::from_vec(out, (b, n, width), xs.device())
}

/// `Linear → SiLU → Linear → SiLU → Linear` with the widths read from the weights.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: [Linear; 3],
}

impl Mlp {
    fn new(vb: VarBuilder) -> Result<Self> {
        let lin = |i: usize| -> Result<Linear> {
            let w = vb.get_unchecked(&format!("{i}.weight"))?;
            let (out, inp) = w.dims2()?;
            candle_nn::linear(inp, out, vb.pp(i.to_string()))
        };
        Ok(Self {
            layers: [lin(0)?, lin(2)?, lin(4)?],
        })
    }

    fn in_dim(&self) -> Result<usize> {
        self.layers[0].weight().dim(1)
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = candle_nn::ops::silu(&self.layers[0].forward(xs)?)?;
        let xs = candle_nn::ops::silu(&self.layers[1].forward(&xs)?)?;
        self.layers[2].forward(&xs)
    }
}

#[derive(Debug, Clone)]
pub enum PositionNetKind {
    /// `linears` + `null_positive_feature`.
    TextOnly { linears: Mlp, null_positive: Tensor },
    /// `linears_text`, `linears_image`, `null_text_feature`, `null_image_feature`: 2N tokens.
    TextImage {
        linears_text: Mlp,
        linears_image: Mlp,
        null_text: Tensor,
        null_image: Tensor,
    },
    /// The original keypoint grounding net: one token per (person, joint) from learnt person and
    /// joint embeddings plus the Fourier embedding of the point.
    Keypoint {
        linears: Mlp,
        person_embeddings: Tensor,
        keypoint_embeddings: Tensor,
        null_person: Tensor,
        null_xy: Tensor,
    },
}

#[derive(Debug, Clone)]
pub struct PositionNet {
    pub kind: PositionNetKind,
    null_position: Tensor,
    /// Width of a phrase/image embedding (the text encoder's hidden size for SD 1.4: 768).
    pub positive_len: usize,
}

/// Inputs for one batch (for a keypoint net, `boxes` holds the points `[B, persons·17, 2]` and
/// `phrase_embeddings` is unused); masks are 1 for a used slot and 0 for an empty one (the unconditional half
/// of classifier-free guidance has all masks 0).
#[derive(Debug, Clone)]
pub struct PositionNetInput {
    pub boxes: Tensor,
    pub masks: Tensor,
    pub phrase_embeddings: Tensor,
    /// Text-image models: per-slot phrase and image masks and the image embeddings.
    pub phrase_masks: Option<Tensor>,
    pub image_masks: Option<Tensor>,
    pub image_embeddings: Option<Tensor>,
}

impl PositionNet {
    /// `positive_len` is checked against the weights; the MLP widths are read from them.
    pub fn new(vb: VarBuilder, positive_len: usize) -> Result<Self> {
        if vb.contains_tensor("keypoint_embeddings") {
            return Self::new_keypoint(vb, positive_len);
        }
        let null_position = vb.get(POSITION_DIM, "null_position_feature")?;
        let kind = if vb.contains_tensor("linears.0.weight") {
            let linears = Mlp::new(vb.pp("linears"))?;
            let positive_len = linears.in_dim()? - POSITION_DIM;
            PositionNetKind::TextOnly {
                null_positive: vb.get(positive_len, "null_positive_feature")?,
                linears,
            }
        } else {
            let linears_text = Mlp::new(vb.pp("linears_text"))?;
            let linears_image = Mlp::new(vb.pp("linears_image"))?;
            let positive_len = linears_text.in_dim()? - POSITION_DIM;
            PositionNetKind::TextImage {
                null_text: vb.get(positive_len, "null_text_feature")?,
                null_image: vb.get(positive_len, "null_image_feature")?,
                linears_text,
                linears_image,
            }
        };
        let found = match &kind {
            PositionNetKind::TextOnly { linears, .. }
            | PositionNetKind::Keypoint { linears, .. } => linears.in_dim()?,
            PositionNetKind::TextImage { linears_text, .. } => linears_text.in_dim()?,
        } - POSITION_DIM;
        if found != positive_len {
            candle_core::bail!(
                "position_net takes {found}-wide phrase embeddings but the UNet's cross_attention_dim is {positive_len}"
            );
        }
        Ok(Self {
            kind,
            null_position,
            positive_len,
        })
    }

    fn new_keypoint(vb: VarBuilder, dim: usize) -> Result<Self> {
        let linears = Mlp::new(vb.pp("linears"))?;
        let person_embeddings = vb.get_unchecked("person_embeddings")?;
        let (_, pdim) = person_embeddings.dims2()?;
        if pdim != dim {
            candle_core::bail!(
                "position_net.person_embeddings are {pdim} wide, the UNet's context is {dim}"
            );
        }
        let xy_dim = FOURIER_FREQS * 2 * 2;
        Ok(Self {
            kind: PositionNetKind::Keypoint {
                keypoint_embeddings: vb.get((KEYPOINTS_PER_PERSON, dim), "keypoint_embeddings")?,
                null_person: vb.get(dim, "null_person_feature")?,
                null_xy: vb.get(xy_dim, "null_xy_feature")?,
                person_embeddings,
                linears,
            },
            null_position: Tensor::zeros(xy_dim, vb.dtype(), vb.device())?,
            positive_len: dim,
        })
    }

    /// People the keypoint net has embeddings for (8 in the released checkpoint).
    pub fn max_persons(&self) -> Option<usize> {
        match &self.kind {
            PositionNetKind::Keypoint {
                person_embeddings, ..
            } => person_embeddings.dim(0).ok(),
            _ => None,
        }
    }

    pub fn is_keypoint(&self) -> bool {
        matches!(self.kind, PositionNetKind::Keypoint { .. })
    }

    /// `x·m + (1 − m)·null`, computed as torch does it.
    fn with_null(x: &Tensor, masks: &Tensor, null: &Tensor) -> Result<Tensor> {
        let m = masks.unsqueeze(2)?;
        let one_minus = m.affine(-1.0, 1.0)?;
        x.broadcast_mul(&m)? + one_minus.broadcast_mul(&null.reshape((1, 1, ()))?)?
    }

    pub fn forward(&self, input: &PositionNetInput) -> Result<Tensor> {
        let dtype = self.null_position.dtype();
        let masks = input.masks.to_dtype(dtype)?;
        if let PositionNetKind::Keypoint {
            linears,
            person_embeddings,
            keypoint_embeddings,
            null_person,
            null_xy,
        } = &self.kind
        {
            // `boxes` holds the points `[B, persons·17, 2]` for a keypoint net.
            let (b, n, _) = input.boxes.dims3()?;
            let (persons, dim) = person_embeddings.dims2()?;
            if n != persons * KEYPOINTS_PER_PERSON {
                candle_core::bail!(
                    "keypoint grounding needs {} points, got {n}",
                    persons * KEYPOINTS_PER_PERSON
                );
            }
            let person = person_embeddings
                .unsqueeze(1)?
                .broadcast_as((persons, KEYPOINTS_PER_PERSON, dim))?
                .reshape((n, dim))?;
            let joints = keypoint_embeddings
                .unsqueeze(0)?
                .broadcast_as((persons, KEYPOINTS_PER_PERSON, dim))?
                .reshape((n, dim))?;
            let emb = (person + joints)?
                .unsqueeze(0)?
                .broadcast_as((b, n, dim))?
                .contiguous()?;
            let xy = fourier_embedding(&input.boxes, 2)?.to_dtype(dtype)?;
            let emb = Self::with_null(&emb, &masks, null_person)?;
            let xy = Self::with_null(&xy, &masks, null_xy)?;
            return linears.forward(&Tensor::cat(&[&emb, &xy], 2)?);
        }
        let xyxy = || -> Result<Tensor> {
            let xyxy = fourier_box_embedding(&input.boxes)?.to_dtype(dtype)?;
            Self::with_null(&xyxy, &masks, &self.null_position)
        };
        match &self.kind {
            PositionNetKind::Keypoint { .. } => {
                candle_core::bail!("keypoint inputs were handled above")
            }
            PositionNetKind::TextOnly {
                linears,
                null_positive,
            } => {
                let pos = Self::with_null(
                    &input.phrase_embeddings.to_dtype(dtype)?,
                    &masks,
                    null_positive,
                )?;
                linears.forward(&Tensor::cat(&[&pos, &xyxy()?], 2)?)
            }
            PositionNetKind::TextImage {
                linears_text,
                linears_image,
                null_text,
                null_image,
            } => {
                let (pm, im, ie) = match (&input.phrase_masks, &input.image_masks, &input.image_embeddings) {
                    (Some(p), Some(i), Some(e)) => (p.to_dtype(dtype)?, i.to_dtype(dtype)?, e.to_dtype(dtype)?),
                    _ => candle_core::bail!("a text-image position net needs phrase masks, image masks and image embeddings"),
                };
                let text =
                    Self::with_null(&input.phrase_embeddings.to_dtype(dtype)?, &pm, null_text)?;
                let image = Self::with_null(&ie, &im, null_image)?;
                let xyxy = xyxy()?;
                let objs_text = linears_text.forward(&Tensor::cat(&[&text, &xyxy], 2)?)?;
                let objs_image = linears_image.forward(&Tensor::cat(&[&image, &xyxy], 2)?)?;
                Tensor::cat(&[&objs_text, &objs_image], 1)
            }
        }
    }

    pub fn is_text_image(&self) -> bool {
        matches!(self.kind, PositionNetKind::TextImage { .. })
    }
}
