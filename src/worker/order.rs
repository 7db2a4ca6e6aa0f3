//! The order a job's events must come in, checked from the receiving side: `Started` first, then
//! `Phase` and `Step` events with step numbers that only grow, then exactly one of `Finished`,
//! `Cancelled` or `Failed`, and nothing after it. A job may also end without starting (failed or
//! cancelled in the queue). Soak tests feed every event they see through it.

use std::collections::HashMap;

use super::{Event, JobId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Started { last_step: Option<usize> },
    Ended,
}

/// Follows the events of every job and records each one that comes out of order.
#[derive(Debug, Default)]
pub struct EventOrder {
    jobs: HashMap<JobId, Seen>,
    violations: Vec<String>,
}

impl EventOrder {
    /// Notes `event` (events without a job are not ordered).
    pub fn see(&mut self, event: &Event) {
        let Some(job) = event.job() else {
            return;
        };
        let seen = self.jobs.get(&job).copied();
        let mut bad = |what: &str| {
            self.violations
                .push(format!("job {job}: {what} (after {seen:?})"));
        };
        let next = match (event, seen) {
            (_, Some(Seen::Ended)) => {
                bad("an event after the job ended");
                Seen::Ended
            }
            (Event::Started { .. }, None) => Seen::Started { last_step: None },
            (Event::Started { .. }, Some(s)) => {
                bad("started twice");
                s
            }
            (Event::Phase { .. }, Some(s @ Seen::Started { .. })) => s,
            (Event::Step { step, .. }, Some(Seen::Started { last_step })) => {
                if last_step.is_some_and(|l| *step <= l) {
                    bad(&format!("step {step} after step {last_step:?}"));
                }
                Seen::Started {
                    last_step: Some(*step),
                }
            }
            (Event::Phase { .. } | Event::Step { .. }, None) => {
                bad("progress before Started");
                Seen::Started { last_step: None }
            }
            (Event::Finished { .. }, None) => {
                bad("finished without starting");
                Seen::Ended
            }
            // Finished after Started, and Cancelled or Failed at any point.
            _ => Seen::Ended,
        };
        self.jobs.insert(job, next);
    }

    /// What came out of order so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Jobs seen that have not ended.
    pub fn open_jobs(&self) -> usize {
        self.jobs.values().filter(|s| **s != Seen::Ended).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(job: u64) -> Event {
        Event::Started {
            job: JobId(job),
            total: 2,
        }
    }

    #[test]
    fn a_normal_run_and_an_early_failure_are_in_order() {
        let mut order = EventOrder::default();
        order.see(&started(1));
        order.see(&Event::Cancelled { job: JobId(1) });
        order.see(&Event::Failed {
            job: JobId(2),
            message: "no model".into(),
        });
        assert!(order.violations().is_empty(), "{:?}", order.violations());
        assert_eq!(order.open_jobs(), 0);
    }

    #[test]
    fn events_after_the_end_or_twice_started_are_reported() {
        let mut order = EventOrder::default();
        order.see(&started(1));
        order.see(&started(1));
        order.see(&Event::Cancelled { job: JobId(1) });
        order.see(&Event::Cancelled { job: JobId(1) });
        assert_eq!(order.violations().len(), 2, "{:?}", order.violations());
    }
}
