//! The model worker on its own, without a window: previews and the final image, cancel within one
//! step, a new Generate cancelling the old one, panic recovery (the `testing` feature's panic
//! command), a panic in each stage of a load or job (the `testing` feature's injected panics), a
//! weights file changed on disk after loading, the memory check, and a clean failure without a
//! model.

mod common;

use glichen::layout::Layout;
use glichen::pipeline::scheduler::SchedulerKind;
use glichen::pipeline::{GenerateOptions, MemoryCheck};
use glichen::worker::{Command, Event, JobId, LoadRequest, Stage, Worker};
use std::time::Duration;

fn tiny_model() -> String {
    common::model_dir("tiny-a").display().to_string()
}

fn fixture_layout(case: &str) -> Layout {
    Layout::load(common::case_dir(case).join("layout.json")).expect("fixture layout")
}

fn ready_worker() -> Worker {
    let worker = Worker::spawn(Box::new(|| {}));
    worker.load_model(LoadRequest::cpu(tiny_model()));
    loop {
        match worker
            .events()
            .recv_timeout(Duration::from_secs(120))
            .expect("worker event")
        {
            Event::ModelReady { .. } => return worker,
            Event::LoadFailed { message, .. } => panic!("load failed: {message}"),
            _ => {}
        }
    }
}

fn options_for(layout: &Layout) -> GenerateOptions {
    GenerateOptions::from_layout(layout, SchedulerKind::Pndm)
}

fn next_event(worker: &Worker) -> Event {
    worker
        .events()
        .recv_timeout(Duration::from_secs(120))
        .expect("worker event")
}

#[test]
fn worker_generates_with_previews_and_a_final_image() {
    let worker = ready_worker();
    let layout = fixture_layout("a_three_boxes");
    let job = worker.generate(layout.clone(), options_for(&layout));
    let mut steps = Vec::new();
    let mut phases = Vec::new();
    loop {
        match next_event(&worker) {
            Event::Phase { job: j, phase } => {
                assert_eq!(j, job);
                phases.push(phase);
            }
            Event::Step {
                job: j,
                step,
                total,
                latents,
                ..
            } => {
                assert_eq!(j, job);
                assert_eq!(total, 6);
                assert_eq!(
                    (latents.channels, latents.height, latents.width),
                    (4, 16, 16)
                );
                assert_eq!(latents.data.len(), 4 * 16 * 16);
                steps.push(step);
            }
            Event::Finished {
                job: j,
                image,
                latents,
                seed,
                ..
            } => {
                assert_eq!(j, job);
                assert_eq!((image.width(), image.height()), (32, 32));
                assert_eq!(latents.data.len(), 4 * 16 * 16);
                assert_eq!(seed, 12);
                break;
            }
            Event::Failed { message, .. } => panic!("failed: {message}"),
            _ => {}
        }
    }
    assert_eq!(steps, (0..6).collect::<Vec<_>>());
    // What the progress line says between step updates: the prompt, the grounding, each UNet
    // evaluation (this layout samples with DDIM: one per step), the decode.
    use glichen::pipeline::Phase;
    let mut expected = vec![Phase::Prompt, Phase::Grounding];
    expected.extend((0..6).map(|step| Phase::Evaluation { step, total: 6 }));
    expected.push(Phase::Decode);
    assert_eq!(phases, expected);
    worker.shutdown();
}

#[test]
fn worker_cancels_within_one_step() {
    let worker = ready_worker();
    // 48 px (24×24 latent cells) so that a step takes far longer than sending Cancel.
    let mut layout = fixture_layout("a_three_boxes");
    layout.width = 48;
    layout.height = 48;
    layout.sampling.steps = Some(500);
    let job = worker.generate(layout.clone(), options_for(&layout));
    let mut after_cancel = None;
    loop {
        match next_event(&worker) {
            Event::Step { step, .. } => match after_cancel.as_mut() {
                None => {
                    worker.cancel(job);
                    after_cancel = Some(0);
                    assert!(step < 10);
                }
                Some(n) => *n += 1,
            },
            Event::Cancelled { job: j } => {
                assert_eq!(j, job);
                break;
            }
            Event::Finished { .. } => panic!("the job finished instead of stopping"),
            Event::Failed { message, .. } => panic!("failed: {message}"),
            _ => {}
        }
    }
    assert!(
        after_cancel.unwrap() <= 1,
        "{} steps after Cancel",
        after_cancel.unwrap()
    );
    worker.shutdown();
}

#[test]
fn a_new_generate_cancels_the_running_job() {
    let worker = ready_worker();
    let mut long = fixture_layout("a_three_boxes");
    long.sampling.steps = Some(500);
    let first = worker.generate(long.clone(), options_for(&long));
    let short = fixture_layout("b_one_box");
    let mut second: Option<JobId> = None;
    let mut first_cancelled = false;
    loop {
        match next_event(&worker) {
            Event::Step { job, .. } if job == first && second.is_none() => {
                second = Some(worker.generate(short.clone(), options_for(&short)));
            }
            Event::Cancelled { job } => {
                assert_eq!(job, first);
                first_cancelled = true;
            }
            Event::Finished { job, .. } => {
                assert_eq!(Some(job), second);
                break;
            }
            Event::Failed { message, .. } => panic!("failed: {message}"),
            _ => {}
        }
    }
    assert!(first_cancelled);
    worker.shutdown();
}

