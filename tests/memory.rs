//! The memory estimate and the check before a generation: the estimate grows with the canvas and
//! the batch, the weights are counted as loaded, and a generation that cannot fit is refused with
//! the estimate and the memory available before anything runs.

mod common;

use candle_core::{DType, Device};
use glichen::layout::Layout;
use glichen::pipeline::scheduler::SchedulerKind;
use glichen::pipeline::{
    CancelToken, GenerateInputs, GenerateOptions, GligenModel, MemoryCheck, PhaseHook,
    PipelineError,
};
use glichen::weights::ModelSource;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

fn model() -> &'static GligenModel {
    static MODEL: OnceLock<GligenModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        GligenModel::load(
            &ModelSource::Folder(common::model_dir("tiny-a")),
            &Device::Cpu,
            DType::F32,
        )
        .expect("tiny model")
    })
}

/// The one-box fixture at `side`×`side`, guided (scale 7.5) unless `guidance` says otherwise.
fn layout(side: u32, guidance: f64) -> (Layout, GenerateOptions) {
    let mut layout =
        Layout::load(common::case_dir("b_one_box").join("layout.json")).expect("fixture layout");
    layout.width = side;
    layout.height = side;
    layout.sampling.guidance_scale = Some(guidance);
    let options = GenerateOptions::from_layout(&layout, SchedulerKind::Pndm);
    (layout, options)
}

#[test]
fn the_weights_are_every_tensor_the_networks_took() {
    // the three weights files of the tiny model, all f32
    let mut on_disk = 0;
    for part in [
        "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    .into_iter()
    .chain(["vae/diffusion_pytorch_model.safetensors"])
    {
        for t in common::load_st(&common::model_dir("tiny-a").join(part)).values() {
            on_disk += t.elem_count() as u64 * 4;
        }
    }
    let counted = model().loaded_from.tensor_bytes;
    // the text encoder's `position_ids` buffer is stored but is no weight
    assert!(
        counted <= on_disk && counted * 100 >= on_disk * 99,
        "counted {counted} of {on_disk} bytes"
    );
    let files: Vec<String> = model()
        .loaded_from
        .files
        .iter()
        .map(|f| {
            f.path
                .strip_prefix(common::model_dir("tiny-a"))
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        files,
        [
            "text_encoder/model.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors"
        ]
    );
}

#[test]
fn the_estimate_grows_with_the_canvas_and_the_batch() {
    let m = model();
    let mut last = 0;
    for side in [64, 256, 512, 1024, 2048] {
        let (l, o) = layout(side, 7.5);
        let e = m.memory_estimate(&l, &o);
        assert_eq!(
            (e.width, e.height, e.batch, e.dtype),
            (side, side, 2, DType::F32)
        );
        assert_eq!(e.weights, m.loaded_from.tensor_bytes);
        assert!(e.activations() > last, "{side}: {e:?}");
        assert_eq!(e.total(), e.weights + e.activations());
        last = e.activations();
    }
    // 4× the pixels: a little under 4× the activations (the scratch does not grow)
    let small = m.memory_estimate(&layout(1024, 7.5).0, &layout(1024, 7.5).1);
    let large = m.memory_estimate(&layout(2048, 7.5).0, &layout(2048, 7.5).1);
    let ratio = large.activations() as f64 / small.activations() as f64;
    assert!((3.5..=4.0).contains(&ratio), "{ratio}");
    // Guidance doubles the UNet's batch; the VAE decodes one picture either way.
    let (l, guided) = layout(512, 7.5);
    let (_, unguided) = layout(512, 1.0);
    let (g, u) = (
        m.memory_estimate(&l, &guided),
        m.memory_estimate(&l, &unguided),
    );
    assert_eq!((g.batch, u.batch), (2, 1));
    assert!(g.unet > u.unet && g.unet < 2 * u.unet, "{g:?} {u:?}");
    assert_eq!(g.decode, u.decode);
}

#[test]
fn a_generation_that_cannot_fit_is_refused_before_anything_runs() {
    let m = model();
    let (l, mut o) = layout(2048, 7.5);
    o.memory_check = MemoryCheck::Limit(512 << 20);
    let phases = Arc::new(AtomicUsize::new(0));
    let counter = phases.clone();
    let inputs = GenerateInputs {
        on_phase: Some(PhaseHook(Arc::new(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        }))),
        ..Default::default()
    };
    let mut steps = 0;
    let result = m.generate_with(&l, &o, &inputs, &mut |_| steps += 1, &CancelToken::new());
    let Err(err) = result else {
        panic!("a 2048×2048 generation ran in 512 MiB");
    };
    assert!(matches!(err, PipelineError::Memory(_)), "{err:?}");
    assert_eq!(err.to_string(), REFUSAL_2048);
    assert_eq!(
        phases.load(Ordering::SeqCst),
        0,
        "not even the prompt was encoded"
    );
    assert_eq!(steps, 0);
}

/// What a 2048×2048 generation with the tiny model is refused with in 512 MiB (its latents are
/// 1024×1024: the tiny VAE scales by 2).
const REFUSAL_2048: &str = "this 2048×2048 generation needs about 9.2 GiB of memory for its \
     activations (batch 2, f32; 9.2 GiB in all with the 13.3 MiB of weights) but 512.0 MiB is \
     available: make the canvas smaller, or set GLICHEN_IGNORE_MEMORY_CHECK=1 (the command \
     line's --ignore-memory-check) to try anyway";

#[test]
fn the_check_can_be_turned_off_and_a_fitting_generation_runs() {
    let m = model();
    let (l, mut o) = layout(32, 7.5);
    let estimate = m.memory_estimate(&l, &o);
    o.memory_check = MemoryCheck::Limit(estimate.activations());
    let run = |o: &GenerateOptions| m.generate(&l, o, None, &mut |_| {}, &CancelToken::new());
    if let Err(e) = run(&o) {
        panic!("exactly the estimate fits: {e}");
    }
    o.memory_check = MemoryCheck::Limit(estimate.activations() - 1);
    assert!(matches!(run(&o), Err(PipelineError::Memory(_))));
    o.memory_check = MemoryCheck::Off;
    assert!(run(&o).is_ok());
}
