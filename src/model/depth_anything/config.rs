//! `config.json` of a transformers `DepthAnythingForDepthEstimation` (transformers 5.24:
//! `DepthAnythingConfig` with a `Dinov2Config` backbone). Every size comes from the file; a field
//! the file leaves out takes transformers' default, and every error names the field.

use super::fields::Fields;
use super::DepthAnythingError;
use crate::weights::read_json;
use serde_json::{Map, Value};
use std::path::Path;

/// Whether the head returns relative inverse depth or metric distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepthEstimationType {
    /// Disparity up to scale and shift: near is large (a ReLU ends the head).
    Relative,
    /// Distance in metres, `sigmoid · max_depth`: far is large.
    Metric,
}

/// The backbone's MLP activation (transformers' `ACT2FN` names this crate supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// `gelu`: the exact erf form.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `quick_gelu`: `x · sigmoid(1.702 x)`.
    QuickGelu,
    Relu,
    /// `silu`, `swish`.
    Silu,
}

impl HiddenAct {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "quick_gelu" => Self::QuickGelu,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            _ => return None,
        })
    }
}

/// transformers' `Dinov2Config` as the Depth Anything backbone uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dinov2Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// The MLP's width is `int(hidden_size · mlp_ratio)`.
    pub mlp_ratio: f64,
    pub hidden_act: HiddenAct,
    pub layer_norm_eps: f64,
    /// The square picture the position embeddings were trained for (`image_size / patch_size`
    /// patches a side); other grids interpolate them.
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub qkv_bias: bool,
    /// Only the initial value of the `lambda1` tensors, which the weights hold.
    pub layerscale_value: f64,
    pub apply_layernorm: bool,
    /// Indices into `["stem", "stage1", ..]` (0 = the embeddings, i = the output of layer i),
    /// increasing: the hidden states the neck reads.
    pub out_indices: Vec<usize>,
}

impl Dinov2Config {
    /// `int(hidden_size · mlp_ratio)`, as `Dinov2MLP` sizes its layers.
    pub fn mlp_hidden_size(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio) as usize
    }

    /// Patches along a side of `image_size`.
    pub fn position_grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// transformers' `DepthAnythingConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthAnythingConfig {
    pub backbone: Dinov2Config,
    pub patch_size: usize,
    pub reassemble_hidden_size: usize,
    /// Per neck stage: > 1 a transposed convolution by that factor, 1 nothing, < 1 a strided
    /// 3×3 convolution with stride `int(1 / factor)`.
    pub reassemble_factors: Vec<f64>,
    pub neck_hidden_sizes: Vec<usize>,
    pub fusion_hidden_size: usize,
    /// Python index into the fused feature maps (−1: the last, the finest).
    pub head_in_index: i64,
    pub head_hidden_size: usize,
    pub depth_estimation_type: DepthEstimationType,
    /// Multiplies the head's output whatever the type (1 for the relative models).
    pub max_depth: f64,
}

impl Default for DepthAnythingConfig {
    /// `DepthAnythingConfig()`: the Depth Anything (V1/V2) Small architecture.
    fn default() -> Self {
        Self::from_value(&Value::Object(Map::new()), Path::new("(defaults)"))
            .expect("transformers' defaults are valid")
    }
}

impl DepthAnythingConfig {
    pub fn from_file(path: &Path) -> Result<Self, DepthAnythingError> {
        let json: Value = read_json(path)?;
        Self::from_value(&json, path)
    }

