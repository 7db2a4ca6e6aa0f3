#!/usr/bin/env bash
# The project's test command (README): system packages for the headless UI tests, the fmt and
# clippy gates, the headless (no-default-features) build, the whole cargo test suite in the
# release profile (the one profile CI builds), and the CLI parity harness on the committed
# reference cases when ../shared/tools/parity.sh is beside the project.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f .ci/setup-system.sh ]; then
  bash .ci/setup-system.sh
fi

# Gates first, so that a formatting slip or a lint fails in minutes, not after the test build.
cargo fmt --check
cargo clippy --release --all-targets --features testing -- -D warnings
# The boundary the design promises: the library and CLI build without the studio's window stack.
cargo build --release --no-default-features --bin glichen

cargo test --release --all-targets --features testing

parity=../shared/tools/parity.sh
if [ -f "$parity" ]; then
  bash "$parity" tests/fixtures/cases
  bash "$parity" tests/fixtures/original
else
  echo "note: $parity not found; CLI parity harness skipped (cargo tests above cover the same cases in-process)"
fi
