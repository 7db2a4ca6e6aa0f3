//! DPM-Solver++ (trained and Karras sigmas), Euler and UniPC against diffusers 0.42.1, step by step
//! (fixtures from `tests/fixtures/make_sampler_fixtures.py`).
//!
//! Each case is replayed teacher-forced: every `step` gets diffusers' own sample and model output at
//! that evaluation, in order (so the multistep history is built as diffusers builds it), and must
//! return diffusers' `prev_sample`. Timesteps must be equal exactly; sigmas equal to diffusers' with
//! correctly rounded sqrt (torch's float32 `** 0.5` on the CPU is up to 1 ulp off, which is the only
//! difference allowed against the stock values). `add_noise` at every timestep is checked too, as
//! the GLIGEN inpainting pipeline calls it (no begin index, repeated timesteps resolved to their
//! second occurrence). Print the errors with `cargo test --release --test samplers -- --nocapture`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use glichen::pipeline::scheduler::{build_scheduler, SchedulerConfig, SchedulerKind};
use serde_json::Value;

/// Per-step tolerance against stock diffusers: the ulps of torch's CPU sqrt in the sigmas
/// (~1e-7 relative per coefficient) are all that may differ.
const STEP_TOL: f64 = 1e-6;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/samplers")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn rel_l2(ours: &Tensor, reference: &Tensor) -> f64 {
    let (a, b) = (flat(ours), flat(reference));
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-30)).sqrt()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The scheduler exactly as the fixture script made it: `Class.from_config(config, **extra)`.
fn scheduler_config(meta: &Value) -> (SchedulerConfig, SchedulerKind) {
    // `unipc_karras` is UniPC with its own `use_karras_sigmas` option (in `extra`)
    let sampler: SchedulerKind = meta["sampler"]
        .as_str()
        .unwrap()
        .trim_end_matches("_karras")
        .parse()
        .unwrap();
    let sampler = if meta["sampler"] == "dpmpp_2m_karras" {
        SchedulerKind::Dpmpp2mKarras
    } else {
        sampler
    };
    let mut config = meta["config"].clone();
    if let Some(extra) = meta["extra"].as_object() {
        for (k, v) in extra {
            config[k] = v.clone();
        }
    }
    let karras = config
        .get("use_karras_sigmas")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // `unipc` with `use_karras_sigmas` in `extra` is UniPC's own option, not a kind of its own
    let cfg = SchedulerConfig::from_json_str_for(&config.to_string(), sampler).unwrap();
    if sampler == SchedulerKind::UniPc || sampler == SchedulerKind::Euler {
        assert_eq!(cfg.use_karras_sigmas, karras);
    }
    (cfg, sampler)
}

#[derive(Default, Debug)]
struct Errors {
    prev: f64,
    scaled: f64,
    add_noise: f64,
}

fn run_case(name: &str) -> Errors {
    let dir = fixture_dir();
    let meta = read_json(&dir.join(format!("{name}.json")));
    let t: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
            .unwrap();
    let (cfg, kind) = scheduler_config(&meta);
    let steps = meta["steps"].as_u64().unwrap() as usize;
    let mut sched = build_scheduler(&cfg, kind, steps).unwrap_or_else(|e| panic!("{name}: {e}"));

    let timesteps = floats(&meta["timesteps"]);
    assert_eq!(sched.timesteps(), timesteps.as_slice(), "{name}: timesteps");
    assert_eq!(sched.num_inference_steps(), timesteps.len(), "{name}");
    let init = meta["init_noise_sigma"].as_f64().unwrap();
    // Euler's is `(sigma_max ** 2 + 1) ** 0.5`: torch's CPU sqrt may be 1 ulp off
    let ulps =
        ((sched.init_noise_sigma() as f32).to_bits() as i64 - (init as f32).to_bits() as i64).abs();
    assert!(
        ulps <= 1,
        "{name}: init_noise_sigma {} vs {init}",
        sched.init_noise_sigma()
    );

    let samples = &t["samples"];
    let scaled = &t["scaled_inputs"];
    let outputs = &t["model_outputs"];
    let prevs = &t["prev_samples"];
    let mut errs = Errors::default();
    for (i, &ts) in timesteps.iter().enumerate() {
        let sample = samples.get(i).unwrap();
        let input = sched.scale_model_input(sample.clone(), ts).unwrap();
        errs.scaled = errs.scaled.max(rel_l2(&input, &scaled.get(i).unwrap()));
        let mo = outputs.get(i).unwrap();
        // previews ask for x0 before the step; it must not disturb the state
        let x0 = sched.pred_original_sample(&mo, ts, &sample).unwrap();
        assert!(flat(&x0).iter().all(|v| v.is_finite()), "{name}: x0 {i}");
        let prev = sched.step(&mo, ts, &sample).unwrap();
        let e = rel_l2(&prev, &prevs.get(i).unwrap());
        assert!(e <= STEP_TOL, "{name}: step {i} (t = {ts}) rel L2 {e:.3e}");
        errs.prev = errs.prev.max(e);
    }
    assert!(
        sched
            .step(&outputs.get(0).unwrap(), 0.5, &samples.get(0).unwrap())
            .is_err(),
        "{name}: a step past the schedule is an error"
    );

    // add_noise with a fresh scheduler and in the middle of a run agree (diffusers looks the
    // timestep up each time)
    let fresh = build_scheduler(&cfg, kind, steps).unwrap();
    let original = &t["add_noise_original"];
    let noise = &t["add_noise_noise"];
    let outs = &t["add_noise_out"];
    for (i, &ts) in timesteps.iter().enumerate() {
        let ours = fresh.add_noise(original, noise, ts).unwrap();
        errs.add_noise = errs.add_noise.max(rel_l2(&ours, &outs.get(i).unwrap()));
    }
    assert!(
        errs.scaled <= STEP_TOL,
        "{name}: scale_model_input {errs:?}"
    );
    assert!(errs.add_noise <= STEP_TOL, "{name}: add_noise {errs:?}");
    errs
}

