//! The position net's inputs: text boxes, text-image boxes and keypoints, padded to their slots,
//! with the phrase and image features they carry.

use super::{image_prep, Context, GligenModel, PipelineError};
use crate::layout::{Entity, Layout};
use crate::model::PositionNetInput;
use candle_core::{DType, Tensor};

/// diffusers' and the original code's number of grounding slots.
pub const MAX_GROUNDING_SLOTS: usize = 30;

/// diffusers' `gligen_normalize_constant`: image features are scaled to this length, about the
/// norm of a CLIP ViT-L/14 phrase embedding.
pub const IMAGE_FEATURE_NORM: f64 = 28.7;

/// What a text-image GLIGEN model needs to turn a picture into a grounding feature.
pub struct ImageGrounding {
    pub encoder: crate::model::clip_vision::ClipVisionModelWithProjection,
    pub project: crate::model::clip_vision::ImageProjection,
    pub processor: image_prep::ClipImageProcessorConfig,
    /// Whether a picture's alpha is dropped before the processor (see
    /// [`super::ModelOrigin::drops_image_alpha`]); set from the model's origin when loading.
    pub drop_alpha: bool,
}

/// The guided batch's two halves of a grounding input that both halves share: `[t, t]`.
fn both_halves(t: &Tensor, what: &str) -> Result<Tensor, PipelineError> {
    Tensor::cat(&[t, t], 0).ctx(what)
}

/// The guided batch's two halves of a mask: `[0, t]`, so that the unconditional half is
/// ungrounded.
fn conditional_half_only(t: &Tensor, what: &str) -> Result<Tensor, PipelineError> {
    Tensor::cat(&[&t.zeros_like().ctx(what)?, t], 0).ctx(what)
}

impl GligenModel {
    /// Pooled phrase embeddings `[P, C]`: the hidden state at each phrase's end token.
    pub fn encode_phrases(
        &self,
        phrases: &[&str],
        warnings: &mut Vec<String>,
    ) -> Result<Tensor, PipelineError> {
        let mut seqs = Vec::with_capacity(phrases.len());
        for (i, p) in phrases.iter().enumerate() {
            let tok = self.tokenizer.encode(p, false)?;
            if tok.truncated_tokens > 0 {
                // The phrase itself may be megabytes: quote its start only.
                warnings.push(format!(
                    "phrase {i} ({}) is longer than the text encoder's window; it was truncated",
                    quote_start(p)
                ));
            }
            seqs.push(tok.ids);
        }
        let longest = seqs.iter().map(Vec::len).max().unwrap_or(2);
        let mut flat = Vec::with_capacity(seqs.len() * longest);
        for s in &seqs {
            flat.extend_from_slice(s);
            flat.extend(std::iter::repeat_n(
                self.tokenizer.pad_id,
                longest - s.len(),
            ));
        }
        let ids =
            Tensor::from_vec(flat, (seqs.len(), longest), &self.device).ctx("phrase tokens")?;
        Ok(self
            .text_encoder
            .forward(&ids, self.tokenizer.eos_id)
            .ctx("phrase encoding")?
            .pooler_output)
    }

