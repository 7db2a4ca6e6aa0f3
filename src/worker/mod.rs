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
//! ([`Event::Failed`] for the job, [`Event::WorkerRestarted`]) and the worker loop starts again with
//! the model it had (weights are immutable during a generation, so a panic cannot leave them
//! half-updated).

use crate::layout::{Layout, ModelLimits, SchedulerKind};
use crate::pipeline::{self, CancelToken, GenerateOptions, GligenModel, PipelineError, StepUpdate};
use crate::weights::{self, ModelSource};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Identifies one generation. Ids increase; events of older jobs are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Identifies one model load (so that the UI can ignore a load it gave up on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LoadId(pub u64);

/// What to load: a folder, a checkpoint file, a catalogue name or a hub repo id (downloaded into
/// the Hugging Face cache when needed), on a device (`cpu`, `cuda`, `auto`…) in a dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadRequest {
    pub spec: String,
    pub device: String,
    pub dtype: String,
    /// Original text-image checkpoints: where their CLIP image tower is ([`pipeline::LoadOptions`]).
    pub image_encoder: Option<String>,
}

impl LoadRequest {
    /// `spec` on the best device this build has, in f32 on the CPU and f16 elsewhere.
    pub fn auto(spec: impl Into<String>) -> Self {
        let dtype = if candle_core::utils::cuda_is_available()
            || candle_core::utils::metal_is_available()
        {
            "f16"
        } else {
            "f32"
        };
        Self {
            spec: spec.into(),
            device: "auto".into(),
            dtype: dtype.into(),
            image_encoder: None,
        }
    }

    /// `spec` on the CPU in f32 (tests, benchmarks).
    pub fn cpu(spec: impl Into<String>) -> Self {
        Self {
            spec: spec.into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            image_encoder: None,
        }
    }
}

/// One generation: the layout as it was when Generate was pressed and the resolved options.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub layout: Layout,
    pub options: GenerateOptions,
    /// The folder that relative image paths in the layout are read from (the layout file's).
    pub base_dir: Option<PathBuf>,
}

/// Raw latents for a preview: `channels × height × width` f32 values, channel-major (the tensor's
/// own layout). The UI turns them into RGB (in a WGSL shader, or on the CPU as a fallback).
#[derive(Debug, Clone, PartialEq)]
pub struct LatentFrame {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl LatentFrame {
    /// From a `[1, C, H, W]` or `[C, H, W]` tensor on any device.
    pub fn from_tensor(t: &candle_core::Tensor) -> candle_core::Result<Self> {
        let t = if t.rank() == 4 { t.get(0)? } else { t.clone() };
        let (channels, height, width) = t.dims3()?;
        let data = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self {
            channels,
            height,
            width,
            data,
        })
    }

    /// Back to a `[1, C, H, W]` CPU tensor (for [`pipeline::preview::latents_to_rgb`]).
    pub fn to_tensor(&self) -> candle_core::Result<candle_core::Tensor> {
        candle_core::Tensor::from_vec(
            self.data.clone(),
            (1, self.channels, self.height, self.width),
            &candle_core::Device::Cpu,
        )
    }

    /// The CPU latent→RGB projection (the fallback of the WGSL shader).
    pub fn to_rgb(&self) -> candle_core::Result<image::RgbImage> {
        pipeline::preview::latents_to_rgb(&self.to_tensor()?)
    }
}

/// What a loaded model is, for the UI.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub source: ModelSource,
    pub limits: ModelLimits,
    pub default_scheduler: SchedulerKind,
    pub device: String,
    pub load_time: Duration,
}

/// Commands to the worker. Prefer the [`Worker`] methods, which also handle cancellation.
#[derive(Debug)]
pub enum Command {
    LoadModel {
        id: LoadId,
        request: LoadRequest,
        cancel: CancelToken,
    },
    Generate {
        job: Job,
        cancel: CancelToken,
    },
    /// Cancellation itself happens through the job's token; this only wakes the worker.
    Cancel(JobId),
    Shutdown,
    /// Panics inside the worker (tests of the recovery path).
    #[cfg(feature = "testing")]
    Panic(String),
}