#[test]
fn samplers_match_diffusers_step_by_step() {
    let names: Vec<String> =
        serde_json::from_value(read_json(&fixture_dir().join("cases.json"))).unwrap();
    assert!(names.len() >= 90, "only {} sampler cases", names.len());
    let mut worst = (0.0f64, String::new());
    for name in &names {
        let e = run_case(name);
        println!(
            "{name:<36} step {:.2e}  scale {:.2e}  add_noise {:.2e}",
            e.prev, e.scaled, e.add_noise
        );
        if e.prev > worst.0 {
            worst = (e.prev, name.clone());
        }
    }
    println!("worst step error {:.2e} ({})", worst.0, worst.1);
}

/// The sigmas agree with diffusers' computed with a correctly rounded sqrt, to the bit; against
/// the stock ones only where torch's sqrt rounded the same way.
#[test]
fn sigmas_match_diffusers_with_ieee_sqrt() {
    let names: Vec<String> =
        serde_json::from_value(read_json(&fixture_dir().join("cases.json"))).unwrap();
    for name in &names {
        let meta = read_json(&fixture_dir().join(format!("{name}.json")));
        let (cfg, kind) = scheduler_config(&meta);
        let steps = meta["steps"].as_u64().unwrap() as usize;
        let sigmas: Vec<f32> = match kind {
            SchedulerKind::Dpmpp2m | SchedulerKind::Dpmpp2mKarras => {
                glichen::pipeline::scheduler::DpmSolverMultistepScheduler::new(&cfg, steps)
                    .unwrap()
                    .sigmas()
                    .to_vec()
            }
            SchedulerKind::Euler => {
                glichen::pipeline::scheduler::EulerDiscreteScheduler::new(&cfg, steps)
                    .unwrap()
                    .sigmas()
                    .to_vec()
            }
            SchedulerKind::UniPc => {
                glichen::pipeline::scheduler::UniPcMultistepScheduler::new(&cfg, steps)
                    .unwrap()
                    .sigmas()
                    .to_vec()
            }
            other => panic!("{name}: unexpected {other}"),
        };
        let ieee: Vec<f32> = floats(&meta["sigmas_ieee_sqrt"])
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let stock: Vec<f32> = floats(&meta["sigmas"])
            .into_iter()
            .map(|v| v as f32)
            .collect();
        assert_eq!(sigmas.len(), stock.len(), "{name}: sigma count");
        for (i, ((&ours, &i3e), &st)) in sigmas.iter().zip(&ieee).zip(&stock).enumerate() {
            // Karras sigmas are float64 arithmetic, where there is no sqrt to differ
            let ulps = (ours.to_bits() as i64 - st.to_bits() as i64).abs();
            assert!(
                ours == i3e || ours == st,
                "{name}: sigma {i}: ours {ours:e}, diffusers {st:e} (ieee sqrt {i3e:e})"
            );
            assert!(ulps <= 1, "{name}: sigma {i} {ulps} ulps off");
        }
    }
}

