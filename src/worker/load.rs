//! Model loading on the worker thread, with the resolution (download) and the build each on a
//! thread of their own so that a cancelled load is given up at once.

use super::{
    enter, lock, panic_message, Event, LoadId, LoadRequest, ModelInfo, Outbox, Shared, Stage, State,
};
use crate::pipeline::{self, CancelToken, GligenModel};
use crate::weights;
use crossbeam_channel::RecvTimeoutError;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) fn load(
    id: LoadId,
    request: LoadRequest,
    cancel: CancelToken,
    out: &Outbox,
    shared: &Arc<Mutex<Shared>>,
    state: &mut State,
) {
    let finish = |event: Event| {
        let mut s = lock(shared);
        if s.loading.as_ref().is_some_and(|(l, _)| *l == id) {
            s.loading = None;
        }
        // the load thread's stage ends with it: a later panic is not the load's
        s.stage = None;
        drop(s);
        out.send(event);
    };
    if cancel.is_cancelled() {
        return finish(Event::LoadFailed {
            id,
            message: "cancelled".into(),
        });
    }
    let started = Instant::now();
    let looks_local = std::path::Path::new(&request.spec).exists();
    out.send(Event::LoadProgress {
        id,
        fraction: None,
        message: if looks_local {
            format!("Opening {}", request.spec)
        } else {
            format!(
                "Downloading {} into the Hugging Face cache (or finding it there)",
                request.spec
            )
        },
    });
    // Resolution may download gigabytes; it runs on its own thread so that a cancel is honoured
    // at once (the download then finishes in the background into the cache, harmlessly).
    let spec = request.spec.clone();
    let source = match off_thread(
        "glichen-resolve",
        move |progress| weights::resolve_model(&spec, progress),
        (id, &cancel, OnCancel::Detach),
        out,
    ) {
        Ok(Ok(source)) => source,
        Ok(Err(e)) => {
            return finish(Event::LoadFailed {
                id,
                message: e.to_string(),
            })
        }
        Err(message) => return finish(Event::LoadFailed { id, message }),
    };
    let device = match pipeline::parse_device(&request.device) {
        Ok(d) => d,
        Err(e) => {
            return finish(Event::LoadFailed {
                id,
                message: e.to_string(),
            })
        }
    };
    let dtype = match pipeline::parse_dtype(&request.dtype) {
        Ok(d) => d,
        Err(e) => {
            return finish(Event::LoadFailed {
                id,
                message: e.to_string(),
            })
        }
    };
    out.send(Event::LoadProgress {
        id,
        message: "Loading weights".into(),
        fraction: None,
    });
    // Free the old model first: two SD models at once may not fit.
    state.model = None;
    state.unloaded = None;
    // Loading may download too (an original text-image checkpoint's image tower).
    let load_source = source.clone();
    let image_encoder = request.image_encoder.clone();
    let preview_decoder = request.preview_decoder.clone();
    let load_shared = shared.clone();
    let loaded = off_thread(
        "glichen-load",
        move |progress| {
            enter(&load_shared, Some(Stage::Load));
            let options = pipeline::LoadOptions {
                progress,
                image_encoder,
                preview_decoder,
                ..pipeline::LoadOptions::default()
            };
            GligenModel::load_with(&load_source, &device, dtype, &options)
        },
        (id, &cancel, OnCancel::Wait),
        out,
    );
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(message) => return finish(Event::LoadFailed { id, message }),
    };
    match loaded {
        Ok(model) => {
            if cancel.is_cancelled() {
                return finish(Event::LoadFailed {
                    id,
                    message: "cancelled".into(),
                });
            }
            let info = ModelInfo {
                name: model.name.clone(),
                source,
                limits: model.limits(),
                default_scheduler: model.default_scheduler,
                device: if model.unet.bf16_matmuls() {
                    format!("{} bf16 products on AMX, f32 activations", request.device)
                } else {
                    format!("{} {:?}", request.device, model.dtype)
                },
                load_time: started.elapsed(),
            };
            state.model = Some((model, info.clone()));
            finish(Event::ModelReady { id, info });
        }
        Err(e) => finish(Event::LoadFailed {
            id,
            message: e.to_string(),
        }),
    }
}

/// What [`off_thread`] does with its thread when the load is cancelled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnCancel {
    /// Return at once and let the thread finish alone (a download into the cache: harmless).
    Detach,
    /// Wait for the thread and drop its result, so that nothing it holds (a model being built)
    /// outlives the cancel: two SD models at once may not fit in memory.
    Wait,
}