    /// From a parsed `config.json`; `path` names the file in errors.
    pub fn from_value(json: &Value, path: &Path) -> Result<Self, DepthAnythingError> {
        let top = Fields::new(path, "", json)?;
        if let Some(kind) = top.opt_str("model_type")? {
            if kind != "depth_anything" {
                return Err(top.unsupported(
                    "model_type",
                    &kind,
                    "not a Depth Anything config (\"depth_anything\")",
                ));
            }
        }
        let backbone = match json.get("backbone_config") {
            Some(v) if !v.is_null() => Dinov2Config::from_value(v, path, false)?,
            _ => {
                if let Some(name) = top.opt_str("backbone")? {
                    return Err(top.unsupported(
                        "backbone",
                        &name,
                        "a backbone named instead of described (backbone_config) cannot be built offline",
                    ));
                }
                Dinov2Config::from_value(&Value::Object(Map::new()), path, true)?
            }
        };

        let patch_size = top.square("patch_size", 14)?;
        let reassemble_hidden_size = top.usize("reassemble_hidden_size", 384)?;
        let reassemble_factors = top.f64_list("reassemble_factors", &[4.0, 2.0, 1.0, 0.5])?;
        let neck_hidden_sizes = top.usize_list("neck_hidden_sizes", &[48, 96, 192, 384])?;
        let fusion_hidden_size = top.usize("fusion_hidden_size", 64)?;
        let head_in_index = top.i64("head_in_index", -1)?;
        let head_hidden_size = top.usize("head_hidden_size", 32)?;
        let kind = top
            .opt_str("depth_estimation_type")?
            .unwrap_or_else(|| "relative".into());
        let depth_estimation_type = match kind.as_str() {
            "relative" => DepthEstimationType::Relative,
            "metric" => DepthEstimationType::Metric,
            _ => {
                return Err(top.unsupported(
                    "depth_estimation_type",
                    &kind,
                    "must be \"relative\" or \"metric\"",
                ))
            }
        };
        // transformers multiplies by it whatever the type, so null fails there too
        let max_depth = match json.get("max_depth") {
            None => 1.0,
            Some(v) => v
                .as_f64()
                .filter(|d| d.is_finite())
                .ok_or_else(|| top.invalid("max_depth", "must be a finite number", v))?,
        };

        let cfg = Self {
            backbone,
            patch_size,
            reassemble_hidden_size,
            reassemble_factors,
            neck_hidden_sizes,
            fusion_hidden_size,
            head_in_index,
            head_hidden_size,
            depth_estimation_type,
            max_depth,
        };
        cfg.check(&top)?;
        Ok(cfg)
    }

    /// What transformers would fail on at its first forward, said by field before any tensor is
    /// read.
    fn check(&self, top: &Fields) -> Result<(), DepthAnythingError> {
        let n = self.neck_hidden_sizes.len();
        if n == 0 {
            return Err(top.error("neck_hidden_sizes", "must not be empty".into()));
        }
        if self.reassemble_factors.len() != n {
            return Err(top.error(
                "reassemble_factors",
                format!(
                    "has {} factors for {n} neck_hidden_sizes (one per neck stage)",
                    self.reassemble_factors.len()
                ),
            ));
        }
        for &f in &self.reassemble_factors {
            let bad = if !(f > 0.0 && f.is_finite()) {
                Some("must be positive")
            } else if f > 1.0 && f.fract() != 0.0 {
                Some("above 1 must be whole (the kernel and stride of a transposed convolution)")
            } else {
                None
            };
            if let Some(reason) = bad {
                return Err(top.unsupported("reassemble_factors", &f.to_string(), reason));
            }
        }
        let outs = self.backbone.out_indices.len();
        if outs != n {
            return Err(top.error(
                "backbone_config.out_indices",
                format!("selects {outs} hidden states, the neck takes {n} (neck_hidden_sizes)"),
            ));
        }
        if self.head_index().is_none() {
            return Err(top.error(
                "head_in_index",
                format!(
                    "{} is outside the {n} fused feature maps",
                    self.head_in_index
                ),
            ));
        }
        if self.reassemble_hidden_size != self.backbone.hidden_size {
            return Err(top.error(
                "reassemble_hidden_size",
                format!(
                    "{} differs from backbone_config.hidden_size {}: the neck reads the backbone's features",
                    self.reassemble_hidden_size, self.backbone.hidden_size
                ),
            ));
        }
        if self.patch_size != self.backbone.patch_size {
            return Err(top.error(
                "patch_size",
                format!(
                    "{} differs from backbone_config.patch_size {}: the neck reshapes the backbone's tokens by it",
                    self.patch_size, self.backbone.patch_size
                ),
            ));
        }
        if self.fusion_hidden_size < 2 || self.head_hidden_size == 0 {
            return Err(top.error(
                "fusion_hidden_size",
                "fusion_hidden_size must be at least 2 and head_hidden_size at least 1".into(),
            ));
        }
        Ok(())
    }

    /// `head_in_index` as a position in the fused feature maps (Python's negative indexing).
    pub fn head_index(&self) -> Option<usize> {
        let n = self.neck_hidden_sizes.len() as i64;
        let i = if self.head_in_index < 0 {
            n + self.head_in_index
        } else {
            self.head_in_index
        };
        (0..n).contains(&i).then_some(i as usize)
    }
}

