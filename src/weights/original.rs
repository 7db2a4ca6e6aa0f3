//! Original GLIGEN checkpoints (`gligen/gligen-*`): one torch pickle holding `model` (the UNet in
//! LDM naming with `position_net.*`), `autoencoder`, `text_encoder` (`transformer.text_model.*`),
//! `diffusion` (noise-schedule buffers) and `config_dict` (omegaconf objects, not read).
//! Every width and depth is read from tensor shapes; what shapes cannot tell follows the released
//! SD-1.4-based checkpoints: 8 UNet heads, 12 text heads, 32 norm groups, CLIP's vocabulary.

use super::{TensorFile, WeightsError};
use crate::layout::MapKind;
use crate::model::{ClipTextConfig, UNetConfig, VaeConfig};
use candle_core::{Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// What the released checkpoints use and their tensors do not record.
pub const UNET_HEADS: usize = 8;
pub const TEXT_HEADS: usize = 12;
pub const NORM_GROUPS: usize = 32;
pub const VAE_SCALING_FACTOR: f64 = 0.18215;

/// The grounding tokenizer a checkpoint carries, told apart by its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroundingKind {
    TextBox,
    TextImageBox,
    Keypoint,
    /// A whole-image spatial map: ConvNeXt `position_net` and `downsample_net`.
    Map(MapKind),
    /// Any other grounding tokenizer.
    Other,
}

/// An original checkpoint split into diffusers-named components.
pub struct OriginalCheckpoint {
    pub unet_config: UNetConfig,
    pub unet: TensorFile,
    pub clip_config: ClipTextConfig,
    pub text_encoder: TensorFile,
    pub vae_config: VaeConfig,
    pub vae: TensorFile,
    /// `alphas_cumprod` of the training schedule, when the checkpoint has the `diffusion` buffers.
    pub betas: Option<Vec<f64>>,
    pub grounding: GroundingKind,
}

fn unreadable(path: &Path, message: String) -> WeightsError {
    WeightsError::Unreadable {
        path: path.to_path_buf(),
        message,
    }
}

fn shape(t: &HashMap<String, Tensor>, key: &str, path: &Path) -> Result<Vec<usize>, WeightsError> {
    t.get(key)
        .map(|t| t.dims().to_vec())
        .ok_or_else(|| unreadable(path, format!("missing tensor `{key}`")))
}

/// Indices `k` of keys `prefix.k.…`.
fn indices(t: &HashMap<String, Tensor>, prefix: &str) -> BTreeSet<usize> {
    t.keys()
        .filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse().ok())
        .collect()
}

fn resnet_rename(rest: &str) -> String {
    const MAP: [(&str, &str); 6] = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    for (from, to) in MAP {
        if let Some(r) = rest.strip_prefix(from) {
            return format!("{to}{r}");
        }
    }
    rest.to_string()
}

