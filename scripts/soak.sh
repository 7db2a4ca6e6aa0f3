#!/usr/bin/env bash
# The soak tests (ignored by `cargo test`): the studio driven through SOAK_EDITS random edits,
# renders, drafts, cancels and file operations, and SOAK_GENERATIONS generations through the
# library in one process; each prints its figures (jobs, longest job, resident memory) and
# fails on a job past its bound or memory growth past 10 %.
#   SOAK_EDITS (2000)  SOAK_GENERATIONS (200)  SOAK_SEED (1)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --features testing --test studio -- --ignored soak --nocapture --test-threads 1
cargo test --release --features testing --test soak -- --ignored --nocapture --test-threads 1
