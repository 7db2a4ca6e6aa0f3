#!/usr/bin/env bash
# The project's test command (README): system packages for the headless UI tests, the whole
# cargo test suite in the release profile (the one profile CI builds), and the CLI parity harness
# on the committed reference cases when ../shared/tools/parity.sh is beside the project.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f .ci/setup-system.sh ]; then
  bash .ci/setup-system.sh
fi

cargo test --release --all-targets --features testing

parity=../shared/tools/parity.sh
if [ -f "$parity" ]; then
  bash "$parity" tests/fixtures/cases
  bash "$parity" tests/fixtures/original
else
  echo "note: $parity not found; CLI parity harness skipped (cargo tests above cover the same cases in-process)"
fi
