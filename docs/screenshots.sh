#!/usr/bin/env bash
# Remake the README's screenshots: the first screen (1280 x 800) of the demo's three reports.
# Usage: docs/screenshots.sh [DEMO_OUTPUT]   (runs `conceptlens demo` when no folder is given)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$(mktemp -d)/demo}"
[ -f "$out/audit.html" ] || conceptlens demo --out "$out" --quiet
for name in explanation dataset audit; do
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,800 \
    --screenshot="$here/$name.png" "file://$(cd "$out" && pwd)/$name.html"
done
