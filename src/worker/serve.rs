//! The worker thread's loop: serving commands, and starting again after a panic.

use super::job::run_job;
use super::load::load;
use super::{lock, panic_message, Command, Event, Outbox, Shared, State};
use crossbeam_channel::Receiver;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

/// The worker thread: serves commands; a panic is reported and serving starts again.
pub(super) fn supervise(commands: Receiver<Command>, out: Outbox, shared: Arc<Mutex<Shared>>) {
    let mut state = State {
        model: None,
        unloaded: None,
    };
    loop {
        let result = catch_unwind(AssertUnwindSafe(|| {
            serve(&commands, &out, &shared, &mut state);
        }));
        match result {
            Ok(()) => return,
            Err(payload) => {
                let mut message = panic_message(payload.as_ref());
                let (running, stage) = {
                    let mut s = lock(&shared);
                    (s.running.take(), s.stage.take())
                };
                if let Some(stage) = stage {
                    message = format!("{message} while {stage}");
                }
                tracing::error!("worker panicked: {message}");
                if let Some((job, _)) = running {
                    out.send(Event::Failed {
                        job,
                        message: format!("the worker crashed: {message}"),
                    });
                }
                let loading = lock(&shared).loading.take();
                if let Some((id, _)) = loading {
                    out.send(Event::LoadFailed {
                        id,
                        message: format!("the worker crashed: {message}"),
                    });
                }
                out.send(Event::WorkerRestarted { message });
            }
        }
    }
}

fn serve(
    commands: &Receiver<Command>,
    out: &Outbox,
    shared: &Arc<Mutex<Shared>>,
    state: &mut State,
) {
    while let Ok(command) = commands.recv() {
        match command {
            Command::Shutdown => return,
            Command::Cancel(_) => {}
            #[cfg(feature = "testing")]
            Command::Panic(message) => panic!("{message}"),
            #[cfg(feature = "testing")]
            Command::InjectPanic(stage) => lock(shared).inject_panic = Some(stage),
            Command::LoadModel {
                id,
                request,
                cancel,
            } => load(id, request, cancel, out, shared, state),
            Command::Generate { job, cancel } => {
                {
                    let mut s = lock(shared);
                    s.queued.retain(|(id, _)| *id != job.id);
                    if cancel.is_cancelled() {
                        drop(s);
                        out.send(Event::Cancelled { job: job.id });
                        continue;
                    }
                    s.running = Some((job.id, cancel.clone()));
                    s.stage = None;
                }
                run_job(&job, &cancel, out, shared, state);
                let mut s = lock(shared);
                s.running = None;
                s.stage = None;
            }
        }
    }
}
