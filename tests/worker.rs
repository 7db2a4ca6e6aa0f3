//! The model worker on its own, without a window: previews and the final image, cancel within one
//! step, a new Generate cancelling the old one, panic recovery (the `testing` feature's panic
//! command), and a clean failure without a model.

mod common;

use glichen::layout::Layout;
use glichen::pipeline::scheduler::SchedulerKind;
use glichen::pipeline::GenerateOptions;
use glichen::worker::{Command, Event, JobId, LoadRequest, Worker};
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
            assert!(message.contains("test panic"));
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
