#!/usr/bin/env bash
# Does Pathfinder-32 (generated) leave chance level with twice the leaderboard's budget?
# maelre and ecp (the one backbone whose validation accuracy moved within the leaderboard's
# 3,000 steps), 6,000 steps each, both at once; otherwise the leaderboard's Pathfinder settings.
# Results: $OUT/pathfinder_probe_<backbone>.json (one row each; the leaderboard file is untouched).
#
#   bash benchmarks/pathfinder_probe.sh      # on the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu_out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT" runs
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
for backbone in maelre ecp; do
    "$PYTHON" -m maelre.bench.leaderboard --tasks pathfinder --backbones "$backbone" --budget-steps 6000 --max-minutes 6 \
        --set data.dataset.n_train=20000 --set data.dataset.n_val=500 --set data.dataset.n_test=2000 \
        --run-root runs/pathfinder_probe --out "$OUT/pathfinder_probe_$backbone.json" --table "runs/pathfinder_probe_$backbone.md" \
        >"runs/pathfinder_probe_$backbone.log" 2>&1 &
done
wait
