//! Running one generation on the worker thread, forwarding its steps as events.

use super::{enter, Event, Job, LatentFrame, Outbox, Shared, Stage, State};
use crate::pipeline::{self, CancelToken, PipelineError, StepUpdate};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub(super) fn run_job(
    job: &Job,
    cancel: &CancelToken,
    out: &Outbox,
    shared: &Arc<Mutex<Shared>>,
    state: &mut State,
) {
    if let Some(Err(e)) = state.model.as_ref().map(|(m, _)| m.check_files()) {
        // The networks were built from files that are no longer on disk as they were: unloaded,
        // so that nothing is made with them and the next load reads the files afresh.
        let message = e.to_string();
        tracing::warn!("unloading the model: {message}");
        state.model = None;
        state.unloaded = Some(message.clone());
        out.send(Event::ModelUnloaded {
            message: message.clone(),
        });
        out.send(Event::Failed {
            job: job.id,
            message,
        });
        return;
    }
    let Some((model, _)) = state.model.as_ref() else {
        out.send(Event::Failed {
            job: job.id,
            message: match &state.unloaded {
                Some(why) => format!("no model is loaded (it was unloaded: {why})"),
                None => "no model is loaded".into(),
            },
        });
        return;
    };
    let started = Instant::now();
    out.send(Event::Started {
        job: job.id,
        total: job.options.steps,
    });
    let mut preview_error = None;
    let tx = out.tx.clone();
    let id = job.id;
    let phase_shared = shared.clone();
    let inputs = pipeline::GenerateInputs {
        base_dir: job.base_dir.clone(),
        on_phase: Some(pipeline::PhaseHook(Arc::new(move |phase| {
            enter(&phase_shared, Some(Stage::from(phase)));
            // the UI repaints while a job runs; a closed channel means nobody listens
            let _ = tx.send(Event::Phase { job: id, phase });
        }))),
        ..Default::default()
    };
    let result = model.generate_with(
        &job.layout,
        &job.options,
        &inputs,
        &mut |u: &StepUpdate| {
            let evaluating = enter(shared, Some(Stage::Preview { step: u.step }));
            send_step(job, u, model, out, started, &mut preview_error);
            enter(shared, evaluating);
        },
        cancel,
    );
    if let Some(e) = preview_error {
        tracing::warn!("previews: {e}");
    }
    finish(job, result, out, started);
}

/// A step's preview: its latent frame, and the preview decoder's picture when one is loaded.
fn send_step(
    job: &Job,
    u: &StepUpdate,
    model: &pipeline::GligenModel,
    out: &Outbox,
    started: Instant,
    preview_error: &mut Option<candle_core::Error>,
) {
    match LatentFrame::from_tensor(u.pred_x0) {
        Ok(latents) => {
            let decoded = match model.preview_decoder.is_some() {
                true => match model.preview_rgb(u.pred_x0) {
                    Ok(img) => Some(Arc::new(img)),
                    Err(e) => {
                        preview_error.get_or_insert(candle_core::Error::Msg(e.to_string()));
                        None
                    }
                },
                false => None,
            };
            out.send(Event::Step {
                job: job.id,
                step: u.step,
                total: u.total,
                timestep: u.timestep,
                gate_scale: u.gate_scale,
                latents,
                decoded,
                elapsed: started.elapsed(),
            });
        }
        Err(e) => {
            preview_error.get_or_insert(e);
        }
    }
}

/// The job's last event: its picture, its cancellation or its failure.
fn finish(
    job: &Job,
    result: Result<pipeline::Generated, PipelineError>,
    out: &Outbox,
    started: Instant,
) {
    match result {
        Ok(generated) => {
            let latents = match LatentFrame::from_tensor(&generated.latents) {
                Ok(l) => l,
                Err(e) => {
                    out.send(Event::Failed {
                        job: job.id,
                        message: format!("reading the final latents: {e}"),
                    });
                    return;
                }
            };
            match generated.image {
                Some(image) => out.send(Event::Finished {
                    job: job.id,
                    image: Arc::new(image),
                    latents,
                    seed: generated.seed,
                    warnings: generated.warnings,
                    elapsed: started.elapsed(),
                }),
                None => out.send(Event::Failed {
                    job: job.id,
                    message: "the pipeline returned no image".into(),
                }),
            }
        }
        Err(PipelineError::Cancelled) => out.send(Event::Cancelled { job: job.id }),
        Err(e) => out.send(Event::Failed {
            job: job.id,
            message: e.to_string(),
        }),
    }
}