#[test]
fn worker_survives_a_panic() {
    let worker = ready_worker();
    worker.send(Command::Panic("test panic".into()));
    loop {
        if let Event::WorkerRestarted { message } = next_event(&worker) {
            // between jobs: no stage (not the load before it)
            assert_eq!(message, "test panic");
            break;
        }
    }
    // The model is still there and jobs still run.
    let layout = fixture_layout("b_one_box");
    worker.generate(layout.clone(), options_for(&layout));
    loop {
        match next_event(&worker) {
            Event::Finished { .. } => break,
            Event::Failed { message, .. } => panic!("failed after restart: {message}"),
            _ => {}
        }
    }
    worker.shutdown();
}

#[test]
fn generating_without_a_model_fails_cleanly() {
    let worker = Worker::spawn(Box::new(|| {}));
    let layout = fixture_layout("b_one_box");
    let job = worker.generate(layout.clone(), options_for(&layout));
    loop {
        match next_event(&worker) {
            Event::Failed { job: j, message } => {
                assert_eq!(j, job);
                assert!(message.contains("no model"));
                break;
            }
            Event::Started { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Events until `job` ends (finished, failed or cancelled), the ending one last.
fn events_until_end(worker: &Worker, job: JobId) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        let event = next_event(worker);
        let end = matches!(
            &event,
            Event::Finished { job: j, .. } | Event::Failed { job: j, .. } | Event::Cancelled { job: j }
                if *j == job
        );
        events.push(event);
        if end {
            return events;
        }
    }
}

/// Runs `layout` and expects its picture.
fn generates(worker: &Worker, layout: &Layout) {
    let job = worker.generate(layout.clone(), options_for(layout));
    match events_until_end(worker, job).pop() {
        Some(Event::Finished { .. }) => {}
        other => panic!("expected a picture, got {other:?}"),
    }
}

/// A panic injected at `stage` of a job: the job fails naming the stage, the worker restarts, and
/// the next job, with the model it kept, makes its picture.
fn survives_a_panic_in(stage: Stage) {
    let worker = ready_worker();
    // DDIM, 6 steps: one UNet evaluation per step
    let layout = fixture_layout("a_three_boxes");
    worker.send(Command::InjectPanic(stage));
    let job = worker.generate(layout.clone(), options_for(&layout));
    let events = events_until_end(&worker, job);
    match events.last() {
        Some(Event::Failed { message, .. }) => assert_eq!(
            message,
            &format!("the worker crashed: injected panic while {stage}")
        ),
        other => panic!("expected the job to fail, got {other:?}"),
    }
    match next_event(&worker) {
        Event::WorkerRestarted { message } => {
            assert_eq!(message, format!("injected panic while {stage}"));
        }
        other => panic!("expected the restart, got {other:?}"),
    }
    // Nothing of the job after its stage: no step past the one that panicked.
    if let Stage::Step { step, .. } = stage {
        let last_preview = events.iter().rev().find_map(|e| match e {
            Event::Step { step, .. } => Some(*step),
            _ => None,
        });
        assert_eq!(last_preview, step.checked_sub(1));
    }
    generates(&worker, &layout);
    worker.shutdown();
}

#[test]
fn a_panic_while_encoding_the_prompt_fails_the_job_and_the_worker_goes_on() {
    assert_eq!(
        Stage::Prompt.to_string(),
        "encoding the prompt",
        "the stage as the message names it"
    );
    survives_a_panic_in(Stage::Prompt);
}

#[test]
fn a_panic_while_encoding_the_grounding_fails_the_job_and_the_worker_goes_on() {
    survives_a_panic_in(Stage::Grounding);
}

#[test]
fn a_panic_in_a_unet_step_fails_the_job_and_the_worker_goes_on() {
    assert_eq!(
        Stage::Step { step: 2, total: 6 }.to_string(),
        "running the UNet for step 3 of 6"
    );
    survives_a_panic_in(Stage::Step { step: 2, total: 6 });
}

#[test]
fn a_panic_while_decoding_fails_the_job_and_the_worker_goes_on() {
    survives_a_panic_in(Stage::Decode);
}

#[test]
fn a_panic_in_a_step_preview_fails_the_job_and_the_worker_goes_on() {
    assert_eq!(
        Stage::Preview { step: 1 }.to_string(),
        "making the preview of step 2"
    );
    survives_a_panic_in(Stage::Preview { step: 1 });
}

#[test]
fn a_panic_while_loading_fails_the_load_and_a_second_load_works() {
    let worker = Worker::spawn(Box::new(|| {}));
    worker.send(Command::InjectPanic(Stage::Load));
    let load = worker.load_model(LoadRequest::cpu(tiny_model()));
    loop {
        match next_event(&worker) {
            Event::LoadFailed { id, message } => {
                assert_eq!(id, load);
                assert_eq!(message, "the glichen-load thread crashed: injected panic");
                break;
            }
            Event::LoadProgress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // The worker itself did not crash: it serves the next commands at once.
    let layout = fixture_layout("a_three_boxes");
    let job = worker.generate(layout.clone(), options_for(&layout));
    match events_until_end(&worker, job).as_slice() {
        [Event::Failed { message, .. }] => assert_eq!(message, "no model is loaded"),
        other => panic!("unexpected {other:?}"),
    }
    worker.load_model(LoadRequest::cpu(tiny_model()));
    loop {
        match next_event(&worker) {
            Event::ModelReady { .. } => break,
            Event::LoadProgress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    generates(&worker, &layout);
    worker.shutdown();
}

/// A copy of the tiny model in a scratch folder, loaded by a new worker.
fn worker_on_a_copy(tag: &str) -> (Worker, common::TempDir, std::path::PathBuf) {
    let scratch = common::TempDir::new(tag);
    let model = scratch.join("tiny-a");
    common::copy_dir(&common::model_dir("tiny-a"), &model);
    let worker = Worker::spawn(Box::new(|| {}));
    load_and_wait(&worker, &model);
    (worker, scratch, model)
}

fn load_and_wait(worker: &Worker, model: &std::path::Path) {
    worker.load_model(LoadRequest::cpu(model.display().to_string()));
    loop {
        match next_event(worker) {
            Event::ModelReady { .. } => return,
            Event::LoadFailed { message, .. } => panic!("load failed: {message}"),
            _ => {}
        }
    }
}

/// The next job unloads the model and fails with `expected` (the studio hears `ModelUnloaded`),
/// and the one after says the model was unloaded and why.
fn fails_and_unloads(worker: &Worker, expected: &str) {
    let layout = fixture_layout("b_one_box");
    let job = worker.generate(layout.clone(), options_for(&layout));
    match events_until_end(worker, job).as_slice() {
        [Event::ModelUnloaded { message: why }, Event::Failed { message, .. }] => {
            assert_eq!(why, expected);
            assert_eq!(message, expected);
        }
        other => panic!("expected the model unloaded and the job failed at once, got {other:?}"),
    }
    let job = worker.generate(layout.clone(), options_for(&layout));
    match events_until_end(worker, job).as_slice() {
        [Event::Failed { message, .. }] => assert_eq!(
            message,
            &format!("no model is loaded (it was unloaded: {expected})")
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_weights_file_deleted_after_loading_fails_the_next_job() {
    let (worker, _scratch, model) = worker_on_a_copy("deleted-weights");
    let layout = fixture_layout("b_one_box");
    generates(&worker, &layout);
    let vae = model
        .join("vae")
        .join("diffusion_pytorch_model.safetensors");
    std::fs::remove_file(&vae).unwrap();
    fails_and_unloads(
        &worker,
        &format!(
            "{} was deleted after the model was loaded; load the model again",
            vae.display()
        ),
    );
    std::fs::copy(
        common::model_dir("tiny-a").join("vae/diffusion_pytorch_model.safetensors"),
        &vae,
    )
    .unwrap();
    load_and_wait(&worker, &model);
    generates(&worker, &layout);
    worker.shutdown();
}

#[test]
fn a_weights_file_rewritten_after_loading_fails_the_next_job() {
    let (worker, _scratch, model) = worker_on_a_copy("rewritten-weights");
    let unet = model
        .join("unet")
        .join("diffusion_pytorch_model.safetensors");
    // Another value in place, same length: the lowest mantissa bit of the first stored f32 (the
    // 8-byte header length, the JSON header, then the data), and an older modification time.
    let mut bytes = std::fs::read(&unet).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + header] ^= 1;
    std::fs::write(&unet, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&unet)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000))
        .unwrap();
    fails_and_unloads(
        &worker,
        &format!(
            "{} was modified (its modification time changed) after the model was loaded; load \
             the model again",
            unet.display()
        ),
    );
    load_and_wait(&worker, &model);
    generates(&worker, &fixture_layout("b_one_box"));
    worker.shutdown();
}

#[test]
fn a_generation_that_cannot_fit_is_refused_before_the_prompt_and_the_worker_goes_on() {
    let worker = ready_worker();
    let mut layout = fixture_layout("b_one_box");
    layout.width = 2048;
    layout.height = 2048;
    let mut options = options_for(&layout);
    options.memory_check = MemoryCheck::Limit(512 << 20);
    let job = worker.generate(layout, options);
    match events_until_end(&worker, job).as_slice() {
        // no phase: refused before the prompt is encoded, let alone a UNet evaluation
        [Event::Started { .. }, Event::Failed { message, .. }] => assert_eq!(
            message,
            "this 2048×2048 generation needs about 9.2 GiB of memory for its activations (batch \
             2, f32; 9.2 GiB in all with the 13.3 MiB of weights) but 512.0 MiB is available: \
             make the canvas smaller, or set GLICHEN_IGNORE_MEMORY_CHECK=1 (the command line's \
             --ignore-memory-check) to try anyway"
        ),
        other => panic!("unexpected {other:?}"),
    }
    generates(&worker, &fixture_layout("b_one_box"));
    worker.shutdown();
}
