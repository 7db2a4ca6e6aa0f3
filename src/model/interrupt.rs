//! Stopping a network mid-evaluation. A UNet evaluation at 512×512 takes 20–30 s on two CPU
//! cores, so a Cancel that waits for it feels broken: the pipeline installs its cancel flag for the
//! calling thread while a network runs, and the networks check it between their blocks (and the
//! CPU kernels between their tasks), returning [`interrupted`] as soon as it is set.
//!
//! The flag is per thread (generations on other threads are not affected); kernels that fan out
//! to worker threads take it with [`current`] on the calling thread first.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The message of the error a checked network returns when stopped.
pub const INTERRUPTED: &str = "interrupted";

thread_local! {
    static FLAG: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Runs `f` with `flag` installed for this thread (restoring what was there before, also when
/// `f` panics: the worker thread catches a job's panic and runs the next job on the same thread).
pub fn with_flag<T>(flag: &Arc<AtomicBool>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Arc<AtomicBool>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            FLAG.with(|cell| *cell.borrow_mut() = previous);
        }
    }
    let _restore = Restore(FLAG.with(|cell| cell.replace(Some(flag.clone()))));
    f()
}

/// The flag installed for this thread, to hand to worker threads.
pub fn current() -> Option<Arc<AtomicBool>> {
    FLAG.with(|cell| cell.borrow().clone())
}

/// Whether a flag is set.
pub fn is_set(flag: Option<&Arc<AtomicBool>>) -> bool {
    flag.is_some_and(|f| f.load(Ordering::Relaxed))
}

/// `Err(interrupted)` when this thread's flag is set.
pub fn check() -> candle_core::Result<()> {
    if FLAG.with(|cell| is_set(cell.borrow().as_ref())) {
        Err(interrupted())
    } else {
        Ok(())
    }
}

pub fn interrupted() -> candle_core::Error {
    candle_core::Error::Msg(INTERRUPTED.to_string())
}

/// Whether `e` is (or wraps) [`interrupted`].
pub fn is_interrupted(e: &candle_core::Error) -> bool {
    match e {
        candle_core::Error::Msg(m) => m == INTERRUPTED,
        candle_core::Error::Context { inner, .. } => is_interrupted(inner),
        candle_core::Error::WithBacktrace { inner, .. } => is_interrupted(inner),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_is_per_thread_and_restored() {
        let flag = Arc::new(AtomicBool::new(true));
        assert!(check().is_ok());
        let err = with_flag(&flag, || check().unwrap_err());
        assert!(is_interrupted(&err));
        assert!(check().is_ok(), "removed after the scope");
        let other = with_flag(&flag, || std::thread::spawn(check).join().unwrap());
        assert!(other.is_ok(), "another thread has no flag");
        let panicked = std::panic::catch_unwind(|| with_flag(&flag, || panic!("in a job")));
        assert!(panicked.is_err());
        assert!(check().is_ok(), "removed after a panic too");
    }
}
