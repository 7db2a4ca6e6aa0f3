//! The model worker: one background thread that owns the [`GligenModel`] and runs generations,
//! so that the window never waits on model work.
//!
//! Commands go in and events come out over `crossbeam-channel`. The worker knows nothing about
//! egui: it wakes its owner through a repaint callback (`Box<dyn Fn() + Send>`) after every event,
//! and the owner drains [`Worker::try_recv`] without blocking.
//!
//! Cancellation does not go through the command queue (the worker does not read it while a job
//! runs): [`Worker::cancel`] and [`Worker::generate`] flip the running job's [`CancelToken`]
//! directly, and the pipeline checks it before every UNet evaluation, so a job stops within one
//! step. A new Generate cancels the running job. A panic while serving a command is caught, reported
//! ([`Event::Failed`] for the job, naming the [`Stage`] it was in, and [`Event::WorkerRestarted`])
//! and the worker loop starts again with the model it had (weights are immutable during a
//! generation, so a panic cannot leave them half-updated); a panic while loading happens on the
//! load thread and is that load's [`Event::LoadFailed`].
//!
//! Before each job the worker checks that the model's weights files are as they were when loaded
//! ([`GligenModel::check_files`]); when one changed or is gone the job fails naming it, and the
//! model is unloaded, so that the next load reads the files afresh and no picture is made with
//! weights that are no longer those on disk.

mod job;
mod load;
mod order;
mod protocol;
mod serve;

pub use order::EventOrder;
pub use protocol::{
    Command, Event, Job, JobId, LatentFrame, LoadId, LoadRequest, ModelInfo, Stage,
};

use crate::layout::Layout;
use crate::pipeline::{CancelToken, GenerateOptions, GligenModel};
use crossbeam_channel::{Receiver, Sender};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Callback that wakes the UI (e.g. `egui::Context::request_repaint`).
pub type RepaintFn = Box<dyn Fn() + Send>;

/// The running job and its cancel token, shared with the handle so that cancelling does not wait
/// for the worker to read its queue.
#[derive(Default)]
struct Shared {
    running: Option<(JobId, CancelToken)>,
    /// Tokens of jobs sent but not yet started.
    queued: Vec<(JobId, CancelToken)>,
    loading: Option<(LoadId, CancelToken)>,
    /// Where the running job is, for the message if it panics.
    stage: Option<Stage>,
    /// The stage where the next load or job panics ([`Command::InjectPanic`]).
    #[cfg(feature = "testing")]
    inject_panic: Option<Stage>,
}