/// UNet: LDM names → diffusers names, and the diffusers config that those shapes imply.
fn convert_unet(
    model: HashMap<String, Tensor>,
    path: &Path,
) -> Result<(UNetConfig, HashMap<String, Tensor>), WeightsError> {
    let conv_in = shape(&model, "input_blocks.0.0.weight", path)?;
    let (base, in_channels) = (conv_in[0], conv_in[1]);
    let inputs = indices(&model, "input_blocks.");
    let downsamples: Vec<usize> = inputs
        .iter()
        .copied()
        .filter(|k| model.contains_key(&format!("input_blocks.{k}.0.op.weight")))
        .collect();
    let levels = downsamples.len() + 1;
    let per_level = (inputs.len() - 1 - downsamples.len()) / levels;
    if per_level == 0 || 1 + levels * per_level + downsamples.len() != inputs.len() {
        return Err(unreadable(
            path,
            format!(
                "model: cannot infer the UNet layout from {} input blocks",
                inputs.len()
            ),
        ));
    }
    let stride = per_level + 1;
    let mut block_out = Vec::with_capacity(levels);
    let mut down_types = Vec::with_capacity(levels);
    for i in 0..levels {
        let k = 1 + i * stride;
        block_out.push(
            shape(
                &model,
                &format!("input_blocks.{k}.0.out_layers.3.weight"),
                path,
            )?[0],
        );
        let attn = model.contains_key(&format!("input_blocks.{k}.1.proj_in.weight"));
        down_types.push(if attn {
            "CrossAttnDownBlock2D"
        } else {
            "DownBlock2D"
        });
    }
    let mut up_types = Vec::with_capacity(levels);
    for i in 0..levels {
        let k = i * (per_level + 1);
        let attn = model.contains_key(&format!("output_blocks.{k}.1.proj_in.weight"));
        up_types.push(if attn {
            "CrossAttnUpBlock2D"
        } else {
            "UpBlock2D"
        });
    }
    let attn_key = model
        .keys()
        .find(|k| k.ends_with("transformer_blocks.0.attn2.to_k.weight"))
        .cloned()
        .ok_or_else(|| unreadable(path, "model: no cross-attention found".into()))?;
    let cross = shape(&model, &attn_key, path)?[1];
    let proj_in_key = attn_key.replace("transformer_blocks.0.attn2.to_k.weight", "proj_in.weight");
    let linear_projection = shape(&model, &proj_in_key, path)?.len() == 2;
    let depth_prefix = attn_key.replace("0.attn2.to_k.weight", "");
    let depth = indices(&model, &depth_prefix).len();
    let out_channels = shape(&model, "out.2.weight", path)?[0];
    let time_dim = shape(&model, "time_embed.0.weight", path)?[0];
    let config = serde_json::json!({
        "in_channels": in_channels,
        "out_channels": out_channels,
        "block_out_channels": block_out,
        "down_block_types": down_types,
        "up_block_types": up_types,
        "layers_per_block": per_level,
        "attention_head_dim": UNET_HEADS,
        "cross_attention_dim": cross,
        "norm_num_groups": NORM_GROUPS,
        "norm_eps": 1e-5,
        "use_linear_projection": linear_projection,
        "transformer_layers_per_block": depth,
        "time_embedding_dim": time_dim,
        "attention_type": "gated",
        "sample_size": 64,
    });
    let config: UNetConfig =
        serde_json::from_value(config).map_err(|e| unreadable(path, e.to_string()))?;
    if time_dim != base * 4 {
        tracing::debug!("time embedding width {time_dim} is not 4× {base}");
    }

    let mut out = HashMap::with_capacity(model.len());
    for (key, t) in model {
        let new = rename_unet_key(&key, stride, per_level);
        if let Some(new) = new {
            out.insert(new, t);
        }
    }
    Ok((config, out))
}

