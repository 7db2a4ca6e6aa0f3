//! diffusers: the keyword arguments of `StableDiffusionGLIGENPipeline.__call__`.

use serde::{Deserialize, Deserializer, Serialize};

use crate::layout::{
    Entity, Inpaint, Layout, LayoutError, Sampling, SchedulerKind, ValidationErrors,
};

/// Keyword arguments of diffusers' `StableDiffusionGLIGENPipeline.__call__`,
/// so that a layout can be run in Python (`pipe(**args)`) or a Python call
/// reproduced here from a JSON dump of its kwargs.
///
/// Two fields are not pipeline kwargs and must be taken out before the
/// call: `seed` (build a `torch.Generator` from it) and, when set,
/// `gligen_inpaint_image` is a path/data URI that has to be loaded with
/// `diffusers.utils.load_image` first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffusersArgs {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Pixels; diffusers' `None` (the UNet's native size) reads as 512.
    #[serde(default = "default_side", deserialize_with = "side_or_default")]
    pub height: usize,
    #[serde(default = "default_side", deserialize_with = "side_or_default")]
    pub width: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_inference_steps: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gligen_scheduled_sampling_beta: Option<f64>,
    #[serde(default)]
    pub gligen_phrases: Vec<String>,
    /// Normalised `[x0, y0, x1, y1]`, like the layout's boxes.
    #[serde(default)]
    pub gligen_boxes: Vec<[f64; 4]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gligen_inpaint_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

fn default_side() -> usize {
    512
}

fn side_or_default<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Ok(Option::<usize>::deserialize(d)?.unwrap_or_else(default_side))
}

const DIFFUSERS: &str = "diffusers arguments";

impl Layout {
    /// The call arguments for diffusers' text-box GLIGEN pipeline. Image
    /// boxes, style images and keypoints have no place there, nor does a
    /// decaying grounding stage or a non-default scheduler (diffusers sets
    /// the scheduler on the pipeline, and its GLIGEN checkpoints ship with
    /// PNDM, so `pndm` is accepted and left implicit).
    pub fn to_diffusers_args(&self) -> Result<DiffusersArgs, LayoutError> {
        let mut issues = ValidationErrors::default();
        let mut phrases = Vec::new();
        let mut boxes = Vec::new();
        for (i, e) in self.entities.iter().enumerate() {
            match e {
                Entity::TextBox { phrase, bbox } => {
                    phrases.push(phrase.clone());
                    boxes.push(*bbox);
                }
                Entity::ImageBox { .. } | Entity::StyleImage { .. } => issues.push(
                    format!("entities[{i}]"),
                    format!(
                        "diffusers' StableDiffusionGLIGENPipeline takes text boxes only, not {} \
                         (those need StableDiffusionGLIGENTextImagePipeline)",
                        e.kind().plural()
                    ),
                ),
                Entity::Keypoints { .. } => issues.push(
                    format!("entities[{i}]"),
                    "diffusers has no keypoint GLIGEN pipeline",
                ),
                Entity::Map { .. } => issues.push(
                    format!("entities[{i}]"),
                    "diffusers has no spatial-map GLIGEN pipeline (those checkpoints are the \
                     original code's)",
                ),
            }
        }
        let s = &self.sampling;
        if matches!(s.alpha_decay, Some(d) if d != 0.0) {
            issues.push(
                "sampling.alpha_decay",
                "diffusers has no decaying grounding stage \
                 (gligen_scheduled_sampling_beta switches grounding off at once)",
            );
        }
        if s.scheduler == Some(SchedulerKind::Ddim) {
            issues.push(
                "sampling.scheduler",
                "diffusers takes the scheduler when the pipeline is built, not per call: \
                 set pipe.scheduler to a DDIMScheduler and leave it out here",
            );
        }
        if !issues.is_empty() {
            return Err(LayoutError::Unsupported {
                target: DIFFUSERS,
                issues,
            });
        }
        Ok(DiffusersArgs {
            prompt: self.prompt.clone(),
            negative_prompt: (!self.negative_prompt.is_empty())
                .then(|| self.negative_prompt.clone()),
            height: self.height as usize,
            width: self.width as usize,
            num_inference_steps: s.steps,
            guidance_scale: s.guidance_scale,
            gligen_scheduled_sampling_beta: s.alpha0,
            gligen_phrases: phrases,
            gligen_boxes: boxes,
            gligen_inpaint_image: self.inpaint.as_ref().map(|i| i.image.clone()),
            seed: s.seed,
        })
    }

    /// The layout a diffusers call describes. Lossless except that an empty
    /// `negative_prompt` comes back as `None` (the layout does not
    /// distinguish "empty" from "not given"; neither does the pipeline).
    pub fn from_diffusers_args(args: &DiffusersArgs) -> Result<Layout, LayoutError> {
        if args.gligen_phrases.len() != args.gligen_boxes.len() {
            return Err(LayoutError::field(
                "gligen_boxes",
                format!(
                    "{} boxes but {} phrases (diffusers needs one phrase per box)",
                    args.gligen_boxes.len(),
                    args.gligen_phrases.len()
                ),
            ));
        }
        let side = |name: &str, v: usize| {
            u32::try_from(v).map_err(|_| LayoutError::field(name, format!("{v} is too large")))
        };
        Ok(Layout {
            width: side("width", args.width)?,
            height: side("height", args.height)?,
            prompt: args.prompt.clone(),
            negative_prompt: args.negative_prompt.clone().unwrap_or_default(),
            entities: args
                .gligen_phrases
                .iter()
                .zip(&args.gligen_boxes)
                .map(|(phrase, bbox)| Entity::TextBox {
                    phrase: phrase.clone(),
                    bbox: *bbox,
                })
                .collect(),
            inpaint: args.gligen_inpaint_image.as_ref().map(|image| Inpaint {
                image: image.clone(),
            }),
            sampling: Sampling {
                steps: args.num_inference_steps,
                guidance_scale: args.guidance_scale,
                alpha0: args.gligen_scheduled_sampling_beta,
                alpha_decay: None,
                seed: args.seed,
                scheduler: None,
            },
        })
    }
}
