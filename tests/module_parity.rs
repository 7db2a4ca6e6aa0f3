//! Each network of both tiny fixture models against diffusers 0.42.1 / transformers 5.24 outputs
//! (`tests/fixtures/refs/<model>/`, written by `tests/fixtures/make_fixtures.py`): CLIP text tower,
//! position net, UNet (fusers on, off, no grounding; even and odd latent sizes), VAE decode, and the
//! scheduler's timesteps. Tolerance: relative L2 <= 1e-5 per module, float32 on the CPU. Print the
//! measured errors with `cargo test --release --test module_parity -- --nocapture`.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{check, get, ids_u32, load_st, model_dir, ref_file, rel_l2, MODULE_TOL};
use glichen::model::{Grounding, PositionNetInput};
use glichen::pipeline::scheduler::{build_scheduler, SchedulerConfig, SchedulerKind};
use glichen::pipeline::GligenModel;
use glichen::weights::{DiffusersFolder, ModelSource};
use std::collections::HashMap;
use std::sync::OnceLock;

const MODELS: [&str; 2] = ["tiny-a", "tiny-b"];

/// The prompts and phrases of `make_fixtures.py` (`CLIP_PROMPTS`, `CLIP_PHRASES`).
const CLIP_PROMPTS: [&str; 4] = [
    "",
    "a photo of a cat sitting on a red chair",
    "A BIRD's-eye view, 3 dogs & 2 cats!!",
    "Ünïcödé prompt — café, naïve façade, 東京の夜景 🌃✨, 🐶🐱 emoji, and it's really quite a long sentence that keeps going on and on with many many many words so that it certainly exceeds the seventy seven token limit of the CLIP tokenizer by a comfortable margin, doesn't it?",
];
const CLIP_PHRASES: [&str; 6] = [
    "a dog",
    "a red sports car",
    "tree",
    "a small yellow bird sitting on a thin branch",
    "猫",
    "a dog",
];

/// Each model is loaded once per test binary, as the pipeline loads it.
fn model(name: &str) -> &'static GligenModel {
    static A: OnceLock<GligenModel> = OnceLock::new();
    static B: OnceLock<GligenModel> = OnceLock::new();
    let cell = match name {
        "tiny-a" => &A,
        "tiny-b" => &B,
        other => panic!("unknown fixture model {other}"),
    };
    cell.get_or_init(|| {
        GligenModel::load(
            &ModelSource::Folder(model_dir(name)),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
    })
}

fn refs(model: &str, file: &str) -> HashMap<String, Tensor> {
    load_st(&ref_file(model, file))
}

// ---------------------------------------------------------------------------------------------------
// CLIP text tower

fn clip_last_hidden_state(name: &str) {
    let m = model(name);
    let r = refs(name, "clip.safetensors");
    let ids = ids_u32(get(&r, "input_ids"));
    let out = m.text_encoder.forward(&ids, m.tokenizer.eos_id).unwrap();
    check(
        &format!("{name} CLIP last_hidden_state [4,77]"),
        &out.last_hidden_state,
        get(&r, "last_hidden_state"),
        MODULE_TOL,
    );

    // The pipeline's prompt path (tokenizer + encoder) on the same prompts.
    let ids_rows = ids.to_vec2::<u32>().unwrap();
    for (i, prompt) in CLIP_PROMPTS.iter().enumerate() {
        let tok = m.tokenizer.encode(prompt, true).unwrap();
        assert_eq!(
            tok.ids, ids_rows[i],
            "{name}: prompt {i} tokenizes differently from the reference input_ids"
        );
        let mut warnings = Vec::new();
        let emb = m.encode_prompt(prompt, "prompt", &mut warnings).unwrap();
        let reference = get(&r, "last_hidden_state").i(i..i + 1).unwrap();
        check(
            &format!("{name} encode_prompt({i})"),
            &emb,
            &reference,
            MODULE_TOL,
        );
        assert_eq!(
            !warnings.is_empty(),
            tok.truncated_tokens > 0,
            "{name}: truncation warning for prompt {i}"
        );
    }
}