fn rename_unet_key(key: &str, stride: usize, per_level: usize) -> Option<String> {
    let simple: [(&str, &str); 5] = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    for (from, to) in simple {
        if let Some(r) = key.strip_prefix(from) {
            return Some(format!("{to}{r}"));
        }
    }
    if key.starts_with("position_net.") || key.starts_with("downsample_net.") {
        return Some(key.to_string());
    }
    let split3 = |rest: &str| -> Option<(usize, usize, String)> {
        let mut it = rest.splitn(3, '.');
        let k = it.next()?.parse().ok()?;
        let m = it.next()?.parse().ok()?;
        Some((k, m, it.next()?.to_string()))
    };
    if let Some(rest) = key.strip_prefix("input_blocks.") {
        let (k, m, rest) = split3(rest)?;
        let (level, j) = ((k - 1) / stride, (k - 1) % stride);
        return Some(if j == per_level {
            format!(
                "down_blocks.{level}.downsamplers.0.conv.{}",
                rest.strip_prefix("op.")?
            )
        } else if m == 0 {
            format!("down_blocks.{level}.resnets.{j}.{}", resnet_rename(&rest))
        } else {
            format!("down_blocks.{level}.attentions.{j}.{rest}")
        });
    }
    if let Some(rest) = key.strip_prefix("middle_block.") {
        let (m, rest) = rest.split_once('.')?;
        return Some(match m {
            "0" => format!("mid_block.resnets.0.{}", resnet_rename(rest)),
            "1" => format!("mid_block.attentions.0.{rest}"),
            _ => format!("mid_block.resnets.1.{}", resnet_rename(rest)),
        });
    }
    if let Some(rest) = key.strip_prefix("output_blocks.") {
        let (k, m, rest) = split3(rest)?;
        let (level, j) = (k / stride, k % stride);
        let is_upsampler = rest.starts_with("conv.") && m > 0;
        return Some(if m == 0 {
            format!("up_blocks.{level}.resnets.{j}.{}", resnet_rename(&rest))
        } else if is_upsampler {
            format!("up_blocks.{level}.upsamplers.0.{rest}")
        } else {
            format!("up_blocks.{level}.attentions.{j}.{rest}")
        });
    }
    None
}

/// VAE: LDM names → diffusers names (the decoder's `up` list runs in the opposite order).
fn convert_vae(
    ae: HashMap<String, Tensor>,
    path: &Path,
) -> Result<(VaeConfig, HashMap<String, Tensor>), WeightsError> {
    let levels = indices(&ae, "encoder.down.").len();
    if levels == 0 {
        return Err(unreadable(path, "autoencoder: no encoder blocks".into()));
    }
    let per_level = indices(&ae, "encoder.down.0.block.").len();
    let mut block_out = Vec::with_capacity(levels);
    for i in 0..levels {
        block_out.push(shape(&ae, &format!("encoder.down.{i}.block.0.conv1.weight"), path)?[0]);
    }
    let latent = shape(&ae, "post_quant_conv.weight", path)?[0];
    let in_channels = shape(&ae, "encoder.conv_in.weight", path)?[1];
    let out_channels = shape(&ae, "decoder.conv_out.weight", path)?[0];
    let config = serde_json::json!({
        "in_channels": in_channels,
        "out_channels": out_channels,
        "block_out_channels": block_out,
        "layers_per_block": per_level,
        "latent_channels": latent,
        "norm_num_groups": NORM_GROUPS,
        "scaling_factor": VAE_SCALING_FACTOR,
    });
    let config: VaeConfig =
        serde_json::from_value(config).map_err(|e| unreadable(path, e.to_string()))?;
    let mid = |rest: &str| -> String {
        let r = rest
            .replace("block_1.", "resnets.0.")
            .replace("block_2.", "resnets.1.")
            .replace("attn_1.norm.", "attentions.0.group_norm.")
            .replace("attn_1.q.", "attentions.0.to_q.")
            .replace("attn_1.k.", "attentions.0.to_k.")
            .replace("attn_1.v.", "attentions.0.to_v.")
            .replace("attn_1.proj_out.", "attentions.0.to_out.0.");
        format!("mid_block.{}", r.replace("nin_shortcut.", "conv_shortcut."))
    };
    let mut out = HashMap::with_capacity(ae.len());
    for (key, t) in ae {
        let new = if let Some((part, rest)) = key
            .split_once('.')
            .filter(|(p, _)| *p == "encoder" || *p == "decoder")
        {
            let body = if let Some(r) = rest.strip_prefix("mid.") {
                mid(r)
            } else if let Some(r) = rest.strip_prefix("norm_out.") {
                format!("conv_norm_out.{r}")
            } else if let Some(r) = rest
                .strip_prefix("down.")
                .or_else(|| rest.strip_prefix("up."))
            {
                let (i, r) = r.split_once('.').unwrap_or((r, ""));
                let i: usize = i.parse().unwrap_or(0);
                let (blocks, idx) = if part == "encoder" {
                    ("down_blocks", i)
                } else {
                    ("up_blocks", levels - 1 - i)
                };
                if let Some(r) = r.strip_prefix("block.") {
                    format!(
                        "{blocks}.{idx}.resnets.{}",
                        r.replace("nin_shortcut.", "conv_shortcut.")
                    )
                } else if let Some(r) = r.strip_prefix("downsample.") {
                    format!("{blocks}.{idx}.downsamplers.0.{r}")
                } else if let Some(r) = r.strip_prefix("upsample.") {
                    format!("{blocks}.{idx}.upsamplers.0.{r}")
                } else {
                    format!("{blocks}.{idx}.{r}")
                }
            } else {
                rest.to_string()
            };
            format!("{part}.{body}")
        } else {
            key.clone()
        };
        // diffusers' VAE attention is linear; LDM stored 1×1 convolutions.
        let t = if new.contains("mid_block.attentions.0.to_") && t.rank() == 4 {
            let (o, i, _, _) = t.dims4().map_err(|e| unreadable(path, e.to_string()))?;
            t.reshape((o, i))
                .map_err(|e| unreadable(path, e.to_string()))?
        } else {
            t
        };
        out.insert(new, t);
    }
    Ok((config, out))
}

