//! 200 generations in one process through the library (what `glichen generate` runs), ignored
//! by default; `bash scripts/soak.sh` runs it and prints its figures. Each generation must give
//! the same picture as the first (same layout, same seed), and resident memory after the last
//! must be within 10 % of what it was after the 20th. `SOAK_GENERATIONS` (default 200) steers it.

mod common;

use candle_core::{DType, Device};
use common::rss::rss_kib;
use common::{case_dir, case_model};
use glichen::layout::Layout;
use glichen::pipeline::{CancelToken, GenerateOptions, GligenModel};
use glichen::weights::ModelSource;
use std::time::Instant;

#[test]
#[ignore = "soak test: run with scripts/soak.sh"]
fn two_hundred_generations_in_one_process_keep_memory_flat() {
    let runs: usize = std::env::var("SOAK_GENERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let case = case_dir("a_three_boxes");
    let model = GligenModel::load(
        &ModelSource::Folder(case_model(&case)),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let layout = Layout::load(case.join("layout.json")).unwrap();
    let mut options = GenerateOptions::from_layout(&layout, model.default_scheduler);
    options.decode = true;
    let started = Instant::now();
    let mut first = None;
    let (mut rss_after_20, mut peak) = (0, 0);
    for k in 0..runs {
        let generated = model
            .generate(&layout, &options, None, &mut |_| {}, &CancelToken::new())
            .unwrap_or_else(|e| panic!("generation {k}: {e}"));
        let image = generated.image.expect("decoded");
        match &first {
            None => first = Some(image),
            Some(f) => assert_eq!(f, &image, "generation {k} differs from the first"),
        }
        if k + 1 == 20.min(runs) {
            rss_after_20 = rss_kib();
        }
        peak = peak.max(rss_kib());
    }
    let rss_end = rss_kib();
    println!(
        "soak: {runs} generations ({}×{}, {} steps) in {:.1} s; RSS after 20 {} MiB, after \
         {runs} {} MiB ({:+.1} %), peak {} MiB",
        layout.width,
        layout.height,
        options.steps,
        started.elapsed().as_secs_f64(),
        rss_after_20 / 1024,
        rss_end / 1024,
        100.0 * (rss_end as f64 / rss_after_20.max(1) as f64 - 1.0),
        peak / 1024
    );
    assert!(
        rss_end as f64 <= rss_after_20 as f64 * 1.10,
        "resident memory grew from {rss_after_20} KiB to {rss_end} KiB"
    );
}
