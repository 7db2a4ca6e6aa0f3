//! Loading model folders: both diffusers layouts load, the `.fp16` variant is found, and every
//! broken folder gives an error that names the file and the tensor (never a panic): a missing
//! tensor, a wrong shape, a garbage or truncated weights file, a folder without
//! `unet/config.json`, an unknown model spec. Also the catalogue entries the project relies on.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{copy_dir, model_dir, TempDir};
use glichen::pipeline::{GligenModel, PipelineError};
use glichen::weights::{resolve_model, DiffusersFolder, ModelSource, TensorFile, WeightsError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const UNET_ST: &str = "unet/diffusion_pytorch_model.safetensors";

/// A writable copy of a fixture model in a scratch folder.
fn copy_model(name: &str, tag: &str) -> (TempDir, PathBuf) {
    let tmp = TempDir::new(tag);
    let root = tmp.join(name);
    copy_dir(&model_dir(name), &root);
    (tmp, root)
}

fn load(root: &Path) -> Result<GligenModel, PipelineError> {
    GligenModel::load(
        &ModelSource::Folder(root.to_path_buf()),
        &Device::Cpu,
        DType::F32,
    )
}

fn load_err(root: &Path) -> String {
    match load(root) {
        Ok(_) => panic!("{}: expected the model to be refused", root.display()),
        Err(e) => {
            let msg = e.to_string();
            println!("{msg}");
            msg
        }
    }
}

/// Rewrites a safetensors file through candle after `edit` changed its tensors.
fn rewrite(path: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, path).unwrap();
}