    /// The position net's input for `layout`, batched as `[unconditional (all masks 0),
    /// conditional]` when `guided`; `None` for a UNet without a position net.
    pub(super) fn grounding_input(
        &self,
        layout: &Layout,
        guided: bool,
        base_dir: Option<&std::path::Path>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<PositionNetInput>, PipelineError> {
        let Some(net) = self.unet.position_net.as_ref() else {
            return Ok(None);
        };
        let input = if net.is_keypoint() {
            self.keypoint_input(layout, guided, net.max_persons().unwrap_or(8))?
        } else if net.is_text_image() {
            self.text_image_input(layout, guided, base_dir, net.positive_len, warnings)?
        } else {
            self.text_box_input(layout, guided, net.positive_len, warnings)?
        };
        Ok(Some(input))
    }

    /// Text-box grounding: boxes, masks and phrase embeddings padded to 30 slots.
    fn text_box_input(
        &self,
        layout: &Layout,
        guided: bool,
        dim: usize,
        warnings: &mut Vec<String>,
    ) -> Result<PositionNetInput, PipelineError> {
        let mut phrases = Vec::new();
        let mut boxes = Vec::new();
        for e in &layout.entities {
            if let Entity::TextBox { phrase, bbox } = e {
                phrases.push(phrase.as_str());
                boxes.push(bbox.map(|v| v as f32));
            }
        }
        let n = boxes.len();
        let mut box_data = vec![0f32; MAX_GROUNDING_SLOTS * 4];
        let mut mask = vec![0f32; MAX_GROUNDING_SLOTS];
        for (i, b) in boxes.iter().enumerate() {
            box_data[i * 4..i * 4 + 4].copy_from_slice(b);
            mask[i] = 1.0;
        }
        let dev = &self.device;
        let emb = if n > 0 {
            let e = self
                .encode_phrases(&phrases, warnings)?
                .to_dtype(DType::F32)
                .ctx("phrase embeddings")?;
            let pad = Tensor::zeros((MAX_GROUNDING_SLOTS - n, dim), DType::F32, dev)
                .ctx("phrase padding")?;
            Tensor::cat(&[&e, &pad], 0).ctx("phrase embeddings")?
        } else {
            Tensor::zeros((MAX_GROUNDING_SLOTS, dim), DType::F32, dev).ctx("phrase embeddings")?
        };
        let boxes = Tensor::from_vec(box_data, (1, MAX_GROUNDING_SLOTS, 4), dev).ctx("boxes")?;
        let masks = Tensor::from_vec(mask, (1, MAX_GROUNDING_SLOTS), dev).ctx("masks")?;
        let emb = emb.unsqueeze(0).ctx("phrase embeddings")?;
        let (boxes, masks, emb) = if guided {
            (
                both_halves(&boxes, "boxes")?,
                conditional_half_only(&masks, "masks")?,
                both_halves(&emb, "phrase embeddings")?,
            )
        } else {
            (boxes, masks, emb)
        };
        Ok(PositionNetInput {
            boxes,
            masks,
            phrase_embeddings: emb.to_dtype(self.dtype).ctx("phrase embeddings")?,
            phrase_masks: None,
            image_masks: None,
            image_embeddings: None,
        })
    }

    /// The grounding feature of one picture: CLIP vision embedding, `image_project`, scaled to
    /// [`IMAGE_FEATURE_NORM`].
    fn image_feature(&self, img: &image::DynamicImage) -> Result<Tensor, PipelineError> {
        let g = self.image_grounding.as_ref().ok_or_else(|| {
            PipelineError::Invalid(
                "this model has no image encoder, so it cannot take image boxes".into(),
            )
        })?;
        let dropped;
        let img = if g.drop_alpha && img.color().has_alpha() {
            dropped = image::DynamicImage::ImageRgb8(img.to_rgb8());
            &dropped
        } else {
            img
        };
        let pixels = g
            .processor
            .preprocess(img, &self.device)
            .ctx("image preprocessing")?;
        let embeds = g
            .encoder
            .forward(&pixels.to_dtype(self.dtype).ctx("image encoder")?)
            .ctx("image encoder")?;
        crate::model::clip_vision::grounding_image_feature(&embeds, &g.project, IMAGE_FEATURE_NORM)
            .ctx("image projection")
    }

    /// Text-image grounding (diffusers' `gated-text-image`): one slot per text box, image box or
    /// style image, with separate phrase and image masks.
    fn text_image_input(
        &self,
        layout: &Layout,
        guided: bool,
        base_dir: Option<&std::path::Path>,
        dim: usize,
        warnings: &mut Vec<String>,
    ) -> Result<PositionNetInput, PipelineError> {
        let n = MAX_GROUNDING_SLOTS;
        let dev = &self.device;
        let mut boxes = vec![0f32; n * 4];
        let mut masks = vec![0f32; n];
        let mut phrase_masks = vec![0f32; n];
        let mut image_masks = vec![0f32; n];
        let zero = Tensor::zeros(dim, DType::F32, dev).ctx("grounding")?;
        let mut phrase_rows = vec![zero.clone(); n];
        let mut image_rows = vec![zero; n];
        let mut phrases: Vec<(usize, &str)> = Vec::new();
        let mut slot = 0;
        for (index, e) in layout.entities.iter().enumerate() {
            let Some(b) = e.grounding_box() else { continue };
            if slot >= n {
                break;
            }
            boxes[slot * 4..slot * 4 + 4].copy_from_slice(&b.map(|v| v as f32));
            masks[slot] = 1.0;
            if let Some(p) = e.phrase().filter(|p| !p.trim().is_empty()) {
                phrases.push((slot, p));
                phrase_masks[slot] = 1.0;
            }
            if e.image().is_some() {
                let img = layout.entity_image(index, base_dir)?;
                image_rows[slot] = self.image_feature(&img)?.squeeze(0).ctx("image feature")?;
                image_masks[slot] = 1.0;
            }
            slot += 1;
        }
        if !phrases.is_empty() {
            let texts: Vec<&str> = phrases.iter().map(|(_, p)| *p).collect();
            let emb = self
                .encode_phrases(&texts, warnings)?
                .to_dtype(DType::F32)
                .ctx("phrase embeddings")?;
            for (row, (slot, _)) in phrases.iter().enumerate() {
                phrase_rows[*slot] = emb.get(row).ctx("phrase embeddings")?;
            }
        }
        let stack = |rows: &[Tensor]| -> Result<Tensor, PipelineError> {
            Tensor::stack(rows, 0)
                .and_then(|t| t.unsqueeze(0))
                .ctx("grounding")
        };
        let row = |v: Vec<f32>| Tensor::from_vec(v, (1, n), dev).ctx("grounding");
        let mut input = PositionNetInput {
            boxes: Tensor::from_vec(boxes, (1, n, 4), dev).ctx("boxes")?,
            masks: row(masks)?,
            phrase_embeddings: stack(&phrase_rows)?,
            phrase_masks: Some(row(phrase_masks)?),
            image_masks: Some(row(image_masks)?),
            image_embeddings: Some(stack(&image_rows)?),
        };
        if guided {
            let both = |t: &Tensor| both_halves(t, "grounding");
            let conditional = |t: &Tensor| conditional_half_only(t, "grounding");
            input = PositionNetInput {
                boxes: both(&input.boxes)?,
                masks: conditional(&input.masks)?,
                phrase_embeddings: both(&input.phrase_embeddings)?,
                phrase_masks: input.phrase_masks.as_ref().map(conditional).transpose()?,
                image_masks: input.image_masks.as_ref().map(conditional).transpose()?,
                image_embeddings: input.image_embeddings.as_ref().map(both).transpose()?,
            };
        }
        input.phrase_embeddings = input
            .phrase_embeddings
            .to_dtype(self.dtype)
            .ctx("grounding")?;
        input.image_embeddings = input
            .image_embeddings
            .map(|t| t.to_dtype(self.dtype))
            .transpose()
            .ctx("grounding")?;
        Ok(input)
    }

    /// Keypoint grounding: `[persons·17, 2]` points in COCO order, mask 1 where a point is given.
    fn keypoint_input(
        &self,
        layout: &Layout,
        guided: bool,
        persons: usize,
    ) -> Result<PositionNetInput, PipelineError> {
        use crate::model::position_net::KEYPOINTS_PER_PERSON;
        let n = persons * KEYPOINTS_PER_PERSON;
        let mut points = vec![0f32; n * 2];
        let mut mask = vec![0f32; n];
        let people = layout.entities.iter().filter_map(|e| match e {
            Entity::Keypoints { points } => Some(points),
            _ => None,
        });
        for (p, person) in people.enumerate().take(persons) {
            for (j, point) in person.iter().enumerate().take(KEYPOINTS_PER_PERSON) {
                if let Some([x, y]) = point {
                    let idx = p * KEYPOINTS_PER_PERSON + j;
                    points[idx * 2] = *x as f32;
                    points[idx * 2 + 1] = *y as f32;
                    mask[idx] = 1.0;
                }
            }
        }
        let dev = &self.device;
        let points = Tensor::from_vec(points, (1, n, 2), dev).ctx("keypoints")?;
        let masks = Tensor::from_vec(mask, (1, n), dev).ctx("keypoint masks")?;
        let (points, masks) = if guided {
            (
                both_halves(&points, "keypoints")?,
                conditional_half_only(&masks, "keypoint masks")?,
            )
        } else {
            (points, masks)
        };
        let b = points.dim(0).ctx("keypoints")?;
        Ok(PositionNetInput {
            phrase_embeddings: Tensor::zeros((b, n, 1), self.dtype, dev).ctx("keypoints")?,
            boxes: points,
            masks,
            phrase_masks: None,
            image_masks: None,
            image_embeddings: None,
        })
    }
}

/// `text` quoted for a message, cut to its first 40 characters.
fn quote_start(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}
