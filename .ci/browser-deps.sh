#!/usr/bin/env bash
# Install the headless browser that tests/test_html_report.py drives with Selenium: Debian's
# `chromium` and `chromium-driver` (the test finds /usr/bin/chromium and /usr/bin/chromedriver).
# Called from .ci/run before pytest. Where apt-get is unavailable (not Debian/Ubuntu, or not
# root) it prints why and exits 0: the browser test then skips with its own message.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "[browser-deps] chromium and chromedriver already installed: $(chromium --version 2>/dev/null || echo chromium)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "[browser-deps] apt-get not found: not installing chromium/chromium-driver; the browser test will be skipped" >&2
    exit 0
fi
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "[browser-deps] not root and no password-less sudo: cannot apt-get install chromium; the browser test will be skipped" >&2
        exit 0
    fi
fi
echo "[browser-deps] apt-get update && apt-get install chromium chromium-driver" >&2
"${SUDO[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q chromium chromium-driver
echo "[browser-deps] installed: $(chromium --version 2>/dev/null || echo chromium)" >&2