fn convert_text_encoder(
    te: HashMap<String, Tensor>,
    path: &Path,
) -> Result<(ClipTextConfig, HashMap<String, Tensor>), WeightsError> {
    let out: HashMap<String, Tensor> = te
        .into_iter()
        .filter_map(|(k, t)| {
            let k = k.strip_prefix("transformer.").unwrap_or(&k).to_string();
            let k = k.strip_prefix("text_model.").unwrap_or(&k).to_string();
            (!k.ends_with("position_ids")).then_some((k, t))
        })
        .collect();
    let tok = shape(&out, "embeddings.token_embedding.weight", path)?;
    let pos = shape(&out, "embeddings.position_embedding.weight", path)?;
    let inter = shape(&out, "encoder.layers.0.mlp.fc1.weight", path)?[0];
    let layers = indices(&out, "encoder.layers.").len();
    let config = serde_json::json!({
        "vocab_size": tok[0],
        "hidden_size": tok[1],
        "intermediate_size": inter,
        "num_attention_heads": TEXT_HEADS,
        "num_hidden_layers": layers,
        "max_position_embeddings": pos[0],
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    });
    let config: ClipTextConfig =
        serde_json::from_value(config).map_err(|e| unreadable(path, e.to_string()))?;
    Ok((config, out))
}

impl OriginalCheckpoint {
    pub fn open(path: &Path, device: &Device) -> Result<Self, WeightsError> {
        let load = |key: &str| -> Result<HashMap<String, Tensor>, WeightsError> {
            TensorFile::open_pickle_key(path, key)?.into_tensors(device)
        };
        let model = load("model")?;
        let grounding = if model.contains_key("position_net.keypoint_embeddings") {
            GroundingKind::Keypoint
        } else if model.contains_key("position_net.null_positive_feature") {
            GroundingKind::TextBox
        } else if model.contains_key("position_net.null_text_feature") {
            GroundingKind::TextImageBox
        } else if model.contains_key("position_net.pos_embedding") {
            GroundingKind::Map(map_kind(&model, path)?)
        } else {
            GroundingKind::Other
        };
        let (unet_config, unet) = convert_unet(model, path)?;
        let (vae_config, vae) = convert_vae(load("autoencoder")?, path)?;
        let (clip_config, text_encoder) = convert_text_encoder(load("text_encoder")?, path)?;
        let betas = match TensorFile::open_pickle_key(path, "diffusion") {
            Ok(f) => {
                let d = f.into_tensors(device)?;
                match d.get("betas") {
                    Some(b) => Some(
                        b.to_dtype(candle_core::DType::F64)
                            .and_then(|b| b.to_vec1::<f64>())
                            .map_err(|e| unreadable(path, format!("diffusion.betas: {e}")))?,
                    ),
                    None => None,
                }
            }
            Err(_) => None,
        };
        Ok(Self {
            unet_config,
            unet: TensorFile::from_tensors(path, unet),
            clip_config,
            text_encoder: TensorFile::from_tensors(path, text_encoder),
            vae_config,
            vae: TensorFile::from_tensors(path, vae),
            betas,
            grounding,
        })
    }
}

