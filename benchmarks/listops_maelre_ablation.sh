#!/usr/bin/env bash
# Which part of MAELRE fails on ListOps? Two single-backbone sweeps with the leaderboard's
# ListOps budget (benchmarks/gpu_accuracy.sh), each changing one thing:
#   exact     switch_threshold=4096: exact attention in every block, merging kept
#   nomerge   merge_fraction=0: linear attention in every block, no merging
#   mixed     switch_threshold=1024, merge_fraction=0.5: linear attention only while more than
#             1,024 tokens remain (the first block of long batches), exact attention after
# VARIANTS picks some (default: all three, run at once).
# Results: $OUT/listops_maelre_<variant>.json (one row each; the leaderboard file is untouched).
#
#   bash benchmarks/listops_maelre_ablation.sh      # on the GPU machine; both run at once
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu_out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT" runs
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
budget=(--tasks listops --backbones maelre --budget-steps 3000 --max-minutes 6.5
        --set data.dataset.n_train=48000 --set data.dataset.n_val=1000 --set data.dataset.n_test=2000
        --set schedule.warmup_steps=300 --set trainer.early_stopping_patience=null)
declare -A variant=(
    [exact]="model.backbone_config.maelre.switch_threshold=4096"
    [nomerge]="model.backbone_config.maelre.merge_fraction=0.0"
    [mixed]="model.backbone_config.maelre={merge_fraction: 0.5, switch_threshold: 1024}"
)
for name in ${VARIANTS:-exact nomerge mixed}; do
    [[ -n ${variant[$name]:-} ]] || { echo "unknown variant '$name'; use exact, nomerge or mixed" >&2; exit 2; }
    "$PYTHON" -m maelre.bench.leaderboard "${budget[@]}" --set "${variant[$name]}" --run-root "runs/listops_ablation_$name" \
        --out "$OUT/listops_maelre_$name.json" --table "runs/listops_ablation_$name.md" >"runs/listops_ablation_$name.log" 2>&1 &
done
wait
