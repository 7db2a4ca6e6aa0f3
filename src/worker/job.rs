//! Running one generation on the worker thread, forwarding its steps as events.

use super::{Event, Job, LatentFrame, Outbox, State};
use crate::pipeline::{self, CancelToken, PipelineError, StepUpdate};
use std::sync::Arc;
use std::time::Instant;

pub(super) fn run_job(job: &Job, cancel: &CancelToken, out: &Outbox, state: &mut State) {
    let Some((model, _)) = state.model.as_ref() else {
        out.send(Event::Failed {
            job: job.id,
            message: "no model is loaded".into(),
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
    let inputs = pipeline::GenerateInputs {
        base_dir: job.base_dir.clone(),
        on_phase: Some(pipeline::PhaseHook(Arc::new(move |phase| {
            // the UI repaints while a job runs; a closed channel means nobody listens
            let _ = tx.send(Event::Phase { job: id, phase });
        }))),
        ..Default::default()
    };
    let result = model.generate_with(
        &job.layout,
        &job.options,
        &inputs,
        &mut |u: &StepUpdate| match LatentFrame::from_tensor(u.pred_x0) {
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
        },
        cancel,
    );
    if let Some(e) = preview_error {
        tracing::warn!("previews: {e}");
    }
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