fn clip_pooler_output(name: &str) {
    let m = model(name);
    let r = refs(name, "clip.safetensors");
    // Phrases as the pipeline encodes them: padded to the longest, pooled at the first end token.
    let ids = ids_u32(get(&r, "phrase_input_ids"));
    let out = m.text_encoder.forward(&ids, m.tokenizer.eos_id).unwrap();
    check(
        &format!("{name} CLIP pooler_output [6,C]"),
        &out.pooler_output,
        get(&r, "pooler_output"),
        MODULE_TOL,
    );

    // Our tokenizer pads the phrases the same way, and the pipeline's phrase path agrees.
    let rows = ids.to_vec2::<u32>().unwrap();
    let mask = get(&r, "phrase_attention_mask").to_vec2::<i64>().unwrap();
    let longest = rows[0].len();
    for (i, phrase) in CLIP_PHRASES.iter().enumerate() {
        let tok = m.tokenizer.encode(phrase, false).unwrap();
        let real = mask[i].iter().filter(|&&v| v == 1).count();
        assert_eq!(
            tok.ids.len(),
            real,
            "{name}: phrase {i} length vs attention mask"
        );
        let mut padded = tok.ids.clone();
        padded.resize(longest, m.tokenizer.pad_id);
        assert_eq!(padded, rows[i], "{name}: phrase {i} ids");
    }
    let mut warnings = Vec::new();
    let pooled = m.encode_phrases(&CLIP_PHRASES, &mut warnings).unwrap();
    check(
        &format!("{name} encode_phrases"),
        &pooled,
        get(&r, "pooler_output"),
        MODULE_TOL,
    );
    assert!(warnings.is_empty());
}

#[test]
fn clip_last_hidden_state_tiny_a() {
    clip_last_hidden_state("tiny-a");
}

#[test]
fn clip_last_hidden_state_tiny_b() {
    clip_last_hidden_state("tiny-b");
}

#[test]
fn clip_pooler_output_tiny_a() {
    clip_pooler_output("tiny-a");
}

#[test]
fn clip_pooler_output_tiny_b() {
    clip_pooler_output("tiny-b");
}

// ---------------------------------------------------------------------------------------------------
// Position net

fn grounding_input(r: &HashMap<String, Tensor>) -> PositionNetInput {
    PositionNetInput {
        boxes: get(r, "boxes").clone(),
        masks: get(r, "masks").clone(),
        phrase_embeddings: get(r, "positive_embeddings").clone(),
        phrase_masks: None,
        image_masks: None,
        image_embeddings: None,
    }
}

fn position_net(name: &str) {
    let m = model(name);
    let r = refs(name, "position_net.safetensors");
    // Row 0 is unconditional (all masks 0: null features only), row 1 has 3 boxes.
    let masks = get(&r, "masks").to_vec2::<f32>().unwrap();
    assert!(
        masks[0].iter().all(|&v| v == 0.0) && masks[1].iter().filter(|&&v| v == 1.0).count() == 3
    );
    let objs = m.unet.grounding_tokens(&grounding_input(&r)).unwrap();
    let reference = get(&r, "objs");
    check(
        &format!("{name} position net objs [2,30,C]"),
        &objs,
        reference,
        MODULE_TOL,
    );
    // Each row separately too, so that an error confined to the null (or real) tokens cannot hide
    // in the other row's norm.
    for row in 0..2 {
        check(
            &format!("{name} position net objs row {row}"),
            &objs.i(row).unwrap(),
            &reference.i(row).unwrap(),
            MODULE_TOL,
        );
    }
}

#[test]
fn position_net_tiny_a() {
    position_net("tiny-a");
}

#[test]
fn position_net_tiny_b() {
    position_net("tiny-b");
}

// ---------------------------------------------------------------------------------------------------
// UNet