/// The map kind of a spatial checkpoint. Semantic maps have their own input conv, HED no
/// downsampler weights and normal maps a 3-channel one; canny and depth are the same network, told
/// apart by the grounding tokenizer the checkpoint's `config_dict` names
/// (`ldm.modules.diffusionmodules.depth_grounding_net.PositionNet`), else by the file name.
fn map_kind(model: &HashMap<String, Tensor>, path: &Path) -> Result<MapKind, WeightsError> {
    if model.contains_key("position_net.in_conv.weight") {
        return Ok(MapKind::Sem);
    }
    let first_downsampler = model
        .iter()
        .filter(|(k, t)| k.starts_with("downsample_net.") && t.rank() == 4)
        .map(|(k, t)| (k.clone(), t.dims()[1]))
        .min();
    match first_downsampler {
        None => return Ok(MapKind::Hed),
        Some((_, 3)) => return Ok(MapKind::Normal),
        Some(_) => {}
    }
    let named = config_names(path)?;
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    for source in [named.as_slice(), stem.as_bytes()] {
        let has = |needle: &str| source.windows(needle.len()).any(|w| w == needle.as_bytes());
        match (has("canny"), has("depth")) {
            (true, false) => return Ok(MapKind::Canny),
            (false, true) => return Ok(MapKind::Depth),
            _ => {}
        }
    }
    Err(unreadable(
        path,
        "a canny or depth map checkpoint (the two share one network) whose config_dict names \
         neither `canny_grounding_net` nor `depth_grounding_net`: put canny or depth in its file \
         name"
            .into(),
    ))
}

/// The grounding-network module names in a checkpoint's pickle (its `config_dict` holds them as
/// strings), read bounded; empty when there is none.
fn config_names(path: &Path) -> Result<Vec<u8>, WeightsError> {
    use std::io::Read;
    let io = |e: std::io::Error| WeightsError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let Ok(mut zip) = zip::ZipArchive::new(std::io::BufReader::new(file)) else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = zip
        .file_names()
        .filter_map(Result::ok)
        .filter(|n| n.ends_with("data.pkl"))
        .map(std::borrow::Cow::into_owned)
        .collect();
    let mut found = Vec::new();
    for name in names {
        let Ok(entry) = zip.by_name(&name) else {
            continue;
        };
        let mut bytes = Vec::new();
        entry
            .take(super::pickle_guard::MAX_PICKLE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        for kind in [MapKind::Canny, MapKind::Depth] {
            let needle = format!("{kind}_grounding_net");
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.extend_from_slice(needle.as_bytes());
                found.push(b' ');
            }
        }
    }
    Ok(found)
}

/// Where Stable Diffusion's own first conv comes from, for a spatial-map checkpoint once its
/// grounding ends (the original code's `restore_first_conv_from_SD`).
pub const SD_CONV_IN_FILE: &str = "SD_input_conv_weight_bias.pth";
/// A diffusers GLIGEN model that carries SD 1.4's `conv_in` unchanged (GLIGEN froze it).
pub const SD_CONV_IN_REPO: &str = "masterful/gligen-1-4-generation-text-box";

