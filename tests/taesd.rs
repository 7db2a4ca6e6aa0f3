//! TAESD (`glichen::model::taesd`, diffusers' `AutoencoderTiny`) against diffusers 0.42.1 on the tiny
//! random model of `tests/fixtures/make_taesd_fixtures.py` (`tests/fixtures/taesd/`): decode (square,
//! non-square batch of 2, large latents that the tanh clamp bends), the other activations and bilinear
//! upsampling on the same weights, encode (square and odd sizes), the config as read from the folder,
//! the key names of the default configuration (`madebyollin/taesd`'s), and the errors of folders that
//! are not TAESD. Tolerance: relative L2 <= 1e-5, float32 on the CPU.
//! Print the measured errors with `cargo test --release --features testing --test taesd -- --nocapture`.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{check, fixtures, get, load_st, TempDir, MODULE_TOL};
use glichen::model::taesd::{
    load_folder, AutoencoderTiny, TaesdConfig, TaesdError, TinyDecoder, TinyEncoder,
};
use glichen::weights::{TensorFile, WeightsError};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

fn model_dir() -> PathBuf {
    fixtures().join("taesd").join("tiny-taesd")
}

fn refs() -> HashMap<String, Tensor> {
    load_st(&fixtures().join("taesd").join("refs.safetensors"))
}

fn load() -> AutoencoderTiny {
    load_folder(&model_dir(), &Device::Cpu, DType::F32).unwrap_or_else(|e| panic!("{e}"))
}

/// The fixture's weights under another config (diffusers' activations and upsamplers hold no tensors).
fn load_with(cfg: &TaesdConfig) -> AutoencoderTiny {
    let file = TensorFile::open(&model_dir().join("diffusion_pytorch_model.safetensors")).unwrap();
    AutoencoderTiny::new(file.into_var_builder(DType::F32, &Device::Cpu), cfg).unwrap()
}

#[test]
fn decode_matches_diffusers() {
    let vae = load();
    let refs = refs();
    for name in ["square", "wide", "large"] {
        let latents = get(&refs, &format!("latents_{name}"));
        let ours = vae.decode(latents).unwrap();
        check(
            &format!("decode {name} {:?}", latents.dims()),
            &ours,
            get(&refs, &format!("decoded_{name}")),
            MODULE_TOL,
        );
    }
}

#[test]
fn pipeline_latents_are_divided_by_the_scaling_factor() {
    let vae = load();
    assert_eq!(vae.config.scaling_factor, 1.0);
    let refs = refs();
    let latents = get(&refs, "latents_square");
    let direct = vae.decode(latents).unwrap();
    let piped = vae.decode_pipeline_latents(latents).unwrap();
    assert_eq!(common::max_abs_diff(&direct, &piped), 0.0);

    let mut cfg = vae.config.clone();
    cfg.scaling_factor = 2.0;
    let scaled = load_with(&cfg);
    let doubled = (latents * 2.0).unwrap();
    let piped = scaled.decode_pipeline_latents(&doubled).unwrap();
    assert!(common::max_abs_diff(&direct, &piped) < 1e-6);
}

#[test]
fn other_activations_and_bilinear_upsampling_match_diffusers() {
    let refs = refs();
    let base = TaesdConfig::from_file(&model_dir().join("config.json")).unwrap();
    for act in ["silu", "gelu", "mish"] {
        let cfg = TaesdConfig {
            act_fn: act.to_string(),
            ..base.clone()
        };
        let ours = load_with(&cfg)
            .decode(get(&refs, "latents_square"))
            .unwrap();
        check(
            &format!("decode square, act_fn {act}"),
            &ours,
            get(&refs, &format!("decoded_square_{act}")),
            MODULE_TOL,
        );
    }
    let cfg = TaesdConfig {
        upsample_fn: "bilinear".to_string(),
        ..base
    };
    let ours = load_with(&cfg).decode(get(&refs, "latents_wide")).unwrap();
    check(
        "decode wide, upsample_fn bilinear",
        &ours,
        get(&refs, "decoded_wide_bilinear"),
        MODULE_TOL,
    );
}

#[test]
fn encode_matches_diffusers() {
    let vae = load();
    assert!(vae.has_encoder());
    let refs = refs();
    for name in ["square", "odd"] {
        let images = get(&refs, &format!("images_{name}"));
        let ours = vae.encode(images).unwrap();
        check(
            &format!("encode {name} {:?}", images.dims()),
            &ours,
            get(&refs, &format!("encoded_{name}")),
            MODULE_TOL,
        );
    }
}