impl Dinov2Config {
    /// `defaults_of_depth_anything`: a missing `backbone_config`, for which transformers builds the
    /// Small backbone (`image_size` 518, 384 wide, 6 heads, stages 9–12, flat hidden states);
    /// otherwise `Dinov2Config`'s own defaults.
    fn from_value(
        json: &Value,
        path: &Path,
        defaults_of_depth_anything: bool,
    ) -> Result<Self, DepthAnythingError> {
        let f = Fields::new(path, "backbone_config.", json)?;
        let model_type = f.opt_str("model_type")?;
        if !defaults_of_depth_anything && model_type.as_deref() != Some("dinov2") {
            let found = model_type.unwrap_or_else(|| "(missing)".into());
            return Err(f.unsupported("model_type", &found, "the backbone must be \"dinov2\""));
        }
        let d = defaults_of_depth_anything;
        let hidden_size = f.usize("hidden_size", if d { 384 } else { 768 })?;
        let num_hidden_layers = f.usize("num_hidden_layers", 12)?;
        let num_attention_heads = f.usize("num_attention_heads", if d { 6 } else { 12 })?;
        let mlp_ratio = f.f64("mlp_ratio", 4.0)?;
        let act = f.opt_str("hidden_act")?.unwrap_or_else(|| "gelu".into());
        let hidden_act = HiddenAct::parse(&act).ok_or_else(|| {
            f.unsupported(
                "hidden_act",
                &act,
                "supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, quick_gelu, relu, silu, swish",
            )
        })?;
        let layer_norm_eps = f.f64("layer_norm_eps", 1e-6)?;
        let image_size = f.square("image_size", if d { 518 } else { 224 })?;
        let patch_size = f.square("patch_size", 14)?;
        let num_channels = f.usize("num_channels", 3)?;
        let qkv_bias = f.bool("qkv_bias", true)?;
        let layerscale_value = f.f64("layerscale_value", 1.0)?;
        let apply_layernorm = f.bool("apply_layernorm", true)?;
        if f.bool("use_swiglu_ffn", false)? {
            return Err(f.unsupported(
                "use_swiglu_ffn",
                "true",
                "the SwiGLU MLP (DINOv2 giant) is not implemented; no Depth Anything checkpoint uses it",
            ));
        }
        // transformers' DepthAnything reads flat [B, 1 + N, C] states and drops the class token
        // itself; reshaped maps make its reassemble stage fail
        if f.bool("reshape_hidden_states", !d)? {
            return Err(f.unsupported(
                "reshape_hidden_states",
                "true",
                "Depth Anything needs the flat hidden states (false); Dinov2Config's default true fails in transformers too",
            ));
        }
        if let Some(n) = f.opt_i64("num_register_tokens")? {
            if n != 0 {
                return Err(f.unsupported(
                    "num_register_tokens",
                    &n.to_string(),
                    "DINOv2 with registers is not supported",
                ));
            }
        }
        for (name, v) in [
            ("hidden_size", hidden_size),
            ("num_hidden_layers", num_hidden_layers),
            ("num_attention_heads", num_attention_heads),
            ("patch_size", patch_size),
            ("num_channels", num_channels),
        ] {
            if v == 0 {
                return Err(f.error(name, "must be at least 1".into()));
            }
        }
        if hidden_size % num_attention_heads != 0 {
            return Err(f.error(
                "num_attention_heads",
                format!("{num_attention_heads} does not divide hidden_size {hidden_size}"),
            ));
        }
        if !(mlp_ratio > 0.0 && mlp_ratio.is_finite()) || (hidden_size as f64 * mlp_ratio) < 1.0 {
            return Err(f.error("mlp_ratio", format!("{mlp_ratio} leaves no MLP width")));
        }
        if image_size < patch_size {
            return Err(f.error(
                "image_size",
                format!("{image_size} is smaller than one patch ({patch_size})"),
            ));
        }
        let out_indices = out_indices(&f, num_hidden_layers, d)?;
        Ok(Self {
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            mlp_ratio,
            hidden_act,
            layer_norm_eps,
            image_size,
            patch_size,
            num_channels,
            qkv_bias,
            layerscale_value,
            apply_layernorm,
            out_indices,
        })
    }
}

