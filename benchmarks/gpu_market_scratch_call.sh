#!/usr/bin/env bash
# The device call the first lent GPU ran (2026-12-04; issue 19 item 5, issue 20's GPU measurement):
# the paper's network from scratch, its cells in metrics/gpu/. Kept to reproduce them; the next
# call is benchmarks/gpu_market_call.sh (pre-training on Duke, then fine-tuning on Market).
#
# Why one script: a session has 15 minutes of device time and a call at most 10, so everything
# that needs the GPU runs in one call, the result that matters most first.
#   1. the paper's network (maskreid_mf, 144 x 56, from scratch) and its no-mask ablation (dgd),
#      side by side on the one GPU for the same wall-clock budget, on all of Market-1501
#      (benchmarks/gpu_paper_market.py run; full official protocol, single query + re-ranked);
#   2. the from-features re-ranking and evaluation growth suite on CUDA (bench_evaluate.py).
#
# Here (CPU), first:
#   python benchmarks/gpu_paper_market.py bundle --out tmp/gpu_bundle/market_144x56.npz
#   cp ../shared/data/protocols/market1501/labels.npz tmp/gpu_bundle/
#   OUT=/tmp/smoke MINUTES=0.2 SMOKE=1 bash benchmarks/gpu_market_scratch_call.sh    # toy-size rehearsal
# There (the device tool, carry tmp/gpu_bundle):
#   bash benchmarks/gpu_market_scratch_call.sh
# $OUT gets maskreid_mf/{cells.json,model-NN-of-MM.pt}, dgd/cells.json, maskreid_mf.log, dgd.log,
# rerank_gpu.json
# (the device tool returns at most 8 files).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
: "${OUT:?set OUT to the folder for the results}"
BUNDLE=${BUNDLE:-tmp/gpu_bundle/market_144x56.npz}
MINUTES=${MINUTES:-6.3}
BENCH_S=${BENCH_S:-120}
PY=${PY:-python3}
extra=()
# the Market label layout travels beside the bundle (../shared does not travel)
export MASKREID_MARKET_LABELS=${MASKREID_MARKET_LABELS:-$(dirname "$BUNDLE")/labels.npz}
bench=(--layouts market,msmt17 --dims 256,2048 --device cuda --threads 2)
if [[ -n "${SMOKE:-}" ]]; then  # the CPU rehearsal: a few steps, a query subset, a small layout
    extra=(--steps 4 --max-eval-queries 40 --max-eval-gallery 400 --eval-batch 64)
    bench=(--layouts market --dims 256 --device cpu --threads 2)
fi
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"

run() {  # arch, then extra args
    local arch=$1; shift
    $PY benchmarks/gpu_paper_market.py run --bundle "$BUNDLE" --arch "$arch" --steps 60000 \
        --minutes "$MINUTES" --out "$OUT/$arch" "$@" "${extra[@]}" > "$OUT/$arch.log" 2>&1
}
run maskreid_mf & p_mf=$!
run dgd --no-save-model & p_dgd=$!
wait $p_mf; rc_mf=$?
wait $p_dgd; rc_dgd=$?
echo "maskreid_mf rc=$rc_mf, dgd rc=$rc_dgd"
tail -n 4 "$OUT/maskreid_mf.log" "$OUT/dgd.log"

timeout "$BENCH_S" $PY benchmarks/bench_evaluate.py --growth "${bench[@]}" --reference-layouts '' \
    --loop-layouts '' --json "$OUT/rerank_gpu.json"
echo "bench rc=$?"
exit $(( rc_mf != 0 ))