fn unet(name: &str, file: &str) {
    let m = model(name);
    let r = refs(name, file);
    let sample = get(&r, "sample");
    let t = get(&r, "timestep").to_scalar::<f32>().unwrap() as f64;
    let context = get(&r, "encoder_hidden_states");
    let objs = m.unet.grounding_tokens(&grounding_input(&r)).unwrap();
    let what = format!("{name} {file} {:?}", sample.dims());

    let on = m
        .unet
        .forward(
            sample,
            t,
            context,
            Some(&Grounding {
                objs: objs.clone(),
                gate_scale: 1.0,
            }),
        )
        .unwrap();
    check(
        &format!("{what} out_fuser_on"),
        &on,
        get(&r, "out_fuser_on"),
        MODULE_TOL,
    );
    let off = m
        .unet
        .forward(
            sample,
            t,
            context,
            Some(&Grounding {
                objs,
                gate_scale: 0.0,
            }),
        )
        .unwrap();
    check(
        &format!("{what} out_fuser_off"),
        &off,
        get(&r, "out_fuser_off"),
        MODULE_TOL,
    );
    let none = m.unet.forward(sample, t, context, None).unwrap();
    check(
        &format!("{what} out_no_gligen"),
        &none,
        get(&r, "out_no_gligen"),
        MODULE_TOL,
    );

    // The fusers must matter, in the reference and in ours, or a broken fuser would go unnoticed.
    let effect_ref = rel_l2(get(&r, "out_fuser_on"), get(&r, "out_fuser_off"));
    let effect_ours = rel_l2(&on, &off);
    println!(
        "{what}: fuser effect rel L2(on, off): reference {effect_ref:.3e}, ours {effect_ours:.3e}"
    );
    assert!(
        effect_ref > 1e-2,
        "{what}: fixture fusers have too little effect ({effect_ref:.3e})"
    );
    assert!(
        effect_ours > 1e-2,
        "{what}: our fusers have too little effect ({effect_ours:.3e})"
    );
}

#[test]
fn unet_tiny_a() {
    unet("tiny-a", "unet.safetensors");
}

#[test]
fn unet_odd_size_tiny_a() {
    unet("tiny-a", "unet_odd.safetensors");
}

#[test]
fn unet_tiny_b() {
    unet("tiny-b", "unet.safetensors");
}

#[test]
fn unet_odd_size_tiny_b() {
    unet("tiny-b", "unet_odd.safetensors");
}