#[test]
fn decoder_only_weights_load_without_an_encoder() {
    let all = load_st(&model_dir().join("diffusion_pytorch_model.safetensors"));
    let decoder: HashMap<String, Tensor> = all
        .into_iter()
        .filter(|(k, _)| k.starts_with("decoder."))
        .collect();
    let dir = TempDir::new("taesd-decoder-only");
    std::fs::copy(model_dir().join("config.json"), dir.join("config.json")).unwrap();
    candle_core::safetensors::save(&decoder, dir.join("diffusion_pytorch_model.safetensors"))
        .unwrap();
    let vae = load_folder(dir.path(), &Device::Cpu, DType::F32).unwrap();
    assert!(!vae.has_encoder());
    let refs = refs();
    let err = vae.encode(get(&refs, "images_square")).unwrap_err();
    assert!(err.to_string().contains("no encoder"), "{err}");
    check(
        "decode square, decoder-only file",
        &vae.decode(get(&refs, "latents_square")).unwrap(),
        get(&refs, "decoded_square"),
        MODULE_TOL,
    );
}

#[test]
fn config_is_read_from_the_folder() {
    let vae = load();
    let c = &vae.config;
    assert_eq!(c.class_name.as_deref(), Some("AutoencoderTiny"));
    assert_eq!(c.decoder_block_out_channels, [16, 16, 16, 16]);
    assert_eq!(c.encoder_block_out_channels, [16, 16, 16, 16]);
    assert_eq!(c.num_decoder_blocks, [2, 1, 1, 1]);
    assert_eq!(c.num_encoder_blocks, [1, 2, 1, 1]);
    assert_eq!(c.latent_channels, 4);
    assert_eq!(c.act_fn, "relu");
    assert_eq!(c.upsample_fn, "nearest");
    assert_eq!(c.upscale_factor(), 8);
    let refs = refs();
    assert_eq!(
        vae.decode(get(&refs, "latents_wide")).unwrap().dims(),
        [2, 3, 48, 80]
    );
}

#[test]
fn defaults_are_diffusers_init_defaults() {
    let c = TaesdConfig::default();
    assert_eq!(
        (c.in_channels, c.out_channels, c.latent_channels),
        (3, 3, 4)
    );
    assert_eq!(c.encoder_block_out_channels, [64, 64, 64, 64]);
    assert_eq!(c.decoder_block_out_channels, [64, 64, 64, 64]);
    assert_eq!(c.num_encoder_blocks, [1, 3, 3, 3]);
    assert_eq!(c.num_decoder_blocks, [3, 3, 3, 1]);
    assert_eq!(
        (c.act_fn.as_str(), c.upsample_fn.as_str()),
        ("relu", "nearest")
    );
    assert_eq!(c.upsampling_scaling_factor, 2);
    assert_eq!((c.latent_magnitude, c.latent_shift), (3.0, 0.5));
    assert_eq!((c.scaling_factor, c.shift_factor), (1.0, 0.0));
    assert!(!c.force_upcast);
}