#[test]
fn both_diffusers_layouts_load() {
    for (name, ext) in [("tiny-a", "safetensors"), ("tiny-b", "bin")] {
        let folder = DiffusersFolder::open(&model_dir(name)).unwrap();
        for component in ["unet", "text_encoder", "vae"] {
            let path = folder.weights_path(component).unwrap();
            assert_eq!(
                path.extension().unwrap(),
                ext,
                "{name} {component}: {}",
                path.display()
            );
        }
        let model = load(&model_dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(model.unet.position_net.is_some(), "{name}: position net");
    }
}

#[test]
fn resolve_model_accepts_a_folder() {
    let dir = model_dir("tiny-b");
    let spec = dir.to_str().unwrap();
    assert_eq!(
        resolve_model(spec, false).unwrap(),
        ModelSource::Folder(dir.clone())
    );
}

#[test]
fn missing_tensor_names_the_file_and_the_tensor() {
    for tensor in [
        "conv_in.weight",
        "mid_block.attentions.0.transformer_blocks.0.fuser.alpha_attn",
        "position_net.null_positive_feature",
        "position_net.linears.4.weight",
    ] {
        let (_tmp, root) = copy_model("tiny-a", "missing-tensor");
        let file = root.join(UNET_ST);
        rewrite(&file, |t| {
            assert!(t.remove(tensor).is_some(), "{tensor} exists in the fixture");
        });
        let msg = load_err(&root);
        assert!(
            msg.contains(&file.display().to_string()),
            "names the file: {msg}"
        );
        assert!(msg.contains(tensor), "names the tensor: {msg}");
        assert!(msg.contains("missing"), "{msg}");
    }
}

#[test]
fn wrong_shape_names_file_tensor_and_both_shapes() {
    let (_tmp, root) = copy_model("tiny-a", "wrong-shape");
    let file = root.join(UNET_ST);
    let name = "down_blocks.0.resnets.0.conv1.weight";
    let mut expected = Vec::new();
    rewrite(&file, |t| {
        let orig = t.get(name).expect("fixture tensor");
        expected = orig.dims().to_vec();
        let mut dims = expected.clone();
        dims[3] -= 1;
        t.insert(
            name.to_string(),
            Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let mut found = expected.clone();
    found[3] -= 1;
    let msg = load_err(&root);
    assert!(
        msg.contains(&file.display().to_string()),
        "names the file: {msg}"
    );
    assert!(msg.contains(name), "names the tensor: {msg}");
    assert!(
        msg.contains(&format!("{expected:?}")),
        "names the expected shape {expected:?}: {msg}"
    );
    assert!(
        msg.contains(&format!("{found:?}")),
        "names the found shape {found:?}: {msg}"
    );
}

#[test]
fn wrong_shape_in_the_text_encoder_and_vae() {
    for (component, file, name) in [
        (
            "text_encoder",
            "text_encoder/model.safetensors",
            "encoder.layers.1.mlp.fc1.weight",
        ),
        (
            "vae",
            "vae/diffusion_pytorch_model.safetensors",
            "decoder.conv_in.weight",
        ),
    ] {
        let (_tmp, root) = copy_model("tiny-a", "wrong-shape-2");
        let path = root.join(file);
        rewrite(&path, |t| {
            let orig = t
                .get(name)
                .unwrap_or_else(|| panic!("{component}: no {name}"));
            let mut dims = orig.dims().to_vec();
            dims[0] += 1;
            t.insert(
                name.to_string(),
                Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap(),
            );
        });
        let msg = load_err(&root);
        assert!(
            msg.contains(&path.display().to_string()),
            "{component}: names the file: {msg}"
        );
        assert!(msg.contains(name), "{component}: names the tensor: {msg}");
    }
}

#[test]
fn garbage_weights_file_names_the_file() {
    // Not a safetensors file at all, a truncated one, and a garbage torch pickle.
    type Corrupt = fn(&[u8]) -> Vec<u8>;
    let cases: [(&str, &str, Corrupt); 3] = [
        ("tiny-a", UNET_ST, |_| {
            b"this is not a safetensors file".to_vec()
        }),
        ("tiny-a", "vae/diffusion_pytorch_model.safetensors", |b| {
            b[..b.len() / 2].to_vec()
        }),
        ("tiny-b", "unet/diffusion_pytorch_model.bin", |_| {
            b"PK\x03\x04 not really a zip".to_vec()
        }),
    ];
    for (model, file, corrupt) in cases {
        let (_tmp, root) = copy_model(model, "garbage");
        let path = root.join(file);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, corrupt(&bytes)).unwrap();
        let msg = load_err(&root);
        assert!(
            msg.contains(&path.display().to_string()),
            "{model} {file}: names the file: {msg}"
        );
        match TensorFile::open(&path) {
            Err(e @ WeightsError::Unreadable { .. }) => {
                assert!(e.to_string().contains(&path.display().to_string()));
            }
            Err(e) => panic!("{file}: expected Unreadable, got {e:?}"),
            Ok(_) => panic!("{file}: garbage opened"),
        }
    }
}

#[test]
fn bad_config_names_the_file() {
    let (_tmp, root) = copy_model("tiny-a", "bad-config");
    let config = root.join("unet/config.json");
    std::fs::write(&config, "{ \"block_out_channels\": ").unwrap();
    let msg = load_err(&root);
    assert!(msg.contains(&config.display().to_string()), "{msg}");
}

#[test]
fn folder_without_unet_config_names_the_folder() {
    let (_tmp, root) = copy_model("tiny-a", "no-unet-config");
    std::fs::remove_file(root.join("unet/config.json")).unwrap();
    let err = DiffusersFolder::open(&root).unwrap_err();
    assert!(matches!(err, WeightsError::NotAModel { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&root.display().to_string()) && msg.contains("unet/config.json"),
        "{msg}"
    );
    // Through --model resolution and the pipeline too.
    let msg = resolve_model(root.to_str().unwrap(), false)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&root.display().to_string()) && msg.contains("unet/config.json"),
        "{msg}"
    );
    let msg = load_err(&root);
    assert!(
        msg.contains(&root.display().to_string()) && msg.contains("unet/config.json"),
        "{msg}"
    );
}

#[test]
fn missing_folder_and_missing_weights_are_named() {
    let tmp = TempDir::new("missing");
    let nowhere = tmp.join("no-such-model");
    let msg = load_err(&nowhere);
    assert!(msg.contains(&nowhere.display().to_string()), "{msg}");

    let (_tmp, root) = copy_model("tiny-a", "no-te-weights");
    let te = root.join("text_encoder/model.safetensors");
    std::fs::remove_file(&te).unwrap();
    let msg = load_err(&root);
    assert!(
        msg.contains(&root.join("text_encoder").display().to_string()),
        "names the folder: {msg}"
    );
    assert!(
        msg.contains("model.safetensors") && msg.contains("pytorch_model.bin"),
        "says what it looked for: {msg}"
    );
}

#[test]
fn fp16_variant_is_found_when_it_is_the_only_file() {
    let (_tmp, root) = copy_model("tiny-a", "fp16");
    let full = root.join(UNET_ST);
    let variant = root.join("unet/diffusion_pytorch_model.fp16.safetensors");
    // A real half-precision file under the variant name.
    let tensors = candle_core::safetensors::load(&full, &Device::Cpu).unwrap();
    let half: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F16).unwrap()))
        .collect();
    candle_core::safetensors::save(&half, &variant).unwrap();
    std::fs::remove_file(&full).unwrap();
    let folder = DiffusersFolder::open(&root).unwrap();
    assert_eq!(folder.weights_path("unet").unwrap(), variant);
    load(&root).unwrap_or_else(|e| panic!("fp16 variant: {e}"));

    // Renamed (still float32) works as well.
    std::fs::remove_file(&variant).unwrap();
    std::fs::copy(model_dir("tiny-a").join(UNET_ST), &variant).unwrap();
    load(&root).unwrap_or_else(|e| panic!("renamed variant: {e}"));
}