/// Handle to the worker thread. Dropping it shuts the worker down (without waiting for a running
/// job to notice; it is cancelled).
pub struct Worker {
    commands: Sender<Command>,
    events: Receiver<Event>,
    shared: Arc<Mutex<Shared>>,
    next_job: AtomicU64,
    next_load: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Worker {
    /// Starts the worker thread. `repaint` is called after every event it sends.
    pub fn spawn(repaint: RepaintFn) -> Self {
        let (commands, command_rx) = crossbeam_channel::unbounded();
        let (event_tx, events) = crossbeam_channel::unbounded();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("glichen-worker".into())
            .spawn(move || {
                let out = Outbox {
                    tx: event_tx,
                    repaint,
                };
                serve::supervise(command_rx, out, thread_shared);
            })
            .expect("spawning the worker thread");
        Self {
            commands,
            events,
            shared,
            next_job: AtomicU64::new(1),
            next_load: AtomicU64::new(1),
            thread: Some(thread),
        }
    }

    /// Loads a model (replacing the current one once it has loaded). A load in progress is given up.
    pub fn load_model(&self, request: LoadRequest) -> LoadId {
        let id = LoadId(self.next_load.fetch_add(1, Ordering::Relaxed));
        let cancel = CancelToken::new();
        {
            let mut s = lock(&self.shared);
            if let Some((_, old)) = s.loading.replace((id, cancel.clone())) {
                old.cancel();
            }
        }
        let _ = self.commands.send(Command::LoadModel {
            id,
            request,
            cancel,
        });
        id
    }

    /// Gives up the model load in progress (a download continues in the background into the cache).
    pub fn cancel_load(&self) {
        if let Some((_, token)) = lock(&self.shared).loading.take() {
            token.cancel();
        }
    }

    /// Queues a generation, cancelling the running and queued ones. Returns the job's id.
    pub fn generate(&self, layout: Layout, options: GenerateOptions) -> JobId {
        self.generate_in(layout, options, None)
    }

    /// [`Worker::generate`] for a layout whose relative image paths start at `base_dir`.
    pub fn generate_in(
        &self,
        layout: Layout,
        options: GenerateOptions,
        base_dir: Option<PathBuf>,
    ) -> JobId {
        let id = JobId(self.next_job.fetch_add(1, Ordering::Relaxed));
        let cancel = CancelToken::new();
        {
            let mut s = lock(&self.shared);
            if let Some((_, token)) = &s.running {
                token.cancel();
            }
            for (_, token) in s.queued.drain(..) {
                token.cancel();
            }
            s.queued.push((id, cancel.clone()));
        }
        let _ = self.commands.send(Command::Generate {
            job: Job {
                id,
                layout,
                options,
                base_dir,
            },
            cancel,
        });
        id
    }

    /// Cancels `job` if it is queued or running: the worker stops before its next UNet evaluation
    /// and sends [`Event::Cancelled`].
    pub fn cancel(&self, job: JobId) {
        let s = lock(&self.shared);
        if let Some((id, token)) = &s.running {
            if *id == job {
                token.cancel();
            }
        }
        for (id, token) in &s.queued {
            if *id == job {
                token.cancel();
            }
        }
        drop(s);
        let _ = self.commands.send(Command::Cancel(job));
    }

    /// The job running now, if any.
    pub fn running_job(&self) -> Option<JobId> {
        lock(&self.shared).running.as_ref().map(|(id, _)| *id)
    }

    /// The next event, without waiting.
    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The event channel (e.g. for `recv_timeout` in tests and tools; the UI uses `try_recv`).
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// Sends a raw command (tests).
    #[doc(hidden)]
    pub fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    /// Stops the worker: cancels everything and waits for the thread to end.
    pub fn shutdown(mut self) {
        self.stop(true);
    }

    fn stop(&mut self, wait: bool) {
        {
            let mut s = lock(&self.shared);
            if let Some((_, token)) = &s.running {
                token.cancel();
            }
            for (_, token) in s.queued.drain(..) {
                token.cancel();
            }
            if let Some((_, token)) = s.loading.take() {
                token.cancel();
            }
        }
        let _ = self.commands.send(Command::Shutdown);
        if let Some(handle) = self.thread.take() {
            if wait {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Do not block the UI thread on exit: the running job is cancelled and the thread ends
        // on its own within one step.
        self.stop(false);
    }
}

struct Outbox {
    tx: Sender<Event>,
    repaint: RepaintFn,
}

impl Outbox {
    fn send(&self, event: Event) {
        if self.tx.send(event).is_ok() {
            (self.repaint)();
        }
    }
}

struct State {
    model: Option<(GligenModel, ModelInfo)>,
    /// Why the last model was unloaded, when the worker did it (a weights file changed).
    unloaded: Option<String>,
}

/// Notes that the running job (or a load) entered `stage`, returning the stage it was in. Where a
/// panic was injected for `stage` (tests), panics there.
fn enter(shared: &Mutex<Shared>, stage: Option<Stage>) -> Option<Stage> {
    let mut s = lock(shared);
    let before = std::mem::replace(&mut s.stage, stage);
    #[cfg(feature = "testing")]
    if stage.is_some() && s.inject_panic == stage {
        s.inject_panic = None;
        // unlocked first: a panic holding the lock would poison it for the handle
        drop(s);
        panic!("injected panic");
    }
    before
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