#[test]
fn missing_folder_is_a_clear_error() {
    let missing = fixtures().join("taesd").join("no-such-folder");
    let err = load_folder(&missing, &Device::Cpu, DType::F32).unwrap_err();
    assert!(matches!(err, TaesdError::NotAFolder { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-folder") && msg.contains("not a folder"),
        "{msg}"
    );
}

#[test]
fn missing_files_are_named() {
    let dir = TempDir::new("taesd-missing");
    let err = load_folder(dir.path(), &Device::Cpu, DType::F32).unwrap_err();
    assert!(
        matches!(err, TaesdError::Weights(WeightsError::Io { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("config.json"), "{err}");

    std::fs::copy(model_dir().join("config.json"), dir.join("config.json")).unwrap();
    let err = load_folder(dir.path(), &Device::Cpu, DType::F32).unwrap_err();
    assert!(
        matches!(err, TaesdError::Weights(WeightsError::Io { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("diffusion_pytorch_model.safetensors"),
        "{err}"
    );
}

#[test]
fn a_kl_vae_folder_is_not_taesd() {
    let err = load_folder(
        &fixtures().join("models").join("tiny-a").join("vae"),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap_err();
    assert!(matches!(err, TaesdError::NotTaesd { .. }), "{err:?}");
    assert!(err.to_string().contains("AutoencoderKL"), "{err}");
}

#[test]
fn weights_that_do_not_fit_the_config_name_the_tensor() {
    let dir = TempDir::new("taesd-mismatch");
    let text = std::fs::read_to_string(model_dir().join("config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["latent_channels"] = 8.into();
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    std::fs::copy(
        model_dir().join("diffusion_pytorch_model.safetensors"),
        dir.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let err = load_folder(dir.path(), &Device::Cpu, DType::F32).unwrap_err();
    assert!(matches!(err, TaesdError::Build { .. }), "{err:?}");
    assert!(err.to_string().contains("decoder.layers.0.weight"), "{err}");
}

#[test]
fn configs_diffusers_cannot_run_are_refused() {
    let dir = TempDir::new("taesd-bad-config");
    for (patch, expect) in [
        (
            r#"{"decoder_block_out_channels": [16, 32, 16, 16]}"#,
            "differ",
        ),
        (r#"{"num_decoder_blocks": [1, 1, 1]}"#, "equal length"),
        (r#"{"act_fn": "tanh"}"#, "act_fn"),
        (r#"{"upsample_fn": "area"}"#, "upsample_fn"),
    ] {
        std::fs::write(dir.join("config.json"), patch).unwrap();
        let err = TaesdConfig::from_file(&dir.join("config.json")).unwrap_err();
        assert!(matches!(err, TaesdError::Config { .. }), "{err:?}");
        assert!(err.to_string().contains(expect), "{patch}: {err}");
    }
}

#[test]
fn a_null_shift_factor_reads_as_zero() {
    let dir = TempDir::new("taesd-null-shift");
    std::fs::write(dir.join("config.json"), r#"{"shift_factor": null}"#).unwrap();
    let c = TaesdConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(c.shift_factor, 0.0);
}

/// Every tensor the default configuration (madebyollin/taesd's) asks for is one of diffusers'
/// `AutoencoderTiny()` state-dict keys with its shape, and none of those keys goes unused.
#[test]
fn default_config_uses_exactly_diffusers_keys() {
    let path = fixtures()
        .join("taesd")
        .join("default_state_dict_shapes.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let expected: BTreeMap<String, Vec<usize>> = serde_json::from_str(&text).unwrap();

    let cfg = TaesdConfig::default();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    TinyDecoder::new(vb.pp("decoder"), &cfg).unwrap();
    TinyEncoder::new(vb.pp("encoder"), &cfg).unwrap();
    let ours: BTreeMap<String, Vec<usize>> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    assert_eq!(ours, expected);
}

/// Loaded beside a model, TAESD decodes previews and, when asked, a draft's final latents; the
/// full render keeps the model's VAE.
#[test]
fn taesd_beside_a_model_finishes_drafts_only_when_asked() {
    use glichen::layout::Layout;
    use glichen::pipeline::{CancelToken, GenerateOptions, GligenModel, LoadOptions};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let options = LoadOptions {
        preview_decoder: Some(root.join("taesd/tiny-taesd").display().to_string()),
        ..LoadOptions::default()
    };
    let model = GligenModel::load_with(
        &glichen::weights::ModelSource::Folder(root.join("models/tiny-a")),
        &Device::Cpu,
        DType::F32,
        &options,
    )
    .unwrap();
    let mut layout = Layout::load(root.join("cases/a_one_box/layout.json")).unwrap();
    layout.sampling.steps = Some(2);
    let mut opts = GenerateOptions::from_layout(&layout, model.default_scheduler);
    let full = model
        .generate(&layout, &opts, None, &mut |_| {}, &CancelToken::new())
        .unwrap();
    let vae = full.image.unwrap();
    assert_eq!(vae.dimensions(), (32, 32), "the VAE's own size");
    opts.finish_with_preview_decoder = true;
    let draft = model
        .generate(&layout, &opts, None, &mut |_| {}, &CancelToken::new())
        .unwrap();
    let taesd = draft.image.unwrap();
    // TAESD upsamples the 16×16 latents 8×
    assert_eq!(taesd.dimensions(), (128, 128));
    assert_eq!(taesd, model.preview_rgb(&draft.latents).unwrap());

    // a decoder for other latents is refused naming the mismatch
    let err = GligenModel::load_with(
        &glichen::weights::ModelSource::Folder(root.join("models/tiny-a")),
        &Device::Cpu,
        DType::F32,
        &LoadOptions {
            preview_decoder: Some(root.join("models/tiny-a/vae").display().to_string()),
            ..LoadOptions::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("preview decoder"), "{err}");
}