/// transformers' `set_output_features_output_indices` over the stage names `stem, stage1, ..`:
/// `out_features` (names) or `out_indices` (negative ones from the end), which must agree when
/// both are given, in increasing order without repeats; neither selects the last stage.
fn out_indices(
    f: &Fields,
    layers: usize,
    defaults_of_depth_anything: bool,
) -> Result<Vec<usize>, DepthAnythingError> {
    let stages = layers + 1;
    let from_features = match f.get("out_features") {
        None => None,
        Some(v) => {
            let names = v
                .as_array()
                .ok_or_else(|| f.invalid("out_features", "must be a list of stage names", v))?;
            let mut out = Vec::with_capacity(names.len());
            for name in names {
                let i = name.as_str().and_then(|s| stage_index(s, layers));
                out.push(i.ok_or_else(|| {
                    f.invalid(
                        "out_features",
                        &format!("names \"stem\" or \"stage1\"..\"stage{layers}\""),
                        name,
                    )
                })?);
            }
            Some(out)
        }
    };
    let from_indices = match f.get("out_indices") {
        None => None,
        Some(v) => {
            let list = v
                .as_array()
                .ok_or_else(|| f.invalid("out_indices", "must be a list of integers", v))?;
            let mut out = Vec::with_capacity(list.len());
            for item in list {
                let i = item
                    .as_i64()
                    .map(|i| if i < 0 { i + stages as i64 } else { i })
                    .filter(|i| (0..stages as i64).contains(i));
                out.push(i.ok_or_else(|| {
                    f.invalid(
                        "out_indices",
                        &format!("holds stage indices in -{stages}..{stages}"),
                        item,
                    )
                })? as usize);
            }
            Some(out)
        }
    };
    let (field, out) = match (from_features, from_indices) {
        (Some(a), Some(b)) if a != b => {
            return Err(f.error(
                "out_features",
                format!("names stages {a:?}, out_indices {b:?}: they must agree"),
            ))
        }
        (Some(a), _) => ("out_features", a),
        (None, Some(b)) => ("out_indices", b),
        (None, None) if defaults_of_depth_anything => ("out_indices", vec![9, 10, 11, 12]),
        (None, None) => ("out_indices", vec![layers]),
    };
    if out.windows(2).any(|w| w[0] >= w[1]) {
        return Err(f.error(
            field,
            format!("stages {out:?} must be increasing without repeats (the order of stage_names)"),
        ));
    }
    if out.iter().any(|&i| i > layers) {
        return Err(f.error(
            field,
            format!("stages {out:?} go past num_hidden_layers {layers}"),
        ));
    }
    Ok(out)
}