/// SD's 4-channel `conv_in` weight and bias: `explicit` (a torch pickle with `weight`/`bias`, or
/// any weights file with `conv_in.weight`/`conv_in.bias`), else [`SD_CONV_IN_FILE`] beside the
/// checkpoint, else [`SD_CONV_IN_REPO`]'s UNet in the Hugging Face cache (never downloaded here).
/// `Ok(None)` when none is found; the caller decides whether the run needs it.
pub fn find_sd_conv_in(
    checkpoint: &Path,
    explicit: Option<&Path>,
) -> Result<Option<(PathBuf, Tensor, Tensor)>, WeightsError> {
    let read = |path: &Path| -> Result<(PathBuf, Tensor, Tensor), WeightsError> {
        let tensors = TensorFile::open(path)?.into_tensors(&Device::Cpu)?;
        for (w, b) in [("weight", "bias"), ("conv_in.weight", "conv_in.bias")] {
            if let (Some(w), Some(b)) = (tensors.get(w), tensors.get(b)) {
                return Ok((path.to_path_buf(), w.clone(), b.clone()));
            }
        }
        Err(unreadable(
            path,
            "holds neither `weight`/`bias` nor `conv_in.weight`/`conv_in.bias`".into(),
        ))
    };
    if let Some(path) = explicit {
        return read(path).map(Some);
    }
    if let Some(beside) = checkpoint.parent().map(|d| d.join(SD_CONV_IN_FILE)) {
        if beside.is_file() {
            return read(&beside).map(Some);
        }
    }
    let cache = hf_hub::Cache::from_env();
    for (revision, file) in [
        ("refs/pr/2", "unet/diffusion_pytorch_model.safetensors"),
        ("main", "unet/diffusion_pytorch_model.safetensors"),
        ("main", "unet/diffusion_pytorch_model.bin"),
    ] {
        let repo = hf_hub::Repo::with_revision(
            SD_CONV_IN_REPO.to_string(),
            hf_hub::RepoType::Model,
            revision.to_string(),
        );
        if let Some(path) = cache.repo(repo).get(file) {
            return read(&path).map(Some);
        }
    }
    Ok(None)
}

/// The CLIP model whose image tower the original code uses for text-image checkpoints
/// (`CLIPModel.from_pretrained` in `gligen_inference.prepare_batch`).
pub const IMAGE_ENCODER_REPO: &str = "openai/clip-vit-large-patch14";
/// What of [`IMAGE_ENCODER_REPO`] is needed: the text tower comes with the weights file, which has
/// no vision-only variant.
pub const IMAGE_ENCODER_FILES: [&str; 3] = [
    "config.json",
    "preprocessor_config.json",
    "model.safetensors",
];
/// GLIGEN's `projection_matrix` (github gligen/GLIGEN at f9dccb9, MIT licence; stored as
/// safetensors, tensor `projection_matrix`): maps ViT-L/14's 768-wide image embeddings into the
/// phrase-embedding space, `feature @ P`. The checkpoints do not carry it.
pub const PROJECTION_MATRIX: &[u8] =
    include_bytes!("../../assets/gligen_projection_matrix.safetensors");
/// The file a CLIP folder may hold to replace [`PROJECTION_MATRIX`] (a tower of another width).
pub const PROJECTION_MATRIX_FILE: &str = "projection_matrix.safetensors";

/// A CLIP model folder in transformers' layout: `config.json` (a `CLIPConfig` with
/// `vision_config`, or a `CLIPVisionConfig`), the weights, and `preprocessor_config.json` (or
/// `processor_config.json`).
fn is_clip_folder(dir: &Path) -> bool {
    dir.join("config.json").is_file()
        && (dir.join("preprocessor_config.json").is_file()
            || dir.join("processor_config.json").is_file())
}

