//! What is timed: the benchmark's prompt, phrases, boxes and layout. The diffusers script builds
//! the same inputs, so both sides run the same shapes and tokens.

use anyhow::Result;
use glichen::layout::Layout;

/// Tokens per phrase in the phrase-encoding row (start, 6 content tokens, end).
pub(super) const PHRASE_TOKENS: usize = 8;
/// Content tokens of the benchmark prompt (the rest of the 77 is padding).
pub(super) const PROMPT_TOKENS: usize = 20;
/// The timestep of the first PLMS evaluation of a 50-step SD schedule.
pub(super) const BENCH_TIMESTEP: f64 = 981.0;
const FULL_PROMPT: &str = "a photograph of a cosy living room full of objects, highly detailed";

/// Deterministic content token of phrase `i`, position `j` (the diffusers script uses the same).
pub(super) fn bench_token(i: usize, j: usize) -> u32 {
    400 + ((i * 97 + j * 31) % 40000) as u32
}

/// Phrase `i` of the benchmark layout (the diffusers script builds the same list).
fn bench_phrase(i: usize) -> String {
    const COLORS: [&str; 6] = ["red", "blue", "green", "yellow", "black", "white"];
    const THINGS: [&str; 5] = ["umbrella", "dog", "chair", "lamp", "car"];
    format!("a {} {}", COLORS[i % 6], THINGS[(i / 6) % 5])
}

/// Box `i` of the benchmark layout: cell `i` of a 6×5 grid.
fn bench_box(i: usize) -> [f64; 4] {
    let (c, r) = ((i % 6) as f64, ((i / 6) % 5) as f64);
    [c / 6.0, r / 5.0, (c + 1.0) / 6.0, (r + 1.0) / 5.0]
}

/// Box `i` as the diffusers script rounds it (f32).
pub(super) fn bench_box_f32(i: usize) -> [f32; 4] {
    bench_box(i).map(|v| v as f32)
}

/// The benchmark layout: `n` grid boxes with distinct phrases, `scheduler`, α₀ 0.3, guidance 7.5.
pub(super) fn bench_layout(
    size: usize,
    n: usize,
    steps: usize,
    scheduler: glichen::layout::SchedulerKind,
) -> Result<Layout> {
    let entities: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"type": "text_box", "phrase": bench_phrase(i), "box": bench_box(i)}))
        .collect();
    let doc = serde_json::json!({
        "version": 1,
        "width": size,
        "height": size,
        "prompt": FULL_PROMPT,
        "negative_prompt": "",
        "entities": entities,
        "sampling": {"steps": steps, "guidance_scale": 7.5, "alpha0": 0.3, "seed": 42, "scheduler": scheduler.to_string()}
    });
    Ok(Layout::from_json_str(&doc.to_string())?)
}