/// Events from the worker. Every event is followed by a call of the repaint callback.
#[derive(Debug, Clone)]
pub enum Event {
    LoadProgress {
        id: LoadId,
        message: String,
        /// The share done, when it is known (downloads).
        fraction: Option<f32>,
    },
    ModelReady {
        id: LoadId,
        info: ModelInfo,
    },
    LoadFailed {
        id: LoadId,
        message: String,
    },
    /// The job left the queue and is running (`total` sampling steps).
    Started {
        job: JobId,
        total: usize,
    },
    /// A sampling step finished; `latents` is the predicted x0 (what the picture is heading to).
    Step {
        job: JobId,
        step: usize,
        total: usize,
        timestep: usize,
        gate_scale: f32,
        latents: LatentFrame,
        elapsed: Duration,
    },
    Finished {
        job: JobId,
        image: Arc<image::RgbImage>,
        latents: LatentFrame,
        seed: u64,
        warnings: Vec<String>,
        elapsed: Duration,
    },
    Cancelled {
        job: JobId,
    },
    Failed {
        job: JobId,
        message: String,
    },
    /// The worker caught a panic and started over (the model, if any, is kept).
    WorkerRestarted {
        message: String,
    },
}

impl Event {
    /// The job an event is about, if any.
    pub fn job(&self) -> Option<JobId> {
        match self {
            Event::Started { job, .. }
            | Event::Step { job, .. }
            | Event::Finished { job, .. }
            | Event::Cancelled { job }
            | Event::Failed { job, .. } => Some(*job),
            _ => None,
        }
    }
}

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
    shared.lock().unwrap_or_else(|e| e.into_inner())
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
                supervise(command_rx, out, thread_shared)
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

/// The worker thread: serves commands; a panic is reported and serving starts again.
fn supervise(commands: Receiver<Command>, out: Outbox, shared: Arc<Mutex<Shared>>) {
    let mut state = State { model: None };
    loop {
        let result = catch_unwind(AssertUnwindSafe(|| {
            serve(&commands, &out, &shared, &mut state)
        }));
        match result {
            Ok(()) => return,
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                tracing::error!("worker panicked: {message}");
                let running = lock(&shared).running.take();
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

fn serve(commands: &Receiver<Command>, out: &Outbox, shared: &Mutex<Shared>, state: &mut State) {
    while let Ok(command) = commands.recv() {
        match command {
            Command::Shutdown => return,
            Command::Cancel(_) => {}
            #[cfg(feature = "testing")]
            Command::Panic(message) => panic!("{message}"),
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
                }
                run_job(&job, &cancel, out, state);
                lock(shared).running = None;
            }
        }
    }
}

fn load(
    id: LoadId,
    request: LoadRequest,
    cancel: CancelToken,
    out: &Outbox,
    shared: &Mutex<Shared>,
    state: &mut State,
) {
    let finish = |event: Event| {
        let mut s = lock(shared);
        if s.loading.as_ref().is_some_and(|(l, _)| *l == id) {
            s.loading = None;
        }
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
    // Loading may download too (an original text-image checkpoint's image tower).
    let load_source = source.clone();
    let image_encoder = request.image_encoder.clone();
    let loaded = off_thread(
        "glichen-load",
        move |progress| {
            let options = pipeline::LoadOptions {
                progress,
                image_encoder,
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
                device: format!("{} {:?}", request.device, dtype),
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
/// thread cannot start, or when it panics (the panic's message).
fn off_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce(weights::Progress) -> T + Send + 'static,
    (id, cancel, on_cancel): (LoadId, &CancelToken, OnCancel),
    out: &Outbox,
) -> Result<T, String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (ptx, prx) = crossbeam_channel::unbounded::<weights::DownloadProgress>();
    let progress = weights::Progress::Report(std::sync::Arc::new(move |p| {
        let _ = ptx.send(p.clone());
    }));
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| f(progress)))
                .map_err(|payload| panic_message(payload.as_ref()));
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

fn run_job(job: &Job, cancel: &CancelToken, out: &Outbox, state: &mut State) {
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
    let inputs = pipeline::GenerateInputs {
        base_dir: job.base_dir.clone(),
        ..Default::default()
    };
    let result = model.generate_with(
        &job.layout,
        &job.options,
        &inputs,
        &mut |u: &StepUpdate| match LatentFrame::from_tensor(u.pred_x0) {
            Ok(latents) => out.send(Event::Step {
                job: job.id,
                step: u.step,
                total: u.total,
                timestep: u.timestep,
                gate_scale: u.gate_scale,
                latents,
                elapsed: started.elapsed(),
            }),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(v, Err("the weights are odd".to_string()));
    }
}