/// The fixture weights have non-zero gates (a zero gate would make the fuser a no-op that no
/// output comparison could catch).
fn gates_nonzero(name: &str) {
    let folder = DiffusersFolder::open(&model_dir(name)).unwrap();
    let weights = folder.weights("unet").unwrap();
    let mut gates: Vec<String> = weights
        .names()
        .into_iter()
        .filter(|n| n.ends_with(".alpha_attn") || n.ends_with(".alpha_dense"))
        .collect();
    gates.sort();
    assert!(
        !gates.is_empty(),
        "{name}: no fuser gates in the UNet weights"
    );
    let mut negative = 0;
    for g in &gates {
        let v = weights
            .load(g, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(v.len(), 1, "{name}: {g} is not a scalar");
        assert!(
            v[0] != 0.0 && v[0].is_finite(),
            "{name}: gate {g} = {}",
            v[0]
        );
        negative += usize::from(v[0] < 0.0);
    }
    println!(
        "{name}: {} fuser gates, all non-zero ({negative} negative)",
        gates.len()
    );
}

#[test]
fn fuser_gates_are_nonzero_tiny_a() {
    gates_nonzero("tiny-a");
}

#[test]
fn fuser_gates_are_nonzero_tiny_b() {
    gates_nonzero("tiny-b");
}

// ---------------------------------------------------------------------------------------------------
// VAE

fn vae(name: &str) {
    let m = model(name);
    let r = refs(name, "vae.safetensors");
    let image = m.vae.decode(get(&r, "latents")).unwrap();
    check(
        &format!("{name} VAE decode {:?}", image.dims()),
        &image,
        get(&r, "image"),
        MODULE_TOL,
    );

    // 8-bit output as the pipeline's PIL image. A value within float rounding of a .5 tie may round
    // the other way, so a tiny fraction of pixels may be 1 off; never more than 1.
    let rgb = glichen::pipeline::preview::image_to_rgb8(&image).unwrap();
    let reference = get(&r, "image_u8");
    let (_, h, w, c) = reference.dims4().unwrap();
    assert_eq!((rgb.width() as usize, rgb.height() as usize, c), (w, h, 3));
    let expected = reference.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let ours = rgb.into_raw();
    assert_eq!(ours.len(), expected.len());
    let diffs: Vec<i32> = ours
        .iter()
        .zip(&expected)
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .collect();
    let max = diffs.iter().copied().max().unwrap_or(0);
    let off = diffs.iter().filter(|&&d| d != 0).count();
    let fraction = off as f64 / diffs.len() as f64;
    println!(
        "{name} VAE image_u8: {off} of {} values differ (max {max})",
        diffs.len()
    );
    assert!(max <= 1, "{name}: 8-bit image differs by up to {max}");
    assert!(
        fraction <= 1e-3,
        "{name}: {off} of {} 8-bit values differ",
        diffs.len()
    );
}

#[test]
fn vae_decode_tiny_a() {
    vae("tiny-a");
}

#[test]
fn vae_decode_tiny_b() {
    vae("tiny-b");
}

// ---------------------------------------------------------------------------------------------------
// Scheduler timesteps

fn scheduler_timesteps(name: &str) {
    let path = ref_file(name, "scheduler.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let m = model(name);
    let class = reference["class"].as_str().unwrap();
    assert_eq!(
        m.default_scheduler.class_name(),
        class,
        "{name}: default scheduler"
    );
    let from_folder =
        SchedulerConfig::from_file(model_dir(name).join("scheduler/scheduler_config.json"))
            .unwrap();
    let kind = from_folder.scheduler_type().unwrap();
    assert_eq!(Some(kind), SchedulerKind::from_class_name(class));
    let cfg = m.scheduler_config(kind).unwrap();
    let sigma = reference["init_noise_sigma"].as_f64().unwrap();
    let steps = reference["timesteps"].as_object().unwrap();
    assert!(!steps.is_empty());
    for (n, expected) in steps {
        let n: usize = n.parse().unwrap();
        let expected: Vec<f64> = expected
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as f64)
            .collect();
        let s = build_scheduler(&cfg, kind, n).unwrap();
        assert_eq!(
            s.timesteps(),
            expected.as_slice(),
            "{name}: {class} timesteps for {n} steps"
        );
        assert_eq!(s.num_inference_steps(), n);
        assert_eq!(s.init_noise_sigma(), sigma);
        // Every sampling step 0..n is reached, in order.
        let sampling: Vec<usize> = (0..expected.len()).map(|i| s.sampling_step(i)).collect();
        assert_eq!(sampling.first(), Some(&0));
        assert_eq!(sampling.last(), Some(&(n - 1)));
        assert!(sampling
            .windows(2)
            .all(|w| w[1] == w[0] || w[1] == w[0] + 1));
        println!(
            "{name}: {class} {n} steps: {} evaluations ok",
            expected.len()
        );
    }
}

#[test]
fn scheduler_timesteps_tiny_a() {
    scheduler_timesteps("tiny-a");
}

#[test]
fn scheduler_timesteps_tiny_b() {
    scheduler_timesteps("tiny-b");
}

#[test]
fn both_fixture_models_are_covered() {
    // The two models cover the two diffusers layouts the loader must read.
    for name in MODELS {
        assert!(model_dir(name).join("unet/config.json").is_file(), "{name}");
    }
    assert!(model_dir("tiny-a")
        .join("unet/diffusion_pytorch_model.safetensors")
        .is_file());
    assert!(model_dir("tiny-b")
        .join("unet/diffusion_pytorch_model.bin")
        .is_file());
}
