//! The Glichen side: builds the model for one dtype and times each row (warm-up, timed runs,
//! peak RSS, contention), including the whole `--full` generation and its first preview.

use super::random::random_sd14_gligen;
use super::rows::{fmt_secs, RowResult};
use super::system::{peak_rss_bytes, reset_peak_rss, status_kib, LoadProbe};
use super::workload::{
    bench_box_f32, bench_layout, bench_token, BENCH_TIMESTEP, PHRASE_TOKENS, PROMPT_TOKENS,
};
use super::{dtype_name, BenchArgs};
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use glichen::model::{Grounding, PositionNetInput};
use glichen::pipeline::scheduler::SchedulerKind;
use glichen::pipeline::{self, CancelToken, GenerateOptions, GligenModel};
use glichen::weights;
use std::time::Instant;

/// Times `f`: `warmup` untimed calls, then `runs` timed ones; peak RSS over all of them.
pub(super) fn measure(
    dev: &Device,
    key: &str,
    dtype: &str,
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> candle_core::Result<Tensor>,
) -> RowResult {
    reset_peak_rss();
    let mut run = || -> candle_core::Result<f64> {
        let start = Instant::now();
        let out = f()?;
        dev.synchronize()?;
        let elapsed = start.elapsed().as_secs_f64();
        drop(out);
        Ok(elapsed)
    };
    for i in 0..warmup {
        match run() {
            Ok(t) => eprintln!(
                "  glichen {dtype} {key}: warm-up {}/{warmup} {}",
                i + 1,
                fmt_secs(t)
            ),
            Err(e) => return RowResult::failed(key, dtype, format!("{e}")),
        }
    }
    let mut times = Vec::with_capacity(runs);
    let probe = LoadProbe::start();
    for i in 0..runs {
        match run() {
            Ok(t) => {
                eprintln!(
                    "  glichen {dtype} {key}: run {}/{runs} {}",
                    i + 1,
                    fmt_secs(t)
                );
                times.push(t);
            }
            Err(e) => return RowResult::failed(key, dtype, format!("{e}")),
        }
    }
    RowResult::from_times(key, dtype, times, peak_rss_bytes(), probe.other_load())
}

/// The dtype a row is reported under: the one asked for, also when bf16 on an AMX CPU runs as an
/// f32 model with bf16 products ([`pipeline::cpu_bf16_plan`]).
fn label(model: &GligenModel) -> &'static str {
    if model.unet.bf16_matmuls() {
        "bf16"
    } else {
        dtype_name(model.dtype)
    }
}

/// Every Glichen row of one dtype.
pub(super) fn bench_glichen(
    args: &BenchArgs,
    rows: &[&str],
    dev: &Device,
    dtype: DType,
) -> Vec<RowResult> {
    let dn = dtype_name(dtype);
    let fail_all = |e: String| {
        rows.iter()
            .map(|k| RowResult::failed(k, dn, e.clone()))
            .collect::<Vec<_>>()
    };
    let started = Instant::now();
    let model = match &args.model {
        Some(spec) => weights::resolve_model(spec, true)
            .map_err(anyhow::Error::from)
            .and_then(|src| GligenModel::load(&src, dev, dtype).map_err(anyhow::Error::from)),
        None => random_sd14_gligen(dev, dtype),
    };
    let model = match model {
        Ok(m) => m,
        Err(e) => return fail_all(format!("building the model: {e:#}")),
    };
    eprintln!(
        "glichen {dn}: {} built in {:.1} s (resident {:.2} GiB)",
        model.name,
        started.elapsed().as_secs_f64(),
        status_kib("VmRSS:").unwrap_or(0) as f64 / (1024.0 * 1024.0)
    );
    match bench_glichen_rows(args, rows, &model) {
        Ok(r) => r,
        Err(e) => fail_all(format!("{e:#}")),
    }
}