fn stage_index(name: &str, layers: usize) -> Option<usize> {
    if name == "stem" {
        return Some(0);
    }
    let i: usize = name.strip_prefix("stage")?.parse().ok()?;
    (1..=layers).contains(&i).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<DepthAnythingConfig, DepthAnythingError> {
        let v: Value = serde_json::from_str(json).unwrap();
        DepthAnythingConfig::from_value(&v, Path::new("config.json"))
    }

    fn field_of(e: DepthAnythingError) -> String {
        match e {
            DepthAnythingError::Config { field, .. }
            | DepthAnythingError::Unsupported { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    /// The hub's `depth-anything/Depth-Anything-V2-Small-hf` config.json.
    const V2_SMALL: &str = r#"{
      "architectures": ["DepthAnythingForDepthEstimation"],
      "backbone": null,
      "backbone_config": {
        "architectures": ["Dinov2Model"], "hidden_size": 384, "image_size": 518,
        "model_type": "dinov2", "num_attention_heads": 6,
        "out_features": ["stage3", "stage6", "stage9", "stage12"], "out_indices": [3, 6, 9, 12],
        "patch_size": 14, "reshape_hidden_states": false, "torch_dtype": "float32"
      },
      "fusion_hidden_size": 64, "head_hidden_size": 32, "head_in_index": -1,
      "initializer_range": 0.02, "layer_norm_eps": 1e-05, "model_type": "depth_anything",
      "neck_hidden_sizes": [48, 96, 192, 384], "patch_size": 14,
      "reassemble_factors": [4, 2, 1, 0.5], "reassemble_hidden_size": 384,
      "torch_dtype": "float32", "transformers_version": "4.40.0.dev0",
      "use_pretrained_backbone": false
    }"#;

    #[test]
    fn the_hub_small_config_reads_with_transformers_defaults() {
        let c = parse(V2_SMALL).unwrap();
        let b = &c.backbone;
        assert_eq!(
            (b.hidden_size, b.num_hidden_layers, b.num_attention_heads),
            (384, 12, 6)
        );
        assert_eq!(b.mlp_hidden_size(), 1536);
        assert_eq!(
            b.layer_norm_eps, 1e-6,
            "Dinov2's own default, not the top-level 1e-5"
        );
        assert_eq!(b.out_indices, [3, 6, 9, 12]);
        assert_eq!(b.position_grid(), 37);
        assert_eq!(b.hidden_act, HiddenAct::Gelu);
        assert!(b.qkv_bias && b.apply_layernorm);
        assert_eq!(c.depth_estimation_type, DepthEstimationType::Relative);
        assert_eq!(c.max_depth, 1.0);
        assert_eq!(c.head_index(), Some(3));
        assert_eq!(c.reassemble_factors, [4.0, 2.0, 1.0, 0.5]);
    }

    #[test]
    fn no_backbone_config_is_transformers_small_backbone() {
        let c = DepthAnythingConfig::default();
        assert_eq!(c.backbone.hidden_size, 384);
        assert_eq!(c.backbone.image_size, 518);
        assert_eq!(c.backbone.out_indices, [9, 10, 11, 12]);
        assert_eq!(c.neck_hidden_sizes, [48, 96, 192, 384]);
    }

    #[test]
    fn errors_name_the_field() {
        let with = |patch: &str| V2_SMALL.replacen("\"fusion_hidden_size\": 64,", patch, 1);
        let cases = [
            (
                with(r#""fusion_hidden_size": "wide","#),
                "fusion_hidden_size",
            ),
            (
                with(r#""fusion_hidden_size": 64, "depth_estimation_type": "absolute","#),
                "depth_estimation_type",
            ),
            (
                with(r#""fusion_hidden_size": 64, "max_depth": null,"#),
                "max_depth",
            ),
            (
                V2_SMALL.replace("[4, 2, 1, 0.5]", "[4, 2, 1]"),
                "reassemble_factors",
            ),
            (
                V2_SMALL.replace("\"head_in_index\": -1", "\"head_in_index\": 4"),
                "head_in_index",
            ),
            (
                V2_SMALL.replace("\"num_attention_heads\": 6", "\"num_attention_heads\": 5"),
                "backbone_config.num_attention_heads",
            ),
            (
                V2_SMALL.replace(
                    "\"patch_size\": 14, \"reshape_hidden_states\": false",
                    "\"patch_size\": 14, \"use_swiglu_ffn\": true",
                ),
                "backbone_config.use_swiglu_ffn",
            ),
            (
                V2_SMALL.replace(", \"reshape_hidden_states\": false", ""),
                "backbone_config.reshape_hidden_states",
            ),
            (
                V2_SMALL.replace(
                    "\"out_indices\": [3, 6, 9, 12]",
                    "\"out_indices\": [3, 6, 9, 11]",
                ),
                "backbone_config.out_features",
            ),
            (
                V2_SMALL.replace("\"stage12\"]", "\"stage13\"]"),
                "backbone_config.out_features",
            ),
            (
                V2_SMALL.replace("\"model_type\": \"dinov2\"", "\"model_type\": \"vit\""),
                "backbone_config.model_type",
            ),
            (
                V2_SMALL.replace("\"image_size\": 518", "\"image_size\": [518, 392]"),
                "backbone_config.image_size",
            ),
            (
                V2_SMALL.replace(
                    "\"model_type\": \"dinov2\"",
                    "\"model_type\": \"dinov2\", \"hidden_act\": \"elu\"",
                ),
                "backbone_config.hidden_act",
            ),
            (
                V2_SMALL.replace(
                    "\"reassemble_hidden_size\": 384",
                    "\"reassemble_hidden_size\": 256",
                ),
                "reassemble_hidden_size",
            ),
        ];
        for (json, field) in cases {
            let err = parse(&json).expect_err(field);
            let msg = err.to_string();
            assert!(msg.contains("config.json") && msg.contains(field), "{msg}");
            assert_eq!(field_of(err), field);
        }
    }

    #[test]
    fn out_indices_alone_negative_and_image_size_pairs() {
        let json = V2_SMALL
            .replace(
                "\"out_features\": [\"stage3\", \"stage6\", \"stage9\", \"stage12\"], ",
                "",
            )
            .replace("[3, 6, 9, 12]", "[3, 6, 9, -1]")
            .replace("\"image_size\": 518", "\"image_size\": [518, 518]");
        let c = parse(&json).unwrap();
        assert_eq!(c.backbone.out_indices, [3, 6, 9, 12]);
        assert_eq!(c.backbone.image_size, 518);
    }
}
