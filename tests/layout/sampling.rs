//! Sampling settings: scheduler names and the grounding (α) schedule.

use glichen::layout::{grounding_alphas, Sampling, SchedulerKind};
use serde_json::json;

#[test]
fn scheduler_kind_parses_and_prints() {
    assert_eq!("ddim".parse::<SchedulerKind>(), Ok(SchedulerKind::Ddim));
    assert_eq!(" PNDM ".parse::<SchedulerKind>(), Ok(SchedulerKind::Pndm));
    assert_eq!("plms".parse::<SchedulerKind>(), Ok(SchedulerKind::Pndm));
    assert_eq!(
        "DPMPP-2M-Karras".parse::<SchedulerKind>(),
        Ok(SchedulerKind::Dpmpp2mKarras)
    );
    assert_eq!("euler".parse::<SchedulerKind>(), Ok(SchedulerKind::Euler));
    assert_eq!(
        "UniPCMultistepScheduler".parse::<SchedulerKind>(),
        Ok(SchedulerKind::UniPc)
    );
    let err = "lms".parse::<SchedulerKind>().expect_err("unknown");
    assert_eq!(
        err.to_string(),
        r#"unknown scheduler "lms" (expected ddim, pndm, dpmpp_2m, dpmpp_2m_karras, euler or unipc)"#
    );
    for kind in SchedulerKind::ALL {
        assert_eq!(kind.to_string().parse::<SchedulerKind>(), Ok(kind));
        assert_eq!(
            serde_json::to_value(kind).expect("json"),
            json!(kind.to_string())
        );
    }
}

#[test]
fn grounding_alphas_follow_gligen() {
    assert_eq!(
        grounding_alphas(0.3, 0.0, 10),
        [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
    assert_eq!(
        grounding_alphas(0.2, 0.4, 10),
        [1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
    assert_eq!(grounding_alphas(1.0, 0.0, 4), [1.0; 4]);
    assert!(grounding_alphas(0.0, 0.0, 0).is_empty());
    let r = Sampling::default().resolve();
    assert_eq!(r.grounding_alphas().len(), 50);
    assert_eq!(
        r.grounding_alphas().iter().filter(|a| **a == 1.0).count(),
        15
    );
}