/// Where an original text-image checkpoint's image tower comes from, first match wins: `explicit`
/// (a folder, or a hub repo id downloaded into the cache); an `image_encoder/` folder beside the
/// checkpoint; [`IMAGE_ENCODER_REPO`] from the hub cache, downloaded when missing.
pub fn find_image_encoder(
    checkpoint: &Path,
    explicit: Option<&str>,
    progress: &super::Progress,
) -> Result<PathBuf, WeightsError> {
    if let Some(spec) = explicit {
        let dir = Path::new(spec);
        if dir.is_dir() {
            if !is_clip_folder(dir) {
                return Err(WeightsError::NotAModel {
                    path: dir.to_path_buf(),
                    message: "not a CLIP folder: expected config.json and preprocessor_config.json (or processor_config.json) beside the weights".into(),
                });
            }
            return Ok(dir.to_path_buf());
        }
        if super::looks_like_repo_id(spec) {
            return super::catalogue::fetch_files(
                spec,
                "main",
                &IMAGE_ENCODER_FILES,
                progress.clone(),
            );
        }
        return Err(WeightsError::NotAModel {
            path: dir.to_path_buf(),
            message: "no such folder, and not a hub repo id (owner/name)".into(),
        });
    }
    if let Some(beside) = checkpoint.parent().map(|p| p.join("image_encoder")) {
        if is_clip_folder(&beside) {
            return Ok(beside);
        }
        if beside.is_dir() {
            tracing::warn!(
                "{} is not a CLIP folder (no config.json with preprocessor_config.json); using {IMAGE_ENCODER_REPO} from the hub",
                beside.display()
            );
        }
    }
    super::catalogue::fetch_files(
        IMAGE_ENCODER_REPO,
        "main",
        &IMAGE_ENCODER_FILES,
        progress.clone(),
    )
}

/// The image tower's config from a CLIP folder's `config.json`: the `vision_config` section of a
/// `CLIPConfig` (whose top-level `projection_dim` is the one `visual_projection` has), or the whole
/// file when it is a `CLIPVisionConfig`.
pub fn clip_vision_config_value(dir: &Path) -> Result<serde_json::Value, WeightsError> {
    let path = dir.join("config.json");
    let mut value: serde_json::Value = super::read_json(&path)?;
    if let Some(serde_json::Value::Object(mut vision)) = value
        .as_object_mut()
        .and_then(|m| m.remove("vision_config"))
    {
        if let Some(p) = value.get("projection_dim") {
            vision.insert("projection_dim".into(), p.clone());
        }
        return Ok(serde_json::Value::Object(vision));
    }
    Ok(value)
}

/// The weights file of a transformers CLIP folder (safetensors preferred).
pub fn clip_weights_path(dir: &Path) -> Result<PathBuf, WeightsError> {
    super::first_weights_file(
        dir,
        "image encoder",
        &["model.safetensors", "pytorch_model.bin"],
    )
}

/// GLIGEN's projection matrix `P` `[in, out]` (`feature @ P`): the folder's
/// [`PROJECTION_MATRIX_FILE`] when it has one, else the built-in ViT-L/14 one.
pub fn projection_matrix(dir: &Path, device: &Device) -> Result<Tensor, WeightsError> {
    let own = dir.join(PROJECTION_MATRIX_FILE);
    let (tensors, origin) = if own.is_file() {
        super::stamp::note_file(&own);
        (
            candle_core::safetensors::load(&own, device)
                .map_err(|e| unreadable(&own, e.to_string()))?,
            own,
        )
    } else {
        let origin = PathBuf::from("(built-in GLIGEN projection_matrix)");
        (
            candle_core::safetensors::load_buffer(PROJECTION_MATRIX, device)
                .map_err(|e| unreadable(&origin, e.to_string()))?,
            origin,
        )
    };
    let p = tensors
        .get("projection_matrix")
        .cloned()
        .ok_or_else(|| unreadable(&origin, "no tensor named `projection_matrix`".into()))?;
    if p.rank() != 2 {
        return Err(unreadable(
            &origin,
            format!("projection_matrix has shape {:?}, expected 2-D", p.dims()),
        ));
    }
    Ok(p)
}
