#!/usr/bin/env bash
# One PNG per section of a `surprisal report` page, rendered by headless Chromium (Debian's
# `chromium`: apt-get install -y chromium).
#   bash scripts/drills/report_screenshots.sh report.html OUT_DIR [WIDTH]
# Writes OUT_DIR/<section>.png for the header, the history (a page made with --history), the
# overview (entropy rate) and each run; each shot is taken from a copy of the page that shows only
# that section (a style rule; in the history shot its tables of numbers are also opened).
# A history page of three or more checkpoints: `surprisal suite run SUITE.toml --results RESULTS`
# over a checkpoint glob (configs/suites/checkpoints.toml), or from eval runs made without a suite:
#   cargo run --release -p surprisal-report --example history_from_runs -- RESULTS MODEL \
#       heldout=0:runs/ckpt-0 heldout=3:runs/ckpt-3 heldout=6:runs/ckpt-6
#   surprisal report --history RESULTS -o history.html
#   bash scripts/drills/report_screenshots.sh history.html shots
set -euo pipefail
page=$(realpath "$1"); out=$2; width=${3:-1400}
mkdir -p "$out"
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "no chromium: apt-get install -y chromium" >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ids=$(grep -o '<\(section\|header\) id="[a-z0-9]*"' "$page" | sed 's/.*id="\(.*\)"/\1/')
for id in $ids; do
  # height: enough for the longest section (a run with text); the PNG is cropped by nothing
  open=""; [ "$id" = history ] && open='s|<details>|<details open>|g;'
  sed "${open}s|</head>|<style>body > *:not(#$id) { display: none; }</style></head>|" "$page" > "$tmp/$id.html"
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --hide-scrollbars --screenshot="$out/$id.png" --window-size="$width,${HEIGHT:-3200}" \
    "file://$tmp/$id.html" >/dev/null 2>&1
  echo "$out/$id.png"
done
