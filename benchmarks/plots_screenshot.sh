#!/usr/bin/env bash
# Render `dvc plots show` in a real headless browser and save a screenshot (docs/plots_*.png).
# DVC's page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net; offline, the same
# libraries come from npm (`npm pack`) and the page is pointed at them. Needs Debian's chromium.
#   benchmarks/plots_screenshot.sh docs/plots_real_cpu.png [show | diff REV...]  (SHOT_HEIGHT=px)
set -euo pipefail
out=${1:?usage: $0 OUT.png [dvc plots subcommand and args]}; shift
cmd=("${@:-show}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent vega@5 vega-lite@5 vega-embed@6 >/dev/null && for f in *.tgz; do
   mkdir "${f%%-[0-9]*}" && tar -xzf "$f" -C "${f%%-[0-9]*}" --strip-components=1; done)
dvc plots "${cmd[@]}" -o "$work/html" >/dev/null
sed -e "s#https://cdn.jsdelivr.net/npm/vega@[0-9.]*#file://$work/vega/build/vega.min.js#" \
    -e "s#https://cdn.jsdelivr.net/npm/vega-lite@[0-9.]*#file://$work/vega-lite/build/vega-lite.min.js#" \
    -e "s#https://cdn.jsdelivr.net/npm/vega-embed@[0-9.]*#file://$work/vega-embed/build/vega-embed.min.js#" \
    "$work/html/index.html" > "$work/html/offline.html"
chromium --headless --no-sandbox --disable-gpu --allow-file-access-from-files --window-size=1500,${SHOT_HEIGHT:-1600} \
    --virtual-time-budget=8000 --screenshot="$(realpath -m "$out")" "file://$work/html/offline.html" 2>/dev/null
echo "$out"