/// Runs `f` on its own thread while this one forwards its download progress as
/// [`Event::LoadProgress`] and watches `cancel`. `Err` with a message when cancelled, when the
/// thread cannot start, or when it panics ("the NAME thread crashed: " and the panic's message).
fn off_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce(weights::Progress) -> T + Send + 'static,
    (id, cancel, on_cancel): (LoadId, &CancelToken, OnCancel),
    out: &Outbox,
) -> Result<T, String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (ptx, prx) = crossbeam_channel::unbounded::<weights::DownloadProgress>();
    let progress = weights::Progress::Report(Arc::new(move |p| {
        let _ = ptx.send(p.clone());
    }));
    let thread_name = name.to_string();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| f(progress))).map_err(|payload| {
                let message = panic_message(payload.as_ref());
                format!("the {thread_name} thread crashed: {message}")
            });
            let _ = tx.send(result);
        })
        .map_err(|e| format!("cannot start the {name} thread: {e}"))?;
    let mut cancelled = false;
    loop {
        let result = rx.recv_timeout(Duration::from_millis(50));
        if let Some(p) = prx.try_iter().last() {
            let last_file_done = p.index + 1 == p.count && p.total > 0 && p.done >= p.total;
            out.send(if last_file_done {
                // what follows the download (building the networks) has no measure of its own
                Event::LoadProgress {
                    id,
                    message: format!("Downloaded {}; loading the weights", p.repo),
                    fraction: None,
                }
            } else {
                Event::LoadProgress {
                    id,
                    message: p.describe(),
                    fraction: Some(p.fraction()),
                }
            });
        }
        match result {
            Ok(_) if cancelled => return Err("cancelled".into()),
            Ok(value) => return value,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(format!("the {name} thread stopped unexpectedly"))
            }
            Err(RecvTimeoutError::Timeout) => {
                if !cancelled && cancel.is_cancelled() {
                    if on_cancel == OnCancel::Detach {
                        return Err("cancelled".into());
                    }
                    cancelled = true;
                    out.send(Event::LoadProgress {
                        id,
                        message: "Cancelling: letting the model being built go".into(),
                        fraction: None,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::Receiver;

    fn outbox() -> (Outbox, Receiver<Event>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (
            Outbox {
                tx,
                repaint: Box::new(|| {}),
            },
            rx,
        )
    }

    fn slow(ms: u64) -> impl FnOnce(weights::Progress) -> u32 + Send + 'static {
        move |progress| {
            if let weights::Progress::Report(report) = &progress {
                report(&weights::DownloadProgress {
                    repo: "o/n".into(),
                    file: "f".into(),
                    index: 0,
                    count: 2,
                    done: 5,
                    total: 10,
                });
            }
            std::thread::sleep(Duration::from_millis(ms));
            7
        }
    }

    #[test]
    fn off_thread_forwards_progress_and_returns_the_value() {
        let (out, rx) = outbox();
        let cancel = CancelToken::new();
        let v = off_thread("t", slow(120), (LoadId(1), &cancel, OnCancel::Wait), &out);
        assert_eq!(v, Ok(7));
        let progress: Vec<Option<f32>> = rx
            .try_iter()
            .filter_map(|e| match e {
                Event::LoadProgress { fraction, .. } => Some(fraction),
                _ => None,
            })
            .collect();
        assert_eq!(progress, [Some(0.25)]);
    }

    #[test]
    fn a_cancelled_load_waits_for_its_thread_a_cancelled_download_does_not() {
        let (out, _rx) = outbox();
        for (on_cancel, at_least, at_most) in
            [(OnCancel::Wait, 400, 5000), (OnCancel::Detach, 0, 300)]
        {
            let cancel = CancelToken::new();
            let c = cancel.clone();
            let canceller = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                c.cancel();
            });
            let started = Instant::now();
            let v = off_thread("t", slow(450), (LoadId(1), &cancel, on_cancel), &out);
            let took = started.elapsed().as_millis() as u64;
            canceller.join().unwrap();
            assert_eq!(v, Err("cancelled".to_string()));
            assert!((at_least..at_most).contains(&took), "{took} ms");
        }
    }

    #[test]
    fn a_panic_off_thread_is_reported_with_its_message() {
        let (out, _rx) = outbox();
        let cancel = CancelToken::new();
        let v: Result<u32, String> = off_thread(
            "t",
            |_| panic!("the weights are odd"),
            (LoadId(1), &cancel, OnCancel::Wait),
            &out,
        );
        assert_eq!(
            v,
            Err("the t thread crashed: the weights are odd".to_string())
        );
    }
}