#[test]
fn full_precision_file_is_preferred_over_the_variant() {
    let (_tmp, root) = copy_model("tiny-a", "fp16-pref");
    // A broken variant next to the full file is never read.
    std::fs::write(
        root.join("unet/diffusion_pytorch_model.fp16.safetensors"),
        b"garbage",
    )
    .unwrap();
    let folder = DiffusersFolder::open(&root).unwrap();
    assert_eq!(folder.weights_path("unet").unwrap(), root.join(UNET_ST));
    load(&root).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn unknown_model_spec_is_an_error() {
    for spec in [
        "no such model",
        "./no/such/folder",
        "definitely-not-in-the-catalogue",
    ] {
        let err = resolve_model(spec, false).unwrap_err();
        assert!(
            matches!(err, WeightsError::UnknownModel(_)),
            "{spec}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(spec), "{msg}");
    }
}

#[test]
fn a_file_that_is_not_a_checkpoint_names_the_file() {
    let tmp = TempDir::new("not-ckpt");
    let file = tmp.join("model.pth");
    std::fs::write(&file, b"not a torch checkpoint").unwrap();
    let source = resolve_model(file.to_str().unwrap(), false).unwrap();
    assert_eq!(source, ModelSource::OriginalCheckpoint(file.clone()));
    let msg = match GligenModel::load(&source, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("garbage checkpoint loaded"),
        Err(e) => e.to_string(),
    };
    println!("{msg}");
    assert!(msg.contains(&file.display().to_string()), "{msg}");
}

#[test]
fn catalogue_lists_the_text_box_model_on_its_pr_branch() {
    let entries = glichen::weights::catalogue::entries();
    let e = entries
        .iter()
        .find(|e| e.repo == "masterful/gligen-1-4-generation-text-box")
        .expect("masterful/gligen-1-4-generation-text-box in the catalogue");
    assert_eq!(e.revision, "refs/pr/2");
    assert_eq!(e.format, glichen::weights::ModelFormat::Diffusers);
    let by_repo =
        glichen::weights::catalogue::find("masterful/gligen-1-4-generation-text-box").unwrap();
    assert_eq!(by_repo.revision, "refs/pr/2");
    assert_eq!(
        glichen::weights::catalogue::find(&e.name).unwrap().repo,
        e.repo
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_glichen"))
        .arg("models")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("masterful/gligen-1-4-generation-text-box@refs/pr/2"),
        "{text}"
    );
}

/// Sets `key` to `value` in a copied model's `<component>/config.json`.
fn set_config(root: &Path, component: &str, key: &str, value: serde_json::Value) {
    let path = root.join(component).join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg[key] = value;
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
}

#[test]
fn zero_text_encoder_heads_are_refused_naming_the_setting() {
    let (_tmp, root) = copy_model("tiny-a", "clip-heads-0");
    set_config(&root, "text_encoder", "num_attention_heads", 0.into());
    let msg = load_err(&root);
    assert!(msg.contains("num_attention_heads 0"), "{msg}");
}

#[test]
fn text_encoder_heads_that_do_not_divide_the_width_are_refused() {
    let (_tmp, root) = copy_model("tiny-a", "clip-heads-7");
    set_config(&root, "text_encoder", "num_attention_heads", 7.into());
    let msg = load_err(&root);
    assert!(
        msg.contains("not divisible by num_attention_heads 7"),
        "{msg}"
    );
}

#[test]
fn zero_unet_heads_are_refused_naming_the_setting() {
    let (_tmp, root) = copy_model("tiny-a", "unet-heads-0");
    set_config(&root, "unet", "attention_head_dim", 0.into());
    let msg = load_err(&root);
    assert!(msg.contains("attention_head_dim 0"), "{msg}");
}

#[test]
fn unet_heads_that_do_not_divide_a_block_are_refused_naming_block_and_setting() {
    let (_tmp, root) = copy_model("tiny-a", "unet-heads-3");
    set_config(&root, "unet", "num_attention_heads", 3.into());
    let msg = load_err(&root);
    assert!(
        msg.contains("num_attention_heads 3 of block 0 does not divide its 32 channels"),
        "{msg}"
    );
}

#[test]
fn a_rebuild_call_with_too_few_arguments_is_an_error_not_a_panic() {
    let file = common::fixtures().join("hostile/rebuild_tensor_three_args.bin");
    let err = match TensorFile::open(&file) {
        Ok(_) => panic!("a malformed pickle was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("rebuild_tensor_three_args.bin"), "{err}");
    assert!(err.contains("malformed torch pickle"), "{err}");
}

#[test]
fn a_pickle_that_would_run_a_command_is_refused_by_name_and_runs_nothing() {
    // Made by Python's own pickle from an object whose __reduce__ is os.system("touch …").
    let marker = Path::new("/tmp/glichen-pickle-ran-a-command");
    let _ = std::fs::remove_file(marker);
    let file = common::fixtures().join("hostile/reduce_runs_a_command.bin");
    let err = match TensorFile::open(&file) {
        Ok(_) => panic!("a pickle naming posix.system was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("reduce_runs_a_command.bin"), "{err}");
    assert!(err.contains("`posix.system`"), "{err}");
    assert!(!marker.exists(), "the command ran");
}

/// A torch-style checkpoint (zip with `archive/data.pkl`) holding `pickle`.
fn write_checkpoint(path: &Path, pickle: &[u8]) {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(pickle).unwrap();
    zip.finish().unwrap();
}

#[test]
fn a_million_nested_lists_are_refused_not_a_stack_overflow() {
    let tmp = TempDir::new("deep-pickle");
    let mut pickle = vec![0x80, 2];
    pickle.extend(std::iter::repeat_n(b']', 1_000_000));
    pickle.extend(std::iter::repeat_n(b'a', 999_999));
    pickle.push(b'.');
    for name in ["deep.bin", "deep.pth"] {
        let file = tmp.join(name);
        write_checkpoint(&file, &pickle);
        let err = match TensorFile::open(&file) {
            Ok(_) => panic!("a million nested lists were accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(name), "{err}");
        assert!(err.contains("nested more than 512 deep"), "{err}");
    }
}