/// A DPM-Solver config as diffusers writes it (with the bare `-Infinity` Python's json emits)
/// parses, names its own scheduler, and the layout names pick the Karras flag.
#[test]
fn dpm_solver_config_with_python_infinity_parses() {
    let json = r#"{
      "_class_name": "DPMSolverMultistepScheduler",
      "algorithm_type": "dpmsolver++",
      "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
      "lambda_min_clipped": -Infinity, "note": "Infinity in a string stays",
      "num_train_timesteps": 1000, "solver_order": 2, "steps_offset": 1,
      "timestep_spacing": "leading", "use_karras_sigmas": true
    }"#;
    let own = SchedulerConfig::from_json_str(json).unwrap();
    assert_eq!(own.lambda_min_clipped, f64::NEG_INFINITY);
    assert_eq!(own.scheduler_type(), Some(SchedulerKind::Dpmpp2mKarras));
    let plain = SchedulerConfig::from_json_str_for(json, SchedulerKind::Dpmpp2m).unwrap();
    assert!(!plain.use_karras_sigmas);
    assert_eq!(plain.timestep_spacing, own.timestep_spacing);
    // written back and read again, minus infinity survives
    let again = SchedulerConfig::from_json_str(&serde_json::to_string(&own).unwrap()).unwrap();
    assert_eq!(again.lambda_min_clipped, f64::NEG_INFINITY);
    build_scheduler(&own, SchedulerKind::Dpmpp2mKarras, 20).unwrap();
}

/// Options Glichen does not implement are refused by name instead of silently ignored.
#[test]
fn unsupported_sampler_options_are_refused_by_name() {
    for (json, kind, needle) in [
        (
            r#"{"algorithm_type": "sde-dpmsolver++"}"#,
            SchedulerKind::Dpmpp2m,
            "sde-dpmsolver++",
        ),
        (
            r#"{"use_exponential_sigmas": true}"#,
            SchedulerKind::Euler,
            "use_exponential_sigmas",
        ),
        (
            r#"{"interpolation_type": "log_linear"}"#,
            SchedulerKind::Euler,
            "log_linear",
        ),
        (
            r#"{"thresholding": true}"#,
            SchedulerKind::UniPc,
            "thresholding",
        ),
        (
            r#"{"solver_order": 7}"#,
            SchedulerKind::Dpmpp2m,
            "solver_order",
        ),
    ] {
        let cfg = SchedulerConfig::from_json_str_for(json, kind).unwrap();
        let err = build_scheduler(&cfg, kind, 10).err().unwrap().to_string();
        assert!(err.contains(needle), "{json}: {err}");
    }
}

/// Original checkpoints carry no scheduler file: the new samplers get SD 1.4's schedule (their own
/// betas, steps_offset 1, `leading` spacing), what a diffusers user gets from SD 1.4's config,
/// while `pndm` keeps the original sampler's timesteps.
#[test]
fn original_checkpoints_sample_with_sd14_schedules() {
    let ck =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/original/gligen-tiny-text.pth");
    let model = glichen::pipeline::GligenModel::load(
        &glichen::weights::ModelSource::OriginalCheckpoint(ck),
        &Device::Cpu,
        candle_core::DType::F32,
    )
    .unwrap();
    let ts = |kind: SchedulerKind, n: usize| -> Vec<f64> {
        let cfg = model.scheduler_config(kind).unwrap();
        build_scheduler(&cfg, kind, n).unwrap().timesteps().to_vec()
    };
    // DPM-Solver and UniPC lead with `T // (N + 1)`, Euler with `T // N`, each plus the offset
    assert_eq!(ts(SchedulerKind::Dpmpp2m, 4), [801.0, 601.0, 401.0, 201.0]);
    assert_eq!(ts(SchedulerKind::UniPc, 4), [801.0, 601.0, 401.0, 201.0]);
    assert_eq!(ts(SchedulerKind::Euler, 4), [751.0, 501.0, 251.0, 1.0]);
    // PLMS as the original sampler runs it: range(0, 1000, 250) + 1, the first step twice
    assert_eq!(
        ts(SchedulerKind::Pndm, 4),
        [751.0, 501.0, 501.0, 251.0, 1.0]
    );
    // and a whole run works with each
    let case =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/original/tb_orig_one_step");
    let layout = glichen::layout::Layout::load(case.join("layout.json")).unwrap();
    for kind in [
        SchedulerKind::Dpmpp2mKarras,
        SchedulerKind::Euler,
        SchedulerKind::UniPc,
    ] {
        let mut opts = glichen::pipeline::GenerateOptions::from_layout(&layout, kind);
        opts.scheduler = kind;
        opts.steps = 3;
        opts.decode = false;
        let out = model
            .generate(
                &layout,
                &opts,
                None,
                &mut |_| {},
                &glichen::pipeline::CancelToken::new(),
            )
            .unwrap();
        assert!(flat(&out.latents).iter().all(|v| v.is_finite()), "{kind}");
    }
}
