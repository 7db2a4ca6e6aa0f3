#!/usr/bin/env bash
# Re-renders assets/screenshot.png: the studio with a three-box layout and a finished image, drawn
# headless through wgpu (software Vulkan is enough; see .ci/setup-system.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
GLICHEN_UPDATE_SCREENSHOT=1 cargo test --release --features testing --test studio studio_previews_run_through_wgpu_and_screenshot
echo "wrote assets/screenshot.png"