fn bench_glichen_rows(
    args: &BenchArgs,
    rows: &[&str],
    model: &GligenModel,
) -> Result<Vec<RowResult>> {
    let dev = &model.device;
    let dtype = model.dtype;
    let dn = label(model);
    let n_boxes = args.boxes;
    let slots = pipeline::MAX_GROUNDING_SLOTS;
    let lat = args.size / model.vae_scale_factor();
    let hidden = model.text_encoder.config.hidden_size;
    let max_len = model.text_encoder.config.max_position_embeddings;
    let (bos, eos) = (model.tokenizer.bos_id, model.tokenizer.eos_id);
    let in_ch = model.unet.config.in_channels;
    let latent_ch = model.vae.config.latent_channels;

    // Inputs, the same shapes as the diffusers script's.
    let mut prompt = vec![bos];
    prompt.extend((0..PROMPT_TOKENS).map(|j| bench_token(0, j)));
    prompt.resize(max_len, eos);
    let prompt_ids = Tensor::from_vec(prompt, (1, max_len), dev)?;
    let mut phrase_ids = Vec::with_capacity(n_boxes * PHRASE_TOKENS);
    for i in 0..n_boxes {
        phrase_ids.push(bos);
        phrase_ids.extend((0..PHRASE_TOKENS - 2).map(|j| bench_token(i + 1, j)));
        phrase_ids.push(eos);
    }
    let phrase_ids = Tensor::from_vec(phrase_ids, (n_boxes, PHRASE_TOKENS), dev)?;
    let mut boxes = vec![0f32; 2 * slots * 4];
    let mut masks = vec![0f32; 2 * slots];
    for b in 0..2 {
        for i in 0..n_boxes {
            boxes[(b * slots + i) * 4..(b * slots + i) * 4 + 4].copy_from_slice(&bench_box_f32(i));
            // CFG: the unconditional half has every mask 0.
            masks[b * slots + i] = b as f32;
        }
    }
    let positive_len = model
        .unet
        .position_net
        .as_ref()
        .map(|p| p.positive_len)
        .unwrap_or(hidden);
    let pn_input = PositionNetInput {
        boxes: Tensor::from_vec(boxes, (2, slots, 4), dev)?,
        masks: Tensor::from_vec(masks, (2, slots), dev)?,
        phrase_embeddings: Tensor::randn(0f32, 1f32, (2, slots, positive_len), dev)?
            .to_dtype(dtype)?,
        phrase_masks: None,
        image_masks: None,
        image_embeddings: None,
    };
    let objs = model.unet.grounding_tokens(&pn_input)?;
    let sample = Tensor::randn(0f32, 1f32, (2, in_ch, lat, lat), dev)?.to_dtype(dtype)?;
    let context = Tensor::randn(0f32, 1f32, (2, max_len, hidden), dev)?.to_dtype(dtype)?;
    let latents = Tensor::randn(0f32, 1f32, (1, latent_ch, lat, lat), dev)?.to_dtype(dtype)?;
    let on = Grounding {
        objs: objs.clone(),
        gate_scale: 1.0,
    };
    let off = Grounding {
        objs,
        gate_scale: 0.0,
    };

    let (w, r) = (args.warmup, args.runs);
    let mut out = Vec::new();
    for &key in rows {
        let res = match key {
            "clip_prompt" => measure(dev, key, dn, w, r, || {
                Ok(model
                    .text_encoder
                    .forward(&prompt_ids, eos)?
                    .last_hidden_state)
            }),
            "clip_phrases" => measure(dev, key, dn, w, r, || {
                Ok(model.text_encoder.forward(&phrase_ids, eos)?.pooler_output)
            }),
            "position_net" => measure(dev, key, dn, w, r, || {
                model.unet.grounding_tokens(&pn_input)
            }),
            "unet_fuser_on" => measure(dev, key, dn, w, r, || {
                model
                    .unet
                    .forward(&sample, BENCH_TIMESTEP, &context, Some(&on))
            }),
            "unet_fuser_off" => measure(dev, key, dn, w, r, || {
                model
                    .unet
                    .forward(&sample, BENCH_TIMESTEP, &context, Some(&off))
            }),
            "vae_decode" => measure(dev, key, dn, w, r, || model.vae.decode(&latents)),
            "taesd_decode" => {
                // madebyollin/taesd's sizes (the config defaults), random weights
                let built;
                let taesd = match &model.preview_decoder {
                    Some(t) => t,
                    None => {
                        built = glichen::model::AutoencoderTiny::new(
                            super::random::random_var_builder(
                                dtype,
                                dev,
                                std::collections::HashMap::new(),
                            ),
                            &glichen::model::TaesdConfig::default(),
                        )?;
                        &built
                    }
                };
                measure(dev, key, dn, w, r, || {
                    taesd.decode_pipeline_latents(&latents)
                })
            }
            "generation" | "first_preview" => continue,
            "cancel_latency" => cancel_latency(args, model),
            other => RowResult::failed(other, dn, "unknown row".into()),
        };
        out.push(res);
    }
    if rows.contains(&"generation") || rows.contains(&"first_preview") {
        out.extend(bench_generation(args, rows, model));
    }
    Ok(out)
}

