#!/usr/bin/env bash
# System packages the test suite needs on a fresh Debian/Ubuntu machine (run as root, or with sudo
# available). The studio tests render through wgpu headless, on Mesa's software Vulkan driver
# (lavapipe / llvmpipe) when there is no GPU.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends \
    mesa-vulkan-drivers libvulkan1 \
    libxkbcommon0 libxkbcommon-x11-0 libx11-6 libxcursor1 libxrandr2 libxi6 libwayland-client0