fn bench_generation(args: &BenchArgs, rows: &[&str], model: &GligenModel) -> Vec<RowResult> {
    let dn = label(model);
    let wanted = |k: &str| rows.contains(&k);
    let fail = |e: String| -> Vec<RowResult> {
        ["generation", "first_preview"]
            .iter()
            .filter(|k| wanted(k))
            .map(|k| RowResult::failed(k, dn, e.clone()))
            .collect()
    };
    let layout = match bench_layout(args.size, args.boxes, args.steps, args.scheduler) {
        Ok(l) => l,
        Err(e) => return fail(format!("{e:#}")),
    };
    let mut options = GenerateOptions::from_layout(&layout, SchedulerKind::Pndm);
    options.decode = true;
    let mut totals = Vec::new();
    let mut firsts = Vec::new();
    reset_peak_rss();
    let probe = LoadProbe::start();
    for run in 0..args.full_runs.max(1) {
        let start = Instant::now();
        let mut first = None;
        let cancel = CancelToken::new();
        let res = model.generate(
            &layout,
            &options,
            None,
            &mut |u| {
                // The first step's first evaluation gives the preview (PLMS evaluates twice
                // in its first step; the preview comes after the first).
                if u.step == 0 && first.is_none() {
                    // What the studio shows: the cheap latent → RGB projection of the predicted x0.
                    let _ = pipeline::preview::latents_to_rgb(u.pred_x0);
                    first = Some(start.elapsed().as_secs_f64());
                }
                eprint!(
                    "\r  glichen {dn} generation {}/{}: step {}/{} {:.1} s   ",
                    run + 1,
                    args.full_runs.max(1),
                    u.step + 1,
                    u.total,
                    start.elapsed().as_secs_f64()
                );
            },
            &cancel,
        );
        eprintln!();
        if let Err(e) = res {
            return fail(format!("{e}"));
        }
        let total = start.elapsed().as_secs_f64();
        eprintln!(
            "  glichen {dn} generation: {} (first preview {})",
            fmt_secs(total),
            first.map(fmt_secs).unwrap_or_default()
        );
        totals.push(total);
        if let Some(f) = first {
            firsts.push(f);
        }
    }
    let peak = peak_rss_bytes();
    let load = probe.other_load();
    let mut out = Vec::new();
    if wanted("generation") {
        out.push(RowResult::from_times("generation", dn, totals, peak, load));
    }
    if wanted("first_preview") {
        out.push(RowResult::from_times(
            "first_preview",
            dn,
            firsts,
            peak,
            load,
        ));
    }
    out
}

/// Time from a Cancel to the generation's return, with the cancel landing at spread-out moments
/// of the first steps (so inside UNet evaluations, attention and convolutions alike).
fn cancel_latency(args: &BenchArgs, model: &GligenModel) -> RowResult {
    let dn = label(model);
    let layout = match bench_layout(args.size, args.boxes, args.steps, args.scheduler) {
        Ok(l) => l,
        Err(e) => return RowResult::failed("cancel_latency", dn, format!("{e:#}")),
    };
    let options = GenerateOptions::from_layout(&layout, SchedulerKind::Pndm);
    let mut latencies = Vec::new();
    reset_peak_rss();
    let probe = LoadProbe::start();
    for run in 0..args.runs.max(1) {
        let cancel = CancelToken::new();
        // 2.0 s, 3.7 s, 5.4 s, ... after the start: text encoding is over, the UNet is running
        let delay = std::time::Duration::from_secs_f64(2.0 + 1.7 * run as f64);
        let outcome = std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                let res = model.generate(&layout, &options, None, &mut |_| {}, &cancel);
                (res, Instant::now())
            });
            std::thread::sleep(delay);
            let cancelled_at = Instant::now();
            cancel.cancel();
            let (res, returned_at) = worker.join().map_err(|_| "the generation panicked")?;
            match res {
                Err(pipeline::PipelineError::Cancelled) => {
                    Ok(returned_at.duration_since(cancelled_at).as_secs_f64())
                }
                Err(e) => Err(format!("{e}")),
                Ok(_) => Err("the generation finished before the cancel; use more --steps".into()),
            }
        });
        match outcome {
            Ok(latency) => {
                eprintln!(
                    "  glichen {dn} cancel {}/{} at {:.1} s: stopped after {}",
                    run + 1,
                    args.runs.max(1),
                    delay.as_secs_f64(),
                    fmt_secs(latency)
                );
                latencies.push(latency);
            }
            Err(e) => return RowResult::failed("cancel_latency", dn, e),
        }
    }
    RowResult::from_times(
        "cancel_latency",
        dn,
        latencies,
        peak_rss_bytes(),
        probe.other_load(),
    )
}
